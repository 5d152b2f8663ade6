"""Rule-free baselines: uniform sampling, a constant allocation, and random allocations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dus_env.observation import ObservationLayout
from dus_env.quantities import QuantityMapping

from .base import Agent


class UniformAgent(Agent):
    """Every modality gets ``B`` samples per iteration: standard multimodal training."""

    name = "uniform"

    def act(self, observation: np.ndarray) -> np.ndarray:
        return np.zeros(self.mapping.n_modalities, dtype=np.float32)


class FixedAllocationAgent(Agent):
    """A constant allocation given as shares of the per-iteration budget, e.g. ``(0.3, 0.7)``.

    In fixed-budget mode the shares are exact up to integer rounding and the quantity range;
    in free mode they are applied to ``M * B``.
    """

    name = "fixed"

    def __init__(self, layout: ObservationLayout, mapping: QuantityMapping, shares: Sequence[float]) -> None:
        super().__init__(layout, mapping)
        shares_array = np.asarray(shares, dtype=np.float64)
        if shares_array.shape != (mapping.n_modalities,):
            raise ValueError(f"fixed allocation has {shares_array.size} shares, the env has {mapping.n_modalities} modalities")
        if not np.all(np.isfinite(shares_array)) or np.any(shares_array <= 0):
            raise ValueError(f"fixed allocation shares must be positive numbers, got {list(shares)}")
        self.shares = shares_array / shares_array.sum()
        self.name = "fixed:" + ",".join(f"{s:g}" for s in self.shares)
        self._action = mapping.action(self.shares * mapping.total)

    @classmethod
    def from_quantities(cls, layout: ObservationLayout, mapping: QuantityMapping, quantities: Sequence[int]) -> FixedAllocationAgent:
        """The constant that plays exactly ``quantities`` (also in the free budget, where shares would be rescaled)."""
        agent = cls(layout, mapping, [float(q) for q in quantities])
        agent._action = mapping.action(np.asarray(quantities, dtype=np.float64))
        return agent

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self._action.copy()


class RandomAgent(Agent):
    """Uniformly random actions from a generator seeded per episode (reproducible)."""

    name = "random"

    def __init__(self, layout: ObservationLayout, mapping: QuantityMapping, seed: int = 0) -> None:
        super().__init__(layout, mapping)
        self._base_seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(self._base_seed if seed is None else [self._base_seed, seed])

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, self.mapping.n_modalities).astype(np.float32)

"""DUS-H: the heuristic data-aware sampler, from the cumulative modality scores.

The modality that has learned less gets more samples. With ``ŝ^j`` the cumulative scores and
temperature ``tau``, the shares of the per-iteration budget are::

    share_j = softmax_j( -(ŝ^j - mean_k ŝ^k) / tau )

and the quantities ``n_j = share_j * M * B`` (then mapped into the env's quantity range). Equal
scores give uniform sampling; a smaller ``tau`` reacts more strongly to the same discrepancy
(``tau -> inf`` is uniform sampling). Before the first iteration all scores are 0: uniform.
"""

from __future__ import annotations

import numpy as np

from dus_env.observation import ObservationLayout
from dus_env.quantities import QuantityMapping

from .base import Agent


class HeuristicAgent(Agent):
    """DUS-H (see the module docstring).

    :param temperature: ``tau``, in units of the cumulative score (a probability in ``[0, 1]``).
    """

    name = "heuristic"

    def __init__(self, layout: ObservationLayout, mapping: QuantityMapping, temperature: float = 0.1) -> None:
        super().__init__(layout, mapping)
        if not np.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"heuristic temperature={temperature!r} is invalid: expected a positive number")
        self.temperature = temperature

    def shares(self, observation: np.ndarray) -> np.ndarray:
        gap = self.layout.read(observation, "score_gap").astype(np.float64)
        logits = -gap / self.temperature
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self.mapping.action(self.shares(observation) * self.mapping.total)

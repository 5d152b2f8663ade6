"""From an action in ``[-1, 1]^M`` to integer per-modality sample quantities ``n_j``, and back.

The mapping, in order:

1. Non-finite actions raise ``ValueError`` (they mean a broken policy, not a choice).
2. Actions are clipped to ``[-1, 1]`` (policies with Gaussian heads overshoot; clipping is the
   documented, lossless behaviour for those).
3. Each component is mapped linearly to a *preferred* quantity
   ``w_j = n_min + (a_j + 1) / 2 * (n_max - n_min)``.
4. Budget ``free``: ``n_j = round(w_j)``. Budget ``fixed``: the preferences are scaled by one
   common factor ``c`` and clipped, ``n_j = clip(c * w_j, n_min, n_max)``, with ``c`` chosen so that
   ``sum_j n_j = M * B``: the same compute as uniform sampling, so agents are compared at equal
   cost. Integer rounding keeps the sum exact (largest remainders get the spare samples).

An all-zero action gives ``n_j = B`` for every modality in both modes (uniform sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BUDGET_MODES = ("fixed", "free")


@dataclass(frozen=True)
class QuantityMapping:
    """The action-to-quantity map of one environment; also used by agents and the exported sampler.

    :param n_modalities: ``M``.
    :param base_batch_size: ``B``, the per-modality quantity of uniform sampling.
    :param min_quantity: ``n_min``, smallest quantity a modality can get per iteration.
    :param max_quantity: ``n_max``, largest quantity a modality can get per iteration.
    :param budget: ``fixed`` (sum is ``M * B``) or ``free``.
    """

    n_modalities: int
    base_batch_size: int
    min_quantity: int
    max_quantity: int
    budget: str = "fixed"

    def __post_init__(self) -> None:
        if not 1 <= self.min_quantity <= self.base_batch_size <= self.max_quantity:
            raise ValueError(
                "quantity range is invalid: need 1 <= min_quantity <= base_batch_size <= max_quantity, got "
                f"min_quantity={self.min_quantity}, base_batch_size={self.base_batch_size}, max_quantity={self.max_quantity}"
            )
        if self.budget not in BUDGET_MODES:
            raise ValueError(f"budget={self.budget!r} is invalid: expected one of {BUDGET_MODES}")

    @property
    def total(self) -> int:
        """``M * B``: samples per iteration under uniform sampling (and always, in fixed mode)."""
        return self.n_modalities * self.base_batch_size

    def quantities(self, action: np.ndarray) -> np.ndarray:
        """Integer quantities ``n_j`` (int64, shape ``[M]``) for one action."""
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (self.n_modalities,):
            raise ValueError(f"action has {action.size} values, expected {self.n_modalities}: one per modality")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action {action.tolist()} holds NaN or inf: every component must be a finite number")
        preferred = self.min_quantity + (np.clip(action, -1.0, 1.0) + 1.0) / 2.0 * (self.max_quantity - self.min_quantity)
        if self.budget == "free":
            return np.rint(preferred).astype(np.int64)
        return self._round_to_total(self._scale_to_total(preferred))

    def action(self, quantities: np.ndarray) -> np.ndarray:
        """An action (float32 ``[M]``) that maps back to ``quantities``; used by rule-based agents.

        Quantities outside ``[n_min, n_max]`` are clipped first. In fixed mode any positive
        multiple of the wanted quantities gives the same result, so only their proportions count.
        """
        wanted = np.clip(np.asarray(quantities, dtype=np.float64), self.min_quantity, self.max_quantity)
        span = self.max_quantity - self.min_quantity
        if span == 0:
            return np.zeros(self.n_modalities, dtype=np.float32)
        return (2.0 * (wanted - self.min_quantity) / span - 1.0).astype(np.float32)

    def uniform(self) -> np.ndarray:
        return np.full(self.n_modalities, self.base_batch_size, dtype=np.int64)

    def _scale_to_total(self, preferred: np.ndarray) -> np.ndarray:
        """``clip(c * w, n_min, n_max)`` summing to ``M * B``: water-filling over the clipped set."""
        low, high, total = float(self.min_quantity), float(self.max_quantity), float(self.total)
        pinned = np.full(self.n_modalities, np.nan)
        for _ in range(self.n_modalities + 1):
            free = np.isnan(pinned)
            if not free.any():
                break
            remaining = total - np.nansum(pinned)
            scale = remaining / preferred[free].sum()
            scaled = np.where(free, preferred * scale, pinned)
            over, under = free & (scaled > high), free & (scaled < low)
            if not over.any() and not under.any():
                return scaled
            # Pin the side that violates most; the other side may resolve after rescaling.
            if over.any() and (not under.any() or (scaled[over] - high).sum() >= (low - scaled[under]).sum()):
                pinned[over] = high
            else:
                pinned[under] = low
        return np.clip(np.where(np.isnan(pinned), preferred, pinned), low, high)

    def _round_to_total(self, quantities: np.ndarray) -> np.ndarray:
        floors = np.floor(quantities + 1e-9).astype(np.int64)
        spare = self.total - int(floors.sum())
        room = floors < self.max_quantity
        order = [j for j in np.argsort(-(quantities - floors), kind="stable") if room[j]]
        for j in order[:spare]:
            floors[j] += 1
        return floors

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

import math
import numbers
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
        for name in ("n_modalities", "base_batch_size", "min_quantity", "max_quantity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: expected an integer >= 1")
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
        """Integer quantities ``n_j`` (int64, shape ``[M]``) for one action.

        Runs once per decision on a handful of numbers, so it works on Python floats: numpy's
        per-call overhead on 2-element arrays would cost more than the arithmetic.
        """
        values = np.asarray(action, dtype=np.float64).reshape(-1)
        if values.shape != (self.n_modalities,):
            raise ValueError(f"action has {values.size} values, expected {self.n_modalities}: one per modality")
        components = values.tolist()
        if not all(math.isfinite(a) for a in components):
            raise ValueError(f"action {components} holds NaN or inf: every component must be a finite number")
        low, span = float(self.min_quantity), float(self.max_quantity - self.min_quantity)
        preferred = [low + (min(1.0, max(-1.0, a)) + 1.0) / 2.0 * span for a in components]
        if self.budget == "free":
            return np.array([round(w) for w in preferred], dtype=np.int64)
        return np.array(self._round_to_total(self._scale_to_total(preferred)), dtype=np.int64)

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

    def _scale_to_total(self, preferred: list[float]) -> list[float]:
        """``clip(c * w, n_min, n_max)`` summing to ``M * B``: water-filling over the clipped set.

        Each round rescales the unpinned preferences to the budget left and pins the side that
        overshoots most to its bound; at most ``M`` rounds, as every round pins one more.
        """
        low, high, total = float(self.min_quantity), float(self.max_quantity), float(self.total)
        pinned: list[float | None] = [None] * len(preferred)
        scaled = list(preferred)
        for _ in range(len(preferred) + 1):
            free = [j for j, p in enumerate(pinned) if p is None]
            if not free:
                break
            remaining = total - sum(p for p in pinned if p is not None)
            scale = remaining / sum(preferred[j] for j in free)
            scaled = [preferred[j] * scale if p is None else p for j, p in enumerate(pinned)]
            over = [j for j in free if scaled[j] > high]
            under = [j for j in free if scaled[j] < low]
            if not over and not under:
                return scaled
            if over and (not under or sum(scaled[j] - high for j in over) >= sum(low - scaled[j] for j in under)):
                for j in over:
                    pinned[j] = high
            else:
                for j in under:
                    pinned[j] = low
        return [min(high, max(low, p if p is not None else scaled[j])) for j, p in enumerate(pinned)]

    def _round_to_total(self, quantities: list[float]) -> list[int]:
        """Floors, then the spare samples to the largest remainders (never above ``n_max``)."""
        floors = [math.floor(q + 1e-9) for q in quantities]
        spare = self.total - sum(floors)
        by_remainder = sorted(range(len(floors)), key=lambda j: floors[j] - quantities[j])
        for j in by_remainder:
            if spare <= 0:
                break
            if floors[j] < self.max_quantity:
                floors[j] += 1
                spare -= 1
        return floors


def as_action_array(action: object, shape: tuple[int, ...], name: str = "action") -> np.ndarray:
    """``action`` as a float64 array of exactly ``shape``, or a ``ValueError`` that names the expected shape.

    Gymnasium's ``Box.contains`` semantics: the shape must match exactly (``(1, M)`` or ``(M, 1)`` is
    not ``(M,)``), and the values must be real numbers: strings, bools and complex numbers are refused
    rather than converted (``True`` would read as 1.0, ``1j`` lose its imaginary part).
    """
    try:
        array = np.asarray(action) if not isinstance(action, (str, bytes)) else np.asarray([action])
    except (TypeError, ValueError) as error:  # ragged nested lists
        raise ValueError(f"{name} must be real numbers of shape {shape}: {error}") from None
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold real numbers (shape {shape}), got dtype {array.dtype}: {action!r}"[:300])
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}: one value per modality")
    return array.astype(np.float64, copy=False)

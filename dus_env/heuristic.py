"""DUS-H: the heuristic data-aware sampling rule, from the cumulative modality scores.

The modality that has learned less gets more samples. With ``ŝ^j`` the cumulative scores and
temperature ``tau``, the shares of the per-iteration budget are::

    share_j = softmax_j( -(ŝ^j - mean_k ŝ^k) / tau )

and the quantities ``n_j = share_j * M * B`` (then mapped into the quantity range). Equal scores
give uniform sampling; a smaller ``tau`` reacts more strongly to the same discrepancy
(``tau -> inf`` is uniform sampling). Before the first iteration all scores are 0: uniform.

It lives in the core package because both the ``HeuristicAgent`` and ``DUSSampler.heuristic``
use it: one rule, read through the named observation layout.
"""

from __future__ import annotations

import math

import numpy as np

from .observation import ObservationLayout
from .quantities import QuantityMapping

DEFAULT_TEMPERATURE = 0.1


def check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"heuristic temperature={temperature!r} is invalid: expected a positive number")
    return float(temperature)


def heuristic_shares(layout: ObservationLayout, observation: np.ndarray, temperature: float) -> np.ndarray:
    """Budget shares per modality (sum 1) for one observation."""
    gap = layout.read(observation, "score_gap").astype(np.float64)
    logits = -gap / temperature
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def heuristic_action(layout: ObservationLayout, mapping: QuantityMapping, observation: np.ndarray, temperature: float) -> np.ndarray:
    """The env action that realises :func:`heuristic_shares` under ``mapping``."""
    return mapping.action(heuristic_shares(layout, observation, temperature) * mapping.total)

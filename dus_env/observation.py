"""The observation layout: which slot of the observation vector means what, as versioned data.

The environment, the heuristic agent, the policy exporter and ``DUSSampler`` all read and write
observations through this module, so a policy trained in the environment sees exactly the same
vector in a user's own training loop. Changing what a slot means, or the order, requires a new
``LAYOUT_VERSION``; exported policies record the version and are refused by a sampler of another.

Layout version 1 (``M`` = number of modalities, all values float32 in the slot's range):

==========================  ====  =========  ========================================================
slot                        size  range      meaning
==========================  ====  =========  ========================================================
``cumulative_score``        M     [0, 1]     ŝ_t^j, the cumulative modality score
``last_score``              M     [0, 1]     s_t^j of the last training iteration
``score_gap``               M     [-1, 1]    ŝ_t^j - mean_k ŝ_t^k (negative = lagging modality)
``score_ratio``             M     [0, 1]     ŝ_t^j / max_k ŝ_t^k
``val_modality_accuracy``   M     [0, 1]     balanced validation accuracy of modality j alone
``val_fused_accuracy``      1     [0, 1]     balanced validation accuracy of the fused prediction
``last_share``              M     [0, 1]     n_j / sum_k n_k of the last decision (1/M at reset)
``progress``                1     [0, 1]     decision steps taken / decision steps per episode
``train_loss``              1     [0, 1]     mean training loss of the last step / ln(n_classes),
                                             clipped (1 = chance level at initialisation)
==========================  ====  =========  ========================================================

Position ``j`` of a per-modality slot (and component ``j`` of the action) is the modality presented
at position ``j``: with ``EnvConfig.shuffle_modalities`` that is original modality
``info["modality_order"][j]``, drawn per episode; the layout is the same for every order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .monitor import DiscrepancyMonitor

LAYOUT_VERSION = 1


class LayoutVersionError(ValueError):
    """An observation or policy artifact was made for a different observation layout."""


@dataclass(frozen=True)
class Slot:
    name: str
    per_modality: bool
    low: float
    high: float
    description: str


SLOTS_V1: tuple[Slot, ...] = (
    Slot("cumulative_score", True, 0.0, 1.0, "cumulative modality score ŝ_t^j"),
    Slot("last_score", True, 0.0, 1.0, "modality score s_t^j of the last iteration"),
    Slot("score_gap", True, -1.0, 1.0, "ŝ_t^j minus the mean over modalities"),
    Slot("score_ratio", True, 0.0, 1.0, "ŝ_t^j divided by the best modality's ŝ_t"),
    Slot("val_modality_accuracy", True, 0.0, 1.0, "balanced validation accuracy of each modality alone"),
    Slot("val_fused_accuracy", False, 0.0, 1.0, "balanced validation accuracy of the fused prediction"),
    Slot("last_share", True, 0.0, 1.0, "share of the last decision's samples given to each modality"),
    Slot("progress", False, 0.0, 1.0, "decision steps taken / decision steps per episode"),
    Slot("train_loss", False, 0.0, 1.0, "last step's mean training loss / ln(n_classes), clipped"),
)


@dataclass(frozen=True)
class TrainingStatus:
    """Everything an observation is made of, gathered by the env core or by ``DUSSampler``.

    Each field has the batch shape ``S`` of the observations to build (``()`` for one observation,
    ``(N,)`` for the vector env), per-modality fields ``S + (M,)``.

    :param monitor: the discrepancy monitor (state shape ``S + (M,)``).
    :param val_modality_accuracy: balanced validation accuracy per modality, in ``[0, 1]``.
    :param val_fused_accuracy: balanced validation accuracy of the fused prediction.
    :param quantities: the last decision's per-modality quantities.
    :param progress: share of the decision steps done, in ``[0, 1]``.
    :param train_loss: mean training loss over the last decision step (nats).
    :param n_classes: number of classes (to normalise the loss).
    """

    monitor: DiscrepancyMonitor
    val_modality_accuracy: np.ndarray | Sequence[float]
    val_fused_accuracy: np.ndarray | float
    quantities: np.ndarray | Sequence[int]
    progress: np.ndarray | float
    train_loss: np.ndarray | float
    n_classes: int


def _shares(status: TrainingStatus) -> np.ndarray:
    quantities = np.asarray(status.quantities, dtype=np.float64)
    return quantities / quantities.sum(axis=-1, keepdims=True)


def _scalar(value: np.ndarray | float) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)[..., None]


#: How each slot's values are read from a :class:`TrainingStatus`: arrays of shape ``S + (width,)``
#: (before clipping to the slot's range).
SLOT_VALUES: dict[str, Callable[[TrainingStatus], np.ndarray]] = {
    "cumulative_score": lambda status: status.monitor.cumulative,
    "last_score": lambda status: status.monitor.last,
    "score_gap": lambda status: status.monitor.relative_gap(),
    "score_ratio": lambda status: status.monitor.ratio_to_best(),
    "val_modality_accuracy": lambda status: np.asarray(status.val_modality_accuracy, dtype=np.float64),
    "val_fused_accuracy": lambda status: _scalar(status.val_fused_accuracy),
    "last_share": _shares,
    "progress": lambda status: _scalar(status.progress),
    "train_loss": lambda status: _scalar(status.train_loss) / math.log(status.n_classes),
}


@dataclass(frozen=True)
class ObservationLayout:
    """Slot names, positions and bounds for ``n_modalities`` modalities, in layout ``version``."""

    n_modalities: int
    version: int = LAYOUT_VERSION

    def __post_init__(self) -> None:
        if self.version != LAYOUT_VERSION:
            raise LayoutVersionError(
                f"observation layout version {self.version} is not supported by this dus_env "
                f"(it builds version {LAYOUT_VERSION}); re-export the policy with this version"
            )

    @property
    def slots(self) -> tuple[Slot, ...]:
        return SLOTS_V1

    def _width(self, slot: Slot) -> int:
        return self.n_modalities if slot.per_modality else 1

    @property
    def size(self) -> int:
        return sum(self._width(slot) for slot in self.slots)

    def index(self, name: str) -> slice:
        """Positions of slot ``name`` in the observation vector."""
        start = 0
        for slot in self.slots:
            width = self._width(slot)
            if slot.name == name:
                return slice(start, start + width)
            start += width
        raise KeyError(f"no slot {name!r} in observation layout v{self.version}; slots: {[s.name for s in self.slots]}")

    def read(self, observation: np.ndarray, name: str) -> np.ndarray:
        """The values of slot ``name`` in an observation (or the last axis of a batch of them)."""
        observation = np.asarray(observation)
        if observation.shape[-1] != self.size:
            raise ValueError(
                f"observation has {observation.shape[-1]} values, layout v{self.version} for {self.n_modalities} modalities has {self.size}"
            )
        return observation[..., self.index(name)]

    def permute_modalities(self, observation: np.ndarray, order: Sequence[int] | np.ndarray) -> np.ndarray:
        """The observation(s) of the same state with the modalities presented in ``order``.

        Position ``j`` of every per-modality slot takes modality ``order[j]``'s value; the other slots
        are unchanged. This is what an env with ``shuffle_modalities`` shows for order ``order``, and
        what the mirrored-observation probe (``bench/mirror_probe.py``) feeds a policy: a policy that
        reads the state should then move its action components with the modalities.
        """
        permutation = np.asarray(order)
        if sorted(permutation.tolist()) != list(range(self.n_modalities)):
            raise ValueError(f"order={permutation.tolist()} is invalid: expected a permutation of 0..{self.n_modalities - 1}")
        observation = np.asarray(observation)
        self.read(observation, self.slots[0].name)  # checks the size
        result = observation.copy()
        for slot in self.slots:
            if slot.per_modality:
                positions = np.arange(self.index(slot.name).start, self.index(slot.name).stop)
                result[..., positions] = observation[..., positions[permutation]]
        return result

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-position lower and upper bounds (float32), e.g. for the env's ``Box``."""
        low, high = self._bounds
        return low.astype(np.float32), high.astype(np.float32)

    @cached_property
    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.concatenate([np.full(self._width(s), s.low) for s in self.slots])
        high = np.concatenate([np.full(self._width(s), s.high) for s in self.slots])
        return low, high

    def names(self) -> list[str]:
        """One name per position, e.g. ``cumulative_score[0]``, for logs, plots and docs."""
        return [f"{slot.name}[{j}]" if slot.per_modality else slot.name for slot in self.slots for j in range(self._width(slot))]

    def build(self, status: TrainingStatus) -> np.ndarray:
        """The observation(s) for ``status``, float32 ``S + (size,)``: the one place observations are made."""
        monitor = status.monitor
        if monitor.n_modalities != self.n_modalities:
            raise ValueError(f"monitor tracks {monitor.n_modalities} modalities, layout expects {self.n_modalities}")
        batch_shape = monitor.shape[:-1]
        parts = [np.broadcast_to(SLOT_VALUES[name](status), (*batch_shape, width)) for name, width in self._widths]
        values = np.concatenate(parts, axis=-1)
        low, high = self._bounds
        return np.clip(values, low, high).astype(np.float32)

    @cached_property
    def _widths(self) -> tuple[tuple[str, int], ...]:
        return tuple((slot.name, self._width(slot)) for slot in self.slots)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description, saved with exported policies and printed in the docs."""
        return {
            "version": self.version,
            "n_modalities": self.n_modalities,
            "size": self.size,
            "slots": [
                {
                    "name": s.name,
                    "index": [self.index(s.name).start, self.index(s.name).stop],
                    "low": s.low,
                    "high": s.high,
                    "description": s.description,
                }
                for s in self.slots
            ],
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ObservationLayout:
        """Rebuild a saved layout; refuses another version with :class:`LayoutVersionError`."""
        version = values.get("version")
        if version != LAYOUT_VERSION:
            raise LayoutVersionError(
                f"artifact uses observation layout version {version!r}, this dus_env builds version "
                f"{LAYOUT_VERSION}: re-export the policy with this dus_env, or install the version that made it"
            )
        return cls(int(values["n_modalities"]), int(version))

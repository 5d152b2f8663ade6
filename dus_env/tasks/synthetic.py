"""A seeded multimodal task whose modality imbalance is set by hand, or drawn from ranges.

Each modality ``j`` sees the class through its own random prototypes::

    x_i^j = signal_j * P^j[y_i] + noise,    noise ~ N(0, I_d)

and with probability ``corruption_j`` a sample's modality ``j`` carries noise only (its signal is
dropped). A modality with a strong signal is learned within a few iterations and then dominates
the fused prediction; a weak one learns slowly, and under late fusion its gradient shrinks as soon
as the strong one fits the batch, so it stays under-trained: the modality imbalance DUS targets.
Corrupting the strong modality makes the weak one necessary on a share of the samples, so how
much data each modality gets shows up in the fused test accuracy.

**Task distributions.** ``signal_strengths`` and ``corruption_rates`` take, per modality, either a
number or a ``[low, high]`` range, and ``n_train`` an integer or a ``[low, high]`` range; a range is
drawn uniformly for every task instance from the episode's task seed. One config then covers
instances where giving the weak modality more data pays (a corrupted strong modality) and
instances where it hurts (a clean strong modality, a useless weak one): a sampling policy has to
read the training state to know which it faces. A config without ranges draws exactly the same
instances as before ranges existed (no extra random draws).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..validation import MAX_SCALE, as_tuple, check_float, check_int, check_length, fail
from .base import Task, make_task

#: A per-modality value: fixed, or a ``(low, high)`` range drawn per instance.
Ranged = float | tuple[float, float]


def _as_range(owner: str, name: str, value: Any) -> Ranged:
    """A number, or a ``(low, high)`` tuple with ``low <= high``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return value  # type: ignore[return-value]
    try:
        low, high = value
    except (TypeError, ValueError):
        fail(owner, name, value, "expected a number or a [low, high] range per entry")
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
            fail(owner, name, value, "expected a number or a [low, high] range of numbers per entry")
    if low > high:
        fail(owner, name, value, f"a range needs low <= high, got [{low}, {high}]")
    return (low, high)


def _bounds(value: Ranged) -> tuple[float, float]:
    return (value, value) if not isinstance(value, tuple) else value


def _draw(value: Ranged, rng: np.random.Generator) -> float:
    return float(rng.uniform(*value)) if isinstance(value, tuple) else float(value)


@dataclass(frozen=True)
class SyntheticTaskConfig:
    """Shape and imbalance of a synthetic task (or of a distribution of them).

    :param n_modalities: number of modalities M.
    :param n_classes: number of classes, balanced. Fixed per config: the envs of a batch share one
        model shape, so the class count cannot vary between instances.
    :param feature_dim: feature dimension of every modality.
    :param signal_strengths: per-modality scale of the class prototype, relative to unit noise;
        larger is easier and faster to learn. Each entry a number or a ``[low, high]`` range.
    :param corruption_rates: per-modality probability that a sample's modality holds noise only;
        each entry a number or a ``[low, high]`` range within ``[0, 1]``.
    :param n_train: training samples (the pool the learner samples from): an integer or a
        ``[low, high]`` range of integers.
    :param n_val: validation samples (the reward is computed on them).
    :param n_test: test samples (reported at episode end, never in the reward).
    :param data_seed: ``None`` draws a new task instance from every episode's seed (a task
        distribution); an integer fixes the data for all episodes, model init and order still vary.
    """

    kind: str = field(default="synthetic", init=False)
    n_modalities: int = 2
    n_classes: int = 10
    feature_dim: int = 32
    signal_strengths: tuple[Ranged, ...] = (1.0, 0.35)
    corruption_rates: tuple[Ranged, ...] = (0.4, 0.0)
    n_train: int | tuple[int, int] = 1000
    n_val: int = 500
    n_test: int = 1000
    data_seed: int | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_int(owner, "n_modalities", self.n_modalities, 1, 16)
        check_int(owner, "n_classes", self.n_classes, 2, 1000)
        check_int(owner, "feature_dim", self.feature_dim, 1, 100_000)
        for name, high in (("signal_strengths", MAX_SCALE), ("corruption_rates", 1.0)):
            values = tuple(_as_range(owner, name, v) for v in as_tuple(owner, name, getattr(self, name)))
            object.__setattr__(self, name, values)
            check_length(owner, name, values, self.n_modalities, "modality")
            for value in values:
                for bound in _bounds(value):
                    check_float(owner, name, bound, 0.0, high)
        if not isinstance(self.n_train, numbers.Integral):
            n_train = _as_range(owner, "n_train", self.n_train)
            object.__setattr__(self, "n_train", tuple(n_train) if isinstance(n_train, tuple) else n_train)
        for bound in self.n_train_bounds:
            check_int(owner, "n_train", bound, self.n_classes)
        for name in ("n_val", "n_test"):
            check_int(owner, name, getattr(self, name), self.n_classes)
        if self.data_seed is not None:
            check_int(owner, "data_seed", self.data_seed, 0)
        if all(_bounds(rate)[0] == 1.0 for rate in self.corruption_rates):
            fail(owner, "corruption_rates", self.corruption_rates, "at least one modality must carry signal")

    @property
    def n_train_bounds(self) -> tuple[int, int]:
        """Smallest and largest training set an instance can have."""
        return _bounds(self.n_train)  # type: ignore[return-value]

    def empty_parameters(self) -> dict[str, np.ndarray]:
        """The instance parameters a synthetic task reports, with placeholder values (for mixtures)."""
        nan = np.full(self.n_modalities, np.nan)
        return {"signal_strengths": nan, "corruption_rates": nan.copy(), "n_train": np.array(-1)}

    def max_feature_width(self) -> int:
        """The widest modality of any instance."""
        return self.feature_dim

    def max_split_sizes(self) -> tuple[int, int, int]:
        """The largest train / val / test split of any instance (what a batch of envs reserves)."""
        return self.n_train_bounds[1], self.n_val, self.n_test


def build_synthetic_task(config: SyntheticTaskConfig, rng: np.random.Generator) -> Task:
    """Draw one task instance from ``rng`` (or from ``config.data_seed`` when it is set).

    The ranged parameters are drawn first, in field order (strengths, corruption rates, ``n_train``),
    then the data; the drawn values are the task's ``parameters`` (reported in the env's ``info``).
    """
    if config.data_seed is not None:
        rng = np.random.default_rng(config.data_seed)
    strengths = [_draw(value, rng) for value in config.signal_strengths]
    corruptions = [_draw(value, rng) for value in config.corruption_rates]
    low, high = config.n_train_bounds
    n_train = int(rng.integers(low, high + 1)) if high > low else low
    n_total = n_train + config.n_val + config.n_test
    labels = rng.permutation(np.arange(n_total) % config.n_classes)
    features = []
    for strength, corruption in zip(strengths, corruptions):
        prototypes = rng.standard_normal((config.n_classes, config.feature_dim))
        keep = rng.random(n_total) >= corruption
        noise = rng.standard_normal((n_total, config.feature_dim))
        features.append((noise + strength * prototypes[labels] * keep[:, None]).astype(np.float32))
    bounds = np.cumsum([n_train, config.n_val])
    rows = np.arange(n_total)
    splits = (rows[: bounds[0]], rows[bounds[0] : bounds[1]], rows[bounds[1] :])
    names = tuple(f"m{j}" for j in range(config.n_modalities))
    parameters = {
        "signal_strengths": np.array(strengths),
        "corruption_rates": np.array(corruptions),
        "n_train": np.array(n_train),
    }
    task = make_task("synthetic", names, features, labels, config.n_classes, splits, standardize=False)
    return task.with_parameters(parameters)

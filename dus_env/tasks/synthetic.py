"""A seeded multimodal task whose modality imbalance is set by hand.

Each modality ``j`` sees the class through its own random prototypes::

    x_i^j = signal_j * P^j[y_i] + noise,    noise ~ N(0, I_d)

and with probability ``corruption_j`` a sample's modality ``j`` carries noise only (its signal is
dropped). A modality with a strong signal is learned within a few iterations and then dominates
the fused prediction; a weak one learns slowly, and under late fusion its gradient shrinks as soon
as the strong one fits the batch, so it stays under-trained: the modality imbalance DUS targets.
Corrupting the strong modality makes the weak one necessary on a share of the samples, so how
much data each modality gets shows up in the fused test accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..validation import as_tuple, check_float, check_int, check_length, fail
from .base import Task, make_task


@dataclass(frozen=True)
class SyntheticTaskConfig:
    """Shape and imbalance of a synthetic task.

    :param n_modalities: number of modalities M.
    :param n_classes: number of classes, balanced.
    :param feature_dim: feature dimension of every modality.
    :param signal_strengths: per-modality scale of the class prototype, relative to unit noise;
        larger is easier and faster to learn.
    :param corruption_rates: per-modality probability that a sample's modality holds noise only.
    :param n_train: training samples (the pool the learner samples from).
    :param n_val: validation samples (the reward is computed on them).
    :param n_test: test samples (reported at episode end, never in the reward).
    :param data_seed: ``None`` draws a new task instance from every episode's seed (a task
        distribution); an integer fixes the data for all episodes, model init and order still vary.
    """

    kind: str = field(default="synthetic", init=False)
    n_modalities: int = 2
    n_classes: int = 10
    feature_dim: int = 32
    signal_strengths: tuple[float, ...] = (1.0, 0.35)
    corruption_rates: tuple[float, ...] = (0.4, 0.0)
    n_train: int = 1000
    n_val: int = 500
    n_test: int = 1000
    data_seed: int | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_int(owner, "n_modalities", self.n_modalities, 1, 16)
        check_int(owner, "n_classes", self.n_classes, 2, 1000)
        check_int(owner, "feature_dim", self.feature_dim, 1, 100_000)
        object.__setattr__(self, "signal_strengths", as_tuple(owner, "signal_strengths", self.signal_strengths))
        object.__setattr__(self, "corruption_rates", as_tuple(owner, "corruption_rates", self.corruption_rates))
        check_length(owner, "signal_strengths", self.signal_strengths, self.n_modalities, "modality")
        check_length(owner, "corruption_rates", self.corruption_rates, self.n_modalities, "modality")
        for value in self.signal_strengths:
            check_float(owner, "signal_strengths", value, 0.0)
        for value in self.corruption_rates:
            check_float(owner, "corruption_rates", value, 0.0, 1.0)
        for name in ("n_train", "n_val", "n_test"):
            check_int(owner, name, getattr(self, name), self.n_classes)
        if self.data_seed is not None:
            check_int(owner, "data_seed", self.data_seed, 0)
        if all(rate == 1.0 for rate in self.corruption_rates):
            fail(owner, "corruption_rates", self.corruption_rates, "at least one modality must carry signal")


def build_synthetic_task(config: SyntheticTaskConfig, rng: np.random.Generator) -> Task:
    """Draw one task instance from ``rng`` (or from ``config.data_seed`` when it is set)."""
    if config.data_seed is not None:
        rng = np.random.default_rng(config.data_seed)
    n_total = config.n_train + config.n_val + config.n_test
    labels = rng.permutation(np.arange(n_total) % config.n_classes)
    features = []
    for strength, corruption in zip(config.signal_strengths, config.corruption_rates):
        prototypes = rng.standard_normal((config.n_classes, config.feature_dim))
        keep = rng.random(n_total) >= corruption
        noise = rng.standard_normal((n_total, config.feature_dim))
        features.append((noise + strength * prototypes[labels] * keep[:, None]).astype(np.float32))
    bounds = np.cumsum([config.n_train, config.n_val])
    rows = np.arange(n_total)
    splits = (rows[: bounds[0]], rows[bounds[0] : bounds[1]], rows[bounds[1] :])
    names = tuple(f"m{j}" for j in range(config.n_modalities))
    return make_task("synthetic", names, features, labels, config.n_classes, splits, standardize=False)

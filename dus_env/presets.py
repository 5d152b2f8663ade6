"""Named benchmark configs: one entry per registered environment id.

A benchmark is a named config plus its instance distribution (the task seed); each real task has
a cheap variant beside it. ``tiny`` is a deliberately small config for tests and smoke runs.
"""

from __future__ import annotations

from .config import EnvConfig
from .tasks import FeaturesTaskConfig, MFeatTaskConfig, SyntheticTaskConfig

PRESETS: dict[str, EnvConfig] = {
    # Two modalities: a strong one corrupted on 40% of samples, a weak clean one.
    "Synthetic": EnvConfig(),
    # Three modalities of decreasing strength.
    "Synthetic3": EnvConfig(
        task=SyntheticTaskConfig(
            n_modalities=3,
            signal_strengths=(1.0, 0.45, 0.35),
            corruption_rates=(0.4, 0.2, 0.0),
        )
    ),
    # Harder: a more dominant strong modality (it suppresses the weak one more), a weaker weak
    # one, a more often corrupted strong one, fewer training samples.
    "SyntheticHard": EnvConfig(
        task=SyntheticTaskConfig(
            signal_strengths=(1.5, 0.3),
            corruption_rates=(0.5, 0.0),
            n_train=600,
        )
    ),
    "MFeat": EnvConfig(task=MFeatTaskConfig()),
    # The path is required: gymnasium.make("dus_env/Features-v0", path="my_features.npz").
    "Features": EnvConfig(task=FeaturesTaskConfig()),
}

def preset(name: str) -> EnvConfig:
    """The base config of a registered id, e.g. ``preset("MFeat")``."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
    return PRESETS[name]


TINY_OVERRIDES: dict[str, object] = {
    "base_batch_size": 8,
    "min_quantity": 2,
    "max_quantity": 14,
    "iterations_per_step": 2,
    "decision_steps": 4,
    "learner": {"hidden_sizes": (16,), "embedding_dim": 8},
}
"""Overrides that make any preset cheap (tests, smoke runs): tiny model, short episodes."""

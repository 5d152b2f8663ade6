"""Tasks: where the multimodal data comes from. One module per source, one config class each."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..validation import ConfigError, UnknownOptionError
from .base import Split, Task
from .features import FeatureFileError, FeaturesTaskConfig, build_features_task, read_feature_file
from .mfeat import MFEAT_VIEWS, MFeatTaskConfig, build_mfeat_task
from .mixture import MixtureTaskConfig, build_mixture_task
from .synthetic import SyntheticTaskConfig, build_synthetic_task

TaskConfig = SyntheticTaskConfig | MFeatTaskConfig | FeaturesTaskConfig | MixtureTaskConfig

TASK_CONFIGS: dict[str, type[TaskConfig]] = {
    "synthetic": SyntheticTaskConfig,
    "mfeat": MFeatTaskConfig,
    "features": FeaturesTaskConfig,
    "mixture": MixtureTaskConfig,
}

_BUILDERS = {
    "synthetic": build_synthetic_task,
    "mfeat": build_mfeat_task,
    "features": build_features_task,
    "mixture": build_mixture_task,
}


def build_task(config: TaskConfig, rng: np.random.Generator) -> Task:
    """One task instance for an episode, drawn from ``rng`` unless the config fixes its data."""
    return _BUILDERS[config.kind](config, rng)  # type: ignore[operator]


def task_config_from_dict(values: dict[str, Any]) -> TaskConfig:
    """A task config from plain values (YAML, JSON, ``gymnasium.make`` kwargs); ``kind`` picks the source."""
    values = dict(values)
    kind = values.pop("kind", "synthetic")
    if kind not in TASK_CONFIGS:
        raise ConfigError(f"task kind={kind!r} is invalid: expected one of {', '.join(map(repr, TASK_CONFIGS))}")
    cls = TASK_CONFIGS[kind]
    allowed = {name for name, f in cls.__dataclass_fields__.items() if f.init}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise UnknownOptionError(f"unknown field(s) {unknown} for task kind {kind!r}: allowed are {sorted(allowed)}")
    return cls(**values)


__all__ = [
    "MFEAT_VIEWS",
    "FeatureFileError",
    "FeaturesTaskConfig",
    "MFeatTaskConfig",
    "MixtureTaskConfig",
    "Split",
    "SyntheticTaskConfig",
    "Task",
    "TaskConfig",
    "build_task",
    "read_feature_file",
    "task_config_from_dict",
]

"""dus_env: learning how much data of each modality to sample while a multimodal model trains.

Importing the package registers the Gymnasium ids ``dus_env/<Name>-v0`` (see ``ENV_IDS``)::

    import gymnasium as gym
    import dus_env  # noqa: F401  (registers the ids)

    env = gym.make("dus_env/Synthetic-v0")
"""

from __future__ import annotations

from .config import EnvConfig, resolve_config
from .env import DUSEnv
from .learners import LearnerConfig
from .metrics import Evaluation, balanced_accuracy, evaluate
from .monitor import DiscrepancyMonitor, modality_score
from .observation import LAYOUT_VERSION, LayoutVersionError, ObservationLayout, TrainingStatus
from .presets import PRESETS, TINY_OVERRIDES, preset
from .quantities import QuantityMapping
from .registration import ENV_IDS, register_envs
from .tasks import FeatureFileError, FeaturesTaskConfig, MFeatTaskConfig, SyntheticTaskConfig
from .validation import ConfigError

__version__ = "0.1.0"

register_envs()

__all__ = [
    "ENV_IDS",
    "LAYOUT_VERSION",
    "PRESETS",
    "TINY_OVERRIDES",
    "ConfigError",
    "DUSEnv",
    "DiscrepancyMonitor",
    "EnvConfig",
    "Evaluation",
    "FeatureFileError",
    "FeaturesTaskConfig",
    "LayoutVersionError",
    "LearnerConfig",
    "MFeatTaskConfig",
    "ObservationLayout",
    "QuantityMapping",
    "SyntheticTaskConfig",
    "TrainingStatus",
    "balanced_accuracy",
    "evaluate",
    "modality_score",
    "preset",
    "register_envs",
    "resolve_config",
]

"""dus_env: learning how much data of each modality to sample while a multimodal model trains.

Importing the package registers the Gymnasium ids ``dus_env/<Name>-v0`` (see ``ENV_IDS``)::

    import gymnasium as gym
    import dus_env  # noqa: F401  (registers the ids)

    env = gym.make("dus_env/Synthetic-v0")

The plug-in sampler (``dus_env.DUSSampler``) needs only torch and numpy: when gymnasium is
not installed, the package still imports, without the environment and its registration.
"""

from __future__ import annotations

from typing import Any

from .config import EnvConfig, resolve_config
from .learners import LearnerConfig
from .metrics import Evaluation, balanced_accuracy, evaluate
from .monitor import DiscrepancyMonitor, modality_score
from .observation import LAYOUT_VERSION, LayoutVersionError, ObservationLayout, TrainingStatus
from .presets import PRESETS, TINY_OVERRIDES, preset
from .quantities import QuantityMapping
from .sampler import DUSSampler, MissingValidationError, participation_masks
from .tasks import FeatureFileError, FeaturesTaskConfig, MFeatTaskConfig, MixtureTaskConfig, SyntheticTaskConfig
from .validation import ConfigError, UnknownOptionError

__version__ = "0.6.0"

try:
    import gymnasium  # noqa: F401
except ImportError:  # a deployment that only runs DUSSampler
    HAS_GYMNASIUM = False
else:
    HAS_GYMNASIUM = True
    from .registration import register_envs

    register_envs()

_GYMNASIUM_NAMES = {
    "DUSEnv": ("env", "DUSEnv"),
    "DUSVectorEnv": ("vector_env", "DUSVectorEnv"),
    "ENV_IDS": ("registration", "ENV_IDS"),
    "register_envs": ("registration", "register_envs"),
}


def __getattr__(name: str) -> Any:
    """The environment's names load on first use, so that importing the sampler needs no gymnasium."""
    if name in _GYMNASIUM_NAMES:
        if not HAS_GYMNASIUM:
            raise ImportError(f"dus_env.{name} needs gymnasium: pip install 'gymnasium>=1.0'")
        import importlib

        module, attribute = _GYMNASIUM_NAMES[name]
        return getattr(importlib.import_module(f".{module}", __name__), attribute)
    raise AttributeError(f"module 'dus_env' has no attribute {name!r}")


__all__ = [
    "ENV_IDS",
    "LAYOUT_VERSION",
    "PRESETS",
    "TINY_OVERRIDES",
    "ConfigError",
    "DUSEnv",
    "DUSSampler",
    "DUSVectorEnv",
    "DiscrepancyMonitor",
    "EnvConfig",
    "Evaluation",
    "FeatureFileError",
    "FeaturesTaskConfig",
    "LayoutVersionError",
    "LearnerConfig",
    "MFeatTaskConfig",
    "MissingValidationError",
    "MixtureTaskConfig",
    "ObservationLayout",
    "QuantityMapping",
    "SyntheticTaskConfig",
    "TrainingStatus",
    "UnknownOptionError",
    "balanced_accuracy",
    "evaluate",
    "modality_score",
    "participation_masks",
    "preset",
    "register_envs",
    "resolve_config",
]

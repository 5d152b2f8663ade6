"""Shared fixtures: tiny configs and a valid features file, so the suite stays fast."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from dus_env import TINY_OVERRIDES


def write_features_file(
    path: Path, n_samples: int = 120, n_classes: int = 3, dims: tuple[int, ...] = (5, 4), seed: int = 0, **extra: Any
) -> Path:
    """A small valid features file: class-dependent means so that something can be learned."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_samples) % n_classes
    arrays: dict[str, Any] = {"labels": labels}
    for j, dim in enumerate(dims):
        centres = rng.standard_normal((n_classes, dim)) * (1.5 - 0.5 * j)
        arrays[f"modality_{'audio' if j == 0 else 'video' if j == 1 else f'm{j}'}"] = (
            centres[labels] + rng.standard_normal((n_samples, dim))
        ).astype(np.float32)
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def features_file(tmp_path: Path) -> Path:
    return write_features_file(tmp_path / "features.npz")


@pytest.fixture
def make_tiny_env(features_file: Path) -> Callable[..., gym.Env]:
    """``make_tiny_env(env_id, **overrides)``: any registered id with the tiny overrides."""

    def make(env_id: str = "dus_env/Synthetic-v0", **overrides: Any) -> gym.Env:
        kwargs: dict[str, Any] = dict(TINY_OVERRIDES)
        if env_id.endswith("Features-v0"):
            kwargs["path"] = str(features_file)
        kwargs.update(overrides)
        return gym.make(env_id, **kwargs)

    return make

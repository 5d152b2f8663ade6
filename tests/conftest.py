"""Shared fixtures: tiny configs and a valid features file, so the suite stays fast."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from dus_env import TINY_OVERRIDES

# A test run started in the background of a non-interactive shell (``cmd &``) starts with SIGINT
# ignored, and its child processes inherit that: the tests that Ctrl-C a real run would see it ignored
# and wait until their timeout. A handler set here is reset to the default in every child (exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


def _has_ray_extras() -> bool:
    """Whether Ray, Tune and RLlib are installed (found, not imported: RLlib takes seconds to import)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(name) is not None for name in ("ray", "ray.tune", "ray.rllib"))
    except ImportError:  # no ray: its submodules cannot be looked up
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``ray``-marked tests need the ``ray``/``rllib`` extras: skipped without them in a plain run, but an
    error when asked for with ``-m ray`` (CI installs the extras first; a skip there would hide them)."""
    ray_items = [item for item in items if item.get_closest_marker("ray") is not None]
    if not ray_items or _has_ray_extras():
        return
    from dus_env.extras import install_command

    expression = re.sub(r"[()]", " ", config.option.markexpr or "")
    if re.search(r"\bray\b", expression) and not re.search(r"\bnot\s+ray\b", expression):
        raise pytest.UsageError(
            f"-m ray selects tests that need the ray and rllib extras, which are not installed: {install_command('rllib')}"
        )
    skip = pytest.mark.skip(reason=f"needs the ray and rllib extras: {install_command('rllib')}")
    for item in ray_items:
        item.add_marker(skip)


def tiny_env_kwargs_json(**changes: Any) -> str:
    """``--env-kwargs`` of the tiny config (:data:`dus_env.TINY_OVERRIDES`, with ``changes`` over it) as one
    JSON object: the form every driver takes, nested learner values and tuples included (JSON writes tuples as lists)."""
    return json.dumps({**TINY_OVERRIDES, **changes})


def release_locks() -> None:
    """A test process that starts several runs lets go of their folders' locks (``agents.folder_lock``
    holds each until the process ends, as a driver's run folder must be)."""
    from agents import folder_lock

    for handle in folder_lock._held:
        handle.close()
    folder_lock._held.clear()

"""RLlib support: every DUS id in Ray's env registry, stepped by RLlib's env runners as native vector envs.

Importing this module (or calling :func:`register`) registers ``dus_env/<Name>-v0`` for every
preset with ``ray.tune.registry.register_env``, so that on RLlib's new API stack::

    import dus_env.rllib
    from ray.rllib.algorithms.ppo import PPOConfig

    config = (
        PPOConfig()
        .environment("dus_env/Synthetic-v0", env_config={"decision_steps": 20})
        .env_runners(num_env_runners=2, num_envs_per_env_runner=8, **dus_env.rllib.ENV_RUNNER_SETTINGS)
        .callbacks(dus_env.rllib.SeedBlocks)
    )

trains on DUS envs. ``env_config`` holds the ``gymnasium.make`` keyword arguments of the id
(:func:`dus_env.config.resolve_config` checks them: a wrong name or value fails on the env runner
with dus_env's own message).

**Native vector envs.** RLlib builds each env runner's envs with ``gymnasium.make_vec``. With
``gym_env_vectorize_mode="vector_entry_point"`` (:data:`ENV_RUNNER_SETTINGS`) the creator is asked
for all ``num_envs_per_env_runner`` envs at once and returns one :class:`dus_env.DUSVectorEnv`:
each runner trains its models as one batched computation, as SB3's native vector env does. RLlib's
default (``"sync"``) still works, one :class:`dus_env.DUSEnv` per env in a ``SyncVectorEnv``.

**Seeds.** RLlib seeds env runner ``w`` with ``seed + w``, and a vector env's env ``i`` with
``seed + w + i``, so neighbouring runners would train on the same instances. With the callback
:class:`SeedBlocks` the runners get disjoint blocks instead: env ``i`` of runner ``w`` is reset with
``seed + w * num_envs + i`` (native vector envs only; RLlib's ``sync``/``async`` modes seed as RLlib does).

RLlib pins its own gymnasium (Ray 2.60: gymnasium 1.2.2); dus_env runs with it (README, "Scaling out").
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from .extras import require
from .registration import ENV_IDS, register_envs

# Importing this module needs RLlib: without it, one line that names the install command.
require("ray.rllib", "rllib", "dus_env.rllib")
from ray.rllib.callbacks.callbacks import RLlibCallback  # noqa: E402
from ray.tune.registry import register_env  # noqa: E402

#: What RLlib's ``.env_runners(...)`` needs for env runners to use the native vector env.
ENV_RUNNER_SETTINGS: dict[str, Any] = {"gym_env_vectorize_mode": "vector_entry_point"}


class RunnerSeeds(gym.vector.VectorWrapper):
    """A runner's native vector env, reset with the runner's own block of seeds once :class:`SeedBlocks`
    has told it the runner's index (before that, with RLlib's seeds as they come).

    :attr seeds: the seeds of the last reset that was given one (``None`` before), for checks.
    """

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self.worker_index: int | None = None
        self.seeds: list[int] | None = None

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if isinstance(seed, (int, np.integer)):
            index = self.worker_index or 0
            base = int(seed) - index + index * self.num_envs
            self.seeds = [base + i for i in range(self.num_envs)]
            seed = list(self.seeds)
        return self.env.reset(seed=seed, options=options)  # type: ignore[arg-type]  # vector envs take a seed per env


class SeedBlocks(RLlibCallback):
    """RLlib callback that gives each env runner's native vector env its block of seeds (module docstring).

    Pass it to ``.callbacks(...)`` (or subclass it: ``train_agent.py --backend rllib`` does). RLlib
    tells callbacks which runner built an env (``on_environment_created``), not env creators.
    """

    def on_environment_created(self, *, env_runner: Any, **kwargs: Any) -> None:
        wrapper = env_runner.env  # RLlib's wrappers around RunnerSeeds (its ``env`` argument is the unwrapped env)
        while wrapper is not None and not isinstance(wrapper, RunnerSeeds):
            wrapper = getattr(wrapper, "env", None)
        if wrapper is not None:
            wrapper.worker_index = int(env_runner.worker_index or 0)


def make_creator(env_id: str) -> Any:
    """The env creator RLlib calls with an ``EnvContext`` (the ``env_config`` dict plus the runner's
    index); with ``num_envs`` in it (vector entry point) a native vector env, else one env."""

    def create(env_context: Any) -> gym.Env | gym.vector.VectorEnv:
        import dus_env  # noqa: F401  (a fresh env runner process registers the gymnasium ids)

        kwargs = dict(env_context)
        num_envs = kwargs.pop("num_envs", None)
        if num_envs is None:
            return gym.make(env_id, **kwargs)
        # RLlib passes a plain dict here (``EnvContext | {"num_envs": n}`` drops the runner's index):
        # SeedBlocks sets it once the env exists.
        return RunnerSeeds(gym.make_vec(env_id, num_envs=int(num_envs), vectorization_mode="vector_entry_point", **kwargs))

    return create


def register() -> tuple[str, ...]:
    """Register every DUS id with Ray's env registry (idempotent); returns the ids."""
    register_envs()
    for env_id in ENV_IDS:
        register_env(env_id, make_creator(env_id))
    return ENV_IDS


register()

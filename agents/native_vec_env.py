"""Stable-Baselines3 on the native batched vector env: a ``VecEnv`` over :class:`dus_env.DUSVectorEnv`.

Why an adapter: SB3 algorithms and wrappers (``VecNormalize``, ``VecMonitor``) speak SB3's own
``VecEnv`` protocol (a list of per-env info dicts, the terminal observation inside the info,
reset on the same step). EnvPool's ``VecAdapter`` solved the same mismatch the same way: the
native env runs in same-step autoreset mode and this class translates its batched outputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from dus_env.vector_env import DUSVectorEnv, row_infos


def make_native_vec_env(env_id: str, num_envs: int, env_kwargs: dict[str, Any]) -> NativeVecEnv:
    """``gymnasium.make_vec(env_id, num_envs, **env_kwargs)`` in same-step autoreset mode, as an SB3 ``VecEnv``."""
    import dus_env  # noqa: F401  (registers the ids)

    venv = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs
    )
    base = venv if isinstance(venv, DUSVectorEnv) else venv.unwrapped
    if not isinstance(base, DUSVectorEnv):
        raise TypeError(f"{env_id} does not make a dus_env vector env ({type(base).__name__}): the native vector env needs a DUS env id")
    return NativeVecEnv(base)


class NativeVecEnv(VecEnv):
    """SB3 ``VecEnv`` protocol over a same-step-autoreset :class:`DUSVectorEnv` (see the module docstring).

    ``reset()`` honours the seeds given by ``seed()`` (SB3's ``set_random_seed``), so a run is
    reproducible from its seed exactly as with ``DummyVecEnv``; seeds set per env (``_seeds``, as
    DUS-R's episode groups set them) start every env's episode in one batched reset.
    """

    def __init__(self, venv: DUSVectorEnv) -> None:
        if venv.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError("NativeVecEnv needs a DUSVectorEnv in same-step autoreset mode (autoreset_mode='same_step')")
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        if any(self._options):
            raise ValueError(f"reset options {self._options} are not supported: DUS envs take no reset options")
        seeds = None if all(seed is None for seed in self._seeds) else list(self._seeds)
        observations, _ = self.venv.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async() must come before step_wait()"
        observations, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        rows = row_infos(infos, self.num_envs)
        if dones.any():
            # SB3's convention (DummyVecEnv): a done env's info is its terminal step's, with the
            # terminal observation in it; the returned observation is the new episode's first.
            finals = row_infos(infos["final_info"], self.num_envs)
            for env in np.flatnonzero(dones).tolist():
                rows[env] = finals[env]
                rows[env]["terminal_observation"] = infos["final_obs"][env]
                rows[env]["TimeLimit.truncated"] = bool(truncated[env] and not terminated[env])
        return observations, rewards.astype(np.float32), dones, rows

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attributes shared by every env (``config``, ``layout``, ``mapping``, ``render_mode``, ...)."""
        return [getattr(self.venv, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"cannot set {attr_name!r} on the envs of a native vector env: they share one config")

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        raise AttributeError(
            f"env_method({method_name!r}) is not available on a native vector env: its envs are rows of one batched "
            "computation (seed() then reset() for seeded resets)"
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def _indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices

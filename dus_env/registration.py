"""Every environment id, registered in one place by one idempotent function."""

from __future__ import annotations

import gymnasium as gym

from .presets import PRESETS

NAMESPACE = "dus_env"
ENV_IDS: tuple[str, ...] = tuple(f"{NAMESPACE}/{name}-v0" for name in PRESETS)


def register_envs() -> None:
    """Register ``dus_env/<Preset>-v0`` for every preset; calling it again changes nothing.

    ``gymnasium.make`` gives a :class:`~dus_env.env.DUSEnv`, ``gymnasium.make_vec`` the native
    :class:`~dus_env.vector_env.DUSVectorEnv` (``vectorization_mode="sync"`` a ``SyncVectorEnv``).
    """
    for name, env_id in zip(PRESETS, ENV_IDS):
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="dus_env.env:DUSEnv",
            vector_entry_point="dus_env.vector_env:DUSVectorEnv",
            kwargs={"preset_name": name},
        )

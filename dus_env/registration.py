"""Every environment id, registered in one place by one idempotent function."""

from __future__ import annotations

import difflib

import gymnasium as gym

from .presets import PRESETS
from .validation import ConfigError

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


def resolve_env_id(name: str) -> str:
    """The registered id that ``name`` means: ``dus_env/Synthetic-v0`` as it is, ``Synthetic-v0``
    with the ``dus_env/`` namespace added. Both drivers (``train_agent.py``, ``evaluate.py``) accept
    these two forms through this one function and record the full id.

    :raises ConfigError: an unknown id; the message names the closest registered ids and lists all.
    """
    register_envs()
    text = name.strip()
    for candidate in (text, f"{NAMESPACE}/{text}"):
        if candidate in ENV_IDS:
            return candidate
    short = {env_id.split("/", 1)[1]: env_id for env_id in ENV_IDS}
    close = difflib.get_close_matches(text.split("/")[-1], list(short), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(short[c] for c in close)}? " if close else ""
    raise ConfigError(
        f"unknown env id {name!r}: {hint}registered DUS envs are {', '.join(ENV_IDS)} (the {NAMESPACE}/ prefix may be left out)"
    )

"""Stable-Baselines3 on the native vector env: the VecEnv adapter with PPO, VecNormalize, VecMonitor."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

from agents.native_vec_env import make_native_vec_env
from dus_env import TINY_OVERRIDES

ENV_ID = "dus_env/Synthetic-v0"


def test_adapter_is_an_sb3_vec_env_with_terminal_infos() -> None:
    venv = make_native_vec_env(ENV_ID, 3, dict(TINY_OVERRIDES))
    assert isinstance(venv, VecEnv) and venv.num_envs == 3
    venv.seed(5)
    observations = venv.reset()
    np.testing.assert_array_equal(observations, venv.reset_with_seeds([5, 6, 7]))
    steps = TINY_OVERRIDES["decision_steps"]
    for step in range(steps):
        observations, rewards, dones, infos = venv.step(np.zeros((3, 2), dtype=np.float32))
        assert rewards.dtype == np.float32 and len(infos) == 3
    assert dones.all()
    for info in infos:
        assert info["step"] == steps and "test_fused_accuracy" in info and info["TimeLimit.truncated"] is False
        assert info["terminal_observation"].shape == observations.shape[1:]
    assert not np.array_equal(infos[0]["terminal_observation"], observations[0])  # the new episode's first
    with pytest.raises(AttributeError, match="native vector env"):
        venv.env_method("reset")


def first_rollout(seed: int) -> np.ndarray:
    venv = VecNormalize(VecMonitor(make_native_vec_env(ENV_ID, 4, dict(TINY_OVERRIDES))))
    model = PPO("MlpPolicy", venv, n_steps=4, batch_size=8, n_epochs=2, seed=seed, device="cpu")
    model.learn(48)
    assert model.num_timesteps == 48 and len(model.ep_info_buffer) > 0  # VecMonitor saw whole episodes
    return model.rollout_buffer.observations.copy()


def test_ppo_with_vecnormalize_learns_and_is_reproducible() -> None:
    a, b = first_rollout(0), first_rollout(0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, first_rollout(1))

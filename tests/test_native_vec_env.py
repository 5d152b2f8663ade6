"""Stable-Baselines3 on the native vector env: the ``VecEnv`` adapter, alone and under PPO,
``VecNormalize`` and ``VecMonitor``. The plain ``DUSVectorEnv`` (next-step autoreset) is the oracle."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

from agents.native_vec_env import NativeVecEnv, make_native_vec_env
from dus_env import TINY_OVERRIDES, DUSEnv, DUSVectorEnv

ENV_ID = "dus_env/Synthetic-v0"
T = int(TINY_OVERRIDES["decision_steps"])


def native(num_envs: int = 3) -> NativeVecEnv:
    return make_native_vec_env(ENV_ID, num_envs, dict(TINY_OVERRIDES))


def fixed_actions(num_envs: int, step: int) -> np.ndarray:
    return np.random.default_rng(2000 + step).uniform(-0.9, 0.9, size=(num_envs, 2)).astype(np.float32)


def test_make_native_vec_env_gives_an_sb3_vec_env() -> None:
    venv = native(3)
    single = DUSEnv(**TINY_OVERRIDES)
    assert isinstance(venv, VecEnv) and venv.num_envs == 3
    assert venv.observation_space == single.observation_space and venv.action_space == single.action_space
    assert venv.get_attr("config") == [venv.venv.config] * 3 and len(venv.get_attr("layout", indices=[0, 2])) == 2
    assert venv.env_is_wrapped(gym.Wrapper) == [False] * 3
    observations = venv.reset()
    assert observations.shape == (3, single.observation_space.shape[0]) and observations.dtype == np.float32


def test_env_method_and_set_attr_raise_clear_attribute_errors() -> None:
    venv = native(2)
    with pytest.raises(AttributeError, match=r"env_method\('reset'\) is not available on a native vector env.*seed\(\) then reset\(\)"):
        venv.env_method("reset")
    with pytest.raises(AttributeError, match="cannot set 'config'.*native vector env"):
        venv.set_attr("config", None)


def test_adapter_needs_a_same_step_env() -> None:
    with pytest.raises(ValueError, match="same_step"):
        NativeVecEnv(DUSVectorEnv(2, **TINY_OVERRIDES))


def test_done_infos_hold_the_terminal_step() -> None:
    """SB3's convention: a done env's info is its terminal step's, with ``terminal_observation``;
    the returned observation is the new episode's first."""
    venv = native(3)
    plain = DUSVectorEnv(3, **TINY_OVERRIDES)  # next-step autoreset: the terminal step as it is
    venv.seed(5)
    venv.reset()
    plain.reset(seed=5)
    for step in range(T):
        observations, rewards, dones, infos = venv.step(fixed_actions(3, step))
        expected_observations, expected_rewards, terminated, _, expected_infos = plain.step(fixed_actions(3, step))
        assert rewards.dtype == np.float32 and dones.dtype == np.bool_ and len(infos) == 3
        np.testing.assert_array_equal(rewards, expected_rewards.astype(np.float32))
        np.testing.assert_array_equal(dones, terminated)
        if step < T - 1:
            np.testing.assert_array_equal(observations, expected_observations)
            assert all("terminal_observation" not in info and "test_fused_accuracy" not in info for info in infos)
            assert [info["step"] for info in infos] == [step + 1] * 3
    assert dones.all()
    for i, info in enumerate(infos):
        np.testing.assert_array_equal(info["terminal_observation"], expected_observations[i])
        assert info["test_fused_accuracy"] == expected_infos["test_fused_accuracy"][i]
        assert info["quantity_totals"] == expected_infos["quantity_totals"][i].tolist()
        assert info["step"] == T and info["TimeLimit.truncated"] is False
    reset_observations, *_ = plain.step(np.zeros((3, 2), dtype=np.float32))  # plain's reset step
    np.testing.assert_array_equal(observations, reset_observations)


def test_seed_then_reset_uses_each_envs_seed() -> None:
    venv, other = native(3), native(3)
    venv.seed(11)
    observations = venv.reset()
    other._seeds = [11, 12, 13]  # per-env seeds, as DUS-R's episode groups set them
    np.testing.assert_array_equal(observations, other.reset())
    np.testing.assert_array_equal(observations, DUSVectorEnv(3, **TINY_OVERRIDES).reset(seed=11)[0])
    # The seeds are used once: the next reset() continues the generators.
    np.testing.assert_array_equal(venv.reset(), other.reset())
    assert not np.array_equal(venv.reset(), observations)


def test_reset_options_are_rejected() -> None:
    venv = native(2)
    venv.set_options({"difficulty": 3})
    with pytest.raises(ValueError, match="no reset options"):
        venv.reset()


def make_ppo(seed: int) -> PPO:
    venv = VecNormalize(VecMonitor(native(4)))
    return PPO("MlpPolicy", venv, n_steps=T, batch_size=8, n_epochs=2, seed=seed, device="cpu")


def test_ppo_with_vecmonitor_and_vecnormalize_learns() -> None:
    model = make_ppo(0)
    initial = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(3 * 4 * T)  # three rollouts of T steps in 4 envs, one update each
    assert model.num_timesteps == 3 * 4 * T
    # VecMonitor saw whole episodes of T steps; VecNormalize saw every observation.
    assert len(model.ep_info_buffer) == 3 * 4 and all(episode["l"] == T for episode in model.ep_info_buffer)
    assert model.get_env().obs_rms.count > 3 * 4 * T
    assert any(not torch.equal(a, b) for a, b in zip(initial, model.policy.parameters()))
    assert np.isfinite(model.rollout_buffer.observations).all()


def first_rollout(seed: int) -> dict[str, Any]:
    model = make_ppo(seed)
    model.learn(4 * T)
    buffer = model.rollout_buffer
    return {"observations": buffer.observations.copy(), "actions": buffer.actions.copy(), "rewards": buffer.rewards.copy()}


def test_same_seed_gives_the_same_ppo_rollouts() -> None:
    a, b, c = first_rollout(0), first_rollout(0), first_rollout(1)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(a["observations"], c["observations"])

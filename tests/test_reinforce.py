"""DUS-R: configuration, the same-instance baseline, determinism, files and the export hooks."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

import dus_env
from agents.base import check_modalities
from agents.reinforce import ReinforceAgent, ReinforceConfig, ReinforceUpdate
from dus_env.policy_artifact import ObservationNormalization

SMALL = ReinforceConfig(hidden_sizes=(16,), episodes_per_batch=4, group_size=2)


def tiny_env(env_id: str = "dus_env/Synthetic-v0") -> gym.Env:
    return gym.make(env_id, **dus_env.TINY_OVERRIDES)


def new_agent(env: gym.Env, seed: int = 0, config: ReinforceConfig = SMALL) -> ReinforceAgent:
    return ReinforceAgent(env.unwrapped.layout, env.unwrapped.mapping, config, seed=seed)


def parameters(agent: ReinforceAgent) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in agent.policy.parameters()])


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="episodes_per_batch=6 is invalid: it must be a multiple of group_size=4"):
        ReinforceConfig(episodes_per_batch=6, group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        ReinforceConfig(group_size=1)
    with pytest.raises(ValueError, match="learning_rate"):
        ReinforceConfig(learning_rate=0.0)
    assert ReinforceConfig(hidden_sizes=[8, 8]).hidden_sizes == (8, 8)


def test_untrained_policy_is_uniform_sampling() -> None:
    env = tiny_env()
    observation, _ = env.reset(seed=0)
    assert np.abs(new_agent(env).act(observation)).max() < 0.05


def test_groups_share_a_training_instance() -> None:
    env = tiny_env()
    agent = new_agent(env, config=ReinforceConfig(hidden_sizes=(16,), episodes_per_batch=6, group_size=3))
    episodes = agent._collect_batch(DummyVecEnv([lambda: env]))
    first = [episode["raw_obs"][0] for episode in episodes]
    assert [episode["group"] for episode in episodes] == [0, 0, 0, 1, 1, 1]
    # Same seed -> same task and model init -> same first validation accuracies.
    np.testing.assert_array_equal(first[0], first[1])
    np.testing.assert_array_equal(first[0], first[2])
    assert not np.array_equal(first[0], first[3])


def test_advantage_is_return_to_go_minus_the_groups_others() -> None:
    agent = new_agent(tiny_env(), config=ReinforceConfig(episodes_per_batch=4, group_size=2))
    episodes = [
        {"rewards": [1.0, 2.0], "group": 0},
        {"rewards": [3.0, 0.0], "group": 0},
        {"rewards": [0.0, 0.0], "group": 1},
        {"rewards": [5.0], "group": 1},  # ended early: return-to-go 0 after its end
    ]
    advantages = agent._advantages(episodes)
    np.testing.assert_allclose(advantages[0], [3.0 - 3.0, 2.0 - 0.0])
    np.testing.assert_allclose(advantages[1], [3.0 - 3.0, 0.0 - 2.0])
    np.testing.assert_allclose(advantages[2], [0.0 - 5.0, 0.0 - 0.0])
    np.testing.assert_allclose(advantages[3], [5.0 - 0.0])


def test_training_is_deterministic_for_a_seed_and_reports_updates() -> None:
    updates: list[ReinforceUpdate] = []
    a = new_agent(tiny_env(), seed=7).train(tiny_env(), 32, callback=lambda _, u: updates.append(u))
    b = new_agent(tiny_env(), seed=7).train(tiny_env(), 32)
    c = new_agent(tiny_env(), seed=8).train(tiny_env(), 32)
    assert torch.equal(parameters(a), parameters(b))
    assert not torch.equal(parameters(a), parameters(c))
    assert a.num_timesteps == 32 and [u.num_timesteps for u in updates] == [16, 32]
    assert len(updates[0].infos) == 16 and "test_fused_accuracy" in updates[0].infos[3]
    assert updates[0].episode_lengths == [4, 4, 4, 4]


def test_callback_can_stop_training() -> None:
    agent = new_agent(tiny_env()).train(tiny_env(), 10_000, callback=lambda *_: False)
    assert agent.num_timesteps == 16


def test_train_refuses_a_batch_that_does_not_fill_the_envs() -> None:
    venv = DummyVecEnv([tiny_env, tiny_env, tiny_env])
    with pytest.raises(ValueError, match="not a multiple of the 3 parallel envs"):
        new_agent(tiny_env()).train(venv, 16)
    with pytest.raises(ValueError, match="was built for"):
        new_agent(tiny_env()).train(tiny_env("dus_env/Synthetic3-v0"), 16)


def test_save_load_roundtrip_resumes_exactly(tmp_path: Path) -> None:
    env = tiny_env()
    agent = new_agent(env, seed=3).train(env, 16)
    path = agent.save(tmp_path / "agent.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["agent.pt"]  # no temporary file left behind
    loaded = ReinforceAgent.load(path, env)
    observation, _ = env.reset(seed=1)
    np.testing.assert_array_equal(agent.act(observation), loaded.act(observation))
    assert loaded.num_timesteps == 16 and loaded.config == agent.config
    # Optimiser, statistics and generators are restored: continuing gives the same weights.
    agent.train(tiny_env(), 16)
    loaded.train(tiny_env(), 16)
    assert torch.equal(parameters(agent), parameters(loaded))


def test_load_from_a_run_directory(tmp_path: Path) -> None:
    env = tiny_env()
    new_agent(env).save(tmp_path / "final_model.pt")
    assert ReinforceAgent.load(str(tmp_path), env).num_timesteps == 0


def test_load_errors(tmp_path: Path) -> None:
    env = tiny_env()
    with pytest.raises(FileNotFoundError, match="no DUS-R policy"):
        ReinforceAgent.load(tmp_path / "missing.pt", env)
    (tmp_path / "corrupt.pt").write_bytes(b"\x00\x01 definitely not torch")
    with pytest.raises(ValueError, match="cannot read .* as a DUS-R policy"):
        ReinforceAgent.load(tmp_path / "corrupt.pt", env)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a DUS-R policy file"):
        ReinforceAgent.load(tmp_path / "foreign.pt", env)
    (tmp_path / "sb3_run").mkdir()
    (tmp_path / "sb3_run" / "final_model.zip").write_bytes(b"")
    with pytest.raises(ValueError, match="Stable-Baselines3 run, not a DUS-R one"):
        ReinforceAgent.load(tmp_path / "sb3_run", env)
    new_agent(tiny_env("dus_env/Synthetic3-v0")).save(tmp_path / "three.pt")
    with pytest.raises(ValueError, match="trained on 3 modalities, the env has 2"):
        ReinforceAgent.load(tmp_path / "three.pt", env)


def test_a_policy_for_another_modality_count_is_refused_as_every_loader_does(tmp_path: Path) -> None:
    new_agent(tiny_env("dus_env/Synthetic3-v0")).save(tmp_path / "three.pt")
    with pytest.raises(ValueError) as error:
        ReinforceAgent.load(tmp_path / "three.pt", tiny_env())
    with pytest.raises(ValueError) as shared:
        check_modalities(3, 2, tmp_path / "three.pt")
    assert str(error.value) == str(shared.value)
    check_modalities(2, 2, tmp_path / "two.pt")


def test_normalize_is_the_exported_formula_on_the_running_statistics() -> None:
    env = tiny_env()
    agent = new_agent(env, config=ReinforceConfig(hidden_sizes=(16,), episodes_per_batch=4, group_size=2, clip_obs=0.5)).train(env, 16)
    observations = np.stack([env.reset(seed=s)[0] for s in range(3)]) * 4.0
    normalized = agent.normalize(observations)
    by_hand = np.clip((observations - agent.obs_rms.mean) / np.sqrt(agent.obs_rms.var + 1e-8), -0.5, 0.5).astype(np.float32)
    np.testing.assert_array_equal(normalized, by_hand)
    statistics = ObservationNormalization(agent.obs_rms.mean, agent.obs_rms.var, 1e-8, 0.5)
    np.testing.assert_array_equal(normalized, statistics.apply(observations.astype(np.float64)))
    assert normalized.dtype == np.float32 and np.abs(normalized).max() == pytest.approx(0.5)


def test_actor_module_and_normalization_reproduce_act() -> None:
    env = tiny_env()
    agent = new_agent(env).train(env, 16)
    mean, var, epsilon, clip = agent.observation_normalization()
    observations = np.stack([env.reset(seed=s)[0] for s in range(3)])
    normalized = np.clip((observations - mean) / np.sqrt(var + epsilon), -clip, clip).astype(np.float32)
    with torch.no_grad():
        actions = agent.actor_module()(torch.from_numpy(normalized)).numpy()
    assert actions.shape == (3, 2) and np.all(np.abs(actions) <= 1.0)
    for observation, action in zip(observations, actions):
        np.testing.assert_allclose(agent.act(observation), action, rtol=1e-5, atol=1e-6)
    unnormalized = new_agent(env, config=ReinforceConfig(hidden_sizes=(16,), normalize_obs=False))
    assert unnormalized.observation_normalization() is None

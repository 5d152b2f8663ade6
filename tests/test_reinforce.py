"""DUS-R as an SB3 algorithm: the grouped baseline, shared reset seeds, determinism, learning, files, train_agent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import dus_env
from agents.export import SB3DeterministicActor
from agents.native_vec_env import make_native_vec_env
from agents.reinforce import Reinforce, group_advantages
from agents.sb3_agent import SB3Agent, get_algorithm_class
from dus_env.policy_artifact import PolicyArtifact
from dus_env.sampler import DUSSampler

ROOT = Path(__file__).resolve().parents[1]
TINY_JSON = json.dumps(dus_env.TINY_OVERRIDES, default=list)


class Preference(gym.Env):
    """Three-step episodes; the reward is ``a[0] - a[1]`` (clipped actions): pushing modality 0 up and
    1 down is clearly better. The observation's first slot is drawn at reset, so it names the seed."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t, self.start = 0, float(self.np_random.uniform(-1.0, 1.0))
        return np.array([self.start, 0.0], np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        action = np.clip(action, -1.0, 1.0)
        return np.array([self.start, self.t / 3], np.float32), float(action[0] - action[1]), self.t >= 3, False, {}


def preference_model(n_envs: int = 2, seed: int = 0, **kwargs: Any) -> Reinforce:
    settings = {"episodes_per_batch": 4, "group_size": 2, "policy_kwargs": {"net_arch": [8]}, **kwargs}
    return Reinforce("MlpPolicy", DummyVecEnv([Preference for _ in range(n_envs)]), seed=seed, **settings)


def parameters(model: Reinforce) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


class KeepBatches(BaseCallback):
    """Records the first observation of every env at each rollout's steps."""

    def __init__(self) -> None:
        super().__init__()
        self.rounds: list[np.ndarray] = []

    def _on_step(self) -> bool:
        if self.locals["obs_steps"] == []:  # the first step of a round: observations straight after the seeded reset
            self.rounds.append(np.array(self.locals["observations"]))
        return True


def test_leave_one_out_baseline_by_hand() -> None:
    rewards = np.array([[1.0, 2.0, 3.0], [2.0, 0.0, 1.0], [0.0, 1.0, 9.0], [4.0, 0.0, 0.0]])
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=bool)  # episode 2 ended early
    # Returns-to-go: [6, 5, 3], [3, 1, 1] (group 0); [1, 1, 0] (the 9 is after its end), [4, 0, 0] (group 1).
    expected = [[6 - 3, 5 - 1, 3 - 1], [3 - 6, 1 - 5, 1 - 3], [1 - 4, 1 - 0, 0], [4 - 1, 0 - 1, 0 - 0]]
    np.testing.assert_allclose(group_advantages(rewards, mask, 2, 1.0), expected)
    # Three per group: the baseline is the mean of the two others; gamma discounts the return-to-go.
    three = group_advantages(np.array([[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]]), np.ones((3, 2), bool), 3, 0.5)
    np.testing.assert_allclose(three, [[1.5 - 1.0, 1.0 - 0.0], [0.0 - 1.75, 0.0 - 0.5], [2.0 - 0.75, 0.0 - 0.5]])


def test_registered_as_an_sb3_algorithm_with_an_exportable_actor() -> None:
    assert get_algorithm_class("reinforce") is Reinforce
    model = preference_model()
    assert SB3DeterministicActor(model.policy).kind == "deterministic_actor"
    observations = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    action, _ = model.predict(observations, deterministic=True)
    with torch.no_grad():
        np.testing.assert_array_equal(action, model.policy.actor(torch.from_numpy(observations)).numpy())
    assert np.abs(action).max() < 0.05  # the untrained policy is uniform sampling (action 0)


def test_bad_values_name_the_argument() -> None:
    env = DummyVecEnv([Preference for _ in range(3)])
    with pytest.raises(ValueError, match=r"Reinforce.group_size=1 is invalid"):
        Reinforce("MlpPolicy", env, group_size=1, episodes_per_batch=3)
    with pytest.raises(ValueError, match=r"Reinforce.episodes_per_batch=6 is invalid: it must be a multiple of group_size=4"):
        Reinforce("MlpPolicy", env, group_size=4, episodes_per_batch=6)
    with pytest.raises(ValueError, match=r"Reinforce.episodes_per_batch=4 is invalid: it must be a multiple of n_envs=3"):
        Reinforce("MlpPolicy", env, group_size=2, episodes_per_batch=4)
    with pytest.raises(ValueError, match=r"Reinforce.policy_kwargs.log_std_init=5"):
        Reinforce("MlpPolicy", env, group_size=3, episodes_per_batch=3, policy_kwargs={"log_std_init": 5})
    with pytest.raises(ValueError, match=r"unknown key 'hidden_sizes'"):
        Reinforce("MlpPolicy", env, group_size=3, episodes_per_batch=3, policy_kwargs={"hidden_sizes": [8]})


def test_groups_share_reset_seeds_across_rounds() -> None:
    model = preference_model(n_envs=2, episodes_per_batch=8, group_size=4)
    batch = model.collect_batch(_started(model))
    assert batch is not None and batch.mask.shape == (8, 3) and batch.mask.all()
    starts = batch.observations[:, 0, 0].numpy()  # the value drawn at reset: same seed, same value
    assert len(set(starts[:4])) == 1 and len(set(starts[4:])) == 1 and starts[0] != starts[4]


@pytest.mark.parametrize("vec", ["native", "dummy"])
def test_groups_start_from_the_same_dus_task_instance(vec: str) -> None:
    """Same reset seed -> same task, data order and model init -> the same first observation (native
    and dummy vector envs take per-env seeds the same way, through VecNormalize)."""
    if vec == "native":
        venv = make_native_vec_env("dus_env/Synthetic-v0", 4, dict(dus_env.TINY_OVERRIDES))
    else:
        venv = DummyVecEnv([lambda: gym.make("dus_env/Synthetic-v0", **dus_env.TINY_OVERRIDES) for _ in range(4)])
    model = Reinforce(
        "MlpPolicy", VecNormalize(venv, norm_reward=False), episodes_per_batch=4, group_size=2, seed=1, policy_kwargs={"net_arch": [8]}
    )
    keep = KeepBatches()
    model.learn(16, callback=keep)
    first = keep.rounds[0]  # normalised with the same statistics: equal raw observations stay equal
    np.testing.assert_array_equal(first[0], first[1])
    np.testing.assert_array_equal(first[2], first[3])
    assert not np.array_equal(first[0], first[2])
    venv.close()


def test_same_seed_same_weights_and_global_random_state_untouched() -> None:
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    runs = [preference_model(seed=seed).learn(48) for seed in (3, 3, 4)]
    assert torch.equal(parameters(runs[0]), parameters(runs[1]))
    assert not torch.equal(parameters(runs[0]), parameters(runs[2]))
    assert runs[0].num_timesteps == 48 and runs[0]._n_updates == 4
    assert torch.equal(torch.random.get_rng_state(), torch_state) and np.array_equal(np.random.get_state()[1], numpy_state)


def test_the_mean_action_moves_toward_the_better_allocation() -> None:
    model = preference_model(n_envs=4, episodes_per_batch=8, group_size=4, learning_rate=0.01)
    observation = np.array([[0.0, 0.0]], np.float32)
    before, _ = model.predict(observation, deterministic=True)
    model.learn(24 * 40)
    after, _ = model.predict(observation, deterministic=True)
    assert abs(before[0, 0] - before[0, 1]) < 0.05
    assert after[0, 0] - after[0, 1] > 0.5, after


def test_save_load_round_trip_continues_training(tmp_path: Path) -> None:
    model = preference_model(seed=5).learn(24)
    model.save(tmp_path / "model.zip")
    loaded = Reinforce.load(tmp_path / "model.zip", env=DummyVecEnv([Preference for _ in range(2)]), device="cpu")
    assert torch.equal(parameters(model), parameters(loaded))
    assert (loaded.num_timesteps, loaded.episodes_per_batch, loaded.group_size, loaded.policy.net_arch) == (24, 4, 2, [8])
    observations = np.random.default_rng(1).normal(size=(3, 2)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(observations, deterministic=True)[0], loaded.predict(observations, deterministic=True)[0])
    loaded.set_random_seed(9)
    loaded.learn(12, reset_num_timesteps=False)
    assert loaded.num_timesteps == 36 and not torch.equal(parameters(model), parameters(loaded))
    # Settings that the constructor's defaults would refuse (6 episodes over 3 envs; the default 8 is no multiple of 3).
    three = preference_model(n_envs=3, episodes_per_batch=6, group_size=2)
    three.save(tmp_path / "three.zip")
    assert Reinforce.load(tmp_path / "three.zip", env=DummyVecEnv([Preference for _ in range(3)])).episodes_per_batch == 6


def test_a_stopping_callback_ends_training_before_the_update() -> None:
    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            return self.n_calls < 2

    model = preference_model()
    before = parameters(model)
    model.learn(1000, callback=Stop())
    assert model.num_timesteps == 4 and torch.equal(before, parameters(model))


def _started(model: Reinforce) -> BaseCallback:
    """A callback ready for ``collect_batch`` (as ``learn`` prepares one)."""
    _, callback = model._setup_learn(1, None)
    callback.on_training_start(locals(), globals())
    return callback


@pytest.mark.slow
def test_train_agent_reinforce_checkpoints_resumes_and_exports(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    options = [
        "--algo",
        "reinforce",
        "--run-dir",
        str(run_dir),
        "--n-envs",
        "2",
        "--env-kwargs",
        TINY_JSON,
        "--hyperparams",
        "episodes_per_batch=4",
        "group_size=2",
        "policy_kwargs=dict(net_arch=[8])",
        "--eval-freq",
        "0",
        "--eval-episodes",
        "2",
        "--checkpoint-freq",
        "32",
        "--no-progress",
    ]

    def train(*extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, str(ROOT / "train_agent.py"), *options, *extra], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr
        return result

    train("--timesteps", "48")
    assert (run_dir / "checkpoints" / "rl_model_32_steps.zip").is_file() and (run_dir / "vecnormalize.pkl").is_file()
    # eval-freq 0: one evaluation at the end, and the best model with it.
    assert np.load(run_dir / "eval" / "evaluations.npz")["timesteps"].tolist() == [48]
    assert (run_dir / "best_model" / "best_model.zip").is_file()
    resumed = train("--resume", "--timesteps", "80")
    assert "resuming" in resumed.stdout
    agent = SB3Agent.load(run_dir, gym.make("dus_env/Synthetic-v0", **dus_env.TINY_OVERRIDES))
    assert isinstance(agent.model, Reinforce) and agent.model.num_timesteps == 80
    # The export runs in DUSSampler and gives the policy's own actions.
    DUSSampler.from_artifact(run_dir / "exported", n_classes=10, iterations_per_decision=2, total_decisions=4, backend="torch")
    observation = gym.make("dus_env/Synthetic-v0", **dus_env.TINY_OVERRIDES).reset(seed=3)[0]
    exported = PolicyArtifact(run_dir / "exported", "torch").act(observation[None])[0]
    np.testing.assert_allclose(exported, agent.act(observation), atol=1e-5)

"""The environment's contract: spaces, checkers, seeding, episodes, rewards, errors, pickling."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dus_env
from dus_env import DUSEnv

ALL_ENV_IDS = list(dus_env.ENV_IDS)

MakeEnv = Callable[..., gym.Env]


def rollout(env: gym.Env, seed: int, actions: list[np.ndarray] | None = None) -> list[tuple[Any, ...]]:
    observation, info = env.reset(seed=seed)
    steps: list[tuple[Any, ...]] = [(observation, info)]
    index = 0
    while True:
        action = actions[index] if actions is not None else np.full(env.action_space.shape, 0.3 * (-1) ** index, dtype=np.float32)
        index += 1
        observation, reward, terminated, truncated, info = env.step(action)
        steps.append((observation, reward, terminated, truncated, info))
        if terminated or truncated:
            return steps


def same_episode(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    if len(a) != len(b):
        return False
    for step_a, step_b in zip(a, b):
        if not np.array_equal(step_a[0], step_b[0]) or step_a[1:-1] != step_b[1:-1] or step_a[-1] != step_b[-1]:
            return False
    return True


def test_every_preset_is_registered_once() -> None:
    assert set(ALL_ENV_IDS) == {f"dus_env/{name}-v0" for name in dus_env.PRESETS}
    for required in ("Synthetic", "Synthetic3", "SyntheticHard", "MFeat", "Features"):
        assert f"dus_env/{required}-v0" in gym.registry
    dus_env.register_envs()  # idempotent: no error, no duplicate
    assert sum(1 for env_id in gym.registry if env_id.startswith("dus_env/")) == len(ALL_ENV_IDS)


@pytest.mark.parametrize("env_id", ALL_ENV_IDS)
def test_gymnasium_and_sb3_checkers_pass(env_id: str, make_tiny_env: MakeEnv) -> None:
    env = make_tiny_env(env_id)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(make_tiny_env(env_id).unwrapped, warn=True)


@pytest.mark.parametrize("env_id", ALL_ENV_IDS)
def test_same_seed_same_episode_bit_for_bit(env_id: str, make_tiny_env: MakeEnv) -> None:
    first = rollout(make_tiny_env(env_id), seed=7)
    second = rollout(make_tiny_env(env_id), seed=7)
    assert same_episode(first, second)
    assert not same_episode(first, rollout(make_tiny_env(env_id), seed=8))


def test_reset_reseeds_everything_regardless_of_global_rng(make_tiny_env: MakeEnv) -> None:
    env = make_tiny_env()
    first = rollout(env, seed=3)
    torch.manual_seed(12345)
    np.random.seed(54321)
    torch.rand(100)
    assert same_episode(first, rollout(env, seed=3))  # same env object, global RNGs disturbed


def test_episode_length_termination_and_return_telescopes(make_tiny_env: MakeEnv) -> None:
    env = make_tiny_env(decision_steps=5, reward_scale=2.0)
    steps = rollout(env, seed=0)
    assert len(steps) == 6
    assert [s[2] for s in steps[1:]] == [False] * 4 + [True]
    assert not any(s[3] for s in steps[1:])
    start = steps[0][1]["val_fused_accuracy"]
    final = steps[-1][-1]["val_fused_accuracy"]
    assert sum(s[1] for s in steps[1:]) == pytest.approx(2.0 * (final - start), abs=1e-9)
    progress = env.unwrapped.layout.index("progress")
    assert [float(s[0][progress][0]) for s in steps] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_gap_penalty_is_reported_and_summed(make_tiny_env: MakeEnv) -> None:
    env = make_tiny_env(gap_penalty=0.5)
    _, info = env.reset(seed=0)
    gap = lambda i: max(i["val_modality_accuracies"]) - min(i["val_modality_accuracies"])  # noqa: E731
    previous = info
    for _ in range(3):
        _, reward, _, _, info = env.step(env.action_space.sample())
        assert reward == pytest.approx(info["reward_accuracy_gain"] + info["reward_gap_penalty"])
        assert info["reward_gap_penalty"] == pytest.approx(-0.5 * (gap(info) - gap(previous)))
        assert info["reward_accuracy_gain"] == pytest.approx(info["val_fused_accuracy"] - previous["val_fused_accuracy"])
        previous = info


def test_final_info_reports_test_accuracy_and_quantities(make_tiny_env: MakeEnv) -> None:
    env = make_tiny_env()
    actions = [np.array([1.0, -1.0], dtype=np.float32)] * 4
    info = rollout(env, seed=1, actions=actions)[-1][-1]
    config = env.unwrapped.config
    assert 0.0 <= info["test_fused_accuracy"] <= 1.0
    assert len(info["test_modality_accuracies"]) == 2
    assert info["quantity_history"] == [[config.max_quantity, config.min_quantity]] * 4
    assert info["quantity_totals"] == [
        4 * config.iterations_per_step * config.max_quantity,
        4 * config.iterations_per_step * config.min_quantity,
    ]
    assert info["diverged"] is False


def test_out_of_range_actions_are_clipped(make_tiny_env: MakeEnv) -> None:
    clipped = rollout(make_tiny_env(), seed=2, actions=[np.array([1.0, -1.0], dtype=np.float32)] * 4)
    beyond = rollout(make_tiny_env(), seed=2, actions=[np.array([9.0, -4.0], dtype=np.float32)] * 4)
    assert same_episode(clipped, beyond)


@pytest.mark.parametrize("bad", [[np.nan, 0.0], [0.0, np.inf]])
def test_non_finite_action_raises_value_error(make_tiny_env: MakeEnv, bad: list[float]) -> None:
    env = make_tiny_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.array(bad, dtype=np.float32))


def test_step_before_reset_and_after_end_asks_for_reset() -> None:
    env = DUSEnv(**dus_env.TINY_OVERRIDES)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(2, dtype=np.float32))
    env.reset(seed=0)
    for _ in range(env.config.decision_steps):
        env.step(np.zeros(2, dtype=np.float32))
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(2, dtype=np.float32))


def test_divergence_ends_episode_with_penalty_not_crash(make_tiny_env: MakeEnv) -> None:
    env = make_tiny_env(optimizer="sgd", lr=1e30, momentum=0.0, divergence_penalty=3.0)
    observation, _ = env.reset(seed=0)
    for _ in range(env.unwrapped.config.decision_steps):
        observation, reward, terminated, _, info = env.step(np.zeros(2, dtype=np.float32))
        assert np.all(np.isfinite(observation)) and env.observation_space.contains(observation)
        if info["diverged"]:
            break
    assert info["diverged"] is True and terminated is True and reward == -3.0
    assert info["reward_divergence_penalty"] == -3.0 and info["reward_accuracy_gain"] == 0.0
    assert all(np.isfinite(info["cumulative_scores"])) and "test_fused_accuracy" in info


def test_observation_layout_names_every_slot(make_tiny_env: MakeEnv) -> None:
    env = make_tiny_env("dus_env/Synthetic3-v0")
    layout = env.unwrapped.layout
    observation, info = env.reset(seed=0)
    assert len(layout.names()) == observation.shape[0] == layout.size
    assert layout.read(observation, "last_share").tolist() == pytest.approx([1 / 3] * 3)
    assert layout.read(observation, "val_fused_accuracy")[0] == pytest.approx(info["val_fused_accuracy"], abs=1e-6)
    observation, *_ = env.step(np.zeros(3, dtype=np.float32))
    scores = env.unwrapped.monitor.cumulative[0]
    assert layout.read(observation, "cumulative_score") == pytest.approx(scores, abs=1e-6)
    assert layout.read(observation, "score_gap") == pytest.approx(scores - scores.mean(), abs=1e-6)


def test_unsupported_render_mode_is_refused_by_name(make_tiny_env: MakeEnv) -> None:
    with pytest.raises(TypeError, match="render_mode='human' is not supported"):
        make_tiny_env(render_mode="human")


def test_render_ansi_is_one_line(make_tiny_env: MakeEnv) -> None:
    env = make_tiny_env(render_mode="ansi")
    env.reset(seed=0)
    env.step(np.zeros(2, dtype=np.float32))
    text = env.render()
    assert isinstance(text, str) and "\n" not in text and "step 1/4" in text


def test_pickled_env_continues_identically(make_tiny_env: MakeEnv) -> None:
    env = make_tiny_env()
    env.reset(seed=4)
    env.step(np.array([0.5, -0.5], dtype=np.float32))
    clone = pickle.loads(pickle.dumps(env))
    for action in ([0.2, 0.1], [-1.0, 1.0]):
        a = env.step(np.array(action, dtype=np.float32))
        b = clone.step(np.array(action, dtype=np.float32))
        assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_sync_vector_env_runs_all_envs(make_tiny_env: MakeEnv) -> None:
    envs = gym.vector.SyncVectorEnv([lambda: make_tiny_env() for _ in range(2)])
    observations, _ = envs.reset(seed=[0, 1])
    assert observations.shape == (2, 15) and not np.array_equal(observations[0], observations[1])
    observations, rewards, _, _, _ = envs.step(np.zeros((2, 2), dtype=np.float32))
    assert observations.shape == (2, 15) and rewards.shape == (2,)


@pytest.mark.slow
def test_sb3_subproc_vec_env_with_forkserver() -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    # "dus_env:" makes gymnasium import the package inside each fresh worker process first.
    vec = make_vec_env(
        "dus_env:dus_env/Synthetic-v0",
        n_envs=2,
        seed=0,
        env_kwargs=dict(dus_env.TINY_OVERRIDES),
        vec_env_cls=SubprocVecEnv,
        vec_env_kwargs={"start_method": "forkserver"},
    )
    try:
        observations = vec.reset()
        assert observations.shape == (2, 15)
        episode_ends = 0
        for _ in range(6):  # crosses an episode boundary (4 steps): auto-reset works across processes
            observations, _, dones, infos = vec.step(np.zeros((2, 2), dtype=np.float32))
            episode_ends += int(dones.sum())
            assert all(("test_fused_accuracy" in info) == done for info, done in zip(infos, dones))
        assert episode_ends == 2 and np.all(np.isfinite(observations))
    finally:
        vec.close()


def test_reset_rejects_unknown_options(make_tiny_env: MakeEnv) -> None:
    with pytest.raises(ValueError, match="not supported"):
        make_tiny_env().reset(seed=0, options={"difficulty": 3})

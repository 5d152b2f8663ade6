"""The native vector env: API over every id, infos, autoreset, seeding, equivalence with DUSEnv, faults."""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import dus_env
from dus_env import TINY_OVERRIDES, DUSVectorEnv

from .conftest import write_features_file

ALL_ENV_IDS = list(dus_env.ENV_IDS)
ACTIONS = [np.array([0.6, -0.6]), np.array([-0.3, 0.8]), np.array([0.0, 0.0])]


@pytest.fixture
def tiny_kwargs(tmp_path) -> Any:
    def kwargs(env_id: str, **extra: Any) -> dict[str, Any]:
        values: dict[str, Any] = dict(TINY_OVERRIDES)
        if env_id.endswith("Features-v0"):
            values["path"] = str(write_features_file(tmp_path / "features.npz"))
        return {**values, **extra}

    return kwargs


def fixed_actions(num_envs: int, n_modalities: int, step: int) -> np.ndarray:
    """Different, non-uniform actions per env and step (deterministic)."""
    rng = np.random.default_rng(1000 + step)
    return rng.uniform(-0.9, 0.9, size=(num_envs, n_modalities)).astype(np.float32)


@pytest.mark.parametrize("env_id", ALL_ENV_IDS)
def test_make_vec_gives_the_native_env_for_every_id(env_id: str, tiny_kwargs) -> None:
    kwargs = tiny_kwargs(env_id)
    envs = gym.make_vec(env_id, num_envs=3, **kwargs)
    single = gym.make(env_id, **kwargs)
    assert isinstance(envs, DUSVectorEnv)
    assert envs.single_observation_space == single.observation_space and envs.single_action_space == single.action_space
    observations, infos = envs.reset(seed=0)
    assert observations.shape == (3, single.observation_space.shape[0]) and observations.dtype == np.float32
    assert observations in envs.observation_space
    m = envs.n_modalities
    for step in range(envs.config.decision_steps):
        observations, rewards, terminated, truncated, infos = envs.step(fixed_actions(3, m, step))
        assert observations in envs.observation_space
        assert rewards.dtype == np.float64 and rewards.shape == (3,)
        assert terminated.dtype == np.bool_ and not truncated.any()
        assert terminated.all() == (step == envs.config.decision_steps - 1)
    assert infos["_test_fused_accuracy"].all() and infos["quantity_totals"].shape == (3, m)
    sync = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", **kwargs)
    assert isinstance(sync, gym.vector.SyncVectorEnv)


def test_infos_are_arrays_with_masks(tiny_kwargs) -> None:
    envs = gym.make_vec("dus_env/Synthetic3-v0", num_envs=4, **tiny_kwargs("Synthetic3"))
    _, infos = envs.reset(seed=3)
    assert infos["step"].tolist() == [0, 0, 0, 0] and infos["_step"].all()
    _, _, _, _, infos = envs.step(fixed_actions(4, 3, 0))
    for key in ("quantities", "val_modality_accuracies", "cumulative_scores"):
        assert infos[key].shape == (4, 3) and infos[f"_{key}"].all()
    assert (infos["quantities"].sum(axis=1) == 3 * envs.config.base_batch_size).all()
    assert "test_fused_accuracy" not in infos  # only at the end of an episode


def test_next_step_autoreset(tiny_kwargs) -> None:
    envs = gym.make_vec("dus_env/Synthetic-v0", num_envs=2, **tiny_kwargs("Synthetic"))
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    envs.reset(seed=0)
    for step in range(envs.config.decision_steps):
        _, _, terminated, _, infos = envs.step(fixed_actions(2, 2, step))
    assert terminated.all() and infos["_test_fused_accuracy"].all()
    # The next step resets: its action is ignored (even NaN), reward 0, a new episode's first info.
    observations, rewards, terminated, _, infos = envs.step(np.full((2, 2), np.nan, dtype=np.float32))
    assert rewards.tolist() == [0.0, 0.0] and not terminated.any() and infos["step"].tolist() == [0, 0]
    assert not infos.get("_test_fused_accuracy", np.zeros(2, bool)).any()
    _, rewards, terminated, _, infos = envs.step(fixed_actions(2, 2, 0))
    assert infos["step"].tolist() == [1, 1] and not terminated.any()


def test_same_step_autoreset(tiny_kwargs) -> None:
    envs = gym.make_vec("dus_env/Synthetic-v0", num_envs=2, autoreset_mode="same_step", **tiny_kwargs("Synthetic"))
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    envs.reset(seed=0)
    for step in range(envs.config.decision_steps):
        observations, _, terminated, _, infos = envs.step(fixed_actions(2, 2, step))
    assert terminated.all() and infos["_final_obs"].all() and infos["_final_info"].all()
    assert infos["step"].tolist() == [0, 0]  # the new episodes' first info
    assert infos["final_info"]["step"].tolist() == [envs.config.decision_steps] * 2
    assert infos["final_info"]["_test_fused_accuracy"].all()
    assert not np.array_equal(infos["final_obs"][0], observations[0])
    with pytest.raises(ValueError, match="next_step' or 'same_step"):
        gym.make_vec("dus_env/Synthetic-v0", num_envs=2, autoreset_mode="disabled")


def test_env_i_equals_dusenv_with_seed_plus_i(tiny_kwargs) -> None:
    kwargs = tiny_kwargs("Synthetic")
    envs = gym.make_vec("dus_env/Synthetic-v0", num_envs=3, **kwargs)
    observations, _ = envs.reset(seed=40)
    actions = fixed_actions(3, 2, 0)
    vector_step = envs.step(actions)
    core = envs.unwrapped.core
    for i in range(3):
        single = gym.make("dus_env/Synthetic-v0", **kwargs)
        observation, _ = single.reset(seed=40 + i)
        np.testing.assert_allclose(observations[i], observation, atol=1e-5)
        task, vector_task = single.unwrapped.task, core.task(i)
        for split in ("train", "val", "test"):
            a, b = getattr(task, split), getattr(vector_task, split)
            assert torch.equal(a.labels, b.labels) and all(torch.equal(x, y) for x, y in zip(a.features, b.features))
        # Model initialisation, exactly (before any training step: compare a fresh reset).
        fresh = gym.make_vec("dus_env/Synthetic-v0", num_envs=3, **kwargs)
        fresh.reset(seed=40)
        single_state = single.unwrapped.model.state_dict()
        vector_state = fresh.unwrapped.core.model.to_module(i).state_dict()
        assert all(torch.equal(single_state[name], vector_state[name]) for name in single_state)
        observation, reward, *_ = single.step(actions[i])
        np.testing.assert_allclose(vector_step[0][i], observation, atol=1e-5)
        assert vector_step[1][i] == pytest.approx(reward, abs=1e-5)


@pytest.mark.slow
def test_full_episodes_agree_with_dusenv_statistically() -> None:
    """Full episodes of env i and of a DUSEnv with the same seed and actions.

    Batched kernels (a different batch of matrix products, rows padded to the batch's widths) can
    change the last bits of a result, and over 200 training iterations such differences may grow:
    the final accuracies are compared over 8 seeds, paired. They must agree closely on average and
    show no significant difference.
    """
    from scipy import stats

    kwargs = {"decision_steps": 6, "iterations_per_step": 5}
    envs = gym.make_vec("dus_env/Synthetic-v0", num_envs=8, **kwargs)
    envs.reset(seed=500)
    for step in range(6):
        _, _, _, _, infos = envs.step(fixed_actions(8, 2, step))
    vector = infos["test_fused_accuracy"]
    single_results = []
    for i in range(8):
        env = gym.make("dus_env/Synthetic-v0", **kwargs)
        env.reset(seed=500 + i)
        for step in range(6):
            *_, info = env.step(fixed_actions(8, 2, step)[i])
        single_results.append(info["test_fused_accuracy"])
    differences = vector - np.array(single_results)
    assert np.abs(differences).mean() < 0.01
    if np.abs(differences).max() > 0:
        assert stats.ttest_rel(vector, single_results).pvalue > 0.05


def test_seeding(tiny_kwargs) -> None:
    kwargs = tiny_kwargs("Synthetic")

    def episode(seed: Any) -> list[np.ndarray]:
        envs = gym.make_vec("dus_env/Synthetic-v0", num_envs=3, **kwargs)
        outputs = [envs.reset(seed=seed)[0]]
        for step in range(envs.config.decision_steps):
            observations, rewards, *_ = envs.step(fixed_actions(3, 2, step))
            outputs += [observations, rewards]
        return outputs

    first, second = episode(7), episode(7)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))  # bit-identical batches
    assert not np.array_equal(first[-2][0], first[-2][1])  # envs of one batch differ
    listed = episode([9, 7, 8])
    np.testing.assert_array_equal(listed[0][1], first[0][0])  # seed list: env 1 got seed 7
    envs = gym.make_vec("dus_env/Synthetic-v0", num_envs=3, **kwargs)
    again = envs.reset(seed=7)[0]
    assert not np.array_equal(envs.reset()[0], again)  # no seed: the generators continue
    for bad, match in (([1, 2], "3 values, expected 3|2 values, expected 3"), (-1, "non-negative"), ("x", "expected None, an int")):
        with pytest.raises(ValueError, match=match):
            envs.reset(seed=bad)
    with pytest.raises(ValueError, match="takes no options"):
        envs.reset(seed=0, options={"x": 1})


def test_divergence_in_one_env_ends_that_env_only(tiny_kwargs) -> None:
    envs = gym.make_vec("dus_env/Synthetic-v0", num_envs=3, **tiny_kwargs("Synthetic", decision_steps=3))
    before, _ = envs.reset(seed=0)
    model = envs.unwrapped.core.model
    with torch.no_grad():
        model.flat[model.element_env == 1] = float("nan")
    observations, rewards, terminated, _, infos = envs.step(fixed_actions(3, 2, 0))
    assert terminated.tolist() == [False, True, False]
    assert rewards[1] == -envs.config.divergence_penalty and np.isfinite(rewards).all()
    assert infos["diverged"].tolist() == [False, True, False] and infos["_reward_divergence_penalty"].tolist() == [False, True, False]
    np.testing.assert_array_equal(observations[1], before[1])
    assert infos["_test_fused_accuracy"].tolist() == [False, True, False]
    for step in range(1, 3):
        observations, rewards, terminated, _, infos = envs.step(fixed_actions(3, 2, step))
        assert np.isfinite(rewards).all() and not infos["diverged"].any()
    assert terminated.tolist() == [True, False, True]  # env 1 restarted one step after its end


def test_bad_actions_and_arguments(tiny_kwargs) -> None:
    envs = gym.make_vec("dus_env/Synthetic-v0", num_envs=3, **tiny_kwargs("Synthetic"))
    with pytest.raises(gym.error.ResetNeeded):
        envs.step(np.zeros((3, 2), dtype=np.float32))
    envs.reset(seed=0)
    actions = np.zeros((3, 2), dtype=np.float32)
    actions[2, 1] = np.inf
    with pytest.raises(ValueError, match="env 2"):
        envs.step(actions)
    for bad in (np.zeros((3, 3)), np.zeros(2), [["a", "b"]] * 3):
        with pytest.raises(ValueError, match=r"shape|\(3, 2\)"):
            envs.step(bad)
    for num_envs in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_envs"):
            DUSVectorEnv(num_envs=num_envs)


@pytest.mark.parametrize("kind", ["joint", "alternating"])
def test_learners_and_pickling(kind: str, tiny_kwargs) -> None:
    envs = gym.make_vec("dus_env/Synthetic3-v0", num_envs=2, learner={"kind": kind, "hidden_sizes": (8,), "embedding_dim": 4},
                        **{k: v for k, v in tiny_kwargs("Synthetic3").items() if k != "learner"})
    envs.reset(seed=2)
    envs.step(fixed_actions(2, 3, 0))
    clone = pickle.loads(pickle.dumps(envs))
    a, b = envs.step(fixed_actions(2, 3, 1)), clone.step(fixed_actions(2, 3, 1))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])

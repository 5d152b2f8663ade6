"""``DUSVectorEnv``, the native vector env: what its class docstring promises, over every registered id.

``DUSEnv`` is the oracle throughout: env ``i`` of a batch reset with seed ``s`` must be the ``DUSEnv``
episode of seed ``s + i`` (same task, model, infos), whatever else the batch holds.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

import dus_env
from dus_env import TINY_OVERRIDES, DUSVectorEnv

ALL_ENV_IDS = list(dus_env.ENV_IDS)
SYNTHETIC = "dus_env/Synthetic-v0"
T = int(TINY_OVERRIDES["decision_steps"])
#: Float noise allowed between a batched computation and the single env's (different matrix shapes).
ATOL = 1e-5

MakeVec = Callable[..., DUSVectorEnv]
MakeSingle = Callable[..., gym.Env]


@pytest.fixture
def tiny(features_file: Path) -> Callable[..., dict[str, Any]]:
    """``tiny(env_id, **extra)``: the keyword arguments of a tiny env of ``env_id``."""

    def kwargs(env_id: str = SYNTHETIC, **extra: Any) -> dict[str, Any]:
        values: dict[str, Any] = dict(TINY_OVERRIDES)
        if env_id.endswith("Features-v0"):
            values["path"] = str(features_file)
        return {**values, **extra}

    return kwargs


@pytest.fixture
def make_vec(tiny: Callable[..., dict[str, Any]]) -> MakeVec:
    def make(env_id: str = SYNTHETIC, num_envs: int = 3, **extra: Any) -> DUSVectorEnv:
        return gym.make_vec(env_id, num_envs=num_envs, **tiny(env_id, **extra))

    return make


@pytest.fixture
def make_single(tiny: Callable[..., dict[str, Any]]) -> MakeSingle:
    def make(env_id: str = SYNTHETIC, **extra: Any) -> gym.Env:
        return gym.make(env_id, **tiny(env_id, **extra))

    return make


def fixed_actions(num_envs: int, n_modalities: int, step: int) -> np.ndarray:
    """Deterministic, non-uniform actions, different per env and step."""
    rng = np.random.default_rng(1000 + step)
    return rng.uniform(-0.9, 0.9, size=(num_envs, n_modalities)).astype(np.float32)


def task_data(task: Any) -> dict[str, list[torch.Tensor]]:
    """A copy of a task's splits (a vector env's task is a view that its next reset overwrites)."""
    if isinstance(task, dict):
        return task
    return {split: [t.clone() for t in (*getattr(task, split).features, getattr(task, split).labels)] for split in ("train", "val", "test")}


def assert_same_task(a: Any, b: Any) -> None:
    """Two tasks (or :func:`task_data` copies) hold exactly the same splits."""
    data_a, data_b = task_data(a), task_data(b)
    for split in data_a:
        assert len(data_a[split]) == len(data_b[split])
        assert all(torch.equal(x, y) for x, y in zip(data_a[split], data_b[split])), split


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


def assert_infos_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two vector info dicts are bit-identical (object arrays compared element by element)."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_infos_equal(a[key], b[key])
        elif a[key].dtype == object:
            assert all(np.array_equal(x, y) for x, y in zip(a[key], b[key])), key
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def assert_info_close(vector_infos: dict[str, Any], env: int, single_info: dict[str, Any]) -> None:
    """Env ``env``'s entries of vector infos equal a ``DUSEnv`` info (to float noise), masks set."""
    for key, value in single_info.items():
        assert vector_infos[f"_{key}"][env], key
        if key == "instance_views":  # names, not numbers
            assert list(vector_infos[key][env]) == value, key
            continue
        actual = np.asarray(vector_infos[key][env], dtype=np.float64)
        np.testing.assert_allclose(actual, np.asarray(value, dtype=np.float64), atol=ATOL, err_msg=key)


def run_single(env: gym.Env, seed: int | None, actions: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    observation, _ = env.reset(seed=seed)
    return observation, [env.step(action) for action in actions]


# -- 1. API over every registered id -------------------------------------------------------------


@pytest.mark.parametrize("env_id", ALL_ENV_IDS)
def test_make_vec_gives_the_native_env_with_dusenv_spaces(env_id: str, make_vec: MakeVec, make_single: MakeSingle) -> None:
    envs, single = make_vec(env_id, 3), make_single(env_id)
    assert type(envs) is DUSVectorEnv and envs.unwrapped is envs and envs.num_envs == 3
    assert envs.single_observation_space == single.observation_space
    assert envs.single_action_space == single.action_space
    assert envs.observation_space == batch_space(single.observation_space, 3)
    assert envs.action_space == batch_space(single.action_space, 3)
    assert envs.action_space.shape == (3, single.action_space.shape[0])


@pytest.mark.parametrize("env_id", ALL_ENV_IDS)
def test_reset_and_step_shapes_over_a_whole_episode(env_id: str, make_vec: MakeVec) -> None:
    envs = make_vec(env_id, 3)
    d, m = envs.single_observation_space.shape[0], envs.n_modalities
    observations, _ = envs.reset(seed=0)
    assert observations.shape == (3, d) and observations.dtype == np.float32 and observations in envs.observation_space
    for step in range(T):
        observations, rewards, terminated, truncated, _ = envs.step(fixed_actions(3, m, step))
        assert observations.shape == (3, d) and observations.dtype == np.float32 and observations in envs.observation_space
        assert rewards.shape == (3,) and rewards.dtype == np.float64 and np.isfinite(rewards).all()
        assert terminated.shape == truncated.shape == (3,) and terminated.dtype == truncated.dtype == np.bool_
        assert not truncated.any()
        # Every env ends exactly at the decision budget, none before.
        assert terminated.tolist() == [step == T - 1] * 3


@pytest.mark.parametrize("env_id", ALL_ENV_IDS)
def test_sync_mode_gives_a_sync_vector_env_seeded_like_the_native_one(env_id: str, tiny: Callable[..., dict[str, Any]]) -> None:
    sync = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", **tiny(env_id))
    native = gym.make_vec(env_id, num_envs=2, **tiny(env_id))
    assert isinstance(sync, gym.vector.SyncVectorEnv)
    assert sync.single_observation_space == native.single_observation_space
    np.testing.assert_allclose(sync.reset(seed=5)[0], native.reset(seed=5)[0], atol=ATOL)
    actions = fixed_actions(2, native.n_modalities, 0)
    sync_step, native_step = sync.step(actions), native.step(actions)
    np.testing.assert_allclose(sync_step[0], native_step[0], atol=ATOL)
    np.testing.assert_allclose(sync_step[1], native_step[1], atol=ATOL)


@pytest.mark.parametrize("env_id", ALL_ENV_IDS)
def test_pickled_env_continues_identically(env_id: str, make_vec: MakeVec) -> None:
    envs = make_vec(env_id, 2)
    m = envs.n_modalities
    envs.reset(seed=2)
    envs.step(fixed_actions(2, m, 0))
    clone = pickle.loads(pickle.dumps(envs))
    for step in range(1, T + 1):  # to the end and one autoreset step past it
        a, b = envs.step(fixed_actions(2, m, step)), clone.step(fixed_actions(2, m, step))
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        assert_infos_equal(a[4], b[4])


def test_render_ansi_gives_one_line_per_env(make_vec: MakeVec) -> None:
    envs = make_vec(num_envs=3, render_mode="ansi")
    assert envs.render() == ("DUSVectorEnv: not reset yet",)
    envs.reset(seed=0)
    envs.step(fixed_actions(3, 2, 0))
    lines = envs.render()
    assert len(lines) == 3 and all("step 1/4" in line and "\n" not in line for line in lines)
    assert make_vec(num_envs=2).render() is None
    with pytest.raises(TypeError, match="render_mode='rgb_array'"):
        make_vec(num_envs=2, render_mode="rgb_array")


# -- 2. Infos ------------------------------------------------------------------------------------


def test_infos_have_dusenv_keys_as_masked_arrays(make_vec: MakeVec, make_single: MakeSingle) -> None:
    """Keys are those of ``DUSEnv``'s info; a list value of the single env is an ``[N, len]`` array."""
    n, env_id = 4, "dus_env/Synthetic3-v0"
    envs, single = make_vec(env_id, n), make_single(env_id)
    _, single_info = single.reset(seed=0)
    _, infos = envs.reset(seed=0)

    def check(infos: dict[str, Any], single_info: dict[str, Any]) -> None:
        assert {key for key in infos if not key.startswith("_")} == set(single_info)
        for key, value in single_info.items():
            assert infos[f"_{key}"].dtype == np.bool_ and infos[f"_{key}"].all(), key
            expected = (n, len(value)) if isinstance(value, list) else (n,)
            assert infos[key].shape == expected, key

    check(infos, single_info)
    assert infos["step"].tolist() == [0] * n
    for step in range(T - 1):
        _, _, _, _, infos = envs.step(fixed_actions(n, 3, step))
        *_, single_info = single.step(fixed_actions(n, 3, step)[0])
        check(infos, single_info)
        assert infos["step"].tolist() == [step + 1] * n
        assert (infos["quantities"].sum(axis=1) == 3 * envs.config.base_batch_size).all()  # fixed budget


def test_final_metrics_at_the_episode_end(make_vec: MakeVec, make_single: MakeSingle) -> None:
    n, m = 3, 3
    envs, single = make_vec("dus_env/Synthetic3-v0", n), make_single("dus_env/Synthetic3-v0")
    envs.reset(seed=0)
    _, reset_info = single.reset(seed=0)
    quantities = []
    for step in range(T):
        _, _, terminated, _, infos = envs.step(fixed_actions(n, m, step))
        *_, single_info = single.step(fixed_actions(n, m, step)[0])
        quantities.append(infos["quantities"].copy())
        if step < T - 1:
            assert not any(infos.get(f"_{key}", np.zeros(n, bool)).any() for key in ("test_fused_accuracy", "quantity_totals"))
    assert terminated.all()
    final_keys = set(single_info) - set(reset_info)
    assert {"test_fused_accuracy", "test_modality_accuracies", "quantity_totals", "quantity_history"} <= final_keys
    for key in final_keys:
        assert infos[f"_{key}"].tolist() == [True] * n, key
    assert infos["test_modality_accuracies"].shape == infos["quantity_totals"].shape == (n, m)
    assert ((0 <= infos["test_fused_accuracy"]) & (infos["test_fused_accuracy"] <= 1)).all()
    history = np.stack(quantities, axis=1)  # [N, T, M]: the quantities each step reported
    for i in range(n):
        np.testing.assert_array_equal(infos["quantity_history"][i], history[i])
        np.testing.assert_array_equal(infos["quantity_totals"][i], history[i].sum(axis=0) * envs.config.iterations_per_step)
    assert_info_close(infos, 0, single_info)  # env 0 is DUSEnv(seed=0), final metrics included


# -- 3. Autoreset --------------------------------------------------------------------------------


def test_next_step_autoreset_resets_on_the_step_after_the_end(make_vec: MakeVec, make_single: MakeSingle) -> None:
    envs = make_vec(num_envs=2)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    envs.reset(seed=10)
    for step in range(T):
        _, _, terminated, _, _ = envs.step(fixed_actions(2, 2, step))
    assert terminated.all()
    # The action of a resetting env is ignored: not even NaN raises.
    observations, rewards, terminated, truncated, infos = envs.step(np.full((2, 2), np.nan, dtype=np.float32))
    assert rewards.tolist() == [0.0, 0.0] and not terminated.any() and not truncated.any()
    assert infos["step"].tolist() == [0, 0] and infos["_step"].all()
    assert infos["reward_accuracy_gain"].tolist() == [0.0, 0.0] and not infos["diverged"].any()
    assert not infos.get("_test_fused_accuracy", np.zeros(2, bool)).any()
    for i in range(2):
        # The new episode is the one DUSEnv(seed=10 + i) starts on its next reset().
        single = make_single()
        single.reset(seed=10 + i)
        second, single_info = single.reset()
        np.testing.assert_allclose(observations[i], second, atol=ATOL)
        assert_same_task(envs.unwrapped.core.task(i), single.unwrapped.task)
        assert_info_close(infos, i, single_info)
    # The second episode runs its T steps from here.
    for step in range(T):
        _, _, terminated, _, infos = envs.step(fixed_actions(2, 2, step))
        assert infos["step"].tolist() == [step + 1] * 2
        assert terminated.tolist() == [step == T - 1] * 2


def test_same_step_autoreset_matches_next_step_with_final_obs_and_final_info(make_vec: MakeVec) -> None:
    same, following = make_vec(num_envs=2, autoreset_mode="same_step"), make_vec(num_envs=2)
    assert same.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    same.reset(seed=3)
    following.reset(seed=3)
    for step in range(T):
        actions = fixed_actions(2, 2, step)
        observations, rewards, terminated, _, infos = same.step(actions)
        expected_observations, expected_rewards, expected_terminated, _, expected_infos = following.step(actions)
        np.testing.assert_array_equal(rewards, expected_rewards)
        np.testing.assert_array_equal(terminated, expected_terminated)
        if step < T - 1:
            assert not infos.get("_final_obs", np.zeros(2, bool)).any()
    assert terminated.all()
    assert infos["_final_obs"].tolist() == infos["_final_info"].tolist() == [True, True]
    for i in range(2):
        np.testing.assert_array_equal(infos["final_obs"][i], expected_observations[i])  # the terminal observation
    assert_infos_equal(infos["final_info"], expected_infos)  # the terminal step's info, final metrics included
    # The returned observation and info are the new episode's first: what next_step gives one call later.
    reset_observations, _, _, _, reset_infos = following.step(np.zeros((2, 2), dtype=np.float32))
    np.testing.assert_array_equal(observations, reset_observations)
    assert infos["step"].tolist() == [0, 0]
    for key in ("quantities", "val_fused_accuracy", "val_modality_accuracies", "cumulative_scores", "train_loss"):
        np.testing.assert_array_equal(infos[key], reset_infos[key], err_msg=key)
    assert not infos.get("_test_fused_accuracy", np.zeros(2, bool)).any()
    # No wasted step: the next action already trains the new episode, as next_step's does after its reset step.
    a, b = same.step(fixed_actions(2, 2, 0)), following.step(fixed_actions(2, 2, 0))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[4]["step"].tolist() == [1, 1]


@pytest.mark.parametrize(
    "mode, expected",
    [
        (AutoresetMode.SAME_STEP, AutoresetMode.SAME_STEP),
        ("same_step", AutoresetMode.SAME_STEP),
        ("SameStep", AutoresetMode.SAME_STEP),
        ("next_step", AutoresetMode.NEXT_STEP),
    ],
)
def test_autoreset_mode_accepts_the_enum_and_its_names(mode: Any, expected: AutoresetMode, make_vec: MakeVec) -> None:
    envs = make_vec(num_envs=1, autoreset_mode=mode)
    assert envs.metadata["autoreset_mode"] == envs.autoreset_mode == expected


@pytest.mark.parametrize("mode", ["disabled", AutoresetMode.DISABLED, "sometimes", 3])
def test_bad_autoreset_mode_names_the_allowed_ones(mode: Any, make_vec: MakeVec) -> None:
    with pytest.raises(ValueError, match="'next_step' or 'same_step'"):
        make_vec(num_envs=2, autoreset_mode=mode)


# -- 4. Seeding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ALL_ENV_IDS)
def test_env_i_is_dusenv_with_seed_plus_i(env_id: str, make_vec: MakeVec, make_single: MakeSingle) -> None:
    """Task data and model initialisation exactly; observations, rewards and infos to float noise."""
    envs = make_vec(env_id, 3)
    observations, infos = envs.reset(seed=40)
    core = envs.unwrapped.core
    initial_models = [core.model.to_module(i) for i in range(3)]
    actions = fixed_actions(3, envs.n_modalities, 0)
    step_observations, rewards, _, _, step_infos = envs.step(actions)
    for i in range(3):
        single = make_single(env_id)
        observation, single_info = single.reset(seed=40 + i)
        assert_same_task(core.task(i), single.unwrapped.task)
        assert_same_state(initial_models[i], single.unwrapped.model)
        np.testing.assert_allclose(observations[i], observation, atol=ATOL)
        assert_info_close(infos, i, single_info)
        observation, reward, _, _, single_info = single.step(actions[i])
        np.testing.assert_allclose(step_observations[i], observation, atol=ATOL)
        assert rewards[i] == pytest.approx(reward, abs=ATOL)
        assert_info_close(step_infos, i, single_info)


def test_seed_list_seeds_each_env(make_vec: MakeVec) -> None:
    reference = make_vec(num_envs=3)
    reference_observations, _ = reference.reset(seed=7)  # envs 0, 1, 2 <- 7, 8, 9
    envs = make_vec(num_envs=3)
    observations, _ = envs.reset(seed=[8, 9, 7])
    core, reference_core = envs.unwrapped.core, reference.unwrapped.core
    for i, j in ((0, 1), (1, 2), (2, 0)):
        assert_same_task(core.task(i), reference_core.task(j))
        assert_same_state(core.model.to_module(i), reference_core.model.to_module(j))
        np.testing.assert_allclose(observations[i], reference_observations[j], atol=ATOL)
    seed_8 = task_data(core.task(0))
    # None continues that env's generator (its second episode); an int starts from that seed again.
    envs.reset(seed=[None, 8, None])
    reference.reset()  # every env's second episode
    assert_same_task(core.task(0), reference_core.task(1))
    assert_same_task(core.task(1), seed_8)
    assert_same_task(core.task(2), reference_core.task(0))


@pytest.mark.parametrize(
    "seed, match",
    [
        ([1, 2], "2 values, expected 3"),
        ([1, 2, 3, 4], "4 values, expected 3"),
        (-1, "non-negative"),
        ([0, -1, 2], r"seed\[1\]=-1 .*non-negative"),
        ([0, 1, 2.5], r"seed\[2\]=2.5"),
        ([True, 1, 2], r"seed\[0\]=True"),
        ("x", "expected None, an int"),
        (2.5, "expected None, an int"),
    ],
)
def test_bad_seeds_raise_and_change_nothing(seed: Any, match: str, make_vec: MakeVec) -> None:
    envs, reference = make_vec(num_envs=3), make_vec(num_envs=3)
    envs.reset(seed=7)
    reference.reset(seed=7)
    with pytest.raises(ValueError, match=match):
        envs.reset(seed=seed)
    # The rejected call re-seeded no env: the generators continue as if it never happened.
    np.testing.assert_array_equal(envs.reset()[0], reference.reset()[0])


def test_reset_options_are_rejected(make_vec: MakeVec) -> None:
    envs = make_vec(num_envs=2)
    with pytest.raises(ValueError, match="takes no options"):
        envs.reset(seed=0, options={"difficulty": 3})


def test_same_seeds_give_bit_identical_batches(make_vec: MakeVec) -> None:
    def episode() -> list[Any]:
        envs = make_vec(num_envs=3)
        outputs: list[Any] = list(envs.reset(seed=11))
        for step in range(T + 1):  # the whole episode and the autoreset step
            outputs += list(envs.step(fixed_actions(3, 2, step)))
        return outputs

    first, second = episode(), episode()
    for a, b in zip(first, second):
        if isinstance(a, dict):
            assert_infos_equal(a, b)
        else:
            np.testing.assert_array_equal(a, b)


def test_envs_of_one_batch_get_different_episodes(make_vec: MakeVec) -> None:
    envs = make_vec(num_envs=3)
    observations, _ = envs.reset(seed=5)
    core = envs.unwrapped.core
    pairs = [(0, 1), (0, 2), (1, 2)]
    for i, j in pairs:
        assert not torch.equal(core.task(i).train.features[0], core.task(j).train.features[0])
        assert not torch.equal(core.model.flat[core.model.element_env == i], core.model.flat[core.model.element_env == j])
        assert not np.array_equal(observations[i], observations[j])
    rewards = np.stack([envs.step(np.zeros((3, 2), dtype=np.float32))[1] for _ in range(T)], axis=1)
    assert all(not np.array_equal(rewards[i], rewards[j]) for i, j in pairs)  # same actions, different episodes


def test_reset_without_seed_continues_the_generators(make_vec: MakeVec, make_single: MakeSingle) -> None:
    envs = make_vec(num_envs=2)
    first, _ = envs.reset(seed=21)
    first_tasks = [envs.unwrapped.core.task(i) for i in range(2)]
    first_train = [task.train.features[0].clone() for task in first_tasks]
    second, _ = envs.reset()
    for i in range(2):
        assert not np.array_equal(first[i], second[i])
        assert not torch.equal(first_train[i], envs.unwrapped.core.task(i).train.features[0])
        single = make_single()
        single.reset(seed=21 + i)
        observation, _ = single.reset()
        np.testing.assert_allclose(second[i], observation, atol=ATOL)
        assert_same_task(envs.unwrapped.core.task(i), single.unwrapped.task)
    # Unseeded from the start: still valid episodes.
    observations, _ = make_vec(num_envs=2).reset()
    assert observations.shape == (2, envs.single_observation_space.shape[0])


# -- 5. Equivalence over full episodes -------------------------------------------------------------


@pytest.mark.slow
def test_full_episodes_agree_with_dusenv_statistically() -> None:
    """Final test accuracy of env ``i`` vs ``DUSEnv`` with the same seed and the same fixed actions.

    The batched kernels (matrix products over a stack of envs, batches padded to the widest env)
    may change the last bits of a result, and over a full episode of training such float noise can
    make the trajectories drift apart. So the two are not compared bit for bit: over 8 seeds, the
    mean absolute difference must be small and a paired t-test must find no systematic difference
    (unless the differences are all zero).
    """
    from scipy import stats

    n, steps = 8, 6
    kwargs = {"decision_steps": steps, "iterations_per_step": 5}
    envs = gym.make_vec(SYNTHETIC, num_envs=n, **kwargs)
    envs.reset(seed=500)
    actions = [fixed_actions(n, 2, step) for step in range(steps)]
    for step in range(steps):
        _, _, terminated, _, infos = envs.step(actions[step])
    assert terminated.all()
    vector = infos["test_fused_accuracy"]
    single = []
    for i in range(n):
        env = gym.make(SYNTHETIC, **kwargs)
        _, outcomes = run_single(env, 500 + i, [action[i] for action in actions])
        assert outcomes[-1][2]
        single.append(outcomes[-1][4]["test_fused_accuracy"])
    differences = vector - np.array(single)
    assert np.abs(differences).mean() < 0.01, differences
    if np.abs(differences).max() > 1e-12:
        assert stats.ttest_rel(vector, single).pvalue > 0.05, differences


# -- 6. Divergence ---------------------------------------------------------------------------------


def test_divergence_in_one_env_ends_that_env_only(make_vec: MakeVec) -> None:
    """Env 1's parameters go NaN: env 1 ends with the penalty; envs 0 and 2 are the episodes of a
    batch where nothing diverged (the models never interact)."""
    envs, control = make_vec(num_envs=3), make_vec(num_envs=3)
    before, before_infos = envs.reset(seed=0)
    control.reset(seed=0)
    model = envs.unwrapped.core.model
    with torch.no_grad():
        model.flat[model.element_env == 1] = float("nan")
    penalty = envs.config.divergence_penalty
    healthy = [0, 2]

    def step(actions: np.ndarray) -> tuple[Any, ...]:
        outcome = envs.step(actions)
        expected = control.step(np.nan_to_num(actions))
        np.testing.assert_allclose(outcome[0][healthy], expected[0][healthy], atol=1e-6)
        np.testing.assert_allclose(outcome[1][healthy], expected[1][healthy], atol=1e-6)
        assert np.isfinite(outcome[0]).all() and np.isfinite(outcome[1]).all()
        return outcome

    observations, rewards, terminated, _, infos = step(fixed_actions(3, 2, 0))
    assert terminated.tolist() == [False, True, False]
    assert rewards[1] == -penalty
    assert infos["diverged"].tolist() == [False, True, False]
    assert infos["_reward_divergence_penalty"].tolist() == [False, True, False] and infos["reward_divergence_penalty"][1] == -penalty
    assert infos["reward_accuracy_gain"][1] == infos["reward_gap_penalty"][1] == 0.0
    np.testing.assert_array_equal(observations[1], before[1])  # the previous observation and numbers
    for key in ("val_fused_accuracy", "val_modality_accuracies", "cumulative_scores"):
        np.testing.assert_array_equal(infos[key][1], before_infos[key][1], err_msg=key)
    assert infos["_test_fused_accuracy"].tolist() == [False, True, False]  # final metrics: env 1 only
    # Env 1 resets; its (ignored) action may be NaN. Envs 0 and 2 go on.
    actions = fixed_actions(3, 2, 1)
    actions[1] = np.nan
    _, rewards, terminated, _, infos = step(actions)
    assert not terminated.any() and rewards[1] == 0.0 and infos["step"].tolist() == [2, 0, 2]
    assert not infos["diverged"].any() and not infos.get("_reward_divergence_penalty", np.zeros(3, bool)).any()
    ends = []
    for index in range(2, T + 3):
        _, rewards, terminated, _, infos = step(fixed_actions(3, 2, index))
        assert not infos["diverged"].any()
        assert infos.get("_test_fused_accuracy", np.zeros(3, bool)).tolist() == terminated.tolist()
        ends.append(terminated.tolist())
    # Envs 0 and 2 end at the budget; env 1, reset one call after its end, ends T calls after that.
    assert ends[T - 3] == [True, False, True] and ends[T - 1] == [False, True, False]
    assert sum(map(sum, ends)) == 3


# -- 7. Bad actions and arguments -------------------------------------------------------------------


@pytest.mark.parametrize("env, value", [(0, np.nan), (1, np.inf), (2, -np.inf)])
def test_non_finite_action_names_the_env_and_changes_nothing(env: int, value: float, make_vec: MakeVec) -> None:
    envs, control = make_vec(num_envs=3), make_vec(num_envs=3)
    envs.reset(seed=0)
    control.reset(seed=0)
    actions = fixed_actions(3, 2, 0)
    bad = actions.copy()
    bad[env, 1] = value
    with pytest.raises(ValueError, match=rf"\benv {env}\b"):
        envs.step(bad)
    a, b = envs.step(actions), control.step(actions)  # the rejected step did not happen
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[4]["step"].tolist() == [1, 1, 1]


@pytest.mark.parametrize(
    "actions",
    [
        np.zeros((3, 3)),
        np.zeros((2, 2)),
        np.zeros(2),
        np.zeros(3),
        np.zeros((3, 2, 1)),
        0.0,
        [["a", "b"]] * 3,
        [[0.0, 0.0], [0.0], [0.0, 0.0]],
    ],
    ids=["N,M+1", "N-1,M", "M", "N", "N,M,1", "scalar", "strings", "ragged"],
)
def test_badly_shaped_or_non_numeric_actions_name_the_expected_shape(actions: Any, make_vec: MakeVec) -> None:
    envs = make_vec(num_envs=3)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=re.escape("(3, 2)")):
        envs.step(actions)


def test_step_before_reset_needs_a_reset(make_vec: MakeVec) -> None:
    with pytest.raises(gym.error.ResetNeeded):
        make_vec(num_envs=2).step(np.zeros((2, 2), dtype=np.float32))


@pytest.mark.parametrize("num_envs", [0, -1, 2.5, True, "3", None])
def test_bad_num_envs(num_envs: Any, tiny: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match=re.escape(f"num_envs={num_envs!r}")):
        DUSVectorEnv(num_envs=num_envs, **tiny())
    with pytest.raises(ValueError, match="num_envs"):
        gym.make_vec(SYNTHETIC, num_envs=num_envs, **tiny())


def test_numpy_integer_num_envs(make_vec: MakeVec) -> None:
    envs = make_vec(num_envs=np.int64(2))
    assert envs.num_envs == 2 and type(envs.num_envs) is int and envs.reset(seed=0)[0].shape[0] == 2


# -- 8. Learners and modalities ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["joint", "alternating"])
def test_learners_on_three_modalities_match_dusenv(kind: str, make_vec: MakeVec, make_single: MakeSingle) -> None:
    env_id, learner = "dus_env/Synthetic3-v0", {"kind": kind, "hidden_sizes": (16,), "embedding_dim": 8}
    envs = make_vec(env_id, 2, learner=learner)
    assert envs.n_modalities == 3 and envs.config.learner.kind == kind
    envs.reset(seed=30)
    actions = [fixed_actions(2, 3, step) for step in range(T)]
    for step in range(T):
        _, rewards, terminated, _, infos = envs.step(actions[step])
        assert np.isfinite(rewards).all() and not infos["diverged"].any()
    assert terminated.all() and infos["test_modality_accuracies"].shape == (2, 3)
    for i in range(2):
        _, outcomes = run_single(make_single(env_id, learner=learner), 30 + i, [action[i] for action in actions])
        *_, single_info = outcomes[-1]
        assert_info_close(infos, i, single_info)  # to float noise over the whole (tiny) episode


def test_alternating_learner_pickles(make_vec: MakeVec) -> None:
    envs = make_vec("dus_env/Synthetic3-v0", 2, learner={"kind": "alternating", "hidden_sizes": (8,), "embedding_dim": 4})
    envs.reset(seed=2)
    envs.step(fixed_actions(2, 3, 0))
    clone = pickle.loads(pickle.dumps(envs))
    a, b = envs.step(fixed_actions(2, 3, 1)), clone.step(fixed_actions(2, 3, 1))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])

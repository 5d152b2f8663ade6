"""State-free allocations (:mod:`agents.constants`) and the ``best-constant`` agent spec.

The env is the oracle: a constant run by :func:`constant_accuracies` must be the episode a ``fixed:`` agent
plays through ``gymnasium.make`` on the same seed, and :func:`seed_pair` must be the seeds
``env.reset(seed)`` plays. Everything runs on tiny settings (``TINY_OVERRIDES``, a few tuning seeds).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import agents.constants as constants
from agents.baselines import FixedAllocationAgent
from agents.constants import (
    TUNING_SEEDS,
    constant_accuracies,
    instance_oracle,
    seed_pair,
    share_grid,
    shares_of,
    tune_best_constant,
)
from agents.errors import UsageError
from agents.rollout import run_episode
from agents.specs import make_agent, parse_spec
from dus_env import PRESETS, TINY_OVERRIDES, EnvConfig, QuantityMapping, resolve_config
from dus_env.presets import SYNTHETIC_MIX

#: Tiny settings that still learn something in 8 iterations (so accuracies differ between constants).
LEARNING = {**TINY_OVERRIDES, "lr": 0.01}
#: Few tuning seeds and a coarse grid: the cheap version of what ``best-constant`` runs.
FEW_SEEDS = (20_000, 20_001)


def tiny_config(name: str = "Synthetic", **extra: Any) -> EnvConfig:
    return resolve_config(PRESETS[name], {**LEARNING, **extra})


def tiny_env(env_id: str = "dus_env/Synthetic-v0", **extra: Any) -> gym.Env:
    return gym.make(env_id, **{**LEARNING, **extra})


# -- share_grid ----------------------------------------------------------------------------------------------


def test_share_grid_two_modalities_is_every_share_step() -> None:
    mapping = tiny_config().quantity_mapping()  # B = 8, quantities in [2, 14]
    np.testing.assert_array_equal(share_grid(mapping, 0.25), [[4, 12], [8, 8], [12, 4]])
    np.testing.assert_array_equal(share_grid(mapping, 0.5), [[8, 8]])
    # 5% steps: the shares below 2/16 and above 14/16 are clipped onto the same rows, kept once.
    np.testing.assert_array_equal(share_grid(mapping, 0.05), [[q, 16 - q] for q in range(2, 15)])


@pytest.mark.parametrize("name, budget", [("Synthetic", "fixed"), ("Synthetic3", "fixed"), ("Synthetic3", "free")])
def test_share_grid_rows_are_distinct_realisable_and_include_uniform(name: str, budget: str) -> None:
    mapping = tiny_config(name, budget=budget).quantity_mapping()
    grid = share_grid(mapping, 0.05)
    m = mapping.n_modalities
    assert grid.shape[1] == m and grid.dtype == np.int64
    assert len({tuple(row) for row in grid.tolist()}) == len(grid)
    assert any((row == mapping.uniform()).all() for row in grid)
    assert ((grid >= mapping.min_quantity) & (grid <= mapping.max_quantity)).all()
    for row in grid:  # every row is what the env plays for the row's own action
        np.testing.assert_array_equal(mapping.quantities(mapping.action(row)), row)
    if budget == "fixed":
        assert (grid.sum(axis=1) == m * mapping.base_batch_size).all()
    if m == 3:
        assert len(grid) > 50


def test_share_grid_always_has_uniform_even_when_the_step_misses_it() -> None:
    mapping = QuantityMapping(3, 8, 2, 14)
    grid = share_grid(mapping, 0.5)  # 1/3 is not on the grid and 0.5 + 0.5 leaves nothing for the third
    np.testing.assert_array_equal(grid, [[8, 8, 8]])
    grid = share_grid(mapping, 0.3)
    assert [8, 8, 8] in grid.tolist()


@pytest.mark.parametrize("step", [0, -0.1, 0.51, 1.0, float("nan")])
def test_share_grid_refuses_bad_steps(step: float) -> None:
    with pytest.raises(ValueError, match="step="):
        share_grid(QuantityMapping(2, 8, 2, 14), step)


# -- seed_pair -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 7, 20_000])
def test_seed_pair_is_the_episode_reset_plays(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tiny_env()
    core = env.unwrapped.core
    played: list[tuple[int, int]] = []
    real_reset = core.reset

    def spy(envs: np.ndarray, seeds: list[tuple[int, int]]) -> Any:
        played.extend(seeds)
        return real_reset(envs, seeds)

    monkeypatch.setattr(core, "reset", spy)
    env.reset(seed=seed)
    assert played == [seed_pair(seed)]


def test_replicates_keep_the_task_and_change_the_model() -> None:
    base, first, second = seed_pair(3), seed_pair(3, replicate=1), seed_pair(3, replicate=2)
    assert base[0] == first[0] == second[0]
    assert len({base[1], first[1], second[1]}) == 3
    assert seed_pair(3, replicate=1) == first  # deterministic
    assert seed_pair(4)[0] != base[0]


# -- constant_accuracies -------------------------------------------------------------------------------------


def test_constant_accuracies_shape_and_range() -> None:
    config = tiny_config()
    grid = share_grid(config.quantity_mapping(), 0.25)
    table = constant_accuracies(config, [seed_pair(s) for s in (1, 2)], grid)
    assert table.shape == (2, 3)
    assert np.isfinite(table).all() and ((0.0 <= table) & (table <= 1.0)).all()
    assert len(np.unique(table)) > 1  # the constants and seeds are told apart


def test_constant_accuracies_equal_fixed_agent_episodes_through_the_env() -> None:
    """Each cell is the test accuracy of a ``fixed:`` agent's episode on ``env.reset(seed)``.

    Tolerance 1e-3: the table is computed in one batched core, the env alone; the batch's padded matrix
    shapes can change the last bits of the logits, which can flip at most a rare test prediction (one
    prediction of the 1,000 test samples moves the accuracy by 1e-3). In practice they are equal.
    """
    config = tiny_config()
    seeds = [1, 2]
    grid = share_grid(config.quantity_mapping(), 0.25)
    table = constant_accuracies(config, [seed_pair(s) for s in seeds], grid)
    env = tiny_env()
    for s, seed in enumerate(seeds):
        for g, row in enumerate(grid):
            shares = shares_of(row)
            agent = make_agent(f"fixed:{shares[0]:g},{shares[1]:g}", env)
            result = run_episode(env, agent, seed)
            assert result.final["quantity_totals"] == (row * config.iterations_per_step * config.decision_steps).tolist()
            assert result.test_accuracy == pytest.approx(table[s, g], abs=1e-3)


def test_constant_accuracies_do_not_depend_on_the_batch_size() -> None:
    config = tiny_config()
    grid = share_grid(config.quantity_mapping(), 0.25)
    pairs = [seed_pair(s) for s in (1, 2)]
    one_batch = constant_accuracies(config, pairs, grid)
    chunked = constant_accuracies(config, pairs, grid, batch=4)  # 6 episodes in batches of 4 and 2
    np.testing.assert_allclose(chunked, one_batch, atol=1e-3)


# -- tune_best_constant and instance_oracle ------------------------------------------------------------------


def test_tune_best_constant_returns_the_argmax_of_its_mean_accuracies() -> None:
    config = tiny_config()
    tuned = tune_best_constant(config, FEW_SEEDS, 0.25)
    np.testing.assert_array_equal(tuned.grid, share_grid(config.quantity_mapping(), 0.25))
    table = constant_accuracies(config, [seed_pair(s) for s in FEW_SEEDS], tuned.grid)
    np.testing.assert_allclose(tuned.mean_accuracy, table.mean(axis=0), atol=1e-3)
    best = int(np.argmax(tuned.mean_accuracy))
    assert tuned.shares == tuple(shares_of(tuned.grid[best]).tolist())
    assert math.isclose(sum(tuned.shares), 1.0)
    assert tune_best_constant(config, FEW_SEEDS, 0.25) is tuned  # cached per process


def test_instance_oracle_picks_on_the_replicate_and_scores_on_the_episode() -> None:
    config = tiny_config()
    seeds = [1, 2, 3]
    grid = share_grid(config.quantity_mapping(), 0.25)
    oracle = instance_oracle(config, seeds, grid)
    rows = np.arange(len(seeds))
    table = constant_accuracies(config, [seed_pair(s) for s in seeds], grid)
    replicate = constant_accuracies(config, [seed_pair(s, replicate=1) for s in seeds], grid)
    np.testing.assert_allclose(oracle.table, table, atol=1e-3)
    np.testing.assert_array_equal(oracle.chosen, np.argmax(replicate, axis=1))
    np.testing.assert_array_equal(oracle.accuracy, oracle.table[rows, oracle.chosen])
    np.testing.assert_array_equal(oracle.in_sample, oracle.table.max(axis=1))
    assert (oracle.in_sample >= oracle.accuracy).all()
    assert not np.array_equal(replicate, table)  # the replicate is another run, not the same one


# -- the best-constant agent spec ----------------------------------------------------------------------------


def test_parse_best_constant_specs() -> None:
    plain = parse_spec("best-constant")
    assert (plain.kind, plain.tuned_on, plain.label, plain.text) == ("best-constant", None, "best-constant", "best-constant")
    tuned = parse_spec("best-constant:SyntheticMix-v0")
    assert tuned.tuned_on == "dus_env/SyntheticMix-v0" and tuned.text == "best-constant:dus_env/SyntheticMix-v0"
    assert parse_spec("best-constant:dus_env/SyntheticMix-v0").tuned_on == "dus_env/SyntheticMix-v0"
    named = parse_spec("bc=best-constant:MFeatMix-v0")
    assert named.label == "bc" and named.named


@pytest.mark.parametrize("text", ["best-constant:Nope-v0", "best-constant:", "best-constant:dus_env/Nope-v0"])
def test_best_constant_refuses_unknown_envs(text: str) -> None:
    with pytest.raises(UsageError, match="unknown env"):
        parse_spec(text)


def test_best_constant_refuses_an_env_with_another_number_of_modalities() -> None:
    env = tiny_env()
    with pytest.raises(UsageError, match=r"best-constant:dus_env/Synthetic3-v0.*3 modalities.*2"):
        make_agent("best-constant:Synthetic3-v0", env)


@pytest.mark.parametrize("spec, source", [("best-constant", None), ("best-constant:SyntheticMix-v0", "SyntheticMix")])
def test_best_constant_tunes_on_the_right_config(spec: str, source: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent is tuned with the evaluated env's training settings and ``ENV``'s task distribution; its shares are the tuned ones.

    Tuning on the 20 default seeds is the slow test below; here the call is recorded and run on two seeds.
    """
    calls: list[EnvConfig] = []

    def cheap(config: EnvConfig, *_: Any) -> constants.TunedConstant:
        calls.append(config)
        return tune_best_constant(config, FEW_SEEDS, 0.25)

    monkeypatch.setattr(constants, "tune_best_constant", cheap)
    env = tiny_env()
    agent = make_agent(spec, env)
    (config,) = calls
    evaluated = env.unwrapped.config
    if source is None:
        assert config == dataclasses.replace(evaluated, torch_threads=None)
    else:
        assert config == dataclasses.replace(evaluated, task=SYNTHETIC_MIX, shuffle_modalities=True, torch_threads=None)
    tuned = tune_best_constant(config, FEW_SEEDS, 0.25)
    assert isinstance(agent, FixedAllocationAgent) and agent.name == parse_spec(spec).label
    np.testing.assert_allclose(agent.shares, tuned.shares)
    best = tuned.grid[int(np.argmax(tuned.mean_accuracy))]
    np.testing.assert_array_equal(env.unwrapped.mapping.quantities(agent.act(np.zeros(1))), best)


@pytest.mark.slow
def test_best_constant_agent_is_the_default_tuning() -> None:
    """End to end on the default tuning seeds and grid (about 3 s on tiny settings)."""
    env = tiny_env()
    agent = make_agent("best-constant", env)
    tuned = tune_best_constant(dataclasses.replace(env.unwrapped.config, torch_threads=None))
    assert len(tuned.mean_accuracy) == len(share_grid(env.unwrapped.mapping)) == 13
    assert tuned.shares == tuple(shares_of(tuned.grid[int(np.argmax(tuned.mean_accuracy))]).tolist())
    np.testing.assert_allclose(agent.shares, tuned.shares)


# -- bench/headroom.py ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_headroom_main_on_tiny_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench/headroom.py`` end to end on the tiny overrides (``--env-kwargs``)."""
    import bench.headroom as headroom

    out = tmp_path / "headroom.json"
    argv = ["--envs", "Synthetic-v0", "--seeds", "2", "--grid-step", "0.25", "--env-kwargs", json.dumps(dict(LEARNING)), "--out", str(out)]
    assert headroom.main(argv) == 0
    (report,) = json.loads(out.read_text())
    assert report["env"] == "dus_env/Synthetic-v0" and report["seeds"] == [50_100, 50_101]
    assert report["grid_shares"] == [[0.25, 0.75], [0.5, 0.5], [0.75, 0.25]]
    accuracy = {name: np.array(values) for name, values in report["accuracy"].items()}
    assert set(accuracy) == {"uniform", "best single constant", "per-instance oracle", "per-instance oracle (in-sample)", "heuristic"}
    for values in accuracy.values():
        assert values.shape == (2,) and ((0 <= values) & (values <= 1)).all()
    assert (accuracy["per-instance oracle (in-sample)"] >= accuracy["per-instance oracle"]).all()
    assert (accuracy["per-instance oracle (in-sample)"] >= accuracy["best single constant"]).all()
    assert report["headroom"]["mean"] == pytest.approx(np.mean(accuracy["per-instance oracle"] - accuracy["best single constant"]))
    config = dataclasses.replace(tiny_config(), torch_threads=None)
    assert report["best_single_shares"] == [round(x, 4) for x in tune_best_constant(config, TUNING_SEEDS, 0.25).shares]


@pytest.mark.parametrize(
    "spec, overrides",
    [("best-constant:Features-v0", {}), ("best-constant:SyntheticMix-v0", {"max_quantity": 600})],
    ids=["features-needs-a-path", "max-quantity-above-env-n-train"],
)
def test_best_constant_on_an_env_it_cannot_be_tuned_on_is_a_spec_error(spec: str, overrides: dict[str, Any]) -> None:
    """``make_agent`` promises an :class:`UsageError` naming the spec for a spec that does not fit the env."""
    env = gym.make("dus_env/Synthetic-v0", **{**TINY_OVERRIDES, "base_batch_size": 32, "min_quantity": 8, "max_quantity": 56, **overrides})
    with pytest.raises(UsageError, match=r"best-constant:dus_env/"):
        make_agent(spec, env)

"""End-to-end: the default task shows modality imbalance, and the scripts users run still work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import dus_env
from agents.baselines import FixedAllocationAgent, UniformAgent
from agents.rollout import run_episode

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_uniform_sampling_leaves_the_weak_modality_under_trained() -> None:
    env = gym.make("dus_env/Synthetic-v0")
    core = env.unwrapped
    uniform, weak_heavy = [], []
    for seed in range(3):
        result = run_episode(env, UniformAgent(core.layout, core.mapping), seed)
        uniform.append(result)
        weak_heavy.append(run_episode(env, FixedAllocationAgent(core.layout, core.mapping, (0.25, 0.75)), seed))
    strong_u, weak_u = np.mean([r.final["test_modality_accuracies"] for r in uniform], axis=0)
    _, weak_h = np.mean([r.final["test_modality_accuracies"] for r in weak_heavy], axis=0)
    # the dominant modality learns faster: higher cumulative score under uniform sampling
    assert all(r.trace[-1]["cumulative_scores"][0] > r.trace[-1]["cumulative_scores"][1] for r in uniform)
    assert strong_u > weak_u
    # the weak modality reaches much more when it gets more of the data (measured: ~44% vs ~57%)
    assert weak_h - weak_u > 0.05


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_allocation_sweep_prints_a_table() -> None:
    tiny = json.dumps(dus_env.TINY_OVERRIDES)
    result = run_script(
        "bench/allocation_sweep.py", "--envs", "dus_env/Synthetic-v0", "--seeds", "2", "--workers", "1", "--env-kwargs", tiny
    )
    assert result.returncode == 0, result.stderr
    assert "0.5,0.5 (uniform)" in result.stdout and "difference" in result.stdout


@pytest.mark.slow
def test_env_overhead_bench_prints_the_ratio() -> None:
    tiny = json.dumps(dus_env.TINY_OVERRIDES)
    result = run_script("bench/env_overhead.py", "--episodes", "2", "--env-kwargs", tiny)
    assert result.returncode == 0, result.stderr
    assert "ratio env/bare" in result.stdout


@pytest.mark.slow
def test_plug_in_example_trains_with_sampler_and_uniform() -> None:
    result = run_script("examples/plug_into_training_loop.py", "--seeds", "1")
    assert result.returncode == 0, result.stderr
    assert "DUSSampler" in result.stdout and "uniform" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("options", [(), ("--order", "bss_adaptive", "--no-ogm-ge"), ("--order", "random")])
def test_plugin_methods_example_trains_with_the_sampler(options: tuple[str, ...]) -> None:
    result = run_script("examples/plugin_methods_with_sampler.py", "--seeds", "1", "--iterations", "30", *options)
    assert result.returncode == 0, result.stderr
    assert "DUS-H" in result.stdout and "fused test balanced accuracy" in result.stdout


def test_plugin_table_compares_dus_x_with_x_for_every_method(tmp_path: Path) -> None:
    """``bench/plugin_table.py`` on the tiny overrides: one row per method, DUS/X - X from the per-seed numbers."""
    from bench import plugin_table

    out = tmp_path / "plugin.json"
    argv = [
        "--envs",
        "Synthetic3-v0",
        "--seeds",
        "3",
        "--seed-offset",
        "5",
        "--out",
        str(out),
        "--env-kwargs",
        json.dumps(dus_env.TINY_OVERRIDES),
    ]
    assert plugin_table.main(argv) == 0
    report = json.loads(out.read_text())
    assert [row["method"] for row in report["rows"]] == list(plugin_table.METHODS)
    for row in report["rows"]:
        assert row["diff"] == pytest.approx(100 * (np.mean(row["dus_x_per_seed"]) - np.mean(row["x_per_seed"])))
        assert row["single_ms_per_step"] > 0 and row["batched_ms_per_env_step"] > 0
    assert report["seeds"] == [5, 6, 7]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--envs", "NoSuchEnv-v0"), "unknown env id 'NoSuchEnv-v0'"),
        (("--env-kwargs", "kind=mie"), "--env-kwargs sets kind, which each method sets itself"),
        (("--env-kwargs", "learner.row_order=bss_adaptive"), "--env-kwargs sets row_order"),
        (("--env-kwargs", "ogm_alpha=0.5"), "LearnerConfig.ogm_alpha=0.5 is invalid: only kind='ogm_ge' reads it"),
    ],
)
def test_plugin_table_names_a_bad_option(options: tuple[str, ...], message: str) -> None:
    result = run_script("bench/plugin_table.py", "--seeds", "2", *options)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_vector_throughput_bench_prints_the_table() -> None:
    result = run_script("bench/vector_throughput.py", "--quick")
    assert result.returncode == 0, result.stderr
    assert "SubprocVecEnv, 2 workers" in result.stdout and "DUSVectorEnv num_envs=8" in result.stdout
    assert "x SubprocVecEnv" in result.stdout and "env/bare" in result.stdout


def test_mirror_probe_tells_a_state_reading_policy_from_an_index_preference() -> None:
    """DUS-H reads the scores: its shares follow the mirrored modalities fully; a constant does not move."""
    from bench.mirror_probe import mirror_probe

    seeds, short = [3, 4], {"decision_steps": 3, "iterations_per_step": 5}  # the full model: DUS-H is not uniform
    heuristic = mirror_probe("heuristic", "dus_env/SyntheticMix-v0", seeds, short)
    fixed = mirror_probe("fixed:0.3,0.7", "dus_env/SyntheticMix-v0", seeds, short)
    assert heuristic.original.shape == (6,) and np.ptp(heuristic.original) > 0
    np.testing.assert_allclose(heuristic.mirrored, heuristic.followed, atol=1e-6)
    assert heuristic.follow_ratio == pytest.approx(1.0)
    np.testing.assert_allclose(fixed.mirrored, fixed.original)
    assert fixed.follow_ratio == pytest.approx(0.0)


@pytest.mark.slow
def test_headroom_bench_prints_every_row_and_the_headroom(tmp_path: Path) -> None:
    tiny = json.dumps(dus_env.TINY_OVERRIDES)
    out = tmp_path / "headroom.json"
    result = run_script(
        "bench/headroom.py",
        "--envs",
        "SyntheticMix-v0",
        "--seeds",
        "3",
        "--tuning-seeds",
        "2",
        "--grid-step",
        "0.25",
        "--env-kwargs",
        tiny,
        "--agents",
        "fixed:0.5,0.5",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    for row in ("uniform", "best single constant", "per-instance oracle", "heuristic", "fixed:0.5,0.5", "headroom"):
        assert row in result.stdout
    report = json.loads(out.read_text())[0]
    accuracy = report["accuracy"]
    # the per-instance oracle's in-sample maximum is at least every constant, uniform included
    assert all(a >= u - 1e-12 for a, u in zip(accuracy["per-instance oracle (in-sample)"], accuracy["uniform"]))
    # fixed:0.5,0.5 is uniform: run through the agent path, it scores what the constant path scored
    np.testing.assert_allclose(accuracy["fixed:0.5,0.5"], accuracy["uniform"], atol=0.02)
    assert report["tuning_seeds"] == [60_000, 60_001]


def test_headroom_bench_names_a_bad_option() -> None:
    result = run_script("bench/headroom.py", "--envs", "NoSuchEnv-v0", "--seeds", "3")
    assert result.returncode == 2 and "NoSuchEnv-v0" in result.stderr

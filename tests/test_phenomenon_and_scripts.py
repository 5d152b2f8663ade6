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
    result = run_script("bench/allocation_sweep.py", "--envs", "dus_env/Synthetic-v0", "--seeds", "2", "--workers", "1", "--env-kwargs", tiny)
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
def test_vector_throughput_bench_prints_the_table() -> None:
    result = run_script("bench/vector_throughput.py", "--quick")
    assert result.returncode == 0, result.stderr
    assert "SubprocVecEnv, 2 workers" in result.stdout and "DUSVectorEnv num_envs=8" in result.stdout
    assert "x SubprocVecEnv" in result.stdout and "env/bare" in result.stdout

"""Episode runners: a batch in the native vector env records the same episodes as one env per seed."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.baselines import RandomAgent
from agents.heuristic import HeuristicAgent
from agents.rollout import run_episode, run_episode_batch
from dus_env import TINY_OVERRIDES

ENV_ID = "dus_env/Synthetic-v0"


@pytest.mark.parametrize("agent_class", [HeuristicAgent, RandomAgent])
def test_batch_equals_one_env_per_seed(agent_class) -> None:
    env = gym.make(ENV_ID, **TINY_OVERRIDES)
    layout, mapping = env.unwrapped.layout, env.unwrapped.mapping
    seeds = [40, 41, 42]
    single = [run_episode(env, agent_class(layout, mapping), seed, ENV_ID) for seed in seeds]
    venv = gym.make_vec(ENV_ID, num_envs=3, **TINY_OVERRIDES)
    batch = run_episode_batch(venv, [agent_class(layout, mapping) for _ in seeds], seeds, ENV_ID)
    for a, b in zip(single, batch):
        assert a.seed == b.seed and len(a.trace) == len(b.trace) and set(a.final) == set(b.final)
        assert b.test_accuracy == pytest.approx(a.test_accuracy, abs=1e-4)
        assert b.episode_return == pytest.approx(a.episode_return, abs=1e-4)
        assert [step["quantities"] for step in a.trace] == [step["quantities"] for step in b.trace]


def test_an_env_that_diverges_early_still_returns_its_episode() -> None:
    venv = gym.make_vec(ENV_ID, num_envs=2, **TINY_OVERRIDES)
    env = gym.make(ENV_ID, **TINY_OVERRIDES)
    agents = [HeuristicAgent(env.unwrapped.layout, env.unwrapped.mapping) for _ in range(2)]
    original_reset = venv.reset

    def poisoned_reset(**kwargs):
        result = original_reset(**kwargs)
        model = venv.unwrapped.core.model
        with torch.no_grad():
            model.flat[model.element_env == 1] = float("nan")
        return result

    venv.reset = poisoned_reset
    first, second = run_episode_batch(venv, agents, [3, 4], ENV_ID)
    assert len(first.trace) == TINY_OVERRIDES["decision_steps"] + 1 and not first.final["diverged"]
    assert len(second.trace) == 2 and second.final["diverged"] and "test_fused_accuracy" in second.final
    assert np.isfinite(first.test_accuracy)

"""Episode runners: a batch in the native vector env records the same episodes as one env per seed."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.baselines import RandomAgent, UniformAgent
from agents.heuristic import HeuristicAgent
from agents.rollout import run_episode, run_episode_batch
from dus_env import TINY_OVERRIDES

ENV_ID = "dus_env/Synthetic-v0"


@pytest.mark.parametrize("agent_class", [HeuristicAgent, RandomAgent])
def test_batch_equals_one_env_per_seed(agent_class: Any) -> None:
    env = gym.make(ENV_ID, **TINY_OVERRIDES)
    layout, mapping = env.unwrapped.layout, env.unwrapped.mapping
    seeds = [40, 41, 42]
    single = [run_episode(env, agent_class(layout, mapping), seed, ENV_ID) for seed in seeds]
    venv = gym.make_vec(ENV_ID, num_envs=3, **TINY_OVERRIDES)
    batch = run_episode_batch(venv, [agent_class(layout, mapping) for _ in seeds], seeds, ENV_ID)
    for a, b in zip(single, batch):
        assert a.seed == b.seed and len(a.trace) == len(b.trace) == TINY_OVERRIDES["decision_steps"] + 1
        assert [set(step) for step in a.trace] == [set(step) for step in b.trace] and set(a.final) == set(b.final)
        assert b.test_accuracy == pytest.approx(a.test_accuracy, abs=1e-4)
        assert b.episode_return == pytest.approx(a.episode_return, abs=1e-4)
        assert [step["quantities"] for step in a.trace] == [step["quantities"] for step in b.trace]
        assert b.final["quantity_history"] == a.final["quantity_history"]


def test_an_env_that_diverges_early_still_returns_its_episode() -> None:
    venv = gym.make_vec(ENV_ID, num_envs=2, **TINY_OVERRIDES)
    env = gym.make(ENV_ID, **TINY_OVERRIDES)
    layout, mapping = env.unwrapped.layout, env.unwrapped.mapping
    original_reset = venv.reset

    def poisoned_reset(**kwargs: Any) -> Any:
        result = original_reset(**kwargs)
        model = venv.unwrapped.core.model
        with torch.no_grad():
            model.flat[model.element_env == 1] = float("nan")
        return result

    venv.reset = poisoned_reset
    first, second = run_episode_batch(venv, [HeuristicAgent(layout, mapping) for _ in range(2)], [3, 4], ENV_ID)
    assert len(first.trace) == TINY_OVERRIDES["decision_steps"] + 1 and not first.final["diverged"]
    assert len(second.trace) == 2 and second.final["diverged"] and "test_fused_accuracy" in second.final
    # The healthy env never saw its neighbour's NaNs.
    assert first.test_accuracy == pytest.approx(run_episode(env, HeuristicAgent(layout, mapping), 3).test_accuracy, abs=1e-4)

    # The benchmark reuses a vector env across batches: a reset must leave nothing of the last batch.
    del venv.reset
    again = run_episode_batch(venv, [HeuristicAgent(layout, mapping) for _ in range(2)], [3, 4], ENV_ID)
    assert again[0].test_accuracy == first.test_accuracy and not again[1].final["diverged"]
    assert again[1].test_accuracy == pytest.approx(run_episode(env, HeuristicAgent(layout, mapping), 4).test_accuracy, abs=1e-4)
    assert np.isfinite(again[1].episode_return)


def test_batch_arguments_are_checked() -> None:
    venv = gym.make_vec(ENV_ID, num_envs=2, **TINY_OVERRIDES)
    agents = [UniformAgent(venv.unwrapped.layout, venv.unwrapped.mapping) for _ in range(2)]
    with pytest.raises(ValueError, match="venv has 2 envs, agents has 2, seeds has 3"):
        run_episode_batch(venv, agents, [1, 2, 3])
    same_step = gym.make_vec(ENV_ID, num_envs=2, autoreset_mode="same_step", **TINY_OVERRIDES)
    with pytest.raises(ValueError, match="next_step autoreset mode"):
        run_episode_batch(same_step, agents, [1, 2])

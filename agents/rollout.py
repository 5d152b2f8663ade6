"""Run agents for whole episodes and keep what benchmarks and plots need: one env, or a batch of
episodes in the native vector env (``dus_env.DUSVectorEnv``), with the same results format."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from dus_env.vector_env import row_infos

from .base import Agent

TRACE_KEYS = ("quantities", "cumulative_scores", "val_fused_accuracy", "val_modality_accuracies", "train_loss")


@dataclass
class EpisodeResult:
    """Outcome of one episode: the return, the env's final info, and a per-step trace.

    ``wall_time`` is in seconds; for an episode of a batch it is the batch's divided by its episodes
    (what one episode cost, as the tables report it).
    """

    agent: str
    env_id: str
    seed: int
    episode_return: float
    final: dict[str, Any]
    trace: list[dict[str, Any]] = field(default_factory=list)
    wall_time: float = 0.0

    @property
    def test_accuracy(self) -> float:
        return float(self.final["test_fused_accuracy"])


def trace_entry(info: dict[str, Any], reward: float) -> dict[str, Any]:
    """One decision step of an episode's trace (an info dict in ``DUSEnv``'s format)."""
    return {key: info[key] for key in TRACE_KEYS} | {"reward": float(reward)}


def final_entries(info: dict[str, Any]) -> dict[str, Any]:
    """What an episode's last info holds beyond the trace: the final test metrics."""
    return {key: value for key, value in info.items() if key not in TRACE_KEYS}


def run_episode(env: gym.Env, agent: Agent, seed: int, env_id: str = "") -> EpisodeResult:
    """Play one full episode with ``agent`` from ``env.reset(seed=seed)``."""
    start = time.perf_counter()
    agent.reset(seed)
    observation, info = env.reset(seed=seed)
    trace = [trace_entry(info, 0.0)]
    total = 0.0
    while True:
        action = np.asarray(agent.act(observation), dtype=np.float32)
        observation, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        trace.append(trace_entry(info, float(reward)))
        if terminated or truncated:
            break
    return EpisodeResult(agent.name, env_id, seed, total, final_entries(info), trace, time.perf_counter() - start)


def run_episode_batch(venv: gym.vector.VectorEnv, agents: Sequence[Agent], seeds: Sequence[int], env_id: str = "") -> list[EpisodeResult]:
    """Play one episode per env of a native vector env, env ``i`` with ``agents[i]`` from seed ``seeds[i]``.

    The same episodes as :func:`run_episode` with a ``DUSEnv`` on the same seeds (up to float noise
    of the batched kernels), stepped together. Each episode is recorded until its own end; stepping
    stops when every env has ended once (an env that diverged early meanwhile starts a new episode,
    with uniform actions, which is not recorded). Every episode's wall time is the batch's divided
    by its size.

    :param venv: a :class:`dus_env.DUSVectorEnv` (``gymnasium.make_vec``) in ``next_step`` autoreset
        mode (the default), so that an ending step's info is that episode's own.
    :param agents: one agent per env, each reset with its episode's seed (agents may keep per-episode state).
    :param seeds: one reset seed per env.
    :raises ValueError: the counts of envs, agents and seeds differ, or the autoreset mode is not ``next_step``.
    """
    n = len(seeds)
    if venv.num_envs != n or len(agents) != n:
        raise ValueError(
            f"run_episode_batch needs one agent and one seed per env: venv has {venv.num_envs} envs, "
            f"agents has {len(agents)}, seeds has {n}"
        )
    mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode != AutoresetMode.NEXT_STEP:
        raise ValueError(f"run_episode_batch needs venv in next_step autoreset mode, not {mode}: make it with autoreset_mode='next_step'")
    start = time.perf_counter()
    for agent, seed in zip(agents, seeds):
        agent.reset(seed)
    observations, infos = venv.reset(seed=[int(seed) for seed in seeds])  # type: ignore[arg-type]  # vector envs take one seed per env; gymnasium's stub says int
    traces = [[trace_entry(row, 0.0)] for row in row_infos(infos, n)]
    totals = np.zeros(n)
    finals: list[dict[str, Any]] = [{} for _ in range(n)]
    running = np.ones(n, dtype=bool)
    actions = np.zeros((n, *(venv.single_action_space.shape or ())), dtype=np.float32)
    while running.any():
        for i in np.flatnonzero(running).tolist():
            actions[i] = agents[i].act(observations[i])
        observations, rewards, terminated, truncated, infos = venv.step(actions)
        rows = row_infos(infos, n)
        for i in np.flatnonzero(running).tolist():
            totals[i] += float(rewards[i])
            traces[i].append(trace_entry(rows[i], rewards[i]))
            if terminated[i] or truncated[i]:
                finals[i] = final_entries(rows[i])
                running[i] = False
                actions[i] = 0.0  # uniform sampling for the ignored rest
    wall = (time.perf_counter() - start) / n
    return [
        EpisodeResult(agent.name, env_id, int(seed), float(total), final, trace, wall)
        for agent, seed, total, final, trace in zip(agents, seeds, totals, finals, traces)
    ]

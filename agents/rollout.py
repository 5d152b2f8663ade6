"""Run one agent for one episode and keep what benchmarks and plots need."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from .base import Agent

TRACE_KEYS = ("quantities", "cumulative_scores", "val_fused_accuracy", "val_modality_accuracies", "train_loss")


@dataclass
class EpisodeResult:
    """Outcome of one episode: the return, the env's final info, and a per-step trace."""

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


def run_episode(env: gym.Env, agent: Agent, seed: int, env_id: str = "") -> EpisodeResult:
    """Play one full episode with ``agent`` from ``env.reset(seed=seed)``."""
    start = time.perf_counter()
    agent.reset(seed)
    observation, info = env.reset(seed=seed)
    trace = [{key: info[key] for key in TRACE_KEYS} | {"reward": 0.0}]
    total = 0.0
    while True:
        action = np.asarray(agent.act(observation), dtype=np.float32)
        observation, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        trace.append({key: info[key] for key in TRACE_KEYS} | {"reward": float(reward)})
        if terminated or truncated:
            break
    final = {key: value for key, value in info.items() if key not in TRACE_KEYS}
    return EpisodeResult(agent.name, env_id, seed, total, final, trace, time.perf_counter() - start)

"""How fast does the environment step, alone and in parallel, and where does a step's time go?

Prints, in one run:

* decision steps per second of one env in this process (one core, one torch thread);
* decision steps per second of 2 envs in Stable-Baselines3's ``SubprocVecEnv`` (forkserver) and
  the scaling over one env (target >= 1.7x on 2 cores);
* the share of a step's CPU time spent in the validation pass (target <= 20%), next to training
  iterations, score collection and the rest (action mapping, observation, info).

    python bench/throughput.py
    python bench/throughput.py --env dus_env/MFeat-v0 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dus_env  # noqa: F401
from dus_env import core as core_module
from dus_env.env import DUSEnv


def steps_per_second_single(env_id: str, env_kwargs: dict, seconds: float) -> float:
    env = gym.make(env_id, **env_kwargs)
    action = np.zeros(cast(spaces.Box, env.action_space).shape, dtype=np.float32)
    env.reset(seed=0)
    steps, seed = 0, 1
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, _, _ = env.step(action)
        steps += 1
        if terminated:
            env.reset(seed=seed)
            seed += 1
    return steps / (time.perf_counter() - start)


def steps_per_second_subproc(env_id: str, env_kwargs: dict, seconds: float, n_envs: int) -> float:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    # render_mode=None: make_vec_env would otherwise ask for "rgb_array" and log a warning
    vec = make_vec_env(
        f"dus_env:{env_id}",
        n_envs=n_envs,
        seed=0,
        env_kwargs={"render_mode": None, **env_kwargs},
        vec_env_cls=SubprocVecEnv,
        vec_env_kwargs={"start_method": "forkserver"},
    )
    try:
        actions = np.zeros((n_envs, *cast(spaces.Box, vec.action_space).shape), dtype=np.float32)
        vec.reset()
        for _ in range(3):  # warm-up: first resets and steps in each worker
            vec.step(actions)
        steps = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            vec.step(actions)
            steps += n_envs
        return steps / (time.perf_counter() - start)
    finally:
        vec.close()


def step_breakdown(env_id: str, env_kwargs: dict, episodes: int) -> dict[str, float]:
    """CPU seconds per part of a step, measured by timing the env's own pieces in place."""
    core = cast(DUSEnv, gym.make(env_id, **env_kwargs).unwrapped)
    # Training iterations and score collection are one call of the batched learner (``run``) now.
    parts = {"training iterations and scores": 0.0, "validation": 0.0, "step total": 0.0}

    def timed(part: str, function):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            result = function(*args, **kwargs)
            parts[part] += time.process_time() - start
            return result

        return wrapper

    action = np.zeros(cast(spaces.Box, core.action_space).shape, dtype=np.float32)
    core.reset(seed=0)  # warm-up episode, not counted
    learner = core.core.learner
    # Instrumented in place on purpose: the env calls this bound method and is timed through it.
    learner.run = timed("training iterations and scores", learner.run)  # type: ignore[method-assign]
    validate = timed("validation", core_module.evaluate_split)
    for seed in range(1, episodes + 1):
        core.reset(seed=seed)
        terminated = False
        original, core_module.evaluate_split = core_module.evaluate_split, validate
        try:
            while not terminated:
                start = time.process_time()
                _, _, terminated, _, _ = core.step(action)
                parts["step total"] += time.process_time() - start
        finally:
            core_module.evaluate_split = original
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="dus_env/Synthetic-v0")
    parser.add_argument("--env-kwargs", type=json.loads, default={}, help="JSON overrides for gymnasium.make")
    parser.add_argument("--seconds", type=float, default=15.0, help="measuring time of each throughput figure")
    parser.add_argument("--episodes", type=int, default=10, help="episodes for the step breakdown")
    args = parser.parse_args()
    torch.set_num_threads(1)
    single = steps_per_second_single(args.env, args.env_kwargs, args.seconds)
    double = steps_per_second_subproc(args.env, args.env_kwargs, args.seconds, 2)
    print(f"{args.env}: decision steps per second")
    print(f"  1 env, this process      {single:7.1f}")
    print(f"  2 envs, SubprocVecEnv    {double:7.1f}   scaling {double / single:.2f}x (target >= 1.7x)")
    parts = step_breakdown(args.env, args.env_kwargs, args.episodes)
    total = parts.pop("step total")
    parts["other (mapping, monitor, observation, info)"] = total - sum(parts.values())
    decision_steps = cast(DUSEnv, gym.make(args.env, **args.env_kwargs).unwrapped).config.decision_steps
    print(f"share of a step's CPU time ({args.episodes} episodes, {1e3 * total / (args.episodes * decision_steps):.2f} ms per step):")
    for name, seconds in parts.items():
        marker = "  (target <= 20%)" if name == "validation" else ""
        print(f"  {name:<46} {100 * seconds / total:5.1f}%{marker}")


if __name__ == "__main__":
    main()

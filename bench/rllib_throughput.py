"""Training steps per second: RLlib PPO (``train_agent.py --backend rllib``) vs SB3 PPO, same env, same cores.

Both train PPO with ``agents/hyperparams/ppo.yml`` (64 envs x 20 steps = 1,280 env steps per
iteration, 4 minibatches, 10 epochs, a 64-64 MLP) on ``dus_env/Synthetic-v0``: SB3 on the native
vector env in this process (``train_agent.py``'s default), RLlib with 0, 1 and 2 remote env runners
(each stepping ``64 / runners`` envs as one native vector env) on a Ray started here with the
process's cores. Start-up (building the algorithm, Ray, the first iteration) is excluded: the
figure is env steps per second of whole iterations (sampling + update) after one warm-up iteration.
The two backends alternate for ``--rounds`` rounds (the machine is shared and noisy) and the median
of each is printed, with the ratio.

    python bench/rllib_throughput.py               # about 6 minutes on 2 cores
    python bench/rllib_throughput.py --quick       # one round, tiny env: a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dus_env
import train_agent
from agents.native_vec_env import make_native_vec_env
from agents.ray_cluster import connect, usable_cores
from agents.runs import resolve_run
from agents.sb3_agent import get_algorithm_class, sb3_constructor_kwargs, vec_normalize_kwargs

ENV_ID = "dus_env/Synthetic-v0"


def run_for(runners: int | None, env_kwargs: list[str], hyperparams: list[str]) -> Any:
    """The resolved run (nothing written) of the SB3 backend (``runners=None``) or of RLlib with ``runners`` env runners."""
    args = train_agent.Args(env=ENV_ID, env_kwargs=env_kwargs, hyperparams=hyperparams)
    if runners is not None:
        args.backend, args.num_env_runners = "rllib", runners
    return resolve_run(args)


def sb3_steps_per_second(run: Any, iterations: int) -> float:
    """SB3 PPO as ``train_agent.py`` builds it (native vector env, VecNormalize), timed over ``iterations`` rollouts."""
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    torch.set_num_threads(usable_cores())
    algorithm = get_algorithm_class("ppo")
    venv = VecNormalize(
        VecMonitor(make_native_vec_env(run.env_id, run.n_envs, {"torch_threads": None, **run.env_kwargs})),
        **(vec_normalize_kwargs(run.hyperparams) or {}),
    )
    model = algorithm(env=venv, seed=0, verbose=0, device="cpu", **sb3_constructor_kwargs(algorithm, run.hyperparams))
    per_iteration = run.n_envs * run.hyperparams["n_steps"]
    model.learn(per_iteration)  # warm-up
    start = time.perf_counter()
    model.learn(per_iteration * iterations, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    venv.close()
    return per_iteration * iterations / elapsed


#: RLlib's own per-iteration timers (seconds): sampling on the env runners, the learner's update, the
#: weight broadcast. They feed the cluster estimate of docs/scaling.md (sampling scales with runners,
#: the update does not).
PARTS = {"sample": "env_runner_sampling_timer", "update": "learner_update_timer", "sync": "synch_weights"}


def rllib_steps_per_second(run: Any, iterations: int) -> tuple[float, dict[str, float]]:
    """RLlib PPO as ``train_agent.py --backend rllib`` builds it, timed over ``iterations`` iterations;
    also the mean seconds per iteration of each of :data:`PARTS`."""
    from agents.rllib_training import build_algorithm

    algo = build_algorithm(run, 0)
    try:
        algo.train()  # warm-up
        steps = 0
        parts = dict.fromkeys(PARTS, 0.0)
        start = time.perf_counter()
        for _ in range(iterations):
            result = algo.train()
            steps += int(result["env_runners"]["num_env_steps_sampled"])
            for name, key in PARTS.items():
                parts[name] += float(result["timers"].get(key, float("nan"))) / iterations
        return steps / (time.perf_counter() - start), parts
    finally:
        algo.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two backends (median reported)")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations (rollouts) per measurement")
    parser.add_argument("--runners", type=int, nargs="+", default=[0, 1, 2], help="RLlib env runner counts to measure")
    parser.add_argument("--quick", action="store_true", help="one round, one iteration, tiny env and rollouts (a smoke run)")
    args = parser.parse_args()
    env_kwargs: list[str] = []
    hyperparams: list[str] = []
    if args.quick:
        args.rounds, args.iterations = 1, 1
        tiny = {
            key: list(value) if isinstance(value, tuple) else value for key, value in dus_env.TINY_OVERRIDES.items() if key != "learner"
        }
        env_kwargs = [json.dumps(tiny)]
        hyperparams = ["n_envs=4", "n_steps=4", "batch_size=8", "n_epochs=1"]
    connect(None, "bench/rllib_throughput.py")
    print(f"{ENV_ID}, {usable_cores()} cores, {args.iterations} timed iterations per measurement, {args.rounds} rounds")
    names = ["sb3 (native vec env)", *(f"rllib, {n} env runners" for n in args.runners)]
    figures: dict[str, list[float]] = {name: [] for name in names}
    timers: dict[int, list[dict[str, float]]] = {}
    for round_index in range(args.rounds):
        figures["sb3 (native vec env)"].append(sb3_steps_per_second(run_for(None, env_kwargs, hyperparams), args.iterations))
        for runners in args.runners:
            rate, parts = rllib_steps_per_second(run_for(runners, env_kwargs, hyperparams), args.iterations)
            figures[f"rllib, {runners} env runners"].append(rate)
            timers.setdefault(runners, []).append(parts)
        print(f"round {round_index + 1}: " + ", ".join(f"{name} {values[-1]:.0f}" for name, values in figures.items()))
    sb3 = statistics.median(figures["sb3 (native vec env)"])
    print("\nenv steps per second (median over rounds):")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:<24} {median:8.0f}   ratio to sb3 {median / sb3:.2f}   (rounds: {', '.join(f'{v:.0f}' for v in values)})")
    print("\nRLlib seconds per iteration (median over rounds) by RLlib's timers:")
    for runners, rounds in timers.items():
        cells = ", ".join(f"{name} {statistics.median(r[name] for r in rounds):.3f}" for name in PARTS)
        print(f"  {runners} env runners: {cells}")


if __name__ == "__main__":
    main()

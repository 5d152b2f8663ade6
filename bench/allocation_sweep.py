"""Does allocation matter? Fixed per-modality allocations over seeds, final test accuracy.

For each env, runs uniform sampling and several skewed constant allocations (shares of the
per-iteration budget given to each modality) over N seeds, and prints mean and std of the final
fused and per-modality test accuracy. Usage::

    python bench/allocation_sweep.py                      # Synthetic-v0 and MFeat-v0, 5 seeds
    python bench/allocation_sweep.py --envs dus_env/SyntheticHard-v0 --seeds 10 --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import cast

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dus_env  # noqa: F401
from agents.baselines import FixedAllocationAgent
from agents.rollout import run_episode
from dus_env.env import DUSEnv

TWO_MODALITY_SHARES = ((0.125, 0.875), (0.25, 0.75), (0.375, 0.625), (0.5, 0.5), (0.625, 0.375), (0.75, 0.25), (0.875, 0.125))


def shares_for(n_modalities: int) -> list[tuple[float, ...]]:
    if n_modalities == 2:
        return list(TWO_MODALITY_SHARES)
    uniform = tuple([1.0 / n_modalities] * n_modalities)
    skewed = []
    for j in range(n_modalities):
        for weight in (0.1, 0.6):
            rest = (1.0 - weight) / (n_modalities - 1)
            skewed.append(tuple(weight if k == j else rest for k in range(n_modalities)))
    return [uniform, *skewed]


def run_one(job: tuple[str, dict, tuple[float, ...], int]) -> tuple[str, tuple[float, ...], int, float, list[float]]:
    env_id, env_kwargs, shares, seed = job
    env = gym.make(env_id, **env_kwargs)
    dus = cast(DUSEnv, env.unwrapped)
    agent = FixedAllocationAgent(dus.layout, dus.mapping, shares)
    result = run_episode(env, agent, seed, env_id)
    return env_id, shares, seed, result.test_accuracy, list(result.final["test_modality_accuracies"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["dus_env/Synthetic-v0", "dus_env/MFeat-v0"])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per allocation")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes")
    parser.add_argument("--env-kwargs", type=json.loads, default={}, help="JSON overrides, e.g. '{\"decision_steps\": 40}'")
    args = parser.parse_args()
    jobs = []
    for env_id in args.envs:
        n_modalities = cast(DUSEnv, gym.make(env_id, **args.env_kwargs).unwrapped).n_modalities
        jobs += [(env_id, args.env_kwargs, shares, seed) for shares in shares_for(n_modalities) for seed in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(run_one, jobs))
    for env_id in args.envs:
        print(f"\n{env_id}: final test accuracy over {args.seeds} seeds (mean ± std, %)")
        print(f"{'shares':<22} {'fused':>14} " + " ".join(f"{'modality ' + str(j):>14}" for j in range(len(rows[0][4]))))
        best, worst = None, None
        for shares in dict.fromkeys(r[1] for r in rows if r[0] == env_id):
            fused = np.array([r[3] for r in rows if r[0] == env_id and r[1] == shares]) * 100
            unimodal = np.array([r[4] for r in rows if r[0] == env_id and r[1] == shares]) * 100
            label = ",".join(f"{s:.3g}" for s in shares) + (" (uniform)" if len(set(shares)) == 1 else "")
            cells = " ".join(f"{m:>7.2f} ± {s:<4.2f}" for m, s in zip(unimodal.mean(0), unimodal.std(0)))
            print(f"{label:<22} {fused.mean():>7.2f} ± {fused.std():<4.2f} {cells}")
            entry = (fused.mean(), fused.std(), label)
            best = entry if best is None or entry[0] > best[0] else best
            worst = entry if worst is None or entry[0] < worst[0] else worst
        assert best is not None and worst is not None
        print(
            f"best {best[2]} {best[0]:.2f}, worst {worst[2]} {worst[0]:.2f}: difference {best[0] - worst[0]:.2f} points "
            f"(seed std {best[1]:.2f} / {worst[1]:.2f})"
        )


if __name__ == "__main__":
    main()

"""The DUS paper's plugin claim, "DUS/X beats X", for each learner and row order the env has.

For every method X (the learners ``joint``, ``ogm_ge``, ``mla``, ``mie``, and the joint learner
with the BSS row orders ``bss_curriculum`` and ``bss_adaptive``) and every env, it runs X with
uniform quantities and DUS/X (the same method with DUS-H's quantities) on the same held-out seeds,
and prints:

* the final fused test accuracy of X and of DUS/X (mean over the seeds, percent);
* the paired difference DUS/X - X with its 95% t-interval and the paired t-test p-value;
* the unimodal gap of X and of DUS/X (best minus worst modality's test accuracy, points, mean over
  the seeds): how much imbalance there was to fix, and how much is left;
* what one decision step of X costs: ms per step of a single ``DUSEnv`` (one thread, median over
  one episode after a warm-up one), and ms per env-step of the batched episodes (the seeds stepped
  together in the native vector env). For the BSS orders this includes the balance measurements.

Usage::

    python bench/plugin_table.py                                   # 3 envs x 6 methods, 10 seeds
    python bench/plugin_table.py --envs Synthetic-v0 --seeds 3     # a quick look
    python bench/plugin_table.py --env-kwargs optimizer=sgd lr=0.01   # e.g. OGM-GE's own optimizer

Seeds 80,000 and up by default: a range no training, tuning or other report here uses. ``--out
FILE.json`` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.benchmark import batches, format_pvalue, limit_threads, make_plan, parse_env_kwargs, run_batch
from agents.cli import merge_nested
from agents.errors import UsageError
from agents.seed_ranges import PLUGIN_TABLE_SEEDS
from agents.stats import paired_comparison
from dus_env.registration import resolve_env_id
from dus_env.validation import ConfigError

DEFAULT_ENVS = ("Synthetic-v0", "SyntheticHard-v0", "MFeat-v0")
#: Method name -> learner options (``gymnasium.make`` keyword arguments).
METHODS: dict[str, dict[str, str]] = {
    "joint": {"kind": "joint"},
    "ogm_ge": {"kind": "ogm_ge"},
    "mla": {"kind": "mla"},
    "mie": {"kind": "mie"},
    "bss_curriculum": {"kind": "joint", "row_order": "bss_curriculum"},
    "bss_adaptive": {"kind": "joint", "row_order": "bss_adaptive"},
}
DEFAULT_SEED_OFFSET = PLUGIN_TABLE_SEEDS.start


#: Options the methods set: given in ``--env-kwargs`` they would be overridden (or override the method).
METHOD_OPTIONS = ("kind", "row_order")


def method_kwargs(env_kwargs: dict, method: str) -> dict:
    """The user's env kwargs with the method's learner options."""
    return merge_nested(env_kwargs, {"learner": METHODS[method]})


def check_env_kwargs(env_kwargs: dict) -> None:
    """Refuse ``--env-kwargs`` that set what the methods set."""
    given = [name for name in METHOD_OPTIONS if name in env_kwargs or name in env_kwargs.get("learner", {})]
    if given:
        raise UsageError(f"--env-kwargs sets {', '.join(given)}, which each method sets itself: choose methods with --methods")


def accuracies(env_id: str, kwargs: dict, seeds: list[int]) -> tuple[dict[str, np.ndarray], dict[str, float], float]:
    """Final test accuracy per seed of X (``uniform``) and DUS/X (``heuristic``), their mean unimodal
    test accuracy gap (best minus worst modality, points), and ms per env-step of the batches."""
    plan = make_plan(["uniform", "heuristic"], [env_id], kwargs, len(seeds), seeds[0], None)
    results = sorted((result for batch in batches(plan.jobs()) for result in run_batch(batch)), key=lambda r: r.seed)
    steps = sum(len(r.trace) for r in results)
    labels = ("uniform", "heuristic")
    values = {label: np.array([r.test_accuracy for r in results if r.agent == label]) for label in labels}
    gaps = {label: 100 * float(np.mean([r.final["test_modality_gap"] for r in results if r.agent == label])) for label in labels}
    return values, gaps, 1000.0 * sum(r.wall_time for r in results) / steps


def single_env_cost(env_id: str, kwargs: dict, seed: int) -> float:
    """Median ms per decision step of one ``DUSEnv`` with uniform quantities (after a warm-up episode)."""
    env = gym.make(env_id, **kwargs)
    action = np.zeros(cast(spaces.Box, env.action_space).shape, dtype=np.float32)
    times: list[float] = []
    for episode in range(2):
        env.reset(seed=seed + episode)
        done = False
        while not done:
            start = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            if episode:
                times.append(time.perf_counter() - start)
            done = terminated or truncated
    env.close()
    return 1000.0 * statistics.median(times)


def run(envs: list[str], methods: list[str], seeds: list[int], env_kwargs: dict) -> list[dict]:
    rows = []
    for env_id in envs:
        for method in methods:
            kwargs = method_kwargs(env_kwargs, method)
            values, gaps, batched_ms = accuracies(env_id, kwargs, seeds)
            comparison = paired_comparison(values["heuristic"] * 100, values["uniform"] * 100)
            rows.append(
                {
                    "env": env_id,
                    "method": method,
                    "x": float(values["uniform"].mean() * 100),
                    "dus_x": float(values["heuristic"].mean() * 100),
                    "diff": comparison.mean_diff,
                    "ci": [comparison.ci_low, comparison.ci_high],
                    "p": comparison.t_pvalue,
                    "gap_x": gaps["uniform"],
                    "gap_dus_x": gaps["heuristic"],
                    "single_ms_per_step": single_env_cost(env_id, kwargs, seeds[0]),
                    "batched_ms_per_env_step": batched_ms,
                    "x_per_seed": values["uniform"].tolist(),
                    "dus_x_per_seed": values["heuristic"].tolist(),
                }
            )
            print_row(rows[-1], header=len(rows) == 1)
    return rows


def print_row(row: dict, header: bool) -> None:
    if header:
        print(
            f"{'env':<24} {'method X':<16} {'X %':>7} {'DUS/X %':>8} {'Δ pts':>7} {'95% CI':>17} {'p':>7} "
            f"{'gap X':>6} {'gap DUS/X':>9} {'ms/step':>8} {'ms/env-step':>12}"
        )
    low, high = row["ci"]
    print(
        f"{row['env']:<24} {row['method']:<16} {row['x']:7.2f} {row['dus_x']:8.2f} {row['diff']:+7.2f} "
        f"[{low:+6.2f}, {high:+6.2f}] {format_pvalue(row['p']):>7} {row['gap_x']:6.1f} {row['gap_dus_x']:9.1f} "
        f"{row['single_ms_per_step']:8.1f} {row['batched_ms_per_env_step']:12.2f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS), metavar="ID")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        metavar="X",
        help=f"methods to compare (default: all of {', '.join(METHODS)})",
    )
    parser.add_argument("--seeds", type=int, default=10, help="held-out seeds per method and env (default: 10)")
    parser.add_argument("--seed-offset", type=int, default=DEFAULT_SEED_OFFSET, help=f"first seed (default: {DEFAULT_SEED_OFFSET})")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KV", help="overrides for every env, as in evaluate.py")
    parser.add_argument("--out", type=Path, help="write every number to this JSON file")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.seed_offset < 0:
        parser.error("--seeds must be >= 1 and --seed-offset >= 0")
    limit_threads()
    try:
        envs = [resolve_env_id(name) for name in args.envs]
        env_kwargs = parse_env_kwargs(args.env_kwargs)
        check_env_kwargs(env_kwargs)
        seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
        started = time.perf_counter()
        rows = run(envs, args.methods, seeds, env_kwargs)
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(rows)} rows, {args.seeds} seeds ({seeds[0]}..{seeds[-1]}), torch {torch.__version__}, {time.perf_counter() - started:.0f} s"
    )
    if args.out:
        # A p-value that is not available (NaN) is written as null: the file stays strict JSON.
        rows = [{key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()} for row in rows]
        args.out.write_text(json.dumps({"seeds": seeds, "env_kwargs": env_kwargs, "rows": rows}, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

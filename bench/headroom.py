"""How much a sampling policy can gain by reading the training state, on an env's held-out instances.

For each env it prints the final fused test accuracy (mean over the held-out seeds) of:

* ``uniform``: every modality gets ``B`` samples per iteration;
* ``best single constant``: the one constant allocation with the best mean accuracy on the tuning
  seeds (:data:`agents.constants.TUNING_SEEDS`), then run on the held-out seeds;
* ``per-instance oracle``: for each held-out instance, the constant that is best for *that*
  instance, picked on a replicate run (same task, another model seed) and scored on the held-out
  episode: what a constant policy that knew the instance would score. One replicate makes the pick
  noisy, so this estimate is on the low side; the in-sample maximum (picked and scored on the same
  run, which also fits its noise) is printed beside it, on the high side;
* ``DUS-H`` and every agent given with ``--agents`` (specs as in ``evaluate.py``).

**Headroom** = per-instance oracle minus best single constant, with a paired 95% confidence
interval over the held-out instances: an estimate of what a policy can gain over the best
state-free policy by knowing which instance it faces. Near zero says that knowing the instance is
worth little to a constant policy on this env (a policy that changes its allocation within an
episode could still gain).

Usage::

    python bench/headroom.py --envs Synthetic-v0 SyntheticMix-v0 MFeatMixHeldOut-v0 \\
        --agents ppo:runs/ppo_0/best_model/best_model.zip --seeds 40 --seed-offset 50100

Runs on every core; a few minutes per env at the defaults (``--grid-step 0.05``: 17 distinct
constants for two modalities at the default quantity range, printed with the report).
``--out FILE.json`` keeps every number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.benchmark import batches, make_plan, parse_env_kwargs, run_batch
from agents.constants import (
    DEFAULT_STEP,
    TUNING_SEEDS,
    instance_oracle,
    share_grid,
    shares_of,
    tune_best_constant,
)
from agents.errors import UsageError
from agents.seed_ranges import HELD_OUT_SEEDS
from agents.stats import paired_comparison, summarize
from dus_env.config import resolve_config
from dus_env.presets import preset_for_id
from dus_env.registration import resolve_env_id
from dus_env.validation import ConfigError


def agent_accuracies(env_id: str, env_kwargs: dict, specs: list[str], seeds: list[int]) -> dict[str, np.ndarray]:
    """Final test accuracy of each agent on each seed (episodes batched per agent, as ``evaluate.py`` runs them)."""
    plan = make_plan(specs, [env_id], env_kwargs, len(seeds), seeds[0], None)
    results = [result for batch in batches(plan.jobs()) for result in run_batch(batch)]
    accuracies: dict[str, np.ndarray] = {}
    for spec in plan.agents:
        by_seed = {r.seed: r.test_accuracy for r in results if r.agent == spec.label}
        accuracies[spec.label] = np.array([by_seed[s] for s in seeds])
    return accuracies


def headroom(
    env_id: str, seeds: list[int], step: float, agents: list[str], tuning_seeds: tuple[int, ...], env_kwargs: dict | None = None
) -> dict:
    """Every number of one env's report (see the module docstring); ``env_kwargs`` as for ``gymnasium.make``."""
    env_kwargs = env_kwargs or {}
    base = preset_for_id(env_id)
    config = dataclasses.replace(resolve_config(base, env_kwargs), torch_threads=None)
    grid = share_grid(config.quantity_mapping(), step)
    uniform_index = int(np.flatnonzero((grid == grid[:, :1]).all(axis=1))[0])
    started = time.perf_counter()
    tuned = tune_best_constant(config, tuning_seeds, step)
    best_index = int(np.argmax(tuned.mean_accuracy))
    oracle = instance_oracle(config, seeds, grid)
    rows = {
        "uniform": oracle.table[:, uniform_index],
        "best single constant": oracle.table[:, best_index],
        "per-instance oracle": oracle.accuracy,
        "per-instance oracle (in-sample)": oracle.in_sample,
    }
    threads = torch.get_num_threads()
    for label, values in agent_accuracies(env_id, env_kwargs, ["heuristic", *agents], seeds).items():
        rows[label if label not in rows else f"{label} (agent)"] = values
    torch.set_num_threads(threads)  # the agents' vector envs apply their config's torch_threads (1)
    gap = paired_comparison(rows["per-instance oracle"], rows["best single constant"])
    return {
        "env": env_id,
        "env_kwargs": env_kwargs,
        "seeds": seeds,
        "tuning_seeds": list(tuning_seeds),
        "grid_step": step,
        "grid_shares": shares_of(grid).round(4).tolist(),
        "best_single_shares": [round(x, 4) for x in tuned.shares],
        "tuning_mean_accuracy": tuned.mean_accuracy.tolist(),
        "accuracy": {name: values.tolist() for name, values in rows.items()},
        "headroom": {"mean": gap.mean_diff, "ci": [gap.ci_low, gap.ci_high], "p_value": gap.t_pvalue},
        "seconds": time.perf_counter() - started,
    }


def print_report(report: dict) -> None:
    print(
        f"\n{report['env']}: {len(report['seeds'])} held-out seeds from {report['seeds'][0]}, "
        f"grid step {report['grid_step']} ({len(report['grid_shares'])} constants), "
        f"best single constant {report['best_single_shares']} (tuned on {len(report['tuning_seeds'])} tuning seeds "
        f"from {report['tuning_seeds'][0]})"
    )
    uniform = np.array(report["accuracy"]["uniform"])
    for name, values in report["accuracy"].items():
        summary = summarize(values)
        diff = paired_comparison(values, uniform) if name != "uniform" else None
        versus = f"   vs uniform {100 * diff.mean_diff:+.2f} [{100 * diff.ci_low:+.2f}, {100 * diff.ci_high:+.2f}]" if diff else ""
        print(f"  {name:34s} {100 * summary.mean:6.2f} ± {100 * summary.std:5.2f}{versus}")
    h = report["headroom"]
    print(
        f"  headroom (oracle - best single): {100 * h['mean']:+.2f} points, 95% CI "
        f"[{100 * h['ci'][0]:+.2f}, {100 * h['ci'][1]:+.2f}], p = {h['p_value']:.3g}   ({report['seconds']:.0f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["Synthetic-v0", "SyntheticMix-v0", "MFeatMix-v0", "MFeatMixHeldOut-v0"])
    parser.add_argument("--agents", nargs="*", default=[], help="extra agent specs (evaluate.py syntax)")
    parser.add_argument("--seeds", type=int, default=len(HELD_OUT_SEEDS), help="held-out instances per env")
    parser.add_argument(
        "--seed-offset", type=int, default=HELD_OUT_SEEDS.start, help="first held-out seed (agents.seed_ranges.HELD_OUT_SEEDS)"
    )
    parser.add_argument("--grid-step", type=float, default=DEFAULT_STEP, help="share grid step of the constants")
    parser.add_argument(
        "--tuning-seeds", type=int, default=len(TUNING_SEEDS), help=f"tuning seeds of the best single constant (from {TUNING_SEEDS[0]})"
    )
    parser.add_argument(
        "--env-kwargs",
        nargs="*",
        default=[],
        metavar="ITEM",
        help="env config overrides as in evaluate.py (a JSON object, or key=value items)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write every number to this JSON file")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds={args.seeds} is invalid: need at least 2 held-out seeds for a confidence interval")
    if args.tuning_seeds < 1:
        parser.error(f"--tuning-seeds={args.tuning_seeds} is invalid: need at least 1")
    try:
        env_kwargs = parse_env_kwargs(args.env_kwargs)
        env_ids = [resolve_env_id(name) for name in args.envs]
    except (UsageError, ConfigError) as error:
        parser.error(str(error))
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    tuning = tuple(range(TUNING_SEEDS[0], TUNING_SEEDS[0] + args.tuning_seeds))
    reports = []
    for env_id in env_ids:
        report = headroom(env_id, seeds, args.grid_step, args.agents, tuning, env_kwargs)
        print_report(report)
        reports.append(report)
    if args.out is not None:
        args.out.write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sweep an algorithm's hyperparameters with Ray Tune: one train_agent.py run per trial, the best as a zoo file.

Usage (``dus-tune`` is the same command, installed with the package; needs the ``ray`` extra)::

    python tune_agent.py                                   # PPO on dus_env/Synthetic-v0, 8 trials, ASHA
    python tune_agent.py --algo a2c --num-samples 16 --timesteps 20000 --search optuna
    python tune_agent.py --search-space my_space.yml --hyperparams n_envs=16 --env-kwargs decision_steps=10
    python tune_agent.py --address auto --out /shared/sweep   # on the cluster of 'ray start --head'; --out on a shared filesystem
    python train_agent.py --hyperparams runs/tune_ppo_Synthetic-v0_<time>/best.yml   # train the best one

The search space is YAML, ``agents/hyperparams/search/<algo>.yml`` by default (format in
``agents/tuning.py``: ``learning_rate: {loguniform: [1.0e-5, 1.0e-3]}``, ``n_steps: {choice: [10, 20]}``,
...); other hyperparameters keep the values of ``agents/hyperparams/<algo>.yml`` and ``--hyperparams``.
Each trial is a normal run folder of ``train_agent.py`` (same training, same files), trained on one CPU;
all trials use the training seed ``--seed``. The objective is the mean return of the deterministic
evaluation episodes (the validation reward, never the test accuracy), reported after every evaluation
(every ``--eval-freq`` steps and at the end) on the seeds ``--eval-seed``, ``--eval-seed + 1``, ... (a
range of the sweep's own: ``agents/seed_ranges.py``). ASHA stops trials that trail the others at the
same step count. Everything goes to ``--out`` (default ``runs/tune_<algo>_<env-name>_<YYYYmmdd-HHMMSS>``):

    sweep.yml       the sweep's options and search space
    trials/         one run folder per trial (trial_00000, ...)
    ray_tune/       Ray Tune's own records
    trials.csv      one row per trial: status, steps, last and best mean eval return, its values, folder
    best.yml        the best trial's hyperparameters (zoo format) for train_agent.py --hyperparams
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

import dus_env
import train_agent
from agents.errors import UsageError
from agents.runs import usable_algorithms
from agents.seed_ranges import SWEEP_EVAL_SEEDS
from agents.tuning import SCHEDULERS, SEARCH_ALGORITHMS, SweepPlan, prepare_sweep, run_sweep, train_command
from dus_env.extras import MissingExtraError, require

EXIT_USAGE, EXIT_NO_RESULT = 2, 1


@dataclass
class Args:
    """Every knob of a sweep, with its default; tyro makes one ``--option`` of each, its help from the docstring below it."""

    algo: Annotated[str, tyro.conf.arg(help=f"the algorithm: {', '.join(usable_algorithms())} (reinforce is DUS-R)")] = "ppo"
    env: Annotated[str, tyro.conf.arg(metavar="ID")] = "dus_env/Synthetic-v0"
    """a DUS environment id (the dus_env/ prefix may be left out)"""
    env_kwargs: Annotated[list[str], tyro.conf.arg(metavar="KEY=VALUE")] = field(default_factory=list)
    """env config overrides, as train_agent.py --env-kwargs (decision_steps=10 learner.hidden_sizes=[16])"""
    search_space: Annotated[str | None, tyro.conf.arg(metavar="FILE")] = None
    """the search space, YAML (None: agents/hyperparams/search/<algo>.yml; format in agents/tuning.py)"""
    hyperparams: Annotated[list[str], tyro.conf.arg(metavar="KEY=VALUE|FILE")] = field(default_factory=list)
    """values every trial shares, as train_agent.py --hyperparams (key=value items or a zoo-style .yml); the search space wins"""
    num_samples: Annotated[int, tyro.conf.arg(metavar="N")] = 8
    """number of trials"""
    timesteps: Annotated[int | None, tyro.conf.arg(metavar="STEPS")] = None
    """env steps per trial (None: n_timesteps of agents/hyperparams/<algo>.yml)"""
    search: Annotated[
        str, tyro.conf.arg(help=f"how trials are sampled: {' | '.join(SEARCH_ALGORITHMS)} (Optuna's TPE, seeded by --seed)")
    ] = "random"
    scheduler: Annotated[str, tyro.conf.arg(help=f"early stopping: {' | '.join(SCHEDULERS)} (asha: Ray Tune's ASHAScheduler)")] = "asha"
    grace_period: Annotated[int | None, tyro.conf.arg(metavar="STEPS")] = None
    """ASHA: env steps every trial trains before it may be stopped (None: a quarter of a trial's steps)"""
    reduction_factor: float = 3.0
    """ASHA: at each rung, the best 1/reduction-factor of the trials continue"""
    max_concurrent: Annotated[int | None, tyro.conf.arg(metavar="N")] = None
    """trials running at once (None: one per CPU of Ray; each trial uses one CPU)"""
    seed: int = 0
    """the training seed of every trial (so trials differ only in their hyperparameters) and the sampler's seed"""
    eval_freq: int = 5000
    """evaluate (and report to Tune) every this many env steps; ASHA decides on these reports"""
    eval_episodes: int = 5
    """episodes per evaluation"""
    eval_seed: int = SWEEP_EVAL_SEEDS.start
    """evaluation episodes use seeds eval_seed, eval_seed+1, ... (the sweep's own range, agents/seed_ranges.py)"""
    address: Annotated[str | None, tyro.conf.arg(metavar="ADDRESS")] = None
    """Ray cluster to join: auto (started with 'ray start --head' on this machine) or ray://host:10001 (None: start Ray here)"""
    num_cpus: Annotated[int | None, tyro.conf.arg(metavar="N")] = None
    """CPUs of a Ray started here (None: the cores this process may use)"""
    out: Annotated[str | None, tyro.conf.arg(metavar="DIR")] = None
    """the sweep folder, new or empty (None: runs/tune_<algo>_<env-name>_<YYYYmmdd-HHMMSS>)"""


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """``Args`` from the command line (tyro: one ``--option`` per field; a parsing error exits with code 2)."""
    return tyro.cli(Args, args=list(sys.argv[1:] if argv is None else argv), prog=Path(sys.argv[0]).name, description=__doc__)


def run_options(args: Args) -> train_agent.Args:
    """What every trial's run starts from: ``train_agent.py``'s options with the sweep's values (the
    trial adds its hyperparameters and folder). Checkpoints only at the end: trials are short, and a
    stopped one is cheaper to run again than to checkpoint all along."""
    return train_agent.Args(
        algo=args.algo,
        env=args.env,
        env_kwargs=list(args.env_kwargs),
        timesteps=args.timesteps,
        vec="native",
        seed=args.seed,
        hyperparams=list(args.hyperparams),
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        eval_seed=args.eval_seed,
        checkpoint_freq=0,
        progress=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Check the options and the search space, run the sweep, write its files, print a one-line summary.

    The machinery is in ``agents/tuning.py`` (search spaces, trials, results); each trial trains with
    ``agents/runs.py`` and ``agents/training.py``, as ``train_agent.py`` does.
    """
    args = parse_args(argv)
    try:
        plan = SweepPlan(
            search_space=args.search_space,
            num_samples=args.num_samples,
            search=args.search,
            scheduler=args.scheduler,
            grace_period=args.grace_period,
            reduction_factor=args.reduction_factor,
            max_concurrent=args.max_concurrent,
            address=args.address,
            num_cpus=args.num_cpus,
            out=args.out,
        )
        sweep = prepare_sweep(plan, run_options(args))
        # After the checks, so that bad input is named the same with or without the extra.
        require("ray.tune", "ray", "tune_agent.py")
        result = run_sweep(sweep)
    except (UsageError, dus_env.ConfigError, MissingExtraError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    counts = {status: sum(r.status == status for r in result.records) for status in ("completed", "stopped", "failed")}
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    done = f"{len(result.records)} trials of {sweep.algo} on {sweep.env_id} in {result.seconds:.0f} s ({tally})"
    if result.best is None:
        print(
            f"error: {done}, and none reported an evaluation: see {sweep.out / 'trials.csv'} and {sweep.out / 'ray_tune'}", file=sys.stderr
        )
        return EXIT_NO_RESULT
    best = result.best
    print(
        f"done: {done}; best {best.trial}: mean eval return {best.last_return:.4f} at {best.steps:,} steps; "
        f"results in {sweep.out}; train it with: {train_command(sweep)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

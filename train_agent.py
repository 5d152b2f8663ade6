"""Train a sampling policy on a DUS environment: PPO by default, any SB3 algorithm, or DUS-R.

Usage::

    python train_agent.py                                   # PPO on dus_env/Synthetic-v0 (about a minute on 2 cores)
    python train_agent.py --algo a2c --seed 1
    python train_agent.py --algo reinforce --env dus_env/MFeat-v0
    python train_agent.py --env-kwargs decision_steps=40 gap_penalty=0.5
    python train_agent.py --hyperparams learning_rate=1e-4 n_steps=256
    python train_agent.py --resume                          # continue the interrupted default run
    python train_agent.py --export-only --run-dir runs/ppo_Synthetic-v0_0 [--checkpoint 5120]   # export again
    tensorboard --logdir runs

Hyperparameters come from ``agents/hyperparams/<algo>.yml`` (``default.yml`` for algorithms without
a file); ``--hyperparams key=value`` overrides them. Everything goes to
``runs/<algo>_<env-name>_<seed>/``:

    config.yml              the resolved configuration and package versions
    run.json                the manifest: every checkpoint, the final model and the export, with sha256
    tb/                     TensorBoard: the algorithm's scalars and dus/* (quantities, scores, accuracies)
    checkpoints/            periodic checkpoints, taken between policy updates (model + normalisation)
    best_model/             the policy with the best mean return on the evaluation episodes
    eval/evaluations.npz    evaluation history (returns, lengths, test accuracies)
    final_model.zip (.pt)   the final policy, with vecnormalize.pkl when observations are normalised
    exported/               the final policy exported for dus_env's DUSSampler

Evaluation episodes always use the seeds ``--eval-seed``, ``--eval-seed + 1``, ...: every evaluation
(and every run) sees the same training instances, so numbers are comparable. Ctrl-C saves a
checkpoint and prints how to resume; ``--resume`` continues from the newest intact checkpoint the
run's manifest ``run.json`` lists, starts a run killed before its first checkpoint again, and
finishes a run killed after training (final model, evaluation, export). Every file is written
atomically (temporary file + rename).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence, get_type_hints

import numpy as np
import torch

import dus_env
from agents.baselines import UniformAgent
from agents.runs import Run, UsageError, lock_run, read_manifest, remove_stale_files, resume_run, start_run
from agents.sb3_agent import HyperparamsError
from agents.training import Trained, as_agent, evaluate_agent, export_only, export_policy, train_reinforce, train_sb3
from dus_env.faults import fault_point

EXIT_USAGE, EXIT_EXPORT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


@dataclass
class Args:
    """Every knob of a run, with its default and help text; :func:`parse_args` makes one ``--option`` of each."""

    algo: str = field(default="ppo", metadata={"help": "ppo, a2c, reinforce (DUS-R), or any SB3 / sb3-contrib algorithm (sac, td3, tqc, trpo, recurrentppo, ...)"})
    env: str = field(default="dus_env/Synthetic-v0", metadata={"help": "Gymnasium id of a DUS environment (dus_env/Synthetic-v0, dus_env/MFeat-v0, ...)"})
    env_kwargs: list[str] = field(default_factory=list, metadata={"help": "env config overrides for gymnasium.make: a JSON object, or key=value pairs with YAML values, dotted keys for nested fields (decision_steps=40 learner.hidden_sizes=[16])"})
    timesteps: int | None = field(default=None, metadata={"help": "total environment steps (default: n_timesteps of the hyperparameter file)"})
    n_envs: int | None = field(default=None, metadata={"help": "parallel training envs (default: n_envs of the hyperparameter file)"})
    vec: str = field(default="native", metadata={"help": "how the training envs run: native (one batched computation in this process, fastest), subproc (one process per env) or dummy (one after another in this process)"})
    seed: int = field(default=0, metadata={"help": "seed of the policy, the training episodes and the exploration"})
    hyperparams: list[str] = field(default_factory=list, metadata={"help": "key=value overrides of agents/hyperparams/<algo>.yml, values in YAML (learning_rate=1e-4 'policy_kwargs=dict(net_arch=[32, 32])')"})
    run_dir: str | None = field(default=None, metadata={"help": "output folder (default: runs/<algo>_<env-name>_<seed>)"})
    tensorboard: str | None = field(default=None, metadata={"help": "TensorBoard log folder (default: <run-dir>/tb)"})
    eval_freq: int = field(default=5000, metadata={"help": "evaluate the deterministic policy every this many env steps (0: only at the end)"})
    eval_episodes: int = field(default=5, metadata={"help": "episodes per evaluation"})
    eval_seed: int = field(default=1_000_000, metadata={"help": "evaluation episodes use seeds eval_seed, eval_seed+1, ... (the same instances in every evaluation and run)"})
    checkpoint_freq: int = field(default=5000, metadata={"help": "checkpoint every this many env steps (0: only on Ctrl-C and at the end)"})
    export_only: bool = field(default=False, metadata={"help": "only export the policy of the run in --run-dir again (its final model, or --checkpoint STEPS) to <run-dir>/exported"})
    checkpoint: int | None = field(default=None, metadata={"help": "with --export-only: export this checkpoint (env steps) instead of the final model"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --run-dir (default: that of --algo/--env/--seed) from its newest intact checkpoint (or finish it), with the settings of its config.yml; --timesteps may set a new total"})
    no_progress: bool = field(default=False, metadata={"help": "hide the progress bar"})


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """``Args`` from the command line: one ``--option`` per field, help from the field's metadata."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = get_type_hints(Args)
    for spec in dataclasses.fields(Args):
        flag = "--" + spec.name.replace("_", "-")
        kind, helptext = hints[spec.name], spec.metadata["help"]
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=helptext)
        elif kind == list[str]:
            parser.add_argument(flag, nargs="+", default=[], metavar="ITEM", help=helptext)
        else:
            scalar = int if kind in (int, int | None) else str
            default = spec.default
            parser.add_argument(flag, type=scalar, default=default, help=f"{helptext} [default: {default}]" if default is not None else helptext)
    return Args(**vars(parser.parse_args(argv)))


def usable_cores() -> int:
    """The cores this process may run on (``taskset`` / container limits), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def main(argv: Sequence[str] | None = None) -> int:
    """Start or resume the run, train, then :func:`finish`; the exit code says how it ended.

    The machinery is in ``agents/``: ``runs.py`` (options -> checked run, its folder, resuming),
    ``training.py`` (the SB3 and DUS-R loops, export) and ``callbacks.py`` (SB3 callbacks, eval log).
    """
    args = parse_args(argv)
    if args.checkpoint is not None and not args.export_only:
        print("error: --checkpoint only goes with --export-only", file=sys.stderr)
        return EXIT_USAGE
    if args.export_only:
        return export_command(args)
    # Harmless: without VecNormalize the eval env is a DummyVecEnv and the training env a SubprocVecEnv.
    warnings.filterwarnings("ignore", message="Training and eval env are not of the same type")
    start_time = time.perf_counter()
    try:
        started = start_run(args)
        if started is None:
            return 0
        run = started.run
        # The native vector env trains all envs in this process and uses every core; with processes
        # (subproc) or the in-process loop (dummy), one thread per process is fastest for these models.
        torch.set_num_threads(usable_cores() if run.vec == "native" else 1)
        trained: Trained
        if run.is_reinforce:
            trained, interrupted = train_reinforce(started, not args.no_progress)
        else:
            trained, interrupted = train_sb3(started, not args.no_progress)
    except (UsageError, HyperparamsError, dus_env.ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted before training started: nothing saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    if interrupted:
        command = f"python train_agent.py --resume --run-dir {run.run_dir}"
        print(f"\ninterrupted: checkpoint saved at {trained.num_timesteps:,} of {run.total_timesteps:,} steps. Resume with: {command}")
        return EXIT_INTERRUPTED
    try:
        return finish(run, trained, start_time)
    except KeyboardInterrupt:
        print(f"\ninterrupted after training: the final model is saved in {run.run_dir}; "
              f"python train_agent.py --resume --run-dir {run.run_dir} finishes what is missing (evaluation, export)", file=sys.stderr)
        return EXIT_INTERRUPTED


def export_command(args: Args) -> int:
    """``--export-only``: export a run's final model (or a checkpoint) again, checked against its manifest."""
    try:
        run, config = resume_run(args)
        lock_run(run.run_dir)
        remove_stale_files(run.run_dir)
        out_dir = export_only(run, read_manifest(run, config), args.checkpoint)
    except (UsageError, dus_env.ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as error:  # a model that does not load for its env
        print(f"error: exporting {args.run_dir or 'the run'} failed: {error}", file=sys.stderr)
        return EXIT_EXPORT_FAILED
    print(f"exported {run.run_dir} to {out_dir}")
    return 0


def finish(run: Run, trained: Trained, start_time: float) -> int:
    """Final evaluation (against uniform sampling on the same seeds), export, one-line summary."""
    fault_point("after_final")
    results = evaluate_agent(as_agent(run, trained), run)
    uniform = evaluate_agent(UniformAgent(run.env_config.observation_layout(), run.env_config.quantity_mapping()), run)
    try:
        exported = export_policy(run, trained)
    except Exception as error:  # the run's files are saved; say so rather than lose them in a traceback
        print(f"error: training finished and was saved in {run.run_dir}, but exporting the policy failed: {error}", file=sys.stderr)
        return EXIT_EXPORT_FAILED
    accuracy = np.array([r.test_accuracy for r in results])
    print(
        f"done: {run.algo} on {run.env_id}, {trained.num_timesteps:,} steps in {time.perf_counter() - start_time:.0f} s; "
        f"final policy test accuracy {accuracy.mean():.4f} ± {accuracy.std():.4f} over {len(results)} eval episodes "
        f"(uniform sampling {np.mean([r.test_accuracy for r in uniform]):.4f}); run dir {run.run_dir}, policy exported to {exported}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

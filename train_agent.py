"""Train a sampling policy on a DUS environment: PPO by default, another SB3 algorithm, or DUS-R.

Usage (``dus-train`` is the same command, installed with the package)::

    python train_agent.py                                   # PPO on dus_env/Synthetic-v0 (about a minute on 2 cores)
    python train_agent.py --algo a2c --seed 1
    python train_agent.py --algo reinforce --env MFeat-v0   # the dus_env/ prefix may be left out
    python train_agent.py --env-kwargs decision_steps=40 gap_penalty=0.5
    python train_agent.py --hyperparams learning_rate=1e-4 n_steps=256
    python train_agent.py --resume                          # continue the interrupted default run
    python train_agent.py --export-only --run-dir runs/ppo_Synthetic-v0_0 [--checkpoint 5120]   # export again
    tensorboard --logdir runs

Hyperparameters come from ``agents/hyperparams/<algo>.yml`` (``default.yml`` for algorithms without
a file); ``--hyperparams key=value`` overrides them. On-policy algorithms train whole rollouts of
``n_steps * n_envs`` steps: a ``--timesteps`` they round up is announced before training. DQN-style
algorithms (discrete actions) and recurrent policies are refused with the reason. Everything goes
to ``runs/<algo>_<env-name>_<seed>/``, or ``runs/<algo>_<env-name>_<seed>_<hash8>/`` when
``--env-kwargs``, ``--hyperparams`` or ``--n-envs`` are given (a short hash of them: runs with other
settings never share a folder, and the same options find it again):

    config.yml              the resolved configuration and package versions
    run.json                the manifest: every checkpoint, the final model and the export, with sha256
    tb/                     TensorBoard: the algorithm's scalars and dus/* (quantities, scores, accuracies)
    checkpoints/            periodic checkpoints, taken between policy updates (model + normalisation)
    best_model/             the policy with the best mean return on the evaluation episodes
    eval/evaluations.npz    evaluation history (returns, lengths, test accuracies)
    final_model.zip         the final policy, with vecnormalize.pkl when observations are normalised
    exported/               the final policy exported for dus_env's DUSSampler

Evaluation episodes always use the seeds ``--eval-seed``, ``--eval-seed + 1``, ... (see
``agents/seed_ranges.py``): every evaluation (and every run) sees the same training instances, so
numbers are comparable. Ctrl-C saves a checkpoint and prints how to resume; ``--resume`` continues
from the newest intact checkpoint the run's manifest ``run.json`` lists, starts a run killed before
its first checkpoint again, and finishes a run killed after training (final model, evaluation,
export). Only ``--timesteps`` may change on ``--resume``: another setting that differs from the
run's ``config.yml`` is refused, naming it. Every file is written atomically (temporary file + rename).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import tyro
import yaml

import dus_env
from agents.base import Agent
from agents.baselines import UniformAgent
from agents.errors import UsageError
from agents.ray_cluster import usable_cores
from agents.run_files import CONFIG_FILE
from agents.runs import (
    BACKENDS,
    VEC_KINDS,
    Run,
    lock_run,
    read_manifest,
    remove_stale_files,
    resume_run,
    run_folder,
    start_run,
    usable_algorithms,
)
from agents.seed_ranges import TRAIN_EVAL_SEEDS
from agents.training import as_agent, evaluate_agent, export_only, export_policy, train_model
from dus_env.extras import MissingExtraError, require
from dus_env.faults import fault_point

EXIT_USAGE, EXIT_EXPORT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


@dataclass
class Args:
    """Every knob of a run, with its default; tyro makes one ``--option`` of each, its help from the docstring below it."""

    algo: Annotated[str, tyro.conf.arg(help=f"the algorithm: {', '.join(usable_algorithms())} (reinforce is DUS-R)")] = "ppo"
    env: Annotated[str, tyro.conf.arg(metavar="ID")] = "dus_env/Synthetic-v0"
    """a DUS environment id (dus_env/Synthetic-v0, MFeat-v0, ...; the dus_env/ prefix may be left out)"""
    env_kwargs: Annotated[list[str], tyro.conf.arg(metavar="KEY=VALUE")] = field(default_factory=list)
    """env config overrides for gymnasium.make: a JSON object, or key=value pairs with YAML values, dotted keys for
    nested fields (decision_steps=40 learner.hidden_sizes=[16])"""
    timesteps: Annotated[int | None, tyro.conf.arg(metavar="STEPS")] = None
    """total environment steps (None: n_timesteps of the hyperparameter file); may change on --resume"""
    n_envs: Annotated[int | None, tyro.conf.arg(metavar="N")] = None
    """parallel training envs (None: n_envs of the hyperparameter file)"""
    vec: Annotated[
        str,
        tyro.conf.arg(
            help=f"how the training envs run: {' | '.join(VEC_KINDS)}; native is one batched computation "
            "in this process (fastest), subproc one process per env, dummy one after another"
        ),
    ] = "native"
    seed: int = 0
    """seed of the policy, the training episodes and the exploration (small integers: agents/seed_ranges.py)"""
    hyperparams: Annotated[list[str], tyro.conf.arg(metavar="KEY=VALUE|FILE")] = field(default_factory=list)
    """overrides of agents/hyperparams/<algo>.yml, values in YAML (learning_rate=1e-4 'policy_kwargs=dict(net_arch=[32, 32])'),
    or a zoo-style .yml file whose entry for --env (else its default entry) overrides them all (the best.yml of
    tune_agent.py); later items win (best.yml learning_rate=1e-4)"""
    run_dir: Annotated[str | None, tyro.conf.arg(metavar="DIR")] = None
    """output folder (None: runs/<algo>_<env-name>_<seed>, plus _<hash8> of --env-kwargs/--hyperparams/--n-envs when given)"""
    tensorboard: Annotated[str | None, tyro.conf.arg(metavar="DIR")] = None
    """TensorBoard log folder (None: <run-dir>/tb)"""
    eval_freq: int = 5000
    """evaluate the deterministic policy every this many env steps (0: only at the end)"""
    eval_episodes: int = 5
    """episodes per evaluation"""
    eval_seed: int = TRAIN_EVAL_SEEDS.start
    """evaluation episodes use seeds eval_seed, eval_seed+1, ... (the same instances in every evaluation and run)"""
    checkpoint_freq: int = 5000
    """checkpoint every this many env steps (0: only on Ctrl-C and at the end)"""
    export_only: bool = False
    """only export the policy of the run in --run-dir again (its final model, or --checkpoint STEPS) to <run-dir>/exported"""
    checkpoint: Annotated[int | None, tyro.conf.arg(metavar="STEPS")] = None
    """with --export-only: export this checkpoint (env steps) instead of the final model"""
    resume: bool = False
    """continue the run in --run-dir (None: the folder these options would start) from its newest intact checkpoint
    (or finish it), with the settings of its config.yml; only --timesteps may change"""
    progress: bool = True
    """show the progress bar (--no-progress hides it)"""
    backend: Annotated[str, tyro.conf.arg(help=f"who trains: {' | '.join(BACKENDS)}; rllib is RLlib PPO on Ray (the ray extras)")] = "sb3"
    address: Annotated[str | None, tyro.conf.arg(metavar="ADDR")] = None
    """with --backend rllib: the Ray cluster to join (auto, or ray://<head>:10001); None starts Ray in this process"""
    num_env_runners: Annotated[int | None, tyro.conf.arg(metavar="N")] = None
    """with --backend rllib: RLlib's remote env runners, each stepping n_envs / N envs as one native vector env
    (None: 2; 0 samples in the driver process)"""


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """``Args`` from the command line (tyro: one ``--option`` per field; a parsing error exits with code 2)."""
    return tyro.cli(Args, args=list(sys.argv[1:] if argv is None else argv), prog=Path(sys.argv[0]).name, description=__doc__)


def given_options(argv: Sequence[str] | None) -> set[str]:
    """The names of the ``Args`` fields given on the command line (``--vec dummy``, ``--vec=dummy``,
    ``--no-progress``): what ``--resume`` compares with the saved run, leaving defaults out."""
    names = {spec.name for spec in fields(Args)}
    given = set()
    for token in sys.argv[1:] if argv is None else argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("-", "_")
            given.add(name[3:] if name.startswith("no_") and name[3:] in names else name)
    return given & names


def main(argv: Sequence[str] | None = None) -> int:
    """Start or resume the run, train, then :func:`finish`; the exit code says how it ended.

    The machinery is in ``agents/``: ``runs.py`` (options -> checked run, its folder, resuming),
    ``training.py`` (the training loop of every algorithm, DUS-R included, and export) and ``callbacks.py`` (SB3 callbacks, eval log).
    """
    args = parse_args(argv)
    given = given_options(argv)
    if args.checkpoint is not None and not args.export_only:
        print("error: --checkpoint only goes with --export-only", file=sys.stderr)
        return EXIT_USAGE
    if args.export_only:
        return export_command(args, given)
    # Harmless: without VecNormalize the eval env is a DummyVecEnv and the training env a SubprocVecEnv.
    warnings.filterwarnings("ignore", message="Training and eval env are not of the same type")
    start_time = time.perf_counter()
    try:
        check_backend_options(args)
        started = start_run(args, given)
        if started is None:
            return 0
        run = started.run
        if run.backend == "rllib":
            from agents.rllib_training import export_rllib_policy, rllib_agent, train_rllib

            trained_rllib, interrupted = train_rllib(started, args.progress, args.address)
            steps = trained_rllib.num_timesteps
            agent: Agent = rllib_agent(run, trained_rllib)
            export: Callable[[], Path] = lambda: export_rllib_policy(run, trained_rllib)  # noqa: E731
        else:
            # The native vector env trains all envs in this process and uses every core; with processes
            # (subproc) or the in-process loop (dummy), one thread per process is fastest for these models.
            torch.set_num_threads(usable_cores() if run.vec == "native" else 1)
            trained, interrupted = train_model(started, args.progress)
            steps = trained.num_timesteps
            agent = as_agent(run, trained)
            export = lambda: export_policy(run, trained)  # noqa: E731
    except (UsageError, dus_env.ConfigError, MissingExtraError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted before training started: nothing saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    if interrupted and steps == 0 and run.backend == "rllib":
        print("\ninterrupted before the first iteration finished: nothing saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    if interrupted:
        command = f"python train_agent.py --resume --run-dir {run.run_dir}"
        print(f"\ninterrupted: checkpoint saved at {steps:,} of {run.total_timesteps:,} steps. Resume with: {command}")
        return EXIT_INTERRUPTED
    try:
        return finish(run, agent, steps, export, start_time)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted after training: the final model is saved in {run.run_dir}; "
            f"python train_agent.py --resume --run-dir {run.run_dir} finishes what is missing (evaluation, export)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def check_backend_options(args: Args) -> None:
    """``--address`` only with RLlib, and RLlib's extra before anything is written (a missing one is one
    line, no run folder). ``--resume`` and ``--export-only`` take the backend from the run's ``config.yml``.

    :raises UsageError: ``--address`` for an SB3 run. :raises MissingExtraError: RLlib is not installed.
    """
    backend = args.backend
    if args.resume or args.export_only:
        backend = saved_backend(args) or backend
    if args.address is not None and backend != "rllib":
        raise UsageError("--address only goes with --backend rllib (SB3 trains in this process)")
    if backend == "rllib":
        require("ray.rllib", "rllib", "train_agent.py --backend rllib")


def saved_backend(args: Args) -> str | None:
    """The ``backend`` in the ``config.yml`` of the run these options resume (``None``: none readable)."""
    try:
        config = yaml.safe_load((run_folder(args) / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError, UsageError, dus_env.ConfigError):
        return None
    return str(config.get("backend", "sb3")) if isinstance(config, dict) else None


def export_command(args: Args, given: set[str]) -> int:
    """``--export-only``: export a run's final model (or a checkpoint) again, checked against its manifest."""
    try:
        check_backend_options(args)
        run, config = resume_run(args, given)
        lock_run(run.run_dir)
        remove_stale_files(run.run_dir)
        manifest = read_manifest(run, config)
        if run.backend == "rllib":
            from agents.rllib_training import export_rllib_only

            out_dir = export_rllib_only(run, manifest, args.checkpoint, args.address)
        else:
            out_dir = export_only(run, manifest, args.checkpoint)
    except (UsageError, dus_env.ConfigError, MissingExtraError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as error:  # a model that does not load for its env
        print(f"error: exporting {args.run_dir or 'the run'} failed: {error}", file=sys.stderr)
        return EXIT_EXPORT_FAILED
    print(f"exported {run.run_dir} to {out_dir}")
    return 0


def finish(run: Run, agent: Agent, num_timesteps: int, export: Callable[[], Path], start_time: float) -> int:
    """Final evaluation (against uniform sampling on the same seeds), export, one-line summary.

    :param agent: the trained policy; :param export: writes ``<run_dir>/exported`` (SB3 or RLlib).
    """
    fault_point("after_final")
    results = evaluate_agent(agent, run)
    uniform = evaluate_agent(UniformAgent(run.env_config.observation_layout(), run.env_config.quantity_mapping()), run)
    try:
        exported = export()
    except Exception as error:  # the run's files are saved; say so rather than lose them in a traceback
        print(f"error: training finished and was saved in {run.run_dir}, but exporting the policy failed: {error}", file=sys.stderr)
        return EXIT_EXPORT_FAILED
    accuracy = np.array([r.test_accuracy for r in results])
    print(
        f"done: {run.algo}{' (RLlib)' if run.backend == 'rllib' else ''} on {run.env_id}, {num_timesteps:,} steps in "
        f"{time.perf_counter() - start_time:.0f} s; "
        f"final policy test accuracy {accuracy.mean():.4f} ± {accuracy.std():.4f} over {len(results)} eval episodes "
        f"(uniform sampling {np.mean([r.test_accuracy for r in uniform]):.4f}); run dir {run.run_dir}, policy exported to {exported}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train a sampling policy on a DUS environment: PPO by default, any SB3 algorithm, or DUS-R.

Usage::

    python train_agent.py                                   # PPO on dus_env/Synthetic-v0 (~4 min on 2 cores)
    python train_agent.py --algo a2c --seed 1
    python train_agent.py --algo reinforce --env dus_env/MFeat-v0
    python train_agent.py --env-kwargs decision_steps=40 gap_penalty=0.5
    python train_agent.py --hyperparams learning_rate=1e-4 n_steps=256
    python train_agent.py --resume                          # continue the interrupted default run
    tensorboard --logdir runs

Hyperparameters come from ``agents/hyperparams/<algo>.yml`` (``default.yml`` for algorithms without
a file); ``--hyperparams key=value`` overrides them. Everything goes to
``runs/<algo>_<env-name>_<seed>/``:

    config.yml              the resolved configuration and package versions
    tb/                     TensorBoard: the algorithm's scalars and dus/* (quantities, scores, accuracies)
    checkpoints/            periodic checkpoints, taken between policy updates (model + normalisation)
    best_model/             the policy with the best mean return on the evaluation episodes
    eval/evaluations.npz    evaluation history (returns, lengths, test accuracies)
    final_model.zip (.pt)   the final policy, with vecnormalize.pkl when observations are normalised
    exported/               the final policy exported for dus_env's DUSSampler

Evaluation episodes always use the seeds ``--eval-seed``, ``--eval-seed + 1``, ...: every evaluation
(and every run) sees the same training instances, so numbers are comparable. Ctrl-C saves a
checkpoint and prints how to resume; ``--resume`` continues from the latest one without losing
steps. Every file is written atomically (temporary file + rename).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import io
import json
import pickle
import platform
import re
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, get_type_hints

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback, ProgressBarCallback
from stable_baselines3.common.logger import Logger, configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

import dus_env
from agents.base import Agent
from agents.baselines import UniformAgent
from agents.export import export_reinforce_policy, export_sb3_policy
from agents.reinforce import FINAL_MODEL_FILE as REINFORCE_FINAL_FILE
from agents.reinforce import ReinforceAgent, ReinforceConfig, ReinforceUpdate, atomic_write_bytes
from agents.rollout import EpisodeResult, run_episode
from agents.sb3_agent import (
    RUN_KEYS,
    HyperparamsError,
    SB3Agent,
    check_hyperparam_keys,
    get_algorithm_class,
    load_hyperparams,
    parse_key_values,
    run_settings,
    sb3_constructor_kwargs,
    vec_normalize_kwargs,
)


@dataclass
class Args:
    algo: str = field(default="ppo", metadata={"help": "ppo, a2c, reinforce (DUS-R), or any SB3 / sb3-contrib algorithm (sac, td3, tqc, trpo, recurrentppo, ...)"})
    env: str = field(default="dus_env/Synthetic-v0", metadata={"help": "Gymnasium id of a DUS environment (dus_env/Synthetic-v0, dus_env/MFeat-v0, ...)"})
    env_kwargs: list[str] = field(default_factory=list, metadata={"help": "env config overrides for gymnasium.make: a JSON object, or key=value pairs with YAML values (decision_steps=40 'learner={hidden_sizes: [16]}')"})
    timesteps: int | None = field(default=None, metadata={"help": "total environment steps (default: n_timesteps of the hyperparameter file)"})
    n_envs: int | None = field(default=None, metadata={"help": "parallel training envs, in subprocesses when > 1 (default: n_envs of the hyperparameter file)"})
    seed: int = field(default=0, metadata={"help": "seed of the policy, the training episodes and the exploration"})
    hyperparams: list[str] = field(default_factory=list, metadata={"help": "key=value overrides of agents/hyperparams/<algo>.yml, values in YAML (learning_rate=1e-4 'policy_kwargs=dict(net_arch=[32, 32])')"})
    run_dir: str | None = field(default=None, metadata={"help": "output folder (default: runs/<algo>_<env-name>_<seed>)"})
    tensorboard: str | None = field(default=None, metadata={"help": "TensorBoard log folder (default: <run-dir>/tb)"})
    eval_freq: int = field(default=5000, metadata={"help": "evaluate the deterministic policy every this many env steps (0: only at the end)"})
    eval_episodes: int = field(default=5, metadata={"help": "episodes per evaluation"})
    eval_seed: int = field(default=1_000_000, metadata={"help": "evaluation episodes use seeds eval_seed, eval_seed+1, ... (the same instances in every evaluation and run)"})
    checkpoint_freq: int = field(default=5000, metadata={"help": "checkpoint every this many env steps (0: only on Ctrl-C and at the end)"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --run-dir (default: that of --algo/--env/--seed) from its latest checkpoint, with the settings of its config.yml; --timesteps may set a new total"})
    no_progress: bool = field(default=False, metadata={"help": "hide the progress bar"})


class UsageError(Exception):
    """Bad input: reported in one line, exit code 2."""


CONFIG_FILE = "config.yml"
CHECKPOINT_PREFIX = "rl_model"
REINFORCE_PREFIX = "reinforce"
SB3_FINAL_FILE = "final_model.zip"
VECNORMALIZE_FILE = "vecnormalize.pkl"
REPLAY_BUFFER_FILE = "replay_buffer.pkl"
_CHECKPOINT_NAME = re.compile(r"^(?:rl_model|reinforce)_(?P<steps>\d+)_steps\.(?:zip|pt)$")
EXIT_USAGE, EXIT_EXPORT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


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


# -- the resolved run ---------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything a run is made of once the options, the hyperparameter file and the env are resolved."""

    algo: str
    env_id: str
    env_kwargs: dict[str, Any]
    seed: int
    hyperparams: dict[str, Any]
    n_envs: int
    total_timesteps: int
    eval_freq: int
    eval_episodes: int
    eval_seed: int
    checkpoint_freq: int
    run_dir: Path
    tensorboard_dir: Path
    env_config: dus_env.EnvConfig

    @property
    def is_reinforce(self) -> bool:
        return self.algo == "reinforce"

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def best_dir(self) -> Path:
        return self.run_dir / "best_model"

    @property
    def eval_seeds(self) -> list[int]:
        return [self.eval_seed + i for i in range(self.eval_episodes)]

    def make_env(self) -> gym.Env:
        return gym.make(self.env_id, **self.env_kwargs)

    def to_config(self) -> dict[str, Any]:
        """What ``config.yml`` holds: enough to rerun or resume, plus provenance."""
        return _plain({
            "algo": self.algo,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "seed": self.seed,
            "total_timesteps": self.total_timesteps,
            "n_envs": self.n_envs,
            "hyperparams": self.hyperparams,
            "eval": {"freq": self.eval_freq, "episodes": self.eval_episodes, "seed": self.eval_seed},
            "checkpoint_freq": self.checkpoint_freq,
            # Relative to the run directory when inside it, so that a moved run still resumes.
            "tensorboard_dir": str(_relative_to(self.tensorboard_dir, self.run_dir)),
            "env_config": self.env_config.to_dict(),
            "layout": dus_env.ObservationLayout(self.env_config.task.n_modalities).to_dict(),
            "versions": package_versions(),
            "command": sys.argv,
        })


def resolve_run(args: Args) -> Run:
    """Check every option and build the :class:`Run`; bad input raises :class:`UsageError`."""
    algo = canonical_algo(args.algo)
    env_kwargs = parse_env_kwargs(args.env_kwargs)
    overrides = parse_key_values(args.hyperparams, "--hyperparams")
    if args.n_envs is not None:
        overrides["n_envs"] = args.n_envs
    if args.timesteps is not None:
        overrides["n_timesteps"] = args.timesteps
    hyperparams = load_hyperparams(algo, args.env, overrides)
    n_envs, total_timesteps = run_settings(hyperparams)
    hyperparams.update(n_envs=n_envs, n_timesteps=total_timesteps)
    for name in ("eval_freq", "checkpoint_freq"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')}={getattr(args, name)} is invalid: expected 0 (off) or a positive number of steps")
    if args.eval_episodes < 1:
        raise UsageError(f"--eval-episodes={args.eval_episodes} is invalid: expected at least 1")
    env = probe_env(args.env, env_kwargs, args.eval_seed)
    try:
        check_algorithm_hyperparams(algo, hyperparams, env)
    finally:
        env.close()
    run_dir = Path(args.run_dir or default_run_dir(algo, args.env, args.seed))
    return Run(
        algo=algo,
        env_id=args.env,
        env_kwargs=env_kwargs,
        seed=args.seed,
        hyperparams=hyperparams,
        n_envs=n_envs,
        total_timesteps=total_timesteps,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        eval_seed=args.eval_seed,
        checkpoint_freq=args.checkpoint_freq,
        run_dir=run_dir,
        tensorboard_dir=Path(args.tensorboard) if args.tensorboard else run_dir / "tb",
        env_config=env.unwrapped.config,  # type: ignore[attr-defined]
    )


def resume_run(args: Args) -> tuple[Run, dict[str, Any]]:
    """The :class:`Run` saved in the run directory's ``config.yml`` (``--timesteps`` sets a new total), and that config."""
    run_dir = Path(args.run_dir or default_run_dir(canonical_algo(args.algo), args.env, args.seed))
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise UsageError(f"nothing to resume in {run_dir}: no {CONFIG_FILE} (pass the run's folder with --run-dir)")
    try:
        saved = yaml.safe_load(config_path.read_text())
        probe = probe_env(saved["env_id"], saved["env_kwargs"], saved["eval"]["seed"])
        probe.close()
        hyperparams = dict(saved["hyperparams"])
        if args.timesteps is not None:
            hyperparams["n_timesteps"] = args.timesteps
        run = Run(
            algo=saved["algo"],
            env_id=saved["env_id"],
            env_kwargs=saved["env_kwargs"],
            seed=saved["seed"],
            hyperparams=hyperparams,
            n_envs=saved["n_envs"],
            total_timesteps=run_settings(hyperparams)[1],
            eval_freq=saved["eval"]["freq"],
            eval_episodes=saved["eval"]["episodes"],
            eval_seed=saved["eval"]["seed"],
            checkpoint_freq=saved["checkpoint_freq"],
            run_dir=run_dir,
            tensorboard_dir=run_dir / saved["tensorboard_dir"],
            env_config=probe.unwrapped.config,
        )
    except (yaml.YAMLError, KeyError, TypeError) as error:
        raise UsageError(f"{config_path} is damaged or incomplete ({error!r}): start a new run without --resume") from error
    return run, saved


def default_run_dir(algo: str, env_id: str, seed: int) -> Path:
    """``runs/<algo>_<env-name>_<seed>``, e.g. ``runs/ppo_Synthetic-v0_0``."""
    return Path("runs") / f"{algo}_{env_id.split('/')[-1]}_{seed}"


def canonical_algo(name: str) -> str:
    """``reinforce``, or the lower-case class name of an SB3 algorithm (``PPO`` -> ``ppo``)."""
    if name.strip().lower() in ("reinforce", "dus-r", "dus_r"):
        return "reinforce"
    try:
        return get_algorithm_class(name).__name__.lower()
    except ValueError as error:
        raise UsageError(f"{error}, or reinforce") from error


def check_algorithm_hyperparams(algo: str, hyperparams: dict[str, Any], env: gym.Env) -> None:
    """Refuse keys and values the algorithm would not accept, before anything is written or started.

    SB3 algorithms are constructed once on ``env`` without their networks, which checks the
    action space (DQN needs discrete actions) and the arguments' names.
    """
    if algo == "reinforce":
        check_hyperparam_keys(hyperparams, RUN_KEYS | ReinforceConfig.field_names(), "reinforce")
        config = reinforce_config(hyperparams)
        if config.episodes_per_batch % hyperparams["n_envs"]:
            raise UsageError(
                f"episodes_per_batch={config.episodes_per_batch} is not a multiple of n_envs={hyperparams['n_envs']}: change one of them"
            )
        return
    algorithm = get_algorithm_class(algo)
    kwargs = sb3_constructor_kwargs(algorithm, hyperparams)
    vec_normalize_kwargs(hyperparams)
    try:
        algorithm(env=DummyVecEnv([lambda: env]), _init_setup_model=False, **{**kwargs, "device": "cpu"})
    except (AssertionError, TypeError, ValueError) as error:
        raise UsageError(f"cannot use {algorithm.__name__} on {env.spec.id if env.spec else 'this env'}: {error}") from error


def reinforce_config(hyperparams: dict[str, Any]) -> ReinforceConfig:
    values = {k: v for k, v in hyperparams.items() if k not in RUN_KEYS}
    try:
        return ReinforceConfig(**values)
    except (TypeError, ValueError) as error:
        raise UsageError(f"reinforce hyperparameters are invalid: {error}") from error


def parse_env_kwargs(items: list[str]) -> dict[str, Any]:
    """``--env-kwargs``: one JSON object, or ``key=value`` pairs with YAML values."""
    if len(items) == 1 and items[0].lstrip().startswith("{"):
        try:
            values = json.loads(items[0])
        except json.JSONDecodeError as error:
            raise UsageError(f"--env-kwargs {items[0]!r} is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise UsageError(f"--env-kwargs {items[0]!r} must be a JSON object")
        return values
    return parse_key_values(items, "--env-kwargs")


def probe_env(env_id: str, env_kwargs: dict[str, Any], seed: int) -> gym.Env:
    """Make and reset the env once in this process, so that bad ids and configs fail before training."""
    if env_id not in gym.registry:
        raise UsageError(f"unknown env id {env_id!r}: registered DUS envs are {', '.join(dus_env.ENV_IDS)}")
    try:
        env = gym.make(env_id, **env_kwargs)
        if not isinstance(env.unwrapped, dus_env.DUSEnv):
            raise UsageError(f"{env_id} is not a DUS environment: choose one of {', '.join(dus_env.ENV_IDS)}")
        env.reset(seed=seed)
    except (dus_env.ConfigError, dus_env.FeatureFileError, TypeError) as error:
        raise UsageError(f"cannot make {env_id} with --env-kwargs {env_kwargs or '(none)'}: {error}") from error
    return env


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("dus_env", "torch", "gymnasium", "stable-baselines3", "sb3-contrib", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _relative_to(path: Path, folder: Path) -> Path:
    try:
        return path.resolve().relative_to(folder.resolve())
    except ValueError:
        return path.resolve()


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so that ``yaml.safe_dump`` accepts the value."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_yaml(path: Path, values: dict[str, Any]) -> None:
    atomic_write_bytes(path, yaml.safe_dump(values, sort_keys=False).encode())


# -- environments -------------------------------------------------------------------------------------


def env_factory(env_id: str, env_kwargs: dict[str, Any], in_subprocess: bool) -> Callable[[], gym.Env]:
    """A function that builds one Monitor-wrapped env; picklable for ``SubprocVecEnv`` workers.

    Each env sets its process's torch threads itself (``EnvConfig.torch_threads``, 1 by default):
    one thread per worker is fastest for these small models and does not oversubscribe the cores.
    """

    def make() -> gym.Env:
        if in_subprocess:
            # Ctrl-C is the main process's to handle (it saves a checkpoint); a worker that died on
            # it would take the envs down mid-save.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        import dus_env  # noqa: F401  (registers the ids in a fresh worker process)

        return Monitor(gym.make(env_id, **env_kwargs))

    return make


def make_vec_env(run: Run) -> VecEnv:
    """The training envs: ``SubprocVecEnv`` (forkserver) when more than one, else ``DummyVecEnv``."""
    if run.n_envs > 1:
        return SubprocVecEnv([env_factory(run.env_id, run.env_kwargs, True) for _ in range(run.n_envs)], start_method="forkserver")
    return DummyVecEnv([env_factory(run.env_id, run.env_kwargs, False)])


def shutdown(venv: VecEnv, interrupted: bool) -> None:
    """Close the envs; after an interrupt, stop subprocess workers outright (a pipe may be mid-message)."""
    base = venv.unwrapped
    if interrupted and isinstance(base, SubprocVecEnv):
        for process in base.processes:
            process.terminate()
        return
    venv.close()


# -- TensorBoard: the environment's own quantities -------------------------------------------------------


def record_info_scalars(logger: Logger, infos: Sequence[dict[str, Any]]) -> None:
    """``dus/*`` scalars from env infos, averaged until the next dump.

    Every step: quantities, cumulative scores and validation accuracies per modality. At episode
    end: final test accuracy (fused, balanced, per modality), the modality gap and the share of the
    episode's samples each modality got.
    """
    for info in infos:
        if "quantities" not in info:
            continue
        for j, quantity in enumerate(info["quantities"]):
            logger.record_mean(f"dus/quantity_m{j}", float(quantity))
        for j, score in enumerate(info["cumulative_scores"]):
            logger.record_mean(f"dus/cumulative_score_m{j}", float(score))
        for j, accuracy in enumerate(info["val_modality_accuracies"]):
            logger.record_mean(f"dus/val_accuracy_m{j}", float(accuracy))
        logger.record_mean("dus/val_fused_accuracy", float(info["val_fused_accuracy"]))
        logger.record_mean("dus/train_loss", float(info["train_loss"]))
        if "test_fused_accuracy" in info:
            logger.record_mean("dus/episode_test_accuracy", float(info["test_fused_accuracy"]))
            logger.record_mean("dus/episode_test_balanced_accuracy", float(info["test_fused_balanced_accuracy"]))
            for j, accuracy in enumerate(info["test_modality_accuracies"]):
                logger.record_mean(f"dus/episode_test_accuracy_m{j}", float(accuracy))
            logger.record_mean("dus/episode_modality_gap", float(info["test_modality_gap"]))
            totals = np.asarray(info["quantity_totals"], dtype=np.float64)
            for j, share in enumerate(totals / max(totals.sum(), 1.0)):
                logger.record_mean(f"dus/episode_share_m{j}", float(share))


class InfoScalarsCallback(BaseCallback):
    """Feeds every training step's infos to :func:`record_info_scalars`."""

    def _on_step(self) -> bool:
        record_info_scalars(self.logger, self.locals.get("infos", ()))
        return True


# -- evaluation ---------------------------------------------------------------------------------------


class EvaluationLog:
    """Evaluation history in ``eval/evaluations.npz`` (SB3's keys plus ``test_accuracies``); reloaded on resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.timesteps: list[int] = []
        self.results: list[list[float]] = []
        self.ep_lengths: list[list[int]] = []
        self.test_accuracies: list[list[float]] = []
        if path.is_file():
            with np.load(path) as saved:
                self.timesteps = saved["timesteps"].tolist()
                self.results = saved["results"].tolist()
                self.ep_lengths = saved["ep_lengths"].tolist()
                self.test_accuracies = saved["test_accuracies"].tolist()

    @property
    def best_mean_return(self) -> float:
        return max((float(np.mean(r)) for r in self.results), default=-np.inf)

    def add(self, timesteps: int, returns: list[float], lengths: list[int], test_accuracies: list[float]) -> bool:
        """Append one evaluation, save the file, and tell whether it is the best mean return so far."""
        is_best = float(np.mean(returns)) > self.best_mean_return
        self.timesteps.append(timesteps)
        self.results.append(returns)
        self.ep_lengths.append(lengths)
        self.test_accuracies.append(test_accuracies)
        buffer = io.BytesIO()
        np.savez(buffer, timesteps=self.timesteps, results=self.results, ep_lengths=self.ep_lengths, test_accuracies=self.test_accuracies)
        atomic_write_bytes(self.path, buffer.getvalue())
        print(
            f"eval at {timesteps:,} steps: return {np.mean(returns):.4f}, test accuracy {np.mean(test_accuracies):.4f}"
            + (" (new best)" if is_best else "")
        )
        return is_best


def save_sb3(model: BaseAlgorithm, folder: Path, model_name: str, vecnormalize_name: str) -> None:
    """Model ``.zip`` (and its ``VecNormalize`` statistics, written first) into ``folder``, atomically."""
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        # VecNormalize pickles without its envs (__getstate__ drops them).
        atomic_write_bytes(folder / vecnormalize_name, pickle.dumps(vec_normalize))
    buffer = io.BytesIO()
    model.save(buffer)
    atomic_write_bytes(folder / model_name, buffer.getvalue())


def sb3_checkpoint_names(timesteps: int) -> tuple[str, str]:
    """File names of the model and of its statistics in a checkpoint (SB3's ``CheckpointCallback`` names)."""
    return f"{CHECKPOINT_PREFIX}_{timesteps}_steps.zip", f"{CHECKPOINT_PREFIX}_vecnormalize_{timesteps}_steps.pkl"


def save_sb3_checkpoint(model: BaseAlgorithm, folder: Path, timesteps: int) -> None:
    save_sb3(model, folder, *sb3_checkpoint_names(timesteps))


class SaveBestCallback(BaseCallback):
    """Called by the eval callback on a new best: writes ``best_model/best_model.zip`` (+ statistics)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def _on_step(self) -> bool:
        save_sb3(self.model, self.folder, "best_model.zip", VECNORMALIZE_FILE)
        return True


class DUSEvalCallback(EvalCallback):
    """SB3's ``EvalCallback`` on fixed seeds, recording test accuracy and writing files atomically.

    The eval env has one env per episode, reseeded with ``eval_seed`` before every evaluation, so
    episode ``i`` always runs on seed ``eval_seed + i``: evaluations compare policies on the same
    training instances. ``EvalCallback`` syncs the ``VecNormalize`` statistics itself.
    """

    def __init__(self, eval_env: VecEnv, log: EvaluationLog, eval_seed: int, eval_freq: int, best_dir: Path) -> None:
        super().__init__(
            eval_env,
            callback_on_new_best=SaveBestCallback(best_dir),
            n_eval_episodes=eval_env.num_envs,
            eval_freq=eval_freq,
            log_path=None,
            best_model_save_path=None,
            deterministic=True,
            verbose=0,
        )
        self.log = log
        self.eval_seed = eval_seed
        self.best_mean_reward = log.best_mean_return
        self._episodes: list[tuple[float, int, float]] = []

    def _init_callback(self) -> None:
        super()._init_callback()
        # After a resume, keep evaluating at multiples of eval_freq env steps, as an unbroken run would.
        self.n_calls = self.model.num_timesteps // self.training_env.num_envs

    def _on_step(self) -> bool:
        due = self.eval_freq > 0 and self.n_calls % self.eval_freq == 0
        if due:
            self.eval_env.seed(self.eval_seed)
            self._episodes = []
        keep_going = super()._on_step()
        if due:
            returns, lengths, accuracies = (list(column) for column in zip(*self._episodes))
            self.log.add(self.num_timesteps, returns, lengths, accuracies)
        return keep_going

    def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        super()._log_success_callback(locals_, globals_)
        info = locals_["info"]
        if locals_["done"] and "episode" in info:
            accuracy = float(info["test_fused_accuracy"])
            self._episodes.append((float(info["episode"]["r"]), int(info["episode"]["l"]), accuracy))
            self.logger.record_mean("eval/test_fused_accuracy", accuracy)


class UpdateCheckpointCallback(CheckpointCallback):
    """``CheckpointCallback`` that saves between policy updates, atomically, with the statistics.

    A checkpoint is taken at the start of the first rollout at or after every ``save_freq`` env
    steps, when the weights have learned from exactly ``num_timesteps`` steps; so resuming from it
    repeats no update and skips no data. ``trained_timesteps`` is that count for the current weights
    (what a Ctrl-C checkpoint records).
    """

    def __init__(self, save_freq: int, save_path: Path, start_timesteps: int) -> None:
        super().__init__(save_freq, str(save_path), name_prefix=CHECKPOINT_PREFIX)
        self.trained_timesteps = start_timesteps
        self._next = (start_timesteps // save_freq + 1) * save_freq if save_freq > 0 else None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        self.trained_timesteps = self.num_timesteps
        if self._next is not None and self.num_timesteps >= self._next:
            save_sb3_checkpoint(self.model, Path(self.save_path), self.num_timesteps)
            self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq


def evaluate_agent(agent: Agent, run: Run) -> list[EpisodeResult]:
    """The agent on the evaluation seeds, one episode each, in a fresh env in this process."""
    env = run.make_env()
    try:
        return [run_episode(env, agent, seed, run.env_id) for seed in run.eval_seeds]
    finally:
        env.close()


# -- checkpoints --------------------------------------------------------------------------------------


def latest_checkpoint(folder: Path) -> int | None:
    """Steps ``N`` of the newest checkpoint (``<prefix>_<N>_steps.zip`` or ``.pt``) in ``folder``."""
    steps = [
        int(match["steps"])
        for path in (folder.glob("*_steps.*") if folder.is_dir() else ())
        if (match := _CHECKPOINT_NAME.match(path.name))
    ]
    return max(steps, default=None)


# -- training: Stable-Baselines3 ----------------------------------------------------------------------


def train_sb3(run: Run, resume_steps: int | None, progress: bool) -> tuple[BaseAlgorithm, bool]:
    """Train an SB3 algorithm, or continue it from its checkpoint at ``resume_steps``.

    :return: the model and whether Ctrl-C stopped training.
    """
    algorithm = get_algorithm_class(run.algo)
    norm_kwargs = vec_normalize_kwargs(run.hyperparams)
    venv = make_vec_env(run)
    if resume_steps is not None:
        model_name, stats_name = sb3_checkpoint_names(resume_steps)
        if norm_kwargs is not None:
            venv = VecNormalize.load(str(run.checkpoint_dir / stats_name), venv)
        model = algorithm.load(run.checkpoint_dir / model_name, env=venv, device="cpu", tensorboard_log=str(run.tensorboard_dir))
        # Fresh but reproducible episodes after a resume: the seed moves on with the step count.
        model.set_random_seed(run.seed + model.num_timesteps)
        replay_buffer = run.checkpoint_dir / REPLAY_BUFFER_FILE
        if hasattr(model, "replay_buffer") and replay_buffer.is_file():
            model.load_replay_buffer(replay_buffer)
    else:
        if norm_kwargs is not None:
            venv = VecNormalize(venv, **norm_kwargs)
        kwargs = sb3_constructor_kwargs(algorithm, run.hyperparams)
        kwargs.setdefault("device", "cpu")
        try:
            model = algorithm(env=venv, seed=run.seed, tensorboard_log=str(run.tensorboard_dir), verbose=0, **kwargs)
        except (AssertionError, TypeError, ValueError) as error:
            venv.close()
            raise UsageError(f"cannot build {algorithm.__name__} on {run.env_id} with these hyperparameters: {error}") from error

    checkpoints = UpdateCheckpointCallback(run.checkpoint_freq, run.checkpoint_dir, model.num_timesteps)
    # SB3's own progress bar (tqdm + rich), created here so that an interrupt can close it.
    progress_bar = ProgressBarCallback() if progress else None
    callbacks: list[BaseCallback] = [InfoScalarsCallback(), checkpoints, *([progress_bar] if progress_bar else [])]
    eval_venv: VecEnv | None = None
    if run.eval_freq > 0:
        # One env per episode (see DUSEvalCallback); statistics are synced from training, frozen here.
        eval_venv = DummyVecEnv([env_factory(run.env_id, run.env_kwargs, False) for _ in run.eval_seeds])
        if norm_kwargs is not None:
            eval_venv = VecNormalize(eval_venv, training=False, **{**norm_kwargs, "norm_reward": False})
        log = EvaluationLog(run.run_dir / "eval" / "evaluations.npz")
        callbacks.append(DUSEvalCallback(eval_venv, log, run.eval_seed, max(run.eval_freq // run.n_envs, 1), run.best_dir))
    interrupted = False
    try:
        model.learn(
            total_timesteps=run.total_timesteps - model.num_timesteps,
            callback=callbacks,
            reset_num_timesteps=False,
            tb_log_name=algorithm.__name__,
        )
    except KeyboardInterrupt:
        interrupted = True
        model.num_timesteps = checkpoints.trained_timesteps
        if progress_bar is not None and hasattr(progress_bar, "pbar"):
            progress_bar.pbar.close()
    save_sb3_checkpoint(model, run.checkpoint_dir, model.num_timesteps)
    if getattr(model, "replay_buffer", None) is not None:
        buffer = io.BytesIO()
        model.save_replay_buffer(buffer)
        atomic_write_bytes(run.checkpoint_dir / REPLAY_BUFFER_FILE, buffer.getvalue())
    if not interrupted:
        save_sb3(model, run.run_dir, SB3_FINAL_FILE, VECNORMALIZE_FILE)
    shutdown(venv, interrupted)
    if eval_venv is not None:
        eval_venv.close()
    return model, interrupted


# -- training: DUS-R (REINFORCE) ----------------------------------------------------------------------


def reinforce_checkpoint(run: Run, timesteps: int) -> Path:
    return run.checkpoint_dir / f"{REINFORCE_PREFIX}_{timesteps}_steps.pt"


def train_reinforce(run: Run, resume_steps: int | None, progress: bool) -> tuple[ReinforceAgent, bool]:
    """Train DUS-R, or continue it from its checkpoint at ``resume_steps``, with the same outputs as the SB3 path.

    :return: the agent and whether Ctrl-C stopped training.
    """
    probe = run.make_env()
    if resume_steps is not None:
        agent = ReinforceAgent.load(reinforce_checkpoint(run, resume_steps), probe)
    else:
        unwrapped = probe.unwrapped
        agent = ReinforceAgent(unwrapped.layout, unwrapped.mapping, reinforce_config(run.hyperparams), seed=run.seed)  # type: ignore[attr-defined]
    probe.close()
    logger = configure(str(run.tensorboard_dir / "REINFORCE_0"), ["tensorboard"])
    log = EvaluationLog(run.run_dir / "eval" / "evaluations.npz")
    next_eval = _next_multiple(agent.num_timesteps, run.eval_freq)
    next_checkpoint = _next_multiple(agent.num_timesteps, run.checkpoint_freq)
    remaining = run.total_timesteps - agent.num_timesteps
    bar = _progress_bar(remaining) if progress else None

    def on_update(agent: ReinforceAgent, update: ReinforceUpdate) -> bool:
        nonlocal next_eval, next_checkpoint
        record_info_scalars(logger, update.infos)
        if bar is not None:
            bar.update(sum(update.episode_lengths))
        if next_checkpoint is not None and agent.num_timesteps >= next_checkpoint:
            agent.save(reinforce_checkpoint(run, agent.num_timesteps))
            next_checkpoint = _next_multiple(agent.num_timesteps, run.checkpoint_freq)
        if next_eval is not None and agent.num_timesteps >= next_eval:
            results = evaluate_agent(agent, run)
            accuracies = [r.test_accuracy for r in results]
            logger.record("eval/mean_reward", float(np.mean([r.episode_return for r in results])))
            logger.record("eval/test_fused_accuracy", float(np.mean(accuracies)))
            lengths = [len(r.trace) - 1 for r in results]
            if log.add(agent.num_timesteps, [r.episode_return for r in results], lengths, accuracies):
                agent.save(run.best_dir / "best_model.pt")
            next_eval = _next_multiple(agent.num_timesteps, run.eval_freq)
        return True

    venv = make_vec_env(run)
    interrupted = False
    try:
        agent.train(venv, remaining, callback=on_update, logger=logger)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    agent.save(reinforce_checkpoint(run, agent.num_timesteps))
    if not interrupted:
        agent.save(run.run_dir / REINFORCE_FINAL_FILE)
    logger.close()
    shutdown(venv, interrupted)
    return agent, interrupted


def _next_multiple(done: int, every: int) -> int | None:
    return (done // every + 1) * every if every > 0 else None


def _progress_bar(total: int) -> Any:
    """The same rich progress bar SB3 shows."""
    from tqdm import TqdmExperimentalWarning
    from tqdm.rich import tqdm

    warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
    return tqdm(total=total)


# -- export and main ----------------------------------------------------------------------------------


def export_policy(run: Run, trained: BaseAlgorithm | ReinforceAgent) -> Path:
    """Write ``<run_dir>/exported/``: the deterministic policy for ``dus_env``'s ``DUSSampler``."""
    metadata = {
        "algo": run.algo,
        "env_id": run.env_id,
        "env_kwargs": run.env_kwargs,
        "hyperparams": run.hyperparams,
        "seed": run.seed,
        "num_timesteps": trained.num_timesteps,
        "run_dir": str(run.run_dir),
    }
    out_dir = run.run_dir / "exported"
    if isinstance(trained, ReinforceAgent):
        return export_reinforce_policy(trained, run.env_config, out_dir, metadata)
    return export_sb3_policy(trained, trained.get_vec_normalize_env(), run.env_config, out_dir, metadata)


def as_agent(run: Run, trained: BaseAlgorithm | ReinforceAgent) -> Agent:
    if isinstance(trained, ReinforceAgent):
        return trained
    layout = dus_env.ObservationLayout(run.env_config.task.n_modalities)
    mapping = run.env_config.quantity_mapping(layout.n_modalities)
    return SB3Agent(layout, mapping, trained, trained.get_vec_normalize_env())


def start(args: Args) -> tuple[Run, int | None] | None:
    """Resolve the run and write its ``config.yml``; also the checkpoint steps to resume from, if any.

    ``None``: a resumed run that already has all its steps (nothing to do).
    """
    if not args.resume:
        run = resolve_run(args)
        # A config.yml alone is left by a run that failed to start; checkpoints mean there is work to keep.
        if run.checkpoint_dir.exists() or (run.run_dir / SB3_FINAL_FILE).exists() or (run.run_dir / REINFORCE_FINAL_FILE).exists():
            raise UsageError(f"{run.run_dir} already holds a run: pass --resume to continue it, or --run-dir for a new one")
        write_yaml(run.run_dir / CONFIG_FILE, run.to_config())
        return run, None
    run, config = resume_run(args)
    done = latest_checkpoint(run.checkpoint_dir)
    if done is None:
        raise UsageError(f"no checkpoint in {run.checkpoint_dir} to resume from: start the run again without --resume")
    if done >= run.total_timesteps:
        print(f"{run.run_dir} already has {done:,} of {run.total_timesteps:,} steps: pass a larger --timesteps to continue")
        return None
    print(f"resuming {run.run_dir} at {done:,} of {run.total_timesteps:,} steps")
    config["total_timesteps"] = run.total_timesteps
    config["hyperparams"]["n_timesteps"] = run.total_timesteps
    config.setdefault("resumes", []).append({"from_timesteps": done, "command": sys.argv, "versions": package_versions()})
    write_yaml(run.run_dir / CONFIG_FILE, config)
    return run, done


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    # Harmless: without VecNormalize the eval env is a DummyVecEnv and the training env a SubprocVecEnv.
    warnings.filterwarnings("ignore", message="Training and eval env are not of the same type")
    start_time = time.perf_counter()
    try:
        started = start(args)
        if started is None:
            return 0
        run, resume_steps = started
        trained: BaseAlgorithm | ReinforceAgent
        if run.is_reinforce:
            trained, interrupted = train_reinforce(run, resume_steps, not args.no_progress)
        else:
            trained, interrupted = train_sb3(run, resume_steps, not args.no_progress)
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
        print(f"\ninterrupted after training: the final model is saved in {run.run_dir}, the final evaluation or export was skipped", file=sys.stderr)
        return EXIT_INTERRUPTED


def finish(run: Run, trained: BaseAlgorithm | ReinforceAgent, start_time: float) -> int:
    """Final evaluation (against uniform sampling on the same seeds), export, one-line summary."""
    results = evaluate_agent(as_agent(run, trained), run)
    mapping = run.env_config.quantity_mapping(run.env_config.task.n_modalities)
    uniform = evaluate_agent(UniformAgent(dus_env.ObservationLayout(mapping.n_modalities), mapping), run)
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

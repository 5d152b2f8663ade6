"""A training run of ``train_agent.py``: its options resolved and checked, its folder, its resumption.

A run lives in one folder (``runs/<algo>_<env-name>_<seed>[_<hash8>]/`` by default, :func:`default_run_dir`) whose ``config.yml``
holds everything needed to continue it and whose manifest ``run.json`` (:mod:`agents.manifest`)
records every checkpoint, the final model and the export with their checksums. :func:`start_run`
either checks the options and writes a new ``config.yml`` and manifest, or reads them back and
plans the resumption: the intact checkpoints to load (newest first; a damaged one is named and
skipped), or a start from the beginning when the run was stopped before its first checkpoint, or
only the final model and export when training had finished. Every check happens here, before
anything is written or a worker started, and bad input raises :class:`UsageError` with a one-line
message that says what to change. Temporary files a killed process left behind are removed first.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import platform
import shutil
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv

import dus_env
from dus_env.env import config_of
from dus_env.registration import resolve_env_id

from . import cli
from .cli import yaml_number
from .errors import UsageError  # also importable from here, as agents.runs.UsageError
from .folder_lock import FolderInUseError, lock_folder
from .manifest import MANIFEST_FILE, ManifestError, RunManifest, config_hash, damage, load_manifest, missing_outputs, save_manifest
from .reinforce import Reinforce
from .results import lists_for_tuples, package_versions, write_text
from .run_files import CHECKPOINT_DIR, CONFIG_FILE, SB3_FINAL_FILE, legacy_dus_r_message
from .sb3_agent import (
    available_algorithms,
    default_policy,
    get_algorithm_class,
    load_hyperparams,
    parse_key_values,
    run_settings,
    sb3_constructor_kwargs,
    vec_normalize_kwargs,
    zoo_entry,
)

#: Distributions whose versions ``config.yml`` records (with Python's).
TRAINING_PACKAGES = ("dus_env", "torch", "gymnasium", "stable-baselines3", "sb3-contrib", "numpy")


#: How the training envs run (``--vec``): the native batched vector env, subprocesses, or one after another.
VEC_KINDS = ("native", "subproc", "dummy")

#: Who trains (``--backend``): Stable-Baselines3 in this process (every algorithm, DUS-R included), or
#: RLlib on Ray (PPO; :mod:`agents.rllib_training`).
BACKENDS = ("sb3", "rllib")
#: The algorithms the RLlib backend trains.
RLLIB_ALGOS = ("ppo",)


class RunOptions(Protocol):
    """The command-line options a run is made from (``train_agent.Args``; see its help for each)."""

    algo: str
    env: str
    env_kwargs: list[str]
    timesteps: int | None
    n_envs: int | None
    vec: str
    seed: int
    hyperparams: list[str]
    run_dir: str | None
    tensorboard: str | None
    eval_freq: int
    eval_episodes: int
    eval_seed: int
    checkpoint_freq: int
    resume: bool
    backend: str
    num_env_runners: int | None


@dataclass
class Run:
    """Everything a run is made of once the options, the hyperparameter file and the env are resolved."""

    algo: str
    env_id: str
    env_kwargs: dict[str, Any]
    seed: int
    hyperparams: dict[str, Any]
    n_envs: int
    vec: str
    total_timesteps: int
    eval_freq: int
    eval_episodes: int
    eval_seed: int
    checkpoint_freq: int
    run_dir: Path
    tensorboard_dir: Path
    env_config: dus_env.EnvConfig
    backend: str = "sb3"
    #: RLlib's remote env runners (``--num-env-runners``); 0 for SB3 runs.
    num_env_runners: int = 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    @property
    def best_dir(self) -> Path:
        return self.run_dir / "best_model"

    @property
    def eval_seeds(self) -> list[int]:
        return [self.eval_seed + i for i in range(self.eval_episodes)]

    def make_env(self) -> gym.Env:
        """One env of the run; with ``vec="native"`` it leaves torch's thread count (every core) alone."""
        defaults = {"torch_threads": None} if self.vec == "native" else {}
        return gym.make(self.env_id, **{**defaults, **self.env_kwargs})

    def to_config(self) -> dict[str, Any]:
        """What ``config.yml`` holds: enough to rerun or resume, plus provenance."""
        return lists_for_tuples(
            {
                "algo": self.algo,
                "env_id": self.env_id,
                "env_kwargs": self.env_kwargs,
                "seed": self.seed,
                "total_timesteps": self.total_timesteps,
                "n_envs": self.n_envs,
                "vec": self.vec,
                "hyperparams": self.hyperparams,
                "eval": {"freq": self.eval_freq, "episodes": self.eval_episodes, "seed": self.eval_seed},
                "checkpoint_freq": self.checkpoint_freq,
                "backend": self.backend,
                "num_env_runners": self.num_env_runners,
                # Relative to the run directory when inside it, so that a moved run still resumes.
                "tensorboard_dir": str(_relative_to(self.tensorboard_dir, self.run_dir)),
                "env_config": self.env_config.to_dict(),
                "layout": self.env_config.observation_layout().to_dict(),
                "versions": training_versions(),
                "command": sys.argv,
            }
        )


@dataclass
class RunStart:
    """What :func:`start_run` decided.

    :param run: the run.
    :param checkpoints: steps of the intact checkpoints to resume from, newest first (empty: train
        from the beginning); the trainer loads the first that loads (:meth:`loaded`).
    :param resumed_config: the ``config.yml`` to write once a checkpoint has loaded (resume only).
    """

    run: Run
    checkpoints: list[int] = field(default_factory=list)
    resumed_config: dict[str, Any] | None = None

    def loaded(self, steps: int) -> None:
        """A checkpoint at ``steps`` has loaded: record the resumption in ``config.yml`` (only now)."""
        if self.resumed_config is None:
            return
        config = self.resumed_config
        config["total_timesteps"] = self.run.total_timesteps
        config["hyperparams"]["n_timesteps"] = self.run.total_timesteps
        config.setdefault("resumes", []).append({"from_timesteps": steps, "command": sys.argv, "versions": training_versions()})
        write_config(self.run.run_dir, config)


def start_run(options: RunOptions, given: Collection[str] | None = None) -> RunStart | None:
    """Resolve a new run (writing its ``config.yml`` and manifest) or plan a resumption (see the module docstring).

    ``None``: a resumed run that already has all its steps, its final model and its export.

    :param given: names of the options given on the command line, compared with the saved run on
        ``--resume`` (:func:`resume_run`).
    """
    if not options.resume:
        run = resolve_run(options)
        if (run.run_dir / CONFIG_FILE).exists() and not is_run_folder(run.run_dir):
            raise UsageError(
                f"{run.run_dir} holds a {CONFIG_FILE} but no readable {MANIFEST_FILE}: it is not a run folder of "
                "this dus_env (or a run from before 0.4); choose another --run-dir"
            )
        lock_run(run.run_dir)
        remove_stale_files(run.run_dir)
        if holds_work(run.run_dir):
            raise UsageError(f"{run.run_dir} already holds a run: pass --resume to continue it, or --run-dir for a new one")
        reset_progress(run)  # what a run stopped before its first checkpoint logged in this folder
        config = run.to_config()
        # The manifest first: a folder with a run.json is a run folder (cleanup may touch it), one with a
        # config.yml alone is not.
        save_manifest(run.run_dir, RunManifest(run.algo, run.env_id, settings_hash(config)))
        write_config(run.run_dir, config)
        return RunStart(run)
    run, config = resume_run(options, given)
    lock_run(run.run_dir)
    remove_stale_files(run.run_dir)
    manifest = read_manifest(run, config)
    intact = intact_checkpoints(run, manifest)
    if not intact:
        if manifest.checkpoints:
            raise UsageError(f"no checkpoint of {run.run_dir} is intact (see above): start a new run with another --run-dir")
        print(f"{run.run_dir} has no checkpoint yet (stopped before the first one): starting the run from the beginning")
        reset_progress(run)
        restarted = {**run.to_config(), "restarted": {"command": sys.argv, "versions": training_versions()}}
        save_manifest(run.run_dir, RunManifest(run.algo, run.env_id, settings_hash(restarted)))
        write_config(run.run_dir, restarted)
        return RunStart(run)
    done = intact[0]
    if done >= run.total_timesteps:
        missing = missing_outputs(run.run_dir, manifest, done)
        if not missing:
            print(
                f"{run.run_dir} is complete: {done:,} of {run.total_timesteps:,} steps, final model and export in place "
                "(pass a larger --timesteps to train on)"
            )
            return None
        print(f"{run.run_dir} has finished training ({done:,} steps) but not its {' and '.join(missing)}: finishing them")
    else:
        print(f"resuming {run.run_dir} at {done:,} of {run.total_timesteps:,} steps")
    return RunStart(run, intact, config)


def settings_hash(config: dict[str, Any]) -> str:
    """:func:`agents.manifest.config_hash` of what defines a run, from its ``config.yml`` values: all
    but the step budget (``--resume --timesteps`` may raise it). Taken from the saved values, not
    re-resolved ones, so that a field a later dus_env adds to ``EnvConfig`` does not change it."""
    hyperparams = {k: v for k, v in config["hyperparams"].items() if k != "n_timesteps"}
    # An RLlib run is another run than the SB3 run of the same settings (SB3 runs keep their hashes).
    backend = {"backend": config["backend"], "num_env_runners": config["num_env_runners"]} if config.get("backend", "sb3") != "sb3" else {}
    return config_hash(
        {key: config[key] for key in ("algo", "env_id", "env_kwargs", "seed", "n_envs", "env_config")}
        | {"hyperparams": hyperparams}
        | backend
    )


def lock_run(run_dir: Path) -> None:
    try:
        lock_folder(run_dir, "train_agent.py")
    except FolderInUseError as error:
        raise UsageError(str(error)) from None


def read_manifest(run: Run, config: dict[str, Any]) -> RunManifest:
    """The run's manifest, checked against its ``config.yml`` (``config``)."""
    try:
        manifest = load_manifest(run.run_dir)
    except ManifestError as error:
        raise UsageError(f"{run.run_dir / MANIFEST_FILE}: {error}; the run cannot be resumed safely") from error
    if manifest is None:
        raise UsageError(
            f"{run.run_dir} has no {MANIFEST_FILE} (a run from before dus_env 0.4, or not a run folder): "
            "resume it with the dus_env version that started it, or start a new run"
        )
    for files in [*manifest.checkpoints.values(), manifest.final or {}]:
        for name in files:
            legacy = legacy_dus_r_message(run.run_dir, name)
            if legacy is not None:
                raise UsageError(legacy)
    if manifest.config_hash != settings_hash(config) or manifest.algo != run.algo or manifest.env_id != run.env_id:
        raise UsageError(
            f"{run.run_dir / CONFIG_FILE} does not describe the run its checkpoints come from ({manifest.algo} on "
            f"{manifest.env_id}, settings hash {manifest.config_hash[:12]}): was it edited? Only --timesteps may change "
            "on --resume; put the original config.yml back or start a new run"
        )
    return manifest


def intact_checkpoints(run: Run, manifest: RunManifest) -> list[int]:
    """Steps of the manifest's checkpoints whose files are all there and unchanged, newest first; a
    damaged one is reported in one line and skipped."""
    intact = []
    for steps in sorted(manifest.checkpoints, reverse=True):
        problem = damage(run.run_dir, manifest.checkpoints[steps])
        if problem is None:
            intact.append(steps)
        else:
            print(f"warning: skipping the checkpoint at {steps:,} steps: {problem}", file=sys.stderr)
    return intact


def holds_work(run_dir: Path) -> bool:
    """Whether the folder holds a checkpoint or a final model (a ``config.yml`` alone, or an empty
    manifest, is left by a run stopped before its first checkpoint: nothing to keep)."""
    try:
        manifest = load_manifest(run_dir)
    except ManifestError:
        return True
    if manifest is not None and (manifest.checkpoints or manifest.final):
        return True
    files = [run_dir / SB3_FINAL_FILE]
    checkpoints = run_dir / CHECKPOINT_DIR
    return any(path.exists() for path in files) or (checkpoints.is_dir() and any(checkpoints.iterdir()))


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` was made by ``train_agent.py``, i.e. holds a readable manifest (only then are
    files in it removed)."""
    try:
        return load_manifest(folder) is not None
    except ManifestError:
        return False


def reset_progress(run: Run) -> None:
    """Forget what a run stopped before its first checkpoint logged: it starts again from step 0."""
    if not is_run_folder(run.run_dir):
        return
    shutil.rmtree(run.run_dir / "eval", ignore_errors=True)
    shutil.rmtree(run.best_dir, ignore_errors=True)


def remove_stale_files(run_dir: Path) -> None:
    """Remove what a killed process left half-written: ``.NAME.XXXX.tmp`` files (atomic writes),
    ``.NAME.tmp`` folders (RLlib checkpoints being written) and ``.exported.*`` folders (an export's
    staging or retired folder)."""
    if not is_run_folder(run_dir):
        return
    for path in run_dir.rglob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir():  # an RLlib checkpoint being written (agents.rllib_training.save_checkpoint)
            shutil.rmtree(path, ignore_errors=True)
    for path in run_dir.glob(".exported.*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def resolve_run(options: RunOptions) -> Run:
    """Check every option and build the :class:`Run`; bad input raises :class:`UsageError` (an unknown
    env id :class:`dus_env.ConfigError`). A step budget the algorithm rounds up is announced in one line."""
    algo = canonical_algo(options.algo)
    env_id = resolve_env_id(options.env)
    num_env_runners = check_backend(options, algo)
    env_kwargs, overrides = requested_overrides(options)
    if options.timesteps is not None:
        overrides["n_timesteps"] = options.timesteps
    hyperparams = load_hyperparams(algo, env_id, overrides)
    n_envs, requested = run_settings(hyperparams)
    hyperparams.update(n_envs=n_envs)
    for name in ("eval_freq", "checkpoint_freq"):
        if getattr(options, name) < 0:
            raise UsageError(
                f"--{name.replace('_', '-')}={getattr(options, name)} is invalid: expected 0 (off) or a positive number of steps"
            )
    if options.eval_episodes < 1:
        raise UsageError(f"--eval-episodes={options.eval_episodes} is invalid: expected at least 1")
    if options.vec not in VEC_KINDS:
        raise UsageError(f"--vec={options.vec!r} is invalid: expected one of {', '.join(VEC_KINDS)}")
    env = probe_env(env_id, env_kwargs, options.eval_seed)
    try:
        total_timesteps, rounding = trained_timesteps(algo, hyperparams, config_of(env).decision_steps)
        hyperparams.update(n_timesteps=total_timesteps)
        if options.backend == "rllib":
            from .rllib_config import check_rllib_hyperparams

            check_rllib_hyperparams(hyperparams, num_env_runners)
        else:
            check_algorithm_hyperparams(algo, hyperparams, env)
    finally:
        env.close()
    if rounding:
        print(f"note: {requested:,} steps requested, {total_timesteps:,} will be trained: {rounding}")
    run_dir = run_folder(options)
    return Run(
        algo=algo,
        env_id=env_id,
        env_kwargs=env_kwargs,
        seed=options.seed,
        hyperparams=hyperparams,
        n_envs=n_envs,
        vec=options.vec,
        total_timesteps=total_timesteps,
        eval_freq=options.eval_freq,
        eval_episodes=options.eval_episodes,
        eval_seed=options.eval_seed,
        checkpoint_freq=options.checkpoint_freq,
        run_dir=run_dir,
        tensorboard_dir=Path(options.tensorboard) if options.tensorboard else run_dir / "tb",
        env_config=config_of(env),
        backend=options.backend,
        num_env_runners=num_env_runners,
    )


def resume_run(options: RunOptions, given: Collection[str] | None = None) -> tuple[Run, dict[str, Any]]:
    """The :class:`Run` saved in the run directory's ``config.yml`` (``--timesteps`` sets a new total), and that config.

    Without ``--run-dir`` the folder is the one the same options would start (:func:`default_run_dir`).
    Every other option must agree with the saved run: a differing one is refused with a message
    naming it (see :func:`changed_settings`), never silently ignored.

    :param given: names of the options given on the command line (``RunOptions`` attributes); those
        are compared with the saved run. ``None``: only the options whose value says they were given
        (``env_kwargs``, ``hyperparams``, ``n_envs``, ``tensorboard``).
    """
    run_dir = run_folder(options)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        siblings = sorted(str(path) for path in run_dir.parent.glob(f"{run_dir.name.split('_')[0]}_*") if (path / CONFIG_FILE).is_file())
        hint = f"; runs there: {', '.join(siblings)}" if siblings and not options.run_dir else ""
        raise UsageError(
            f"nothing to resume in {run_dir}: no {CONFIG_FILE} (pass the run's folder with --run-dir, or the options that started it){hint}"
        )
    try:
        saved = yaml.safe_load(config_path.read_text())
        changed = changed_settings(options, saved, run_dir, given)
        if changed:
            raise UsageError(
                f"--resume cannot change the settings of {run_dir}: {'; '.join(changed)}. Only --timesteps may "
                "change on --resume: drop the others, or start a new run without --resume"
            )
        probe = probe_env(saved["env_id"], saved["env_kwargs"], saved["eval"]["seed"])
        probe.close()
        hyperparams = dict(saved["hyperparams"])
        if options.timesteps is not None:
            hyperparams["n_timesteps"] = options.timesteps
        total_timesteps, rounding = trained_timesteps(saved["algo"], hyperparams, config_of(probe).decision_steps)
        if rounding and options.timesteps is not None:
            print(f"note: {options.timesteps:,} steps requested, {total_timesteps:,} will be trained: {rounding}")
        hyperparams["n_timesteps"] = total_timesteps
        run = Run(
            algo=saved["algo"],
            env_id=saved["env_id"],
            env_kwargs=saved["env_kwargs"],
            seed=saved["seed"],
            hyperparams=hyperparams,
            n_envs=saved["n_envs"],
            # Runs from before the native vector env ran their envs in subprocesses.
            vec=saved.get("vec", "subproc"),
            total_timesteps=total_timesteps,
            eval_freq=saved["eval"]["freq"],
            eval_episodes=saved["eval"]["episodes"],
            eval_seed=saved["eval"]["seed"],
            checkpoint_freq=saved["checkpoint_freq"],
            run_dir=run_dir,
            tensorboard_dir=run_dir / saved["tensorboard_dir"],
            env_config=config_of(probe),
            backend=saved.get("backend", "sb3"),
            num_env_runners=saved.get("num_env_runners", 0),
        )
    except (yaml.YAMLError, KeyError, TypeError) as error:
        raise UsageError(f"{config_path} is damaged or incomplete ({error!r}): start a new run without --resume") from error
    return run, saved


def default_run_dir(algo: str, env_id: str, seed: int, overrides: Mapping[str, Any] | None = None, backend: str = "sb3") -> Path:
    """``runs/<algo>_<env-name>_<seed>`` (e.g. ``runs/ppo_Synthetic-v0_0``; RLlib runs
    ``runs/ppo-rllib_Synthetic-v0_0``) for a run with the files' settings,
    ``runs/<algo>_<env-name>_<seed>_<hash8>`` for one with ``overrides`` (:func:`folder_overrides`):
    two runs that differ in any setting never share a folder, and the same options find the same
    folder again (``--resume``).
    """
    label = algo if backend == "sb3" else f"{algo}-{backend}"
    name = f"{label}_{env_id.split('/')[-1]}_{seed}"
    if overrides:
        name += "_" + config_hash(lists_for_tuples(dict(overrides)))[:8]
    return Path("runs") / name


def requested_overrides(options: RunOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's ``--env-kwargs`` and its hyperparameter overrides (``--hyperparams``, with ``--n-envs``
    as ``n_envs``), parsed: ``decision_steps=40`` and ``{"decision_steps": 40}`` give the same values."""
    env_kwargs = parse_env_kwargs(options.env_kwargs)
    overrides = parse_hyperparams(options.hyperparams, options.env)
    if options.n_envs is not None:
        overrides["n_envs"] = options.n_envs
    return env_kwargs, overrides


#: Suffixes that make a ``--hyperparams`` item (without ``=``) a zoo-style hyperparameter file.
HYPERPARAMS_FILE_SUFFIXES = (".yml", ".yaml")


def parse_hyperparams(items: list[str], env: str) -> dict[str, Any]:
    """``--hyperparams``: ``key=value`` items and zoo-style hyperparameter files, read in order, later items winning.

    A file item (``best.yml`` of ``tune_agent.py``, or any rl-baselines3-zoo file) gives every value of its
    entry for ``env`` (:func:`hyperparams_file_entry`); a ``key=value`` item after it replaces that whole
    top-level value, as every override does. Why overrides and not another base file: then the file's values
    name the run folder, reach ``config.yml`` and are compared on ``--resume`` like any other override.
    """
    return hyperparams_with_sources(items, env)[0]


def is_hyperparams_file(item: str) -> bool:
    """Whether a ``--hyperparams`` item names a file (``best.yml``) rather than setting a ``key=value``."""
    return Path(item).suffix.lower() in HYPERPARAMS_FILE_SUFFIXES and ("=" not in item or Path(item).is_file())


def hyperparams_with_sources(items: list[str], env: str) -> tuple[dict[str, Any], set[str]]:
    """:func:`parse_hyperparams`, and the keys whose value comes from a file item (a later ``key=value``
    item takes its key back): ``--resume`` does not read a file's ``n_timesteps`` as a new budget."""
    overrides: dict[str, Any] = {}
    from_files: set[str] = set()
    pairs: list[str] = []
    for item in items:
        if is_hyperparams_file(item):
            overrides.update(parse_key_values(pairs, "--hyperparams"))
            from_files -= {pair.partition("=")[0].strip() for pair in pairs}
            pairs = []
            entry = hyperparams_file_entry(Path(item), resolve_env_id(env))
            overrides.update(entry)
            from_files |= set(entry)
        else:
            pairs.append(item)
    overrides.update(parse_key_values(pairs, "--hyperparams"))
    from_files -= {pair.partition("=")[0].strip() for pair in pairs}
    return overrides, from_files


def hyperparams_file_entry(path: Path, env_id: str) -> dict[str, Any]:
    """The entry of a zoo-style hyperparameter file for ``env_id``, else its ``default`` entry: the entry
    :func:`agents.sb3_agent.load_hyperparams` (and rl-baselines3-zoo) would pick, used as it is.

    :param env_id: the run's resolved env id (``dus_env/Synthetic-v0``).
    :raises UsageError: a missing or unreadable file, invalid YAML, or no entry for the env; one line that
        names ``--hyperparams``, the file and, when no entry fits, the ids the file has.
    """
    try:
        entries = yaml.safe_load(path.read_text())
    except OSError as error:
        raise UsageError(f"--hyperparams {path}: cannot read the hyperparameter file ({error.strerror or error})") from error
    except yaml.YAMLError as error:
        raise invalid_yaml(f"--hyperparams {path}", error) from error
    if not isinstance(entries, dict) or not entries or not all(isinstance(entry, dict) for entry in entries.values()):
        raise UsageError(
            f"--hyperparams {path} is not a zoo-style hyperparameter file: expected env ids (or 'default') "
            "mapped to dicts of hyperparameters"
        )
    entry = zoo_entry(entries, env_id)
    if entry is None:
        raise UsageError(
            f"--hyperparams {path} has no entry for {env_id!r} and no 'default' entry: its entries are {', '.join(map(str, entries))}"
        )
    return {str(name): yaml_number(value) for name, value in entry.items()}


def invalid_yaml(subject: str, error: yaml.YAMLError) -> UsageError:
    """``<subject> is not valid YAML at line N: <problem>``: one line for any YAML file a user gives
    (``--hyperparams FILE``, a search space), with the line PyYAML found the problem on."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    return UsageError(f"{subject} is not valid YAML{where}: {getattr(error, 'problem', None) or error}")


def folder_overrides(env_kwargs: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """What names a run folder beside algo, env and seed: the env kwargs and the hyperparameter
    overrides, without the step budget (``--resume --timesteps`` may raise it); empty for a run with
    the files' settings, whose folder then keeps its short name."""
    hyperparams = {key: value for key, value in overrides.items() if key != "n_timesteps"}
    return {name: values for name, values in (("env_kwargs", dict(env_kwargs)), ("hyperparams", hyperparams)) if values}


#: Run options that name the folder too when they differ from their defaults: two runs that differ
#: only in how they are evaluated, checkpointed or vectorised are still two runs.
FOLDER_OPTIONS = ("vec", "eval_freq", "eval_episodes", "eval_seed", "checkpoint_freq", "num_env_runners")


def run_folder(options: RunOptions) -> Path:
    """``--run-dir``, or the folder these options start or resume (:func:`default_run_dir`): named by
    the overrides that change something (a ``--hyperparams``/``--n-envs`` value equal to the file's is
    no override) and by the :data:`FOLDER_OPTIONS` that differ from their defaults."""
    if options.run_dir:
        return Path(options.run_dir)
    algo, env_id = canonical_algo(options.algo), resolve_env_id(options.env)
    env_kwargs, overrides = requested_overrides(options)
    file_values = load_hyperparams(algo, env_id, {})
    changed = {
        key: value
        for key, value in overrides.items()
        if key not in file_values or lists_for_tuples(value) != lists_for_tuples(file_values[key])
    }
    named = folder_overrides(env_kwargs, changed)
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        defaults = type(options)()
        run_options = {
            name: getattr(options, name)
            for name in FOLDER_OPTIONS
            if getattr(options, name) != getattr(defaults, name) and not _is_default_runners(name, getattr(options, name))
        }
        if run_options:
            named["run"] = run_options
    return default_run_dir(algo, env_id, options.seed, named, options.backend)


def _is_default_runners(name: str, value: Any) -> bool:
    """``--num-env-runners`` given as its default names the same folder as left out."""
    return name == "num_env_runners" and value == DEFAULT_ENV_RUNNERS


def changed_settings(options: RunOptions, saved: dict[str, Any], run_dir: Path, given: Collection[str] | None) -> list[str]:
    """``--resume``: one line per given option that differs from the saved run (``config.yml`` values), e.g.
    ``--vec gives 'dummy', the run has 'native'``; empty when nothing differs. ``--timesteps`` may differ.

    :param given: option names given on the command line (see :func:`resume_run`).
    """
    implied = {name for name in ("env_kwargs", "hyperparams", "n_envs", "tensorboard") if getattr(options, name) not in (None, [])}
    names = implied | set(given or ())
    if "n_envs" in names:
        names.add("hyperparams")  # --n-envs is compared as the hyperparameter n_envs
    env_kwargs, overrides = requested_overrides(options)
    hyperparams = saved.get("hyperparams", {})
    comparisons: dict[str, tuple[Any, Any]] = {
        "algo": (lambda: canonical_algo(options.algo), saved["algo"]),
        "env": (lambda: resolve_env_id(options.env), saved["env_id"]),
        "seed": (lambda: options.seed, saved["seed"]),
        "env_kwargs": (lambda: lists_for_tuples(env_kwargs), saved["env_kwargs"]),
        "vec": (lambda: options.vec, saved.get("vec", "subproc")),
        "eval_freq": (lambda: options.eval_freq, saved["eval"]["freq"]),
        "eval_episodes": (lambda: options.eval_episodes, saved["eval"]["episodes"]),
        "eval_seed": (lambda: options.eval_seed, saved["eval"]["seed"]),
        "checkpoint_freq": (lambda: options.checkpoint_freq, saved["checkpoint_freq"]),
        "backend": (lambda: options.backend, saved.get("backend", "sb3")),
        "num_env_runners": (lambda: options.num_env_runners, saved.get("num_env_runners", 0)),
        "tensorboard": (lambda: Path(options.tensorboard or ".").resolve(), (run_dir / saved["tensorboard_dir"]).resolve()),
    }
    changed = []
    for name, (value, saved_value) in comparisons.items():
        if name in names and value() != saved_value:
            changed.append(f"--{name.replace('_', '-')} gives {value()!r}, the run has {saved_value!r}")
    if "hyperparams" in names:
        from_files = hyperparams_with_sources(options.hyperparams, options.env)[1]
        for key, value in overrides.items():
            if key == "n_timesteps":
                # A file's n_timesteps (best.yml's) is its budget, not a request: only a key=value one is refused.
                if key not in from_files and yaml_number(value) != hyperparams.get(key):
                    message = f"--hyperparams n_timesteps={value!r} is not how a resumed run gets more steps"
                    changed.append(f"{message}: pass --timesteps {value}")
            elif lists_for_tuples(yaml_number(value)) != hyperparams.get(key):
                option = "--n-envs" if key == "n_envs" and options.n_envs is not None else f"--hyperparams {key}"
                changed.append(f"{option}={value!r} differs from the run's {key}={hyperparams.get(key)!r}")
    return changed


# -- checks -------------------------------------------------------------------------------------------


class _ActionSpaceProbe(gym.Env):
    """An env with spaces of the DUS kind (a ``Box`` observation, a continuous ``Box`` action with one
    share per modality) to build SB3 algorithms on without a model: their constructors check the
    action space against the ones they support."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (8,), np.float32)
    action_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        return np.zeros(8, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return np.zeros(8, np.float32), 0.0, True, False, {}


def unusable_reason(algorithm: type[BaseAlgorithm]) -> str | None:
    """Why ``algorithm`` cannot train a DUS policy, or ``None`` when it can.

    * An algorithm for discrete actions (DQN, QR-DQN, MaskablePPO): the DUS envs' actions are
      continuous budget shares.
    * A recurrent policy (RecurrentPPO): the exported artifact that ``dus_env.DUSSampler`` runs is
      a feed-forward network, so export would drop the LSTM state; refused before training rather
      than after it.
    """
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    policy = algorithm.policy_aliases.get(default_policy(algorithm))
    if isinstance(policy, type) and issubclass(policy, RecurrentActorCriticPolicy):
        return (
            "has a recurrent (LSTM) policy, and the exported policy that dus_env's DUSSampler runs is feed-forward: "
            "export would drop the LSTM state"
        )
    try:
        algorithm(default_policy(algorithm), _ActionSpaceProbe(), _init_setup_model=False, device="cpu")  # type: ignore[call-arg]
    except AssertionError as error:
        if "action space" not in str(error):
            raise
        return "needs a discrete action space; DUS envs have a continuous Box action space (one budget share per modality)"
    return None


@functools.cache
def usable_algorithms() -> tuple[str, ...]:
    """Names ``--algo`` accepts: ``reinforce`` (DUS-R) and every SB3 / sb3-contrib algorithm that can
    train and export a DUS policy (:func:`unusable_reason`), for ``--help`` and error messages."""
    return (
        "ppo",
        "a2c",
        "reinforce",
        *(
            name
            for name, algorithm in available_algorithms().items()
            if name not in ("ppo", "a2c", "reinforce") and unusable_reason(algorithm) is None
        ),
    )


def canonical_algo(name: str) -> str:
    """``reinforce``, or the lower-case class name of an SB3 algorithm (``PPO`` -> ``ppo``).

    :raises UsageError: an unknown name (the message lists :func:`usable_algorithms`), or an
        algorithm that cannot work on the DUS envs (the message says why, :func:`unusable_reason`).
    """
    if name.strip().lower() in ("reinforce", "dus-r", "dus_r"):
        return "reinforce"
    try:
        algorithm = get_algorithm_class(name)
    except ValueError:
        close = difflib.get_close_matches(name.strip().lower(), usable_algorithms(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"--algo {name!r} is unknown: {hint}choose one of {', '.join(usable_algorithms())}") from None
    reason = unusable_reason(algorithm)
    if reason is not None:
        raise UsageError(f"--algo {name}: {algorithm.__name__} {reason}; algorithms that work: {', '.join(usable_algorithms())}")
    return algorithm.__name__.lower()


def check_backend(options: RunOptions, algo: str) -> int:
    """``--backend`` and the options only it takes; returns the run's env runner count (0 for SB3).

    :raises UsageError: an unknown backend, an algorithm the backend does not train, or
        ``--num-env-runners`` without ``--backend rllib``.
    """
    if options.backend not in BACKENDS:
        raise UsageError(f"--backend={options.backend!r} is invalid: expected one of {', '.join(BACKENDS)}")
    if options.backend == "sb3":
        if options.num_env_runners is not None:
            raise UsageError("--num-env-runners only goes with --backend rllib (SB3 runs its envs as --vec says)")
        return 0
    if algo not in RLLIB_ALGOS:
        raise UsageError(f"--backend rllib trains {', '.join(RLLIB_ALGOS)} only, not --algo {algo}: pass --algo ppo, or --backend sb3")
    runners = DEFAULT_ENV_RUNNERS if options.num_env_runners is None else options.num_env_runners
    if runners < 0:
        raise UsageError(f"--num-env-runners={runners} is invalid: expected 0 (sample in the driver) or more remote env runners")
    return runners


#: ``--num-env-runners`` when not given: two remote runners, each stepping half the envs as one native
#: vector env, were the fastest on the 2-core test machine (docs/performance.md: 0.99x SB3's steps/s,
#: against 0.71x when the driver samples); a cluster wants one per core it offers.
DEFAULT_ENV_RUNNERS = 2


def trained_timesteps(algo: str, hyperparams: Mapping[str, Any], decision_steps: int) -> tuple[int, str | None]:
    """The steps a run really trains for its ``n_timesteps``, and why they differ (``None``: they do not).

    SB3 stops only between collections: an on-policy algorithm collects whole rollouts of
    ``n_steps * n_envs`` steps (TRPO asked for 1,024 trains 4,096 with ``n_steps=2048, n_envs=2``), an
    off-policy one ``train_freq`` steps of all ``n_envs`` envs, DUS-R whole batches of
    ``episodes_per_batch`` episodes of ``decision_steps`` steps (fewer only when a model diverges and
    ends its episode early). Off-policy algorithms that train per episode are left as they are.

    :param decision_steps: the env's episode length.
    """
    n_envs, requested = run_settings(hyperparams)
    algorithm = get_algorithm_class(algo)
    defaults = inspect.signature(algorithm.__init__).parameters
    if issubclass(algorithm, Reinforce):
        episodes = int(hyperparams.get("episodes_per_batch", defaults["episodes_per_batch"].default))
        chunk = episodes * decision_steps
        why = f"DUS-R trains whole batches of episodes_per_batch * decision_steps = {episodes} * {decision_steps} steps"
    elif issubclass(algorithm, OnPolicyAlgorithm):
        n_steps = int(hyperparams.get("n_steps", defaults["n_steps"].default))
        chunk, why = n_steps * n_envs, f"{algorithm.__name__} trains whole rollouts of n_steps * n_envs = {n_steps} * {n_envs} steps"
    elif issubclass(algorithm, OffPolicyAlgorithm):
        train_freq = hyperparams.get("train_freq", defaults["train_freq"].default)
        frequency, unit = (train_freq, "step") if isinstance(train_freq, int) else tuple(train_freq)
        if unit != "step":
            return requested, None
        chunk, why = int(frequency) * n_envs, f"{algorithm.__name__} steps train_freq * n_envs = {frequency} * {n_envs} env steps at a time"
    elif algorithm.__name__ == "ARS":
        # Each update evaluates 2 * n_delta candidates on n_eval_episodes episodes, spread over the envs,
        # counting n_envs steps per vector step (sb3-contrib's synchronous ARS, the one train_agent.py runs).
        n_delta = int(hyperparams.get("n_delta", defaults["n_delta"].default))
        episodes = int(hyperparams.get("n_eval_episodes", defaults["n_eval_episodes"].default))
        chunk = 2 * n_delta * -(-episodes // n_envs) * decision_steps * n_envs
        why = (
            f"ARS evaluates 2 * n_delta = {2 * n_delta} candidates per update, each on n_eval_episodes = {episodes} "
            f"episodes over {n_envs} envs of {decision_steps} steps"
        )
    else:
        return requested, None
    trained = -(-requested // chunk) * chunk
    return trained, (why if trained != requested else None)


def check_algorithm_hyperparams(algo: str, hyperparams: dict[str, Any], env: gym.Env) -> None:
    """Refuse keys and values the algorithm would not accept, before anything is written or started.

    SB3 algorithms are constructed once on ``env`` without their networks, which checks the
    action space (DQN needs discrete actions) and the arguments' names.
    """
    algorithm = get_algorithm_class(algo)
    kwargs = sb3_constructor_kwargs(algorithm, hyperparams)
    vec_normalize_kwargs(hyperparams)
    try:
        # As many envs as the run has (cheap: nothing is reset): PPO checks its batch size against n_steps * n_envs.
        copies = [lambda: env] + [lambda: gym.make(env.spec) for _ in range(hyperparams["n_envs"] - 1)]  # type: ignore[arg-type]
        # _init_setup_model: every SB3 algorithm class takes it (BaseAlgorithm's signature does not show it).
        algorithm(env=DummyVecEnv(copies), _init_setup_model=False, **{**kwargs, "device": "cpu"})  # type: ignore[call-arg]
    except (AssertionError, TypeError, ValueError) as error:
        raise UsageError(f"cannot use {algorithm.__name__} on {env.spec.id if env.spec else 'this env'}: {error}") from error


def parse_env_kwargs(items: list[str]) -> dict[str, Any]:
    """``--env-kwargs`` values (see :mod:`agents.cli`); :class:`UsageError` names a bad item."""
    return cli.parse_env_kwargs(items, UsageError)


def probe_env(env_id: str, env_kwargs: dict[str, Any], seed: int) -> gym.Env:
    """Make and reset the env once in this process, so that bad ids and configs fail before training."""
    env_id = resolve_env_id(env_id)
    try:
        env = gym.make(env_id, **env_kwargs)
        if not isinstance(env.unwrapped, dus_env.DUSEnv):
            raise UsageError(f"{env_id} is not a DUS environment: choose one of {', '.join(dus_env.ENV_IDS)}")
        env.reset(seed=seed)
    except (dus_env.ConfigError, dus_env.FeatureFileError, TypeError) as error:
        raise UsageError(f"cannot make {env_id} with --env-kwargs {env_kwargs or '(none)'}: {error}") from error
    return env


# -- config.yml -----------------------------------------------------------------------------------------


def training_versions() -> dict[str, str]:
    """Python's version and those of :data:`TRAINING_PACKAGES`, recorded at every start and resume."""
    return {"python": platform.python_version(), **package_versions(TRAINING_PACKAGES)}


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """``<run_dir>/config.yml``, atomically, keys in the order given."""
    write_text(run_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def _relative_to(path: Path, folder: Path) -> Path:
    try:
        return path.resolve().relative_to(folder.resolve())
    except ValueError:
        return path.resolve()

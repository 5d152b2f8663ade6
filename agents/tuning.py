"""Hyperparameter sweeps on Ray Tune (``tune_agent.py``): a search space in YAML, a run folder per trial,
the best configuration as a zoo-style hyperparameter file.

**Search spaces.** ``agents/hyperparams/search/<algo>.yml`` (or ``tune_agent.py --search-space FILE``) maps
hyperparameters of the algorithm (keys of ``agents/hyperparams/<algo>.yml``) to one distribution each,
written ``key: {kind: arguments}``::

    learning_rate: {loguniform: [1.0e-5, 1.0e-3]}   # log-uniform between the bounds
    gamma: {uniform: [0.9, 1.0]}                      # uniform between the bounds
    clip_range: {quniform: [0.1, 0.4, 0.05]}           # uniform, rounded to a multiple of 0.05
    n_epochs: {randint: [3, 11]}                       # an integer, 3 <= n < 11 (Ray Tune's convention)
    batch_size: {lograndint: [32, 513]}                # an integer, log-uniform, 32 <= n < 513
    n_steps: {choice: [10, 20, 40]}                    # one of the values
    policy_kwargs: {choice: ["dict(net_arch=[32, 32])", "dict(net_arch=[64, 64])"]}
    n_envs: {fixed: 32}                                # the same value in every trial

A choice may hold any YAML values, dicts and lists included (``{choice: [{net_arch: [32]}, {net_arch:
[64, 64]}]}``). A sampled value replaces the whole top-level hyperparameter, as ``--hyperparams`` does:
search ``net_arch`` through whole ``policy_kwargs`` values. Hyperparameters the file does not name keep
the values of ``agents/hyperparams/<algo>.yml`` and ``--hyperparams``. ``n_timesteps`` is not searched:
every trial trains ``--timesteps`` steps, so that trials compare at equal budgets. Every key and every
bound or choice is checked against the algorithm before Ray starts (:func:`check_space`).

**Trials.** Each trial is a normal run folder of ``train_agent.py`` (``<out>/trials/trial_00000/``,
:func:`agents.runs.is_run_folder`): trained in its Ray worker by :func:`agents.training.train_model`
from options that differ from the sweep's only in the sampled hyperparameters and the folder, on one
CPU (single-threaded torch, the native vector env). All trials use the same training seed, so they
differ only in their hyperparameters.

**Objective.** After every evaluation during training (every ``--eval-freq`` steps, and at the end) the
trial reports the mean return of its deterministic evaluation episodes to Tune (:data:`METRIC`): the
validation reward the agent is trained on, never the test accuracy the env also reports (choosing on
test data would make every later test number optimistic). ASHA (``--scheduler asha``) stops trials
whose return trails the others' at the same step count: the trial just ends, and its folder keeps its
``config.yml``, ``run.json`` and the evaluations so far (the state of a run killed before its first
checkpoint, as trials checkpoint only at their end: ``train_agent.py --resume --run-dir`` trains it
from the start). The final evaluation is reported only once the run's final model is written, so a
trial that trained its budget always has one.

**On a cluster** (``--address``) trials run on any node and write their run folders there: ``--out``
must be on a filesystem every node mounts (as Ray Tune's ``storage_path`` must be), so that the driver
finds the best trial's ``config.yml``.

**Seeds.** Trials are evaluated on :data:`agents.seed_ranges.SWEEP_EVAL_SEEDS` by default, a range of
their own: a run trained from ``best.yml`` is then evaluated during training (``TRAIN_EVAL_SEEDS``) and
by ``evaluate.py`` (``EVALUATION_SEEDS``) on instances the choice of its hyperparameters never saw.

**Output** (``<out>``, by default ``runs/tune_<algo>_<env-name>_<YYYYmmdd-HHMMSS>``)::

    sweep.yml      the sweep's options and search space
    trials/        one run folder per trial
    ray_tune/      Ray Tune's own records (progress.csv, result.json per trial)
    trials.csv     one row per trial: status, steps, last and best mean evaluation return, its values, folder
    best.yml       the best trial's hyperparameters, a complete zoo-style entry for the env id (from its
                   config.yml): train_agent.py --hyperparams <out>/best.yml trains with them

The best trial is the one with the highest mean evaluation return at its last evaluation among the
trials that trained their whole budget (ASHA's survivors); only if none did, among all trials.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import decimal
import difflib
import io
import json
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from dus_env.extras import require
from dus_env.registration import resolve_env_id

from .cli import yaml_number
from .errors import UsageError
from .manifest import ManifestError, load_manifest
from .ray_cluster import connect
from .results import lists_for_tuples, package_versions, write_text
from .run_files import CONFIG_FILE
from .runs import RunOptions, canonical_algo, invalid_yaml, parse_hyperparams, requested_overrides, resolve_run, start_run
from .sb3_agent import HYPERPARAMS_DIR, get_algorithm_class, load_hyperparams, run_settings, sb3_constructor_kwargs, vec_normalize_kwargs
from .training import train_model

#: Where the shipped search spaces live: ``<algo>.yml``.
SEARCH_SPACE_DIR = HYPERPARAMS_DIR / "search"

#: What each trial reports to Tune after every evaluation: the mean return of the evaluation episodes.
METRIC = "eval_return"

#: Tune's time axis for ASHA: env steps trained when the evaluation ran.
TIME_ATTR = "timesteps"

#: The distributions a search space may use, with the arguments each takes.
DISTRIBUTIONS: dict[str, str] = {
    "uniform": "[low, high]",
    "quniform": "[low, high, q]",
    "loguniform": "[low, high] with 0 < low",
    "randint": "[low, high] integers, high excluded",
    "lograndint": "[low, high] integers, 1 <= low, high excluded",
    "choice": "[value, value, ...]",
    "fixed": "value",
}

#: ``--search``: Tune's random sampling, or Optuna's TPE sampler (``ray.tune.search.optuna.OptunaSearch``).
SEARCH_ALGORITHMS = ("random", "optuna")

#: ``--scheduler``: ASHA early stopping, or every trial to the end.
SCHEDULERS = ("asha", "none")

#: Folders and files of a sweep (see the module docstring).
TRIALS_DIR, TUNE_DIR, SWEEP_FILE, TRIALS_FILE, BEST_FILE = "trials", "ray_tune", "sweep.yml", "trials.csv", "best.yml"


# -- search spaces --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    """One hyperparameter's distribution: a kind of :data:`DISTRIBUTIONS` and its arguments (checked)."""

    kind: str
    args: tuple[Any, ...]

    @property
    def encoded(self) -> bool:
        """Whether Tune sees this choice's values as JSON strings: Optuna (and Tune's tables) take only
        scalar categories, and a choice of ``policy_kwargs`` dicts is common."""
        return self.kind == "choice" and not all(value is None or isinstance(value, (str, int, float, bool)) for value in self.args)

    def to_tune(self, tune: Any) -> Any:
        """The Tune domain (``tune.loguniform(...)``, ...) of this distribution; not called for ``fixed``."""
        if self.kind == "choice":
            return tune.choice([json.dumps(value) for value in self.args] if self.encoded else list(self.args))
        return getattr(tune, self.kind)(*self.args)

    def decode(self, value: Any) -> Any:
        """A sampled value as the hyperparameter takes it (integers as ``int``, encoded choices parsed)."""
        if self.encoded:
            return json.loads(value)
        if self.kind in ("randint", "lograndint"):
            return int(value)
        if self.kind == "quniform":
            # To the step's decimals: Tune's 0.35000000000000003 is the 0.35 a user wrote as 7 * 0.05.
            return round(float(value), -min(decimal.Decimal(repr(float(self.args[2]))).as_tuple().exponent, 0))  # type: ignore[operator]
        if self.kind in ("uniform", "loguniform"):
            return float(value)
        return value

    def corners(self) -> list[Any]:
        """The values checked before the sweep starts: both bounds, or every choice, or the fixed value."""
        if self.kind in ("randint", "lograndint"):
            return [self.args[0], self.args[1] - 1]
        if self.kind in ("uniform", "quniform", "loguniform"):
            return [float(self.args[0]), float(self.args[1])]
        return list(self.args)


def _space_error(source: str, key: str, problem: str) -> UsageError:
    return UsageError(f"search space {source}, key {key!r}: {problem}")


def parse_distribution(key: str, spec: Any, source: str) -> Distribution:
    """``{loguniform: [1e-5, 1e-3]}`` -> ``Distribution("loguniform", (1e-5, 1e-3))``, checked.

    :param key: the hyperparameter, for messages.
    :param source: the file, for messages.
    :raises UsageError: one line naming the file, the key, and the allowed kinds or arguments.
    """
    allowed = "; ".join(f"{kind}: {args}" for kind, args in DISTRIBUTIONS.items())
    if not isinstance(spec, dict) or len(spec) != 1:
        raise _space_error(source, key, f"expected one distribution written {{kind: arguments}}, got {spec!r}; kinds: {allowed}")
    ((kind, args),) = spec.items()
    if kind not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _space_error(source, key, f"unknown distribution {kind!r}{hint}; kinds: {allowed}")
    if kind == "fixed":
        return Distribution(kind, (yaml_number(args),))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise _space_error(source, key, f"choice takes a non-empty list of values, got {args!r}")
        return Distribution(kind, tuple(yaml_number(value) for value in args))
    expected = f"{kind} takes {DISTRIBUTIONS[kind]}, got {args!r}"
    values = [yaml_number(value) for value in args] if isinstance(args, list) else []
    integers = kind in ("randint", "lograndint")
    number = int if integers else (int, float)
    if len(values) != (3 if kind == "quniform" else 2) or not all(isinstance(v, number) and not isinstance(v, bool) for v in values):
        raise _space_error(source, key, expected)
    low, high = values[0], values[1]
    if (
        not low < high
        or (kind == "loguniform" and low <= 0)
        or (kind == "lograndint" and low < 1)
        or (kind == "quniform" and values[2] <= 0)
    ):
        raise _space_error(source, key, expected)
    return Distribution(kind, tuple(values))


def parse_search_space(data: Any, source: str) -> dict[str, Distribution]:
    """A search space file's content (a mapping of hyperparameters to distributions), checked key by key.

    :raises UsageError: not a mapping, ``n_timesteps`` in it, or a bad distribution (named by key).
    """
    if not isinstance(data, dict) or not data:
        raise UsageError(
            f"search space {source} must map hyperparameters to distributions, e.g. learning_rate: {{loguniform: [1.0e-5, 1.0e-3]}}"
        )
    space = {}
    for key, spec in data.items():
        if key == "n_timesteps":
            raise _space_error(source, key, "the step budget is not searched: every trial trains --timesteps steps")
        space[str(key)] = parse_distribution(str(key), spec, source)
    return space


def search_space_file(algo: str, given: str | None) -> Path:
    """``--search-space``, or the shipped ``agents/hyperparams/search/<algo>.yml``.

    :raises UsageError: the file does not exist (the message lists the shipped ones).
    """
    if given is not None:
        if not Path(given).is_file():
            raise UsageError(f"--search-space {given}: no such file")
        return Path(given)
    path = SEARCH_SPACE_DIR / f"{algo}.yml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in SEARCH_SPACE_DIR.glob("*.yml")))
        raise UsageError(f"no search space is shipped for --algo {algo} (shipped: {shipped}): write one and pass --search-space FILE")
    return path


def load_search_space(path: Path) -> dict[str, Distribution]:
    """The search space in ``path`` (YAML, see the module docstring)."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise invalid_yaml(f"search space {path}", error) from error
    return parse_search_space(data, str(path))


def check_space(algo: str, env_id: str, base_overrides: Mapping[str, Any], space: Mapping[str, Distribution], source: str) -> None:
    """Refuse, before Ray starts, a key the algorithm does not take or a bound or choice it cannot use.

    Each corner value (:meth:`Distribution.corners`) goes through what a trial's run does with it: the
    hyperparameter file's entry with the sweep's overrides, then the algorithm's arguments (names,
    ``policy_kwargs`` strings, schedules), ``normalize`` and ``n_envs``. Combinations (``batch_size``
    against ``n_steps * n_envs``) are the trial's to check: a trial that fails is reported as failed.
    """
    algorithm = get_algorithm_class(algo)
    for key, distribution in space.items():
        for value in distribution.corners():
            hyperparams = load_hyperparams(algo, env_id, {**base_overrides, key: value})
            try:
                sb3_constructor_kwargs(algorithm, hyperparams)
                vec_normalize_kwargs(hyperparams)
                run_settings(hyperparams)
            except UsageError as error:
                raise _space_error(source, key, f"{value!r} does not work: {error}") from None


# -- the sweep ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPlan:
    """How to search (``tune_agent.py``'s options beside the run's; see its ``--help`` for each)."""

    search_space: str | None = None
    num_samples: int = 8
    search: str = "random"
    scheduler: str = "asha"
    grace_period: int | None = None
    reduction_factor: float = 3.0
    max_concurrent: int | None = None
    address: str | None = None
    num_cpus: int | None = None
    out: str | None = None

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise UsageError(f"--num-samples={self.num_samples} is invalid: expected at least 1 trial")
        if self.search not in SEARCH_ALGORITHMS:
            raise UsageError(f"--search={self.search!r} is invalid: expected one of {', '.join(SEARCH_ALGORITHMS)}")
        if self.scheduler not in SCHEDULERS:
            raise UsageError(f"--scheduler={self.scheduler!r} is invalid: expected one of {', '.join(SCHEDULERS)}")
        if self.grace_period is not None and self.grace_period < 1:
            raise UsageError(f"--grace-period={self.grace_period} is invalid: expected a positive number of env steps")
        if self.reduction_factor <= 1:
            raise UsageError(
                f"--reduction-factor={self.reduction_factor} is invalid: expected more than 1 (ASHA keeps 1/factor of the trials per rung)"
            )
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise UsageError(
                f"--max-concurrent={self.max_concurrent} is invalid: expected at least 1 (or leave it out: as many as the CPUs allow)"
            )
        if self.num_cpus is not None and self.num_cpus < 1:
            raise UsageError(f"--num-cpus={self.num_cpus} is invalid: expected at least 1")


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: what every trial needs (sent to the Ray workers) and where it writes.

    :param base: the run options every trial starts from (a ``train_agent.Args``): the trial replaces
        only ``hyperparams`` (the sweep's, then the sampled values) and ``run_dir``. Its ``env_kwargs`` and
        ``hyperparams`` are the parsed values (:func:`trial_base`), so that no trial reads a file.
    :param space: the hyperparameters searched (``fixed`` ones included).
    :param out: the sweep folder, absolute (Ray workers run in their own working folders).
    :param budget: env steps asked of every trial (``--timesteps``, else the file's ``n_timesteps``): ASHA's ``max_t``.
    :param plan: how to search.
    """

    base: RunOptions
    algo: str
    env_id: str
    space: dict[str, Distribution]
    out: Path
    budget: int
    plan: SweepPlan

    def trial_options(self, config: Mapping[str, Any], run_dir: Path) -> RunOptions:
        """The run options of the trial that Tune sampled ``config`` for: the sweep's, with its values
        after the sweep's ``--hyperparams`` (so they win) and its own folder."""
        values = self.hyperparams_of(config)
        items = [*self.base.hyperparams, *(f"{key}={json.dumps(value)}" for key, value in values.items())]
        return dataclasses.replace(self.base, hyperparams=items, run_dir=str(run_dir), resume=False)  # type: ignore[type-var]

    def hyperparams_of(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The hyperparameter values of a trial: the sampled ones decoded, the fixed ones."""
        return {
            key: distribution.args[0] if distribution.kind == "fixed" else distribution.decode(config[key])
            for key, distribution in self.space.items()
        }

    def param_space(self, tune: Any) -> dict[str, Any]:
        return {key: distribution.to_tune(tune) for key, distribution in self.space.items() if distribution.kind != "fixed"}


def prepare_sweep(plan: SweepPlan, base: RunOptions) -> Sweep:
    """Check everything that can be checked without Ray (the run options as ``train_agent.py`` would,
    the search space against the algorithm, the sweep folder) and build the :class:`Sweep`.

    :raises UsageError: bad input, in one line naming the option or the search space key.
    """
    algo = canonical_algo(base.algo)
    env_id = resolve_env_id(base.env)
    base = dataclasses.replace(base, algo=algo, env=env_id)  # type: ignore[type-var]
    source = search_space_file(algo, plan.search_space)
    space = load_search_space(source)
    _, overrides = requested_overrides(base)
    check_space(algo, env_id, overrides, space, str(source))
    # The sweep's own options are checked as train_agent.py checks a run's; its notes and warnings are
    # about a run that never trains (each trial announces its own step rounding).
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolve_run(base)
    # ASHA's max_t: the steps asked for; trials with other n_steps or n_envs round them up by different amounts.
    _, budget = run_settings(load_hyperparams(algo, env_id, {**overrides, **({"n_timesteps": base.timesteps} if base.timesteps else {})}))
    if plan.scheduler == "asha" and plan.grace_period is not None and plan.grace_period >= budget:
        raise UsageError(f"--grace-period={plan.grace_period} is invalid: expected fewer env steps than a trial's {budget:,}")
    out = Path(plan.out or Path("runs") / f"tune_{algo}_{env_id.split('/')[-1]}_{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} already holds files: choose a new folder for the sweep")
    return Sweep(base=trial_base(base), algo=algo, env_id=env_id, space=space, out=out.resolve(), budget=budget, plan=plan)


#: Env config keys that name a file (``Features-v0``'s features file), at the top level or in ``task``.
ENV_PATH_KEYS = ("path",)


def trial_base(base: RunOptions) -> RunOptions:
    """The sweep's run options as a trial receives them: ``--hyperparams`` as the values it gives (a file
    item read here, in the driver) and ``--env-kwargs`` as one JSON object with file paths made absolute.

    Why: Tune runs each trial in a working folder of its own (and on a cluster, on another node), where
    a relative ``shared.yml`` or ``path=features.npz`` names nothing. The values are the same: a file
    item gives whole top-level values, as the ``key=value`` items written for them do.
    """
    env_kwargs, _ = requested_overrides(base)
    for config in (env_kwargs, env_kwargs.get("task")):
        if isinstance(config, dict):
            for key in ENV_PATH_KEYS:
                if isinstance(config.get(key), str):
                    config[key] = str(Path(config[key]).expanduser().absolute())
    hyperparams = parse_hyperparams(base.hyperparams, base.env)
    return dataclasses.replace(  # type: ignore[type-var]
        base,
        env_kwargs=[json.dumps(lists_for_tuples(env_kwargs))] if env_kwargs else [],
        hyperparams=[f"{key}={json.dumps(lists_for_tuples(value))}" for key, value in hyperparams.items()],
    )


def trial_folder_name(trial: Any) -> str:
    """``trial_00003``: Tune's trial name and folder, and the name of the trial's run folder."""
    return f"trial_{trial.trial_id.rsplit('_', 1)[-1]}"


def run_trial(config: dict[str, Any], sweep: Sweep) -> None:
    """One trial, in its Ray worker: a run of ``train_agent.py``'s machinery that reports every evaluation.

    Why the final evaluation is held back until :func:`agents.training.train_model` returns: Tune may
    stop a trial at any report (a scheduler's decision ends the reporting thread), and a report from
    the evaluation at the end of training would then stop the trial before its final model is saved.
    """
    from ray import tune

    torch.set_num_threads(1)
    run_dir = sweep.out / TRIALS_DIR / tune.get_context().get_trial_name()
    started = start_run(sweep.trial_options(config, run_dir))
    assert started is not None  # a new run folder is never complete
    run = started.run
    held: list[dict[str, Any]] = []

    def report(steps: int, mean_return: float) -> None:
        metrics = {METRIC: mean_return, TIME_ATTR: steps}
        if steps >= run.total_timesteps:
            held.append(metrics)
        else:
            tune.report(metrics)

    train_model(started, progress=False, on_evaluation=report)
    for metrics in held:
        tune.report(metrics)


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """One row of ``trials.csv``.

    :param status: ``completed`` (trained its budget: the run has its final model), ``stopped`` (by
        the scheduler), or ``failed`` (``error`` says why).
    """

    trial: str
    status: str
    steps: int | None
    last_return: float | None
    best_return: float | None
    values: dict[str, Any]
    run_dir: Path
    error: str = ""


def trial_record(result: Any, sweep: Sweep) -> TrialRecord:
    """A Tune ``Result`` as a :class:`TrialRecord`; whether the trial completed comes from its run's manifest."""
    name = Path(result.path).name
    run_dir = sweep.out / TRIALS_DIR / name
    history = result.metrics_dataframe
    reported = history is not None and METRIC in history and history[METRIC].notna().any()
    steps = int(history[TIME_ATTR].dropna().iloc[-1]) if reported else None
    last = float(history[METRIC].dropna().iloc[-1]) if reported else None
    best = float(history[METRIC].max()) if reported else None
    try:
        manifest = load_manifest(run_dir)
    except ManifestError:
        manifest = None
    error = ""
    if result.error is not None:
        status, error = "failed", _last_line(str(result.error))
    elif manifest is not None and manifest.final:
        status = "completed"
    else:
        status = "stopped"
    try:
        values = sweep.hyperparams_of(result.config)
    except KeyError:  # a trial that failed before Tune sampled it
        values = {}
    return TrialRecord(name, status, steps, last, best, values, run_dir, error)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def best_trial(records: list[TrialRecord]) -> TrialRecord | None:
    """The trial with the highest last mean evaluation return among those that trained their budget,
    else among all that reported one (see the module docstring); ``None`` if none reported."""
    completed = [r for r in records if r.status == "completed" and r.last_return is not None]
    pool = completed or [r for r in records if r.last_return is not None]
    return max(pool, key=lambda r: r.last_return if r.last_return is not None else -math.inf) if pool else None


def trials_csv(records: list[TrialRecord], space: Mapping[str, Distribution]) -> str:
    """``trials.csv``: one row per trial; values that are not numbers or strings as JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", "status", "steps", "last_eval_return", "best_eval_return", *space, "run_dir", "error"])
    for r in records:
        values = [r.values.get(key, "") for key in space]
        cells = [v if isinstance(v, (str, int, float)) else json.dumps(lists_for_tuples(v)) for v in values]
        writer.writerow([r.trial, r.status, r.steps or "", _number(r.last_return), _number(r.best_return), *cells, r.run_dir, r.error])
    return buffer.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(value)


def best_yml(sweep: Sweep, best: TrialRecord, trials: int) -> str:
    """``best.yml``: the best trial's hyperparameters as its ``config.yml`` has them (every one, so the
    entry is complete as the zoo needs it), under the env id, with a header saying where they come from."""
    path = best.run_dir / CONFIG_FILE
    if not path.is_file():
        raise UsageError(
            f"{path} is not visible here: on a cluster, --out must be on a filesystem every Ray node mounts (a trial writes on its node)"
        )
    config = yaml.safe_load(path.read_text())
    header = (
        f"# The best of {trials} trials of tune_agent.py ({sweep.algo} on {sweep.env_id}): {best.trial}, mean evaluation\n"
        f"# return {best.last_return:.4f} at {best.steps:,} steps on the seeds {config['eval']['seed']}.. ({config['eval']['episodes']} "
        "episodes; validation reward, not test accuracy).\n"
        f"# Searched: {', '.join(sweep.space)}. Run folder: {best.run_dir}\n"
        f"# Train with: {train_command(sweep)}\n"
    )
    return header + yaml.safe_dump({sweep.env_id: config["hyperparams"]}, sort_keys=False)


def train_command(sweep: Sweep) -> str:
    """The ``train_agent.py`` command that trains the best configuration on the sweep's env."""
    import shlex

    parts = ["python", "train_agent.py", "--algo", sweep.algo, "--env", sweep.env_id]
    if sweep.base.env_kwargs:
        parts += ["--env-kwargs", *sweep.base.env_kwargs]
    parts += ["--hyperparams", str(sweep.out / BEST_FILE)]
    return shlex.join(parts)


#: The run options ``sweep.yml`` records (the others are the same in every sweep, or named elsewhere in it).
RECORDED_OPTIONS = ("env_kwargs", "hyperparams", "timesteps", "seed", "eval_freq", "eval_episodes", "eval_seed")


@dataclass(frozen=True)
class SweepResult:
    records: list[TrialRecord]
    best: TrialRecord | None
    seconds: float


def run_sweep(sweep: Sweep) -> SweepResult:
    """Run the sweep on Ray (started here, or joined at ``--address``) and write ``sweep.yml``,
    ``trials.csv`` and ``best.yml`` (the latter only when a trial reported an evaluation)."""
    plan = sweep.plan
    tune = require("ray.tune", "ray", "tune_agent.py")
    connect(plan.address, "tune_agent.py", plan.num_cpus)
    sweep.out.mkdir(parents=True, exist_ok=True)
    write_text(sweep.out / SWEEP_FILE, yaml.safe_dump(sweep_record(sweep), sort_keys=False))
    search_alg: Any
    if plan.search == "optuna":
        require("optuna", "ray", "tune_agent.py --search optuna")
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=sweep.base.seed)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=sweep.base.seed)
    scheduler = None
    if plan.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr=TIME_ATTR,
            max_t=sweep.budget,
            grace_period=plan.grace_period or max(sweep.budget // 4, 1),
            reduction_factor=plan.reduction_factor,
            # A trial that reaches its budget ends by itself, after saving its final model.
            stop_last_trials=False,
        )
    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=sweep), {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space=sweep.param_space(tune),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=plan.num_samples,
            max_concurrent_trials=plan.max_concurrent,
            trial_name_creator=trial_folder_name,
            trial_dirname_creator=trial_folder_name,
        ),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(sweep.out), verbose=1),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    records = sorted((trial_record(result, sweep) for result in grid), key=lambda r: r.trial)
    write_text(sweep.out / TRIALS_FILE, trials_csv(records, sweep.space))
    best = best_trial(records)
    if best is not None:
        write_text(sweep.out / BEST_FILE, best_yml(sweep, best, len(records)))
    return SweepResult(records, best, time.perf_counter() - start)


def sweep_record(sweep: Sweep) -> dict[str, Any]:
    """What ``sweep.yml`` holds: the options, the search space as parsed, the versions."""
    return lists_for_tuples(
        {
            "algo": sweep.algo,
            "env_id": sweep.env_id,
            "budget": sweep.budget,
            "metric": f"{METRIC}: mean return of the evaluation episodes (validation reward)",
            "run_options": {key: getattr(sweep.base, key) for key in RECORDED_OPTIONS},
            "plan": dataclasses.asdict(sweep.plan),
            "search_space": {key: {d.kind: list(d.args) if d.kind != "fixed" else d.args[0]} for key, d in sweep.space.items()},
            "versions": package_versions(("dus_env", "ray", "optuna", "torch", "stable-baselines3")),
        }
    )

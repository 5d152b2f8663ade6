"""Benchmark sampling agents on DUS environments, over seeds never used in training, with paired statistics.

Every agent plays the same episodes: on each env, seed s gives every agent the same task instance,
data order and model initialisation, so agents are compared seed by seed (paired tests). Seeds
start at --seed-offset (10000): training scripts seed from small integers (0, 1, 2, ...), so a
trained policy is never scored on an episode it was trained on (every seed range of the project
is in agents/seed_ranges.py). dus-evaluate, installed with the package, is the same command.

Agent specs (NAME=SPEC sets the display name):
  uniform | random | heuristic | heuristic:TAU | fixed:0.3,0.7 (one share per modality)
  ppo:PATH | a2c:PATH | sac:PATH | ... (any Stable-Baselines3 / sb3-contrib algorithm)
  reinforce:PATH | exported:PATH
  best-constant | best-constant:ENV (the constant tuned on seeds 60000-60019 of this env or of ENV)
  pretrained (the policy shipped with dus_env)
  bss | bss:adaptive (uniform quantities, BSS's row order); SPEC+bss, e.g. heuristic+bss (DUS+BSS)
  {env} in PATH becomes the env id without namespace: ppo:runs/ppo_{env}_0 -> runs/ppo_Synthetic-v0_0

Examples:
  python evaluate.py                                   # uniform, random, heuristic on Synthetic-v0
  python evaluate.py --suite smoke                     # a named suite from agents/suites.yml (seconds)
  python evaluate.py --agents uniform heuristic ppo:runs/ppo_{env}_0 \\
      --envs Synthetic-v0 dus_env/MFeat-v0 --seeds 10 --workers 2   # ids with or without dus_env/
  python evaluate.py --agents uniform heuristic:0.05 --env-kwargs decision_steps=10 learner.hidden_sizes=[32]
  python evaluate.py --suite main --out results/main --resume   # finish an interrupted evaluation
  python evaluate.py --suite baselines --backend ray --address auto   # on the Ray cluster of 'ray start --head'

Writes to --out (default results/<timestamp>): episodes.csv (one row per agent x env x seed),
traces.csv (one row per decision step), summary.csv and summary.json (the tables' numbers, seeds,
env configs, package versions) and, per env, <env>_trajectories.png and <env>_final_accuracy.png.
Files are replaced atomically; episodes.csv and traces.csv are rewritten as one set after every
finished batch of episodes (symlinks into .episodes/, switched in one rename: the two always hold
the same episodes), so an interrupted or killed run keeps every finished batch, and
evaluate.py --resume --out DIR (same options) runs only the episodes DIR does not hold yet.

Each agent's episodes on an env (--batch-size seeds at a time) are stepped together in the native
vector env (dus_env.DUSVectorEnv), one agent instance per episode: the same episodes as one env per
seed, in one batched computation. --workers spreads these batches over processes; --backend ray
runs each batch as a Ray task instead (pip install 'dus_env[ray]'): on a Ray started in this process
with this machine's cores, or with --address on a cluster, as many batches at once as it has CPUs.
Both backends write the same episodes (wall times aside); a batch whose Ray worker dies runs again.
Ray workers get model paths (ppo:PATH, exported:PATH, ...) made absolute on this machine: on a cluster
(--address) they must exist on every node, at the same place (a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

import tyro
import yaml
from tqdm import tqdm

import agents
from agents.benchmark import (
    ALPHA,
    CONFIDENCE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_SEED_OFFSET,
    AgentSummary,
    BenchmarkPlan,
    EpisodeJob,
    batches,
    check_plan,
    env_tables,
    init_worker,
    limit_threads,
    make_plan,
    parse_env_kwargs,
    print_tables,
    run_batch,
    summarize_env,
    summary_row,
)
from agents.cli import merge_nested
from agents.errors import UsageError
from agents.folder_lock import FolderInUseError, lock_folder
from agents.plots import plot_final_accuracy, plot_trajectories
from agents.ray_cluster import connect
from agents.result_files import FinishedEpisode, plain_kwargs, read_finished, remove_stale_generations, write_result_set
from agents.results import environment_versions, episode_row, trace_rows, write_csv, write_json, write_text
from agents.rollout import EpisodeResult
from agents.trust import ENV_VAR
from dus_env.extras import MissingExtraError
from dus_env.validation import ConfigError

#: The named suites shipped with the package (``agents/suites.yml``, installed with it).
SUITES_FILE = Path(agents.__file__).resolve().parent / "suites.yml"


#: ``--env-kwargs``: one JSON object or ``key=value`` items (:func:`agents.cli.parse_env_kwargs`), parsed by tyro into a dict.
EnvKwargs = Annotated[
    dict[str, Any],
    tyro.constructors.PrimitiveConstructorSpec(
        nargs="*",
        metavar="KEY=VALUE",
        instance_from_str=parse_env_kwargs,
        is_instance=lambda value: isinstance(value, dict),
        str_from_instance=lambda value: [json.dumps(value)] if value else [],
    ),
]


@dataclass
class Args:
    """Every knob of evaluate.py, with its default; tyro makes one ``--option`` of each, its help from the docstring below it."""

    agents: Annotated[list[str], tyro.conf.arg(metavar="SPEC")] = field(default_factory=lambda: ["uniform", "random", "heuristic"])
    """agent specs (see above)"""
    envs: Annotated[list[str], tyro.conf.arg(metavar="ID")] = field(default_factory=lambda: ["dus_env/Synthetic-v0"])
    """env ids (the dus_env/ prefix may be left out)"""
    env_kwargs: EnvKwargs = field(default_factory=dict)
    """overrides for gymnasium.make, as one JSON object or key=value pairs (values read as YAML; a.b=v sets a nested
    field); merged into a suite's env_kwargs key by key"""
    seeds: Annotated[int, tyro.conf.arg(metavar="N")] = 10
    """episodes per agent and env (the same seeds for every agent)"""
    seed_offset: Annotated[int, tyro.conf.arg(metavar="S")] = DEFAULT_SEED_OFFSET
    """first seed; keep it above every training seed (agents/seed_ranges.py)"""
    workers: Annotated[int, tyro.conf.arg(metavar="W")] = 1
    """batches run in parallel processes (each builds its own envs and agents); local backend only: with
    --backend ray it is ignored, Ray runs as many batches at once as the cluster has CPUs"""
    backend: Literal["local", "ray"] = "local"
    """where the batches run: local (this process, or --workers processes) or ray (one Ray task per batch;
    needs the ray extra)"""
    address: Annotated[str, tyro.conf.arg(metavar="ADDR")] = ""
    """--backend ray only: the Ray cluster to join, auto (the one 'ray start --head' started on this machine)
    or ray://HEAD:10001; empty: start Ray in this process with this machine's cores"""
    batch_size: Annotated[int, tyro.conf.arg(metavar="B")] = DEFAULT_BATCH_SIZE
    """at most this many seeds of one agent on one env stepped together in one vector env"""
    out: Annotated[str, tyro.conf.arg(metavar="DIR")] = ""
    """output directory (empty: results/<timestamp>)"""
    plots: bool = True
    """write the PNG figures (--no-plots skips them)"""
    progress: bool = True
    """show the progress bar (--no-progress hides it)"""
    resume: bool = False
    """finish the interrupted evaluation in --out: its finished episodes are kept, the rest run"""
    trusted_only: bool = False
    """refuse every pickle load (SB3 .zip models, vecnormalize.pkl): evaluate runs through their pickle-free
    exports (exported:RUN/exported) instead"""
    baseline: Annotated[str, tyro.conf.arg(metavar="NAME")] = ""
    """agent (display name or spec) the others are compared with (empty: uniform if among the agents, else the first agent)"""
    suite: Annotated[str, tyro.conf.arg(metavar="NAME")] = ""
    """named suite from --suites-file; options given here override the suite's"""
    suites_file: Annotated[str, tyro.conf.arg(metavar="PATH")] = str(SUITES_FILE)
    """YAML file of named suites"""


#: Options a suite may set (everything that defines *what* is benchmarked, plus how it is spread out
#: locally). Not --backend/--address: they depend on the machine a suite runs on, not on the suite.
SUITE_KEYS = ("description", "agents", "envs", "env_kwargs", "seeds", "seed_offset", "workers", "batch_size", "baseline")


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """Command line -> :class:`Args`: explicit options win over the suite's values, which win over defaults.

    ``--suite``/``--suites-file`` are read first; the suite's values become the defaults tyro parses
    the command line against. ``--env-kwargs`` is merged into the suite's ``env_kwargs`` key by
    key, nested fields included (:func:`agents.cli.merge_nested`); every other option replaces the
    suite's value. A tyro parsing error exits with code 2.

    :raises UsageError: an unknown or malformed suite, or a suite value of the wrong type.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    suite_name = _option_value(argv, "--suite")
    suite: dict[str, Any] = {}
    if suite_name:
        suite = {
            key: value
            for key, value in load_suite(Path(_option_value(argv, "--suites-file") or SUITES_FILE), suite_name).items()
            if key != "description"
        }
        _check_suite_types(suite)
    args = tyro.cli(Args, args=argv, default=Args(**suite), prog=Path(sys.argv[0]).name, description=__doc__)
    args.env_kwargs = merge_nested(suite.get("env_kwargs", {}), args.env_kwargs)
    return args


def _option_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (``--suite main`` or ``--suite=main``, and ``--suites_file`` as
    tyro accepts it for ``--suites-file``; the last one wins, as in the parser)."""
    spellings = {flag, flag.replace("-", "_").replace("__", "--", 1)}
    value = None
    for i, token in enumerate(argv):
        name, has_value, text = token.partition("=")
        if name in spellings:
            if has_value:
                value = text
            elif i + 1 < len(argv):
                value = argv[i + 1]
    return value


def _check_suite_types(values: dict[str, Any]) -> None:
    """Suite values come from YAML, not from the parser: check they have the types of their options."""
    hints = get_type_hints(Args)
    for name, value in values.items():
        kind = hints[name]
        if kind == list[str]:
            ok, expected = isinstance(value, list) and all(isinstance(item, str) for item in value), "a list of strings"
        elif kind == dict[str, Any]:
            ok, expected = isinstance(value, dict), "a mapping"
        else:
            ok, expected = isinstance(value, kind) and not isinstance(value, bool), kind.__name__
        if not ok:
            raise UsageError(f"option {name}={value!r} is invalid: expected {expected}")


def load_suite(path: Path, name: str) -> dict[str, Any]:
    """The options of suite ``name`` in the YAML file ``path`` (a mapping of suite name -> options)."""
    if not path.is_file():
        raise UsageError(f"suites file {path} does not exist")
    try:
        suites = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise UsageError(f"suites file {path} is not UTF-8 text (byte {exc.start}): is it the right file?") from exc
    except yaml.YAMLError as exc:
        # PyYAML's message spans several lines (it quotes the source): keep its position and its reason.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UsageError(f"suites file {path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from exc
    if not isinstance(suites, dict):
        raise UsageError(f"suites file {path} must map suite names to their options, not be a {type(suites).__name__}")
    if name not in suites:
        raise UsageError(f"unknown suite {name!r} in {path}: available are {', '.join(map(str, suites))}")
    suite = suites[name]
    if not isinstance(suite, dict):
        raise UsageError(f"suite {name!r} in {path} must be a mapping of options ({', '.join(SUITE_KEYS)}), not {suite!r}")
    unknown = sorted(str(key) for key in set(suite) - set(SUITE_KEYS))
    if unknown:
        raise UsageError(f"suite {name!r} in {path} has unknown keys {unknown}: allowed are {list(SUITE_KEYS)}")
    return suite


def run_episodes(
    jobs: list[EpisodeJob], workers: int, batch_size: int, backend: str = "local"
) -> Iterator[list[tuple[EpisodeJob, EpisodeResult]]]:
    """Yield each batch's ``(job, result)`` pairs as it finishes: a batch is one agent's episodes on one env (at most
    ``batch_size``), stepped together in the native vector env; in this process for one worker, else in
    a process pool, or with ``backend="ray"`` as Ray tasks (:mod:`agents.ray_benchmark`; Ray must be
    started or joined first, :func:`agents.ray_cluster.connect`, and ``workers`` is not used). One torch
    thread per process in every case (:func:`agents.benchmark.limit_threads`).

    Worker processes start with forkserver (spawn where unavailable): a forked copy of a parent that
    already ran torch can deadlock, and each worker builds its own envs and agents anyway.
    """
    work = batches(jobs, batch_size)
    if backend == "ray":
        from agents.ray_benchmark import run_batches  # only here: Ray is an optional extra

        for batch, results in run_batches(work):
            yield list(zip(batch, results))
        return
    if workers <= 1:
        limit_threads()
        for batch in work:
            yield list(zip(batch, run_batch(batch)))
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(min(workers, len(work)), mp_context=multiprocessing.get_context(method), initializer=init_worker)
    try:
        futures: dict[Future[list[EpisodeResult]], list[EpisodeJob]] = {pool.submit(run_batch, batch): batch for batch in work}
        for future in as_completed(futures):
            yield list(zip(futures[future], future.result()))
    finally:
        # On an error or Ctrl-C: drop the queued batches; running ones finish and are discarded.
        pool.shutdown(wait=False, cancel_futures=True)


class SavePace:
    """When to rewrite the episode files during an evaluation: after a batch once the finished episodes
    have grown by :data:`GROWTH` since the last write, or :data:`MAX_WAIT_S` seconds have passed.

    Why: every write rewrites both files whole (one consistent set, :mod:`agents.result_files`), so
    writing after every batch costs time quadratic in the batches (37% of a 512-episode evaluation
    in 33 batches); growing by a fraction keeps the total linear, while a kill loses at most that
    fraction of the finished episodes (or a minute of them), which ``--resume`` runs again.
    """

    GROWTH = 0.25
    MAX_WAIT_S = 60.0

    def __init__(self, written: int) -> None:
        self.written = written
        self.when = time.perf_counter()

    def due(self, finished: int) -> bool:
        now = time.perf_counter()
        if finished - self.written >= max(1.0, self.GROWTH * self.written) or now - self.when >= self.MAX_WAIT_S:
            self.written, self.when = finished, now
            return True
        return False


def write_episodes(out: Path, plan: BenchmarkPlan, results: list[EpisodeResult]) -> None:
    """(Re)write episodes.csv and traces.csv in plan order as one set (:mod:`agents.result_files`):
    both always hold the same finished episodes, whatever moment a kill comes at."""
    if not results:
        return
    env_order = {env_id: i for i, env_id in enumerate(plan.env_ids)}
    agent_order = {agent.label: i for i, agent in enumerate(plan.agents)}
    ordered = sorted(results, key=lambda r: (env_order[r.env_id], agent_order[r.agent], r.seed))
    specs = {agent.label: agent for agent in plan.agents}
    write_result_set(
        out,
        [episode_row(r, plan.spec_of(r.agent, r.env_id)) for r in ordered],
        [row for r in ordered for row in trace_rows(r)],
        [FinishedEpisode(plan.spec_of(r.agent, r.env_id), plain_kwargs(plan.env_kwargs_of(specs[r.agent])), r) for r in ordered],
    )


def finished_episodes(out: Path, plan: BenchmarkPlan) -> list[EpisodeResult]:
    """``--resume``: the episodes ``out`` already holds. Each must be one the plan would run, with
    the same agent spec and env kwargs; otherwise resuming would mix two evaluations (or drop the
    episodes outside the plan), and it is refused.

    :raises ValueError: naming an episode that does not fit.
    """
    jobs = {(job.env_id, job.label, job.seed): job for job in plan.jobs()}
    finished, foreign = [], []
    for record in read_finished(out):
        result = record.result
        job = jobs.get((result.env_id, result.agent, result.seed))
        if job is None or job.spec != record.spec or plain_kwargs(job.env_kwargs) != record.env_kwargs:
            foreign.append(f"{result.agent} ({record.spec}) on {result.env_id} seed {result.seed} with env kwargs {record.env_kwargs}")
        else:
            finished.append(result)
    if foreign:
        raise ValueError(
            f"{out} holds {len(foreign)} episodes this evaluation would not run, e.g. {foreign[0]}: resume with "
            "the options of the interrupted evaluation, or use another --out"
        )
    return finished


def write_plots(out: Path, plan: BenchmarkPlan, env_id: str, results: list[EpisodeResult]) -> list[Path]:
    """The two figures of one env; returns their paths."""
    runs = {
        agent.label: sorted((r for r in results if r.env_id == env_id and r.agent == agent.label), key=lambda r: r.seed)
        for agent in plan.agents
    }
    slug = env_id.replace("/", "_")
    seeds = f"{len(plan.seeds)} seed{'s' if len(plan.seeds) > 1 else ''}"
    paths = [out / f"{slug}_trajectories.png", out / f"{slug}_final_accuracy.png"]
    plot_trajectories({agent: [r.trace for r in rs] for agent, rs in runs.items()}, paths[0], f"{env_id}: mean over {seeds}")
    plot_final_accuracy(
        {agent: [100.0 * r.test_accuracy for r in rs] for agent, rs in runs.items()},
        paths[1],
        f"{env_id}: final fused test accuracy, {seeds}",
        baseline=plan.baseline,
    )
    return paths


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    try:
        args = parse_args(argv)
        if args.trusted_only:
            os.environ[ENV_VAR] = "1"  # worker processes inherit it
        if args.workers < 1:
            raise UsageError(f"--workers {args.workers} is invalid: need at least 1")
        if args.batch_size < 1:
            raise UsageError(f"--batch-size {args.batch_size} is invalid: need at least 1 episode per batch")
        if args.address and args.backend != "ray":
            raise UsageError(f"--address {args.address} needs --backend ray (the local backend runs on this machine)")
        plan = make_plan(args.agents, args.envs, args.env_kwargs, args.seeds, args.seed_offset, args.baseline or None)
        env_configs = check_plan(plan)
    except (UsageError, ConfigError, MissingExtraError) as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    if args.resume and not args.out:
        print("evaluate.py: error: --resume needs the --out folder of the interrupted evaluation", file=sys.stderr)
        return 2
    out = Path(args.out or f"results/{datetime.now():%Y%m%d-%H%M%S}")
    new_folder = not out.exists()
    try:
        lock_folder(out, "evaluate.py")
        results: list[EpisodeResult] = finished_episodes(out, plan) if args.resume else []
    except (ValueError, FolderInUseError) as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    if not args.resume and (out / "episodes.csv").exists():
        print(
            f"evaluate.py: error: {out} already holds results: pass --resume to finish that evaluation, or another --out", file=sys.stderr
        )
        return 2
    if args.backend == "ray":
        # Last of the checks: starting Ray takes seconds (joining a cluster may fail), the checks above are instant.
        try:
            connect(args.address or None, "evaluate.py --backend ray")
        except (UsageError, MissingExtraError) as exc:
            if new_folder:  # bad input writes nothing: the folder holds only its lock
                shutil.rmtree(out, ignore_errors=True)
            print(f"evaluate.py: error: {exc}", file=sys.stderr)
            return 2
    remove_stale_generations(out)
    done = {(r.env_id, r.agent, r.seed) for r in results}
    jobs = [job for job in plan.jobs() if (job.env_id, job.label, job.seed) not in done]
    if args.resume:
        print(f"resuming {out}: {len(results)} of {len(results) + len(jobs)} episodes already done")
    progress = tqdm(total=len(jobs), unit="episode", desc="evaluate", dynamic_ncols=True, disable=not args.progress)
    saved = SavePace(len(results))
    try:
        for batch in run_episodes(jobs, args.workers, args.batch_size, args.backend):
            for job, result in batch:
                results.append(result)
                progress.set_postfix_str(f"{job.label} on {job.env_id} seed {job.seed}: {100 * result.test_accuracy:.1f}%")
                progress.update()
            if saved.due(len(results)):
                write_episodes(out, plan, results)  # one consistent set of whole batches
    except KeyboardInterrupt:
        progress.close()
        write_episodes(out, plan, results)
        kept = f"kept in {out / 'episodes.csv'}" if results else "finished, nothing written"
        print(f"evaluate.py: interrupted: {len(results)}/{len(plan.jobs())} episodes {kept}", file=sys.stderr)
        return 130
    except Exception as exc:  # a batch failed: keep what finished, say where the details are
        progress.close()
        write_episodes(out, plan, results)
        write_text(out / "error.log", "".join(traceback.format_exception(exc)))
        print(
            f"evaluate.py: error: a batch of episodes failed ({type(exc).__name__}: {exc}); {len(results)} finished episodes "
            f"in {out / 'episodes.csv'}, traceback in {out / 'error.log'}",
            file=sys.stderr,
        )
        return 1
    progress.close()
    write_episodes(out, plan, results)

    summaries = {env_id: summarize_env(results, plan, env_id) for env_id in plan.env_ids}
    print_tables([table for env_id in plan.env_ids for table in env_tables(env_id, summaries[env_id], plan)])
    write_csv(out / "summary.csv", [summary_row(env_id, s) for env_id in plan.env_ids for s in summaries[env_id]])
    write_json(out / "summary.json", summary_document(args, plan, env_configs, summaries, argv))
    plots = [] if not args.plots else [p for env_id in plan.env_ids for p in write_plots(out, plan, env_id, results)]
    print(
        f"evaluated {len(plan.agents)} agents x {len(plan.env_ids)} env{'s' if len(plan.env_ids) > 1 else ''} x "
        f"{len(plan.seeds)} seeds = {len(results)} episodes in {time.perf_counter() - started:.1f} s; "
        f"results in {out}/ (episodes.csv, traces.csv, summary.csv, summary.json, {len(plots)} plots)"
    )
    return 0


def summary_document(
    args: Args, plan: BenchmarkPlan, env_configs: dict[str, Any], summaries: dict[str, list[AgentSummary]], argv: list[str] | None
) -> dict[str, Any]:
    """Everything needed to read and to reproduce the tables: numbers, seeds, configs, versions."""

    def agent_summary(summary: AgentSummary) -> dict[str, Any]:
        values = dataclasses.asdict(summary)
        if summary.versus_baseline is not None:
            values["versus_baseline"]["significant"] = summary.versus_baseline.significant(ALPHA)
        return values

    return {
        "created": datetime.now().isoformat(timespec="seconds"),
        "command": ["evaluate.py", *(sys.argv[1:] if argv is None else argv)],
        "suite": args.suite or None,
        # Where the episodes ran; it does not change them (the backends give the same episodes).
        "backend": args.backend,
        "workers": args.workers if args.backend == "local" else None,
        "address": args.address or None,
        "units": {
            "accuracy": "percent",
            "modality_gap": "percentage points",
            "diff": "percentage points",
            "episode_return": "reward units",
            "wall_time": "seconds per episode",
        },
        "confidence": CONFIDENCE,
        "alpha": ALPHA,
        "env_ids": list(plan.env_ids),
        "env_kwargs": plan.env_kwargs,
        "env_configs": env_configs,
        "seeds": list(plan.seeds),
        "seed_offset": plan.seeds[0],
        "agents": [{"label": agent.label, "spec": agent.text} for agent in plan.agents],
        "baseline": plan.baseline,
        "versions": environment_versions(),
        "results": {env_id: [agent_summary(s) for s in summaries[env_id]] for env_id in plan.env_ids},
    }


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark behind ``evaluate.py``: plan (agents x envs x seeds), batches of episodes, tables.

Why a module and not the script: the pieces (the checked plan, the worker entry point, the summary
numbers, the table text) are what tests and other drivers reuse; ``evaluate.py`` only wires them to
a command line and to files. The worker entry point must also live in an importable module for
``forkserver``/``spawn`` worker processes to find it.

Episodes run in batches: one agent's seeds on one env, stepped together in the native vector env
(:class:`dus_env.DUSVectorEnv`, one agent instance per episode), in this process or in workers.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch

from dus_env.env import config_of
from dus_env.registration import resolve_env_id
from dus_env.validation import ConfigError

from . import cli
from .base import Agent
from .errors import UsageError
from .rollout import EpisodeResult, run_episode_batch
from .seed_ranges import EVALUATION_SEEDS
from .specs import AgentSpec, make_agent, parse_spec, resolve_spec, with_unique_labels
from .stats import PairedComparison, Summary, paired_comparison, summarize

#: Default first evaluation seed: the start of :data:`agents.seed_ranges.EVALUATION_SEEDS`, above every
#: training seed and below every other range (see :mod:`agents.seed_ranges`).
DEFAULT_SEED_OFFSET = EVALUATION_SEEDS.start
CONFIDENCE = 0.95
ALPHA = 0.05


@dataclass(frozen=True)
class EpisodeJob:
    """One episode to run, small and picklable so that it can be sent to a worker process.

    :param env_id: registered env id.
    :param env_kwargs: keyword arguments for ``gymnasium.make``.
    :param spec: agent spec with ``{env}`` already filled in (no ``NAME=`` prefix).
    :param label: the agent's display name.
    :param seed: the episode's ``reset`` seed.
    """

    env_id: str
    env_kwargs: Mapping[str, Any]
    spec: str
    label: str
    seed: int


@dataclass(frozen=True)
class BenchmarkPlan:
    """What to run: every agent on every env, each over the same seeds (paired).

    :param env_ids: registered env ids, in table order.
    :param env_kwargs: overrides passed to ``gymnasium.make`` for every env.
    :param agents: parsed specs with unique display names, in table order (paths may hold ``{env}``).
    :param seeds: evaluation seeds, the same for every agent and env.
    :param baseline: display name of the agent the others are compared with.
    """

    env_ids: tuple[str, ...]
    env_kwargs: Mapping[str, Any]
    agents: tuple[AgentSpec, ...]
    seeds: tuple[int, ...]
    baseline: str

    def env_kwargs_of(self, agent: AgentSpec) -> dict[str, Any]:
        """The ``gymnasium.make`` overrides of ``agent``'s episodes: the plan's and the agent's own (a BSS order)."""
        return {**self.env_kwargs, **agent.env_overrides}

    def jobs(self) -> list[EpisodeJob]:
        """All episodes, seed-major; :func:`batches` groups them into the batches that run."""
        return [
            EpisodeJob(env_id, self.env_kwargs_of(agent), resolve_spec(agent, env_id).text, agent.label, seed)
            for env_id in self.env_ids
            for seed in self.seeds
            for agent in self.agents
        ]

    def spec_of(self, label: str, env_id: str) -> str:
        """The spec (``{env}`` filled in) that rebuilds agent ``label`` on ``env_id``."""
        agent = next(agent for agent in self.agents if agent.label == label)
        return resolve_spec(agent, env_id).text


@dataclass(frozen=True)
class AgentSummary:
    """The numbers of one table row: one agent on one env over all seeds.

    Accuracies in percent, the modality gap in percentage points, the return in reward units,
    the wall time in seconds per episode. ``versus_baseline`` is the paired difference of final fused
    test accuracy (agent - baseline, points); ``None`` for the baseline itself.
    """

    agent: str
    spec: str
    fused_accuracy: Summary
    modality_accuracies: tuple[Summary, ...]
    modality_gap: Summary
    episode_return: Summary
    wall_time: Summary
    diverged: int
    versus_baseline: PairedComparison | None = None


@dataclass
class Table:
    """A titled table of preformatted cells, printed with rich when available and as plain text otherwise."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""


# -- planning ------------------------------------------------------------------------------------


def make_plan(
    agents: Sequence[str],
    envs: Sequence[str],
    env_kwargs: Mapping[str, Any],
    n_seeds: int,
    seed_offset: int = DEFAULT_SEED_OFFSET,
    baseline: str | None = None,
) -> BenchmarkPlan:
    """Parse and check everything that can be checked without building an env.

    :param agents: agent specs (see :mod:`agents.specs`).
    :param envs: env ids; ``Synthetic-v0`` is accepted for ``dus_env/Synthetic-v0``.
    :param env_kwargs: ``gymnasium.make`` overrides for every env.
    :param n_seeds: episodes per agent and env, at least 1.
    :param seed_offset: first seed; the seeds are ``seed_offset .. seed_offset + n_seeds - 1``.
    :param baseline: display name or spec of the reference agent; default ``uniform`` when it is
        among the agents, else the first agent.
    :raises UsageError: with a one-line message naming the bad value.
    :raises ConfigError: an unknown env id (:func:`dus_env.registration.resolve_env_id`, naming close matches).
    """
    if n_seeds < 1:
        raise UsageError(f"--seeds {n_seeds} is invalid: need at least 1 seed per agent")
    if seed_offset < 0:
        raise UsageError(f"--seed-offset {seed_offset} is invalid: seeds must be non-negative")
    if not agents:
        raise UsageError("no agents given: pass --agents, e.g. --agents uniform heuristic")
    if not envs:
        raise UsageError("no envs given: pass --envs, e.g. --envs dus_env/Synthetic-v0")
    specs = with_unique_labels([parse_spec(text) for text in agents])
    env_ids = tuple(dict.fromkeys(resolve_env_id(name) for name in envs))
    ordered = [spec.text for spec in specs if spec.row_order is not None]
    if ordered and ("row_order" in env_kwargs or "row_order" in env_kwargs.get("learner", {})):
        raise UsageError(f"--env-kwargs sets row_order and the agents {', '.join(ordered)} set their own: give the row order one way")
    return BenchmarkPlan(
        env_ids, dict(env_kwargs), tuple(specs), tuple(range(seed_offset, seed_offset + n_seeds)), _pick_baseline(specs, baseline)
    )


def check_plan(plan: BenchmarkPlan) -> dict[str, dict[str, Any]]:
    """Build every env (and reset it once) and every agent for it, in this process, before any episode runs.

    Why: a missing model file, a share count that does not fit an env or an invalid env kwarg
    should stop the run in a second with a clear message, not after an hour of other episodes.

    :returns: env id -> its full config (``EnvConfig.to_dict()``), for ``summary.json``.
    :raises UsageError: naming the env or agent spec at fault.
    """
    configs = {}
    for env_id in plan.env_ids:
        envs: dict[str, gym.Env] = {}

        # The plan's own env first: its config is the env's config in summary.json (agents with a
        # row order of their own run in a copy with that order, which their spec text names).
        def key(kwargs: Mapping[str, Any]) -> str:
            return json.dumps(kwargs, sort_keys=True, default=str)

        for kwargs in [dict(plan.env_kwargs)] + [plan.env_kwargs_of(agent) for agent in plan.agents]:
            if key(kwargs) not in envs:
                envs[key(kwargs)] = env = build_env(env_id, kwargs)
                try:
                    env.reset(seed=plan.seeds[0])
                except (ConfigError, ValueError, OSError) as exc:
                    raise UsageError(f"env {env_id} cannot start an episode: {exc}") from None
        configs[env_id] = config_of(next(iter(envs.values()))).to_dict()
        for agent in plan.agents:
            try:
                make_agent(agent, envs[key(plan.env_kwargs_of(agent))])
            except UsageError as exc:  # the spec is named; add the env it does not fit
                raise UsageError(f"{exc} (env {env_id})") from None
        for env in envs.values():
            env.close()
    return configs


def build_env(env_id: str, env_kwargs: Mapping[str, Any]) -> gym.Env:
    """``gymnasium.make(env_id, **env_kwargs)`` with bad kwargs reported as :class:`UsageError`."""
    try:
        return gym.make(env_id, **env_kwargs)
    except (ConfigError, TypeError, ValueError, gym.error.Error) as exc:
        raise UsageError(f"env {env_id} with env kwargs {json.dumps(dict(env_kwargs))}: {exc}") from None


def parse_env_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """``--env-kwargs`` values (see :mod:`agents.cli`); :class:`UsageError` names a bad item."""
    return cli.parse_env_kwargs(items, UsageError)


def _pick_baseline(specs: Sequence[AgentSpec], baseline: str | None) -> str:
    if baseline is None:
        return next((spec.label for spec in specs if spec.kind == "uniform" and spec.row_order is None), specs[0].label)
    for spec in specs:
        if baseline in (spec.label, spec.text):
            return spec.label
    raise UsageError(f"--baseline {baseline!r} is not one of the agents ({', '.join(spec.label for spec in specs)}): add it to --agents")


# -- running -------------------------------------------------------------------------------------

#: Default of ``evaluate.py --batch-size``: at most this many episodes stepped together in one vector env.
DEFAULT_BATCH_SIZE = 64

# Per-process caches, reused across batches: the agent of a (env, kwargs, spec) and the vector env of
# a (env, kwargs, batch size). Reuse cannot change results: ``reset(seed)`` redraws everything an
# episode depends on, and every episode gets its own copy of the agent, reset with the episode seed.
_AGENTS: dict[tuple[str, str, str], Agent] = {}
_VECTOR_ENVS: dict[tuple[str, str, int], gym.vector.VectorEnv] = {}


def limit_threads() -> None:
    """One torch thread per process: parallel worker processes would contend for cores, and the same
    thread count in-process and in workers gives the same numbers whatever ``--workers`` is."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def init_worker() -> None:
    """Worker process setup: one thread, and Ctrl-C left to the parent (it stops handing out batches)."""
    limit_threads()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def batches(jobs: Sequence[EpisodeJob], size: int = DEFAULT_BATCH_SIZE) -> list[list[EpisodeJob]]:
    """The jobs as batches of one agent on one env, at most ``size`` seeds each.

    Chunk-major within an env (the first ``size`` seeds of every agent, then the next ones): an
    interrupted run has whole seed chunks done by every agent, i.e. paired results.

    :raises ValueError: ``size`` is below 1.
    """
    if size < 1:
        raise ValueError(f"batch size {size} is invalid: need at least 1 episode per batch")
    groups: dict[tuple[str, str, str], list[EpisodeJob]] = {}
    for job in jobs:
        groups.setdefault((job.env_id, job.spec, job.label), []).append(job)
    env_order = {env_id: i for i, env_id in enumerate(dict.fromkeys(job.env_id for job in jobs))}
    chunks = [
        (env_order[env_id], start, group[start : start + size])
        for (env_id, _, _), group in groups.items()
        for start in range(0, len(group), size)
    ]
    return [chunk for _, _, chunk in sorted(chunks, key=lambda item: item[:2])]


def run_batch(jobs: Sequence[EpisodeJob]) -> list[EpisodeResult]:
    """One agent's episodes on one env (``jobs`` share env, kwargs and spec), stepped together in the
    native vector env (:func:`agents.rollout.run_episode_batch`); results in the order of ``jobs``."""
    first = jobs[0]
    kwargs = json.dumps(dict(first.env_kwargs), sort_keys=True)
    agent_key, venv_key = (first.env_id, kwargs, first.spec), (first.env_id, kwargs, len(jobs))
    seeds = [job.seed for job in jobs]
    if agent_key not in _AGENTS:
        # Agents are built for (and check their spaces against) a single env, as a user would use them.
        _AGENTS[agent_key] = make_agent(first.spec, gym.make(first.env_id, **first.env_kwargs), seed=0)
    if venv_key not in _VECTOR_ENVS:
        venv = gym.make_vec(first.env_id, num_envs=len(jobs), vectorization_mode="vector_entry_point", **first.env_kwargs)
        # An untimed reset: a process's first batch would otherwise be charged about a second of
        # one-time start-up (torch's lazy initialisation) in its wall time.
        venv.reset(seed=seeds)  # type: ignore[arg-type]  # vector envs take one seed per env; gymnasium's stub says int
        _VECTOR_ENVS[venv_key] = venv
    agent = _AGENTS[agent_key]
    agent.name = first.label
    return run_episode_batch(_VECTOR_ENVS[venv_key], [agent.episode_copy() for _ in jobs], seeds, first.env_id)


# -- summarising ---------------------------------------------------------------------------------


def summarize_env(results: Sequence[EpisodeResult], plan: BenchmarkPlan, env_id: str) -> list[AgentSummary]:
    """Table numbers for one env, one entry per agent in plan order; all agents must share their seeds."""
    by_agent = {
        agent.label: sorted((r for r in results if r.env_id == env_id and r.agent == agent.label), key=lambda r: r.seed)
        for agent in plan.agents
    }
    baseline_runs = by_agent[plan.baseline]
    baseline_seeds = [r.seed for r in baseline_runs]
    baseline_accuracy = [100.0 * r.test_accuracy for r in baseline_runs]
    summaries = []
    for agent in plan.agents:
        runs = by_agent[agent.label]
        if not runs:
            raise ValueError(f"no episodes of agent {agent.label!r} on {env_id}")
        if [r.seed for r in runs] != baseline_seeds:
            raise ValueError(f"agent {agent.label!r} and baseline {plan.baseline!r} ran different seeds on {env_id}")
        accuracy = [100.0 * r.test_accuracy for r in runs]
        modality = [[100.0 * a for a in r.final["test_modality_accuracies"]] for r in runs]
        summaries.append(
            AgentSummary(
                agent=agent.label,
                spec=resolve_spec(agent, env_id).text,
                fused_accuracy=summarize(accuracy, CONFIDENCE),
                modality_accuracies=tuple(summarize(column, CONFIDENCE) for column in zip(*modality)),
                modality_gap=summarize([100.0 * r.final["test_modality_gap"] for r in runs], CONFIDENCE),
                episode_return=summarize([r.episode_return for r in runs], CONFIDENCE),
                wall_time=summarize([r.wall_time for r in runs], CONFIDENCE),
                diverged=sum(bool(r.final["diverged"]) for r in runs),
                versus_baseline=None if agent.label == plan.baseline else paired_comparison(accuracy, baseline_accuracy, CONFIDENCE),
            )
        )
    return summaries


def summary_row(env_id: str, summary: AgentSummary) -> dict[str, Any]:
    """One ``summary.csv`` row (units in the column names: ``_pct`` percent, ``_pts`` points, ``_s`` seconds)."""
    row: dict[str, Any] = {"env": env_id, "agent": summary.agent, "spec": summary.spec, "n_seeds": summary.fused_accuracy.n}
    row.update(_summary_cells("fused_accuracy", "pct", summary.fused_accuracy))
    for j, modality in enumerate(summary.modality_accuracies):
        row.update(_summary_cells(f"modality_{j}_accuracy", "pct", modality))
    row.update(_summary_cells("modality_gap", "pts", summary.modality_gap))
    row.update(_summary_cells("episode_return", "", summary.episode_return))
    row["wall_time_mean_s"] = summary.wall_time.mean
    row["diverged_episodes"] = summary.diverged
    versus = summary.versus_baseline
    row.update(
        {
            "diff_vs_baseline_mean_pts": versus.mean_diff if versus else math.nan,
            "diff_vs_baseline_ci_low_pts": versus.ci_low if versus else math.nan,
            "diff_vs_baseline_ci_high_pts": versus.ci_high if versus else math.nan,
            "paired_t_pvalue": versus.t_pvalue if versus else math.nan,
            "wilcoxon_pvalue": versus.wilcoxon_pvalue if versus and versus.wilcoxon_pvalue is not None else math.nan,
            "significant": versus.significant(ALPHA) if versus else False,
        }
    )
    return row


def _summary_cells(name: str, unit: str, summary: Summary) -> dict[str, float]:
    suffix = f"_{unit}" if unit else ""
    return {f"{name}_{part}{suffix}": getattr(summary, part) for part in ("mean", "std", "ci_low", "ci_high")}


# -- tables --------------------------------------------------------------------------------------


def env_tables(env_id: str, summaries: Sequence[AgentSummary], plan: BenchmarkPlan) -> list[Table]:
    """The two tables of one env: final test metrics per agent, and paired differences to the baseline."""
    seeds = f"{len(plan.seeds)} seed{'s' if len(plan.seeds) > 1 else ''} ({plan.seeds[0]}..{plan.seeds[-1]})"
    n_modalities = max(len(s.modality_accuracies) for s in summaries)
    metrics = Table(
        f"{env_id}: final test metrics over {seeds}, mean ± std",
        ["agent", "fused acc %", "95% CI", *[f"mod {j} acc %" for j in range(n_modalities)], "gap pts", "return", "s/episode"],
    )
    for s in summaries:
        metrics.rows.append(
            [
                s.agent + (f" ({s.diverged} diverged)" if s.diverged else ""),
                _mean_std(s.fused_accuracy, 2),
                _interval(s.fused_accuracy.ci_low, s.fused_accuracy.ci_high, 2),
                *[_mean_std(m, 1) for m in s.modality_accuracies],
                _mean_std(s.modality_gap, 1),
                _mean_std(s.episode_return, 3),
                f"{s.wall_time.mean:.2f}",
            ]
        )
    paired = Table(
        f"{env_id}: paired difference of fused test accuracy vs {plan.baseline} (points, same seeds)",
        ["agent", "Δ mean", "95% CI", "p (paired t)", "p (Wilcoxon)", ""],
        note=f"* p < {ALPHA} (paired t-test; — with fewer than 3 seeds or the same difference on every seed); "
        "Wilcoxon signed-rank needs n >= 6 seeds",
    )
    for s in summaries:
        versus = s.versus_baseline
        if versus is None:
            continue
        paired.rows.append(
            [
                s.agent,
                f"{versus.mean_diff:+.2f}",
                _interval(versus.ci_low, versus.ci_high, 2, signed=True),
                format_pvalue(versus.t_pvalue),
                format_pvalue(versus.wilcoxon_pvalue),
                "*" if versus.significant(ALPHA) else "",
            ]
        )
    return [metrics, paired] if paired.rows else [metrics]


def print_tables(tables: Sequence[Table], file: Any = None) -> None:
    """Print with rich if it is installed (wide console when not a terminal), as plain text otherwise."""
    file = file if file is not None else sys.stdout
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        for table in tables:
            print(plain_table(table), file=file)
        return
    console = Console(file=file)
    if not console.is_terminal:
        console = Console(file=file, width=200)
    for table in tables:
        # The title as its own line: as a rich table title it would wrap to the width of a narrow table.
        console.print(table.title, style="bold", highlight=False)
        rich_table = RichTable(caption=table.note or None)
        for i, header in enumerate(table.headers):
            rich_table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
        for row in table.rows:
            rich_table.add_row(*row)
        console.print(rich_table)


def plain_table(table: Table) -> str:
    """The table as aligned plain text (first column left-aligned, the others right-aligned)."""
    widths = [max(len(row[i]) for row in [table.headers, *table.rows]) for i in range(len(table.headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    parts = [table.title, line(table.headers), line(["-" * w for w in widths]), *(line(row) for row in table.rows)]
    return "\n".join(parts + ([table.note] if table.note else [])) + "\n"


def _mean_std(summary: Summary, digits: int) -> str:
    if math.isnan(summary.std):
        return f"{summary.mean:.{digits}f}"
    return f"{summary.mean:.{digits}f} ± {summary.std:.{digits}f}"


def _interval(low: float, high: float, digits: int, signed: bool = False) -> str:
    if math.isnan(low):
        return "—"
    sign = "+" if signed else ""
    return f"[{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def format_pvalue(p: float | None) -> str:
    """A p-value as the tables show it (here and in ``tools/summary_to_markdown.py``): ``—`` when absent or NaN."""
    if p is None or math.isnan(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"

"""Benchmark figures: what each agent allocated during an episode, and where it ended.

Figures are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas, never through ``pyplot``:
no display is needed, no global backend is switched, and figures are freed as soon as they are saved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .results import atomic_output

#: Line style per modality (colour is per agent); modalities beyond four reuse them.
MODALITY_STYLES: tuple[Literal["-", "--", ":", "-."], ...] = ("-", "--", ":", "-.")
DPI = 120

Trace = Sequence[Mapping[str, Any]]


def plot_trajectories(traces: Mapping[str, Sequence[Trace]], path: str | Path, title: str) -> None:
    """Per-modality quantities ``n_j`` and cumulative scores ``ŝ^j`` per decision step, mean over seeds.

    One colour per agent, one line style per modality. Quantities start at step 1 (the first
    decision); scores start at step 0 (after ``reset``, all zero). Episodes that ended early
    (divergence) count only at the steps they reached.

    :param traces: agent display name -> one trace per seed (:attr:`agents.rollout.EpisodeResult.trace`).
    :param path: PNG file to write (atomically).
    :param title: figure title, e.g. the env id and the seed count.
    """
    figure = Figure(figsize=(12, 4.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    ax_quantity, ax_score = figure.subplots(1, 2)
    colors = _colors(len(traces))
    n_modalities = 0
    for color, seeds in zip(colors, traces.values()):
        quantities = _mean_over_seeds(seeds, "quantities")
        scores = _mean_over_seeds(seeds, "cumulative_scores")
        n_modalities = max(n_modalities, quantities.shape[1])
        steps = np.arange(quantities.shape[0])
        for j in range(quantities.shape[1]):
            style = MODALITY_STYLES[j % len(MODALITY_STYLES)]
            ax_quantity.plot(steps[1:], quantities[1:, j], color=color, linestyle=style, marker=".")
            ax_score.plot(steps, scores[:, j], color=color, linestyle=style)
    ax_quantity.set(xlabel="decision step", ylabel="samples per iteration $n_j$", title="per-modality quantity")
    ax_score.set(xlabel="decision step", ylabel="cumulative score $\\hat{s}^j$", title="cumulative modality score")
    for axis in (ax_quantity, ax_score):
        axis.grid(alpha=0.3)
    agent_handles = [Line2D([], [], color=color, label=agent) for color, agent in zip(colors, traces)]
    modality_handles = [
        Line2D([], [], color="black", linestyle=MODALITY_STYLES[j % len(MODALITY_STYLES)], label=f"modality {j}")
        for j in range(n_modalities)
    ]
    # One legend below both panels: lines would hide under a legend drawn inside an axis.
    figure.legend(
        handles=agent_handles + modality_handles,
        loc="outside lower center",
        ncols=min(len(agent_handles) + len(modality_handles), 6),
        fontsize="small",
    )
    figure.suptitle(title)
    _save(figure, path)


def plot_final_accuracy(values: Mapping[str, Sequence[float]], path: str | Path, title: str, baseline: str | None = None) -> None:
    """Final fused test accuracy per agent: a box per agent (gray median), one dot per seed, a diamond at the mean.

    :param values: agent display name -> final fused test accuracy per seed, in percent.
    :param path: PNG file to write (atomically).
    :param title: figure title.
    :param baseline: display name of the baseline agent; its mean is drawn as a dashed line.
    """
    figure = Figure(figsize=(max(5.0, 1.3 * len(values) + 2.0), 4.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    names = list(values)
    data = [np.asarray(values[name], dtype=float) for name in names]
    positions = np.arange(1, len(names) + 1)
    axis.boxplot(data, positions=positions, widths=0.5, showfliers=False, medianprops={"color": "gray"})
    axis.set_xticks(positions, names)
    # Fixed jitter: the same results always give the same picture.
    jitter = np.random.default_rng(0)
    for position, color, points in zip(positions, _colors(len(names)), data):
        offsets = jitter.uniform(-0.12, 0.12, points.size)
        axis.scatter(position + offsets, points, color=color, s=18, alpha=0.8, zorder=3)
        axis.scatter([position], [points.mean()], color="black", marker="D", s=30, zorder=4)
    if baseline is not None and baseline in values:
        axis.axhline(float(np.mean(values[baseline])), color="gray", linestyle="--", linewidth=1, label=f"{baseline} mean")
        axis.legend(fontsize="small")
    axis.set(ylabel="final fused test accuracy (%)", title=title)
    axis.grid(axis="y", alpha=0.3)
    axis.tick_params(axis="x", labelrotation=20)
    _save(figure, path)


def _mean_over_seeds(seeds: Sequence[Trace], key: str) -> np.ndarray:
    """``[steps, M]`` mean of ``key`` over seeds; shorter (diverged) episodes are padded with NaN and skipped."""
    length = max(len(trace) for trace in seeds)
    width = len(seeds[0][0][key])
    stacked = np.full((len(seeds), length, width), np.nan)
    for i, trace in enumerate(seeds):
        stacked[i, : len(trace)] = [entry[key] for entry in trace]
    return np.nanmean(stacked, axis=0)


def _colors(n: int) -> list[Any]:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save(figure: Figure, path: str | Path) -> None:
    with atomic_output(path, binary=True) as handle:
        figure.savefig(handle, format="png")

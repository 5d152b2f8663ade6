"""Learning curves from the TensorBoard logs of training runs, as one PNG.

Reads the event files under each run's ``tb/`` folder (written by ``train_agent.py``) and plots
the chosen scalars against environment steps, one panel per scalar, one line per run::

    python tools/plot_learning_curves.py runs/ppo_Synthetic-v0_0 runs/a2c_Synthetic-v0_0 \\
        --out docs/img/curves_synthetic.png
    python tools/plot_learning_curves.py runs/* --scalars dus/episode_test_accuracy rollout/ep_rew_mean

Every point is marked, so a run with a single logged value (a run shorter than ``--eval-freq``)
still shows; a run that logged none of a panel's scalars is named on stderr, and the summary counts
the lines drawn, not the folders given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.results import atomic_output

#: The panels of the figures in the docs: in-training evaluation accuracy, training-episode test
#: accuracy, and the share of the samples modality 0 got.
DEFAULT_SCALARS = ("eval/test_fused_accuracy", "dus/episode_test_accuracy", "dus/episode_share_m0")


def read_scalars(run_dir: Path, tags: tuple[str, ...]) -> dict[str, tuple[list[int], list[float]]]:
    """``{tag: (steps, values)}`` merged over every event file of the run (resumed runs have several)."""
    series: dict[str, dict[int, float]] = {tag: {} for tag in tags}
    event_files = sorted(run_dir.rglob("events.out.tfevents.*"))
    if not event_files:
        raise SystemExit(f"no TensorBoard event files under {run_dir}: is it a train_agent.py run folder?")
    for file in event_files:
        accumulator = EventAccumulator(str(file), size_guidance={"scalars": 0})
        accumulator.Reload()
        available = set(accumulator.Tags().get("scalars", []))
        for tag in tags:
            if tag in available:
                series[tag].update({event.step: event.value for event in accumulator.Scalars(tag)})
    return {tag: (sorted(points), [points[s] for s in sorted(points)]) for tag, points in series.items() if points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders written by train_agent.py")
    parser.add_argument(
        "--scalars",
        nargs="+",
        default=list(DEFAULT_SCALARS),
        metavar="TAG",
        help=f"TensorBoard tags to plot, one panel each (default: {' '.join(DEFAULT_SCALARS)})",
    )
    parser.add_argument("--out", type=Path, default=Path("learning_curves.png"))
    args = parser.parse_args()
    tags = tuple(args.scalars)
    figure, axes = plt.subplots(1, len(tags), figsize=(5 * len(tags), 3.6), squeeze=False)
    lines = 0
    for run, label in zip(args.runs, run_labels(args.runs)):
        data = read_scalars(run, tags)
        missing = [tag for tag in tags if tag not in data]
        if missing:
            print(f"note: {run} logged no {', '.join(missing)}: no line for it there", file=sys.stderr)
        for axis, tag in zip(axes[0], tags):
            if tag in data:
                axis.plot(*data[tag], marker=".", label=label)
                lines += 1
    for axis, tag in zip(axes[0], tags):
        axis.set_title(tag)
        axis.set_xlabel("environment steps")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_output(args.out, binary=True) as handle:
        figure.savefig(handle, format="png", dpi=110)
    print(f"wrote {args.out} ({len(args.runs)} runs, {lines} lines over {len(tags)} panels: {', '.join(tags)})")


def run_labels(runs: list[Path]) -> list[str]:
    """Each run's folder name, or its whole path where two runs share a name (``a/ppo_0``, ``b/ppo_0``)."""
    names = [run.name for run in runs]
    return [str(run) if names.count(run.name) > 1 else run.name for run in runs]


if __name__ == "__main__":
    main()

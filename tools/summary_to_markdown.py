"""Render an ``evaluate.py`` ``summary.csv`` as Markdown tables (one per env), for docs and notes.

Why a script: the tables in ``docs/results.md`` are copied from result files, never typed, so a
re-run regenerates them exactly::

    python tools/summary_to_markdown.py results/main/summary.csv
    python tools/summary_to_markdown.py results/main/summary.csv --against heuristic
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from agents.benchmark import format_pvalue


def env_table(rows: pd.DataFrame, against: str | None) -> str:
    modalities = sorted(int(c.split("_")[1]) for c in rows.columns if c.startswith("modality_") and c.endswith("_accuracy_mean_pct"))
    modalities = [j for j in modalities if rows[f"modality_{j}_accuracy_mean_pct"].notna().any()]
    header = [
        "agent",
        "fused test acc %",
        "95% CI",
        *[f"modality {j} %" for j in modalities],
        "gap pts",
        "Δ vs baseline (pts)",
        "p (paired t)",
        "p (Wilcoxon)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    reference = rows.set_index("agent")["fused_accuracy_mean_pct"].get(against) if against else None
    for _, row in rows.iterrows():
        delta = (
            "—"
            if pd.isna(row["diff_vs_baseline_mean_pts"])
            else (
                f"{row['diff_vs_baseline_mean_pts']:+.2f} "
                f"[{row['diff_vs_baseline_ci_low_pts']:+.2f}, {row['diff_vs_baseline_ci_high_pts']:+.2f}]"
            )
        )
        cells = [
            f"`{row['agent']}`",
            f"{row['fused_accuracy_mean_pct']:.2f} ± {row['fused_accuracy_std_pct']:.2f}"
            + (
                f" ({row['fused_accuracy_mean_pct'] - reference:+.2f} vs {against})"
                if reference is not None and row["agent"] != against
                else ""
            ),
            f"[{row['fused_accuracy_ci_low_pct']:.2f}, {row['fused_accuracy_ci_high_pct']:.2f}]",
            *[f"{row[f'modality_{j}_accuracy_mean_pct']:.1f} ± {row[f'modality_{j}_accuracy_std_pct']:.1f}" for j in modalities],
            f"{row['modality_gap_mean_pts']:.1f}",
            delta,
            format_pvalue(row["paired_t_pvalue"]),
            format_pvalue(row["wilcoxon_pvalue"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summary", type=Path, help="summary.csv written by evaluate.py")
    parser.add_argument("--against", help="also show each agent's mean difference to this agent (e.g. heuristic)")
    args = parser.parse_args()
    if not args.summary.is_file():
        raise SystemExit(f"error: {args.summary} does not exist")
    table = pd.read_csv(args.summary)
    for env, rows in table.groupby("env", sort=False):
        print(f"**{env}** ({int(rows['n_seeds'].iloc[0])} held-out seeds)\n")
        print(env_table(rows, args.against) + "\n")


if __name__ == "__main__":
    main()

"""The documentation tools: summary tables to Markdown, TensorBoard scalars to PNG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    preexec = None if umask is None else (lambda: os.umask(umask))
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=preexec)


def test_summary_to_markdown_renders_each_env(tmp_path: Path) -> None:
    row = {
        "env": "dus_env/Synthetic-v0",
        "n_seeds": 10,
        "fused_accuracy_mean_pct": 76.5,
        "fused_accuracy_std_pct": 1.5,
        "fused_accuracy_ci_low_pct": 75.4,
        "fused_accuracy_ci_high_pct": 77.6,
        "modality_0_accuracy_mean_pct": 62.0,
        "modality_0_accuracy_std_pct": 2.0,
        "modality_1_accuracy_mean_pct": 54.0,
        "modality_1_accuracy_std_pct": 2.5,
        "modality_gap_mean_pts": 8.0,
        "diff_vs_baseline_mean_pts": 2.0,
        "diff_vs_baseline_ci_low_pts": 1.4,
        "diff_vs_baseline_ci_high_pts": 2.6,
        "paired_t_pvalue": 0.0004,
        "wilcoxon_pvalue": 0.002,
    }
    uniform = {
        **row,
        "agent": "uniform",
        "fused_accuracy_mean_pct": 74.5,
        "diff_vs_baseline_mean_pts": float("nan"),
        "paired_t_pvalue": float("nan"),
        "wilcoxon_pvalue": float("nan"),
    }
    path = tmp_path / "summary.csv"
    pd.DataFrame([uniform, {**row, "agent": "heuristic"}]).to_csv(path, index=False)
    result = run_tool("tools/summary_to_markdown.py", str(path), "--against", "uniform")
    assert result.returncode == 0, result.stderr
    assert "**dus_env/Synthetic-v0** (10 held-out seeds)" in result.stdout
    row = (
        "| `heuristic` | 76.50 ± 1.50 (+2.00 vs uniform) | [75.40, 77.60] | 62.0 ± 2.0 | 54.0 ± 2.5 | 8.0 "
        "| +2.00 [+1.40, +2.60] | <0.001 | 0.002 |"
    )
    assert row in result.stdout
    assert run_tool("tools/summary_to_markdown.py", str(tmp_path / "missing.csv")).returncode != 0


def test_learning_curves_png_from_tensorboard_logs(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "ppo_run"
    writer = SummaryWriter(str(run / "tb" / "PPO_1"))
    for step in range(0, 500, 100):
        writer.add_scalar("dus/episode_test_accuracy", 0.7 + step / 10_000, step)
    writer.close()
    out = tmp_path / "curves.png"
    result = run_tool("tools/plot_learning_curves.py", str(run), "--scalars", "dus/episode_test_accuracy", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    failed = run_tool("tools/plot_learning_curves.py", str(empty), "--out", str(tmp_path / "x.png"))
    assert failed.returncode != 0 and "no TensorBoard event files" in failed.stderr


def test_learning_curves_default_to_the_figures_in_the_docs(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "a2c_run"
    writer = SummaryWriter(str(run / "tb" / "A2C_1"))
    for tag in ("eval/test_fused_accuracy", "dus/episode_test_accuracy", "dus/episode_share_m0", "rollout/ep_rew_mean"):
        for step in range(0, 300, 100):
            writer.add_scalar(tag, 0.5 + step / 10_000, step)
    writer.close()
    for umask, mode in ((0o022, 0o644), (0o002, 0o664)):
        out = tmp_path / f"figures_{umask:o}" / "curves.png"
        result = run_tool("tools/plot_learning_curves.py", str(run), "--out", str(out), umask=umask)
        assert result.returncode == 0, result.stderr
        assert "panels: eval/test_fused_accuracy, dus/episode_test_accuracy, dus/episode_share_m0" in result.stdout
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # Written like every result file: atomically (nothing left beside it) and readable as the umask allows.
        assert os.stat(out).st_mode & 0o777 == mode and [p.name for p in out.parent.iterdir()] == ["curves.png"]

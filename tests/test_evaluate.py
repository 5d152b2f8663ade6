"""evaluate.py and its modules: statistics, atomic result files, the plan, tables, plots, and the CLI end to end."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from agents.benchmark import (
    Table,
    batches,
    check_plan,
    format_pvalue,
    make_plan,
    parse_env_kwargs,
    plain_table,
    print_tables,
    run_batch,
    summarize_env,
    summary_row,
)
from agents.errors import UsageError
from agents.plots import plot_final_accuracy, plot_trajectories
from agents.results import atomic_output, episode_row, write_csv, write_json, write_text
from agents.rollout import EpisodeResult
from agents.stats import MIN_WILCOXON_PAIRS, paired_comparison, summarize
from dus_env import TINY_OVERRIDES
from dus_env.validation import ConfigError

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_evaluate() -> ModuleType:
    """``evaluate.py`` is a script at the repo root, not a package module: import it by path."""
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "evaluate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the script's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# -- statistics ----------------------------------------------------------------------------------


def test_summary_mean_std_and_t_interval() -> None:
    summary = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert summary.n == 5 and summary.mean == 3.0
    assert summary.std == pytest.approx(math.sqrt(2.5))  # sample std, ddof=1
    half_width = 2.776445 * math.sqrt(2.5) / math.sqrt(5)  # t_{0.975, df=4} = 2.776445 (table value)
    assert summary.ci_low == pytest.approx(3.0 - half_width, abs=1e-5)
    assert summary.ci_high == pytest.approx(3.0 + half_width, abs=1e-5)


def test_summary_of_one_value_has_no_spread() -> None:
    summary = summarize([0.7])
    assert summary.mean == 0.7 and summary.n == 1
    assert math.isnan(summary.std) and math.isnan(summary.ci_low) and math.isnan(summary.ci_high)


def test_paired_t_test_against_a_hand_computed_case() -> None:
    # Differences 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), t = 2.5 / (sd / 2) = sqrt(15), df = 3.
    # Student t with 3 df has a closed-form CDF: F(t) = 1/2 + (x / (1 + x^2) + atan(x)) / pi, x = t / sqrt(3),
    # so the two-sided p = 1 - 2 (sqrt(5) / 6 + atan(sqrt(5))) / pi = 0.030466...
    baseline = [10.0, 20.0, 30.0, 40.0]
    agent = [11.0, 22.0, 33.0, 44.0]
    result = paired_comparison(agent, baseline)
    expected_p = 1.0 - 2.0 * (math.sqrt(5) / 6 + math.atan(math.sqrt(5))) / math.pi
    assert result.n == 4
    assert result.mean_diff == pytest.approx(2.5)
    assert result.t_pvalue == pytest.approx(expected_p, rel=1e-9)
    half_width = 3.182446 * math.sqrt(5 / 3) / 2  # t_{0.975, df=3} = 3.182446 (table value)
    assert result.ci_low == pytest.approx(2.5 - half_width, abs=1e-5)
    assert result.ci_high == pytest.approx(2.5 + half_width, abs=1e-5)
    assert result.wilcoxon_pvalue is None  # n < 6
    assert result.significant(0.05) and not result.significant(0.01)


def test_paired_difference_is_agent_minus_baseline() -> None:
    assert paired_comparison([1.0, 2.0, 3.0], [2.0, 4.0, 6.5]).mean_diff == pytest.approx(-2.1666666, rel=1e-6)


def test_wilcoxon_exact_p_for_six_positive_differences() -> None:
    # All 6 differences positive and distinct: only 1 of the 2^6 sign patterns is as extreme on each side.
    result = paired_comparison([2.0, 4.0, 6.0, 8.0, 10.0, 12.5], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert MIN_WILCOXON_PAIRS == 6
    assert result.wilcoxon_pvalue == pytest.approx(2 / 2**6)


@pytest.mark.parametrize("n", [2, 3, 6])
def test_identical_results_get_no_test(n: int) -> None:
    """No difference on any seed is zero variance: neither test is defined, so "n/a" and no star, whatever n."""
    values = [0.5, 0.6, 0.7, 0.8, 0.9, 0.55][:n]
    result = paired_comparison(values, values)
    assert result.mean_diff == 0.0 and math.isnan(result.t_pvalue) and result.wilcoxon_pvalue is None
    assert not result.significant() and format_pvalue(result.t_pvalue) == "—"


def test_statistics_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="one baseline value per value"):
        paired_comparison([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        summarize([])
    with pytest.raises(ValueError, match="NaN"):
        summarize([1.0, float("nan")])


# -- result files --------------------------------------------------------------------------------


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "summary.json"
    write_json(target, {"a": 1, "nan": float("nan"), "array": np.arange(3), "scalar": np.float32(0.5), "flag": np.bool_(True)})
    assert json.loads(target.read_text()) == {"a": 1, "nan": None, "array": [0, 1, 2], "scalar": 0.5, "flag": True}
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "episodes.csv"
    write_text(target, "old complete content\n")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as handle:
        handle.write("half of the new")
        raise KeyboardInterrupt
    assert target.read_text() == "old complete content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episodes.csv"]


def test_csv_has_the_union_of_columns(tmp_path: Path) -> None:
    target = tmp_path / "rows.csv"
    write_csv(target, [{"env": "a", "m_0": 0.25, "ok": True}, {"env": "b", "m_1": float("nan"), "m_0": 1.0}])
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["env", "m_0", "ok", "m_1"]
    assert rows[0] == {"env": "a", "m_0": "0.25", "ok": "true", "m_1": ""}
    assert rows[1] == {"env": "b", "m_0": "1.0", "ok": "", "m_1": ""}


def fake_result(agent: str, seed: int, accuracy: float, env_id: str = "dus_env/Synthetic-v0", steps: int = 3) -> EpisodeResult:
    """An episode result shaped like the env's, with chosen final accuracy (fraction)."""
    final = {
        "step": steps,
        "reward_accuracy_gain": 0.0,
        "reward_gap_penalty": 0.0,
        "diverged": False,
        "test_fused_accuracy": accuracy,
        "test_fused_balanced_accuracy": accuracy,
        "test_modality_accuracies": [accuracy - 0.1, accuracy - 0.3],
        "test_modality_gap": 0.2,
        "quantity_totals": [30, 50],
        "quantity_history": [[3, 5]] * steps,
    }
    trace = [
        {
            "quantities": [4, 4] if t == 0 else [3, 5],
            "cumulative_scores": [0.1 * t, 0.05 * t],
            "val_fused_accuracy": 0.5,
            "val_modality_accuracies": [0.4, 0.3],
            "train_loss": 1.0,
            "reward": 0.01,
        }
        for t in range(steps + 1)
    ]
    return EpisodeResult(agent, env_id, seed, 0.1 * accuracy, final, trace, 0.5)


def test_episode_row_flattens_every_final_metric() -> None:
    row = episode_row(fake_result("heuristic", 10_000, 0.8), "heuristic")
    assert row["test_fused_accuracy"] == 0.8
    assert row["test_modality_accuracies_0"] == pytest.approx(0.7) and row["test_modality_accuracies_1"] == pytest.approx(0.5)
    assert row["quantity_totals_1"] == 50 and json.loads(row["quantity_history"]) == [[3, 5]] * 3
    assert row["decisions"] == 3 and row["diverged"] is False and row["seed"] == 10_000
    assert "reward_accuracy_gain" not in row  # a last-step value, not an episode metric


# -- plan, summaries, tables ---------------------------------------------------------------------


def test_parse_env_kwargs_forms() -> None:
    assert parse_env_kwargs(['{"decision_steps": 4, "learner": {"hidden_sizes": [16]}}']) == {
        "decision_steps": 4,
        "learner": {"hidden_sizes": [16]},
    }
    assert parse_env_kwargs(["decision_steps=4", "path=my file.npz", "learner.hidden_sizes=[16]", "learner.lr=0.01"]) == {
        "decision_steps": 4,
        "path": "my file.npz",
        "learner": {"hidden_sizes": [16], "lr": 0.01},
    }
    assert parse_env_kwargs([]) == {}
    for bad in (["decision_steps"], ["{not json"], ["[1, 2]"], ["a=1", "a.b=2"]):
        with pytest.raises(UsageError):
            parse_env_kwargs(bad)


def test_plan_is_paired_and_uses_disjoint_seeds() -> None:
    plan = make_plan(["uniform", "heuristic", "fixed:1,3"], ["Synthetic-v0", "dus_env/MFeat-v0"], {}, n_seeds=3)
    assert plan.env_ids == ("dus_env/Synthetic-v0", "dus_env/MFeat-v0")
    assert plan.seeds == (10_000, 10_001, 10_002)
    assert plan.baseline == "uniform"
    jobs = plan.jobs()
    assert len(jobs) == 3 * 2 * 3
    for env_id in plan.env_ids:
        seeds_by_agent = {
            label: sorted(j.seed for j in jobs if j.env_id == env_id and j.label == label)
            for label in ("uniform", "heuristic", "fixed:1,3")
        }
        assert all(seeds == list(plan.seeds) for seeds in seeds_by_agent.values())
    assert make_plan(["uniform"], ["Synthetic-v0"], {}, n_seeds=2, seed_offset=5).seeds == (5, 6)


def test_batches_are_one_agent_on_one_env_chunk_major() -> None:
    plan = make_plan(["uniform", "heuristic"], ["Synthetic-v0", "dus_env/MFeat-v0"], {}, n_seeds=5)
    work = batches(plan.jobs(), size=2)
    assert [(b[0].env_id.split("/")[1], b[0].label, [job.seed for job in b]) for b in work] == [
        ("Synthetic-v0", "uniform", [10_000, 10_001]),
        ("Synthetic-v0", "heuristic", [10_000, 10_001]),
        ("Synthetic-v0", "uniform", [10_002, 10_003]),
        ("Synthetic-v0", "heuristic", [10_002, 10_003]),
        ("Synthetic-v0", "uniform", [10_004]),
        ("Synthetic-v0", "heuristic", [10_004]),
        ("MFeat-v0", "uniform", [10_000, 10_001]),
        ("MFeat-v0", "heuristic", [10_000, 10_001]),
        ("MFeat-v0", "uniform", [10_002, 10_003]),
        ("MFeat-v0", "heuristic", [10_002, 10_003]),
        ("MFeat-v0", "uniform", [10_004]),
        ("MFeat-v0", "heuristic", [10_004]),
    ]
    assert [len(b) for b in batches(plan.jobs())] == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="batch size 0 is invalid"):
        batches(plan.jobs(), size=0)


def test_bss_agents_run_in_the_env_with_their_row_order() -> None:
    plan = make_plan(["uniform", "bss", "heuristic+bss:adaptive"], ["Synthetic-v0"], {"decision_steps": 2}, n_seeds=1)
    kwargs = {job.label: job.env_kwargs for job in plan.jobs()}
    assert kwargs == {
        "uniform": {"decision_steps": 2},
        "bss": {"decision_steps": 2, "row_order": "bss_curriculum"},
        "heuristic+bss:adaptive": {"decision_steps": 2, "row_order": "bss_adaptive"},
    }
    assert plan.baseline == "uniform"  # "bss" is uniform quantities, but not the plain baseline
    assert make_plan(["bss", "uniform"], ["Synthetic-v0"], {}, 1).baseline == "uniform"
    configs = check_plan(plan)  # every agent is built for the env it runs in
    assert configs["dus_env/Synthetic-v0"]["learner"]["row_order"] == "epoch"  # the plan's env, not an agent's copy
    assert check_plan(make_plan(["bss", "uniform"], ["Synthetic-v0"], {}, 1))["dus_env/Synthetic-v0"]["learner"]["row_order"] == "epoch"
    results = [result for batch in batches(plan.jobs()) for result in run_batch(batch)]
    assert {r.agent for r in results} == {"uniform", "bss", "heuristic+bss:adaptive"}


def test_row_order_given_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="give the row order one way"):
        make_plan(["uniform", "bss"], ["Synthetic-v0"], {"learner": {"row_order": "bss_adaptive"}}, 1)


def test_plan_baseline_choice() -> None:
    assert make_plan(["heuristic", "random"], ["Synthetic-v0"], {}, 2).baseline == "heuristic"
    assert make_plan(["uniform", "heuristic:0.5"], ["Synthetic-v0"], {}, 2, baseline="heuristic:0.5").baseline == "heuristic:0.5"
    assert make_plan(["uniform", "h=heuristic"], ["Synthetic-v0"], {}, 2, baseline="h").baseline == "h"
    with pytest.raises(UsageError, match="--baseline 'random' is not one of the agents"):
        make_plan(["uniform", "heuristic"], ["Synthetic-v0"], {}, 2, baseline="random")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"agents": ["uniform", "nope"]}, "unknown agent spec 'nope'"),
        ({"envs": ["dus_env/Nope-v0"]}, "unknown env id 'dus_env/Nope-v0'"),
        ({"n_seeds": 0}, "--seeds 0 is invalid"),
        ({"seed_offset": -1}, "--seed-offset -1 is invalid"),
        ({"agents": []}, "no agents given"),
    ],
)
def test_plan_errors(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"agents": ["uniform"], "envs": ["Synthetic-v0"], "env_kwargs": {}, "n_seeds": 2}
    arguments.update(kwargs)
    with pytest.raises((UsageError, ConfigError), match=message):  # ConfigError: an unknown env id (dus_env's own error)
        make_plan(**arguments)


def test_summaries_and_paired_differences() -> None:
    plan = make_plan(["uniform", "heuristic"], ["Synthetic-v0"], {}, n_seeds=4)
    accuracies = {"uniform": [0.10, 0.20, 0.30, 0.40], "heuristic": [0.11, 0.22, 0.33, 0.44]}
    results = [fake_result(agent, seed, accuracies[agent][i]) for agent in accuracies for i, seed in enumerate(plan.seeds)]
    uniform, heuristic = summarize_env(results[::-1], plan, "dus_env/Synthetic-v0")  # order of arrival does not matter
    assert uniform.agent == "uniform" and uniform.versus_baseline is None
    assert uniform.fused_accuracy.mean == pytest.approx(25.0)  # percent
    assert heuristic.modality_accuracies[1].mean == pytest.approx(27.5 - 30.0)
    assert heuristic.modality_gap.mean == pytest.approx(20.0)  # points
    assert heuristic.versus_baseline is not None
    assert heuristic.versus_baseline.mean_diff == pytest.approx(2.5)  # points: the hand-computed case above
    row = summary_row("dus_env/Synthetic-v0", heuristic)
    assert row["diff_vs_baseline_mean_pts"] == pytest.approx(2.5) and row["significant"] is True
    assert row["fused_accuracy_mean_pct"] == pytest.approx(27.5)


def test_summaries_refuse_unpaired_seeds() -> None:
    plan = make_plan(["uniform", "heuristic"], ["Synthetic-v0"], {}, n_seeds=2)
    results = [
        fake_result("uniform", 10_000, 0.5),
        fake_result("uniform", 10_001, 0.5),
        fake_result("heuristic", 10_000, 0.5),
        fake_result("heuristic", 10_005, 0.5),
    ]
    with pytest.raises(ValueError, match="ran different seeds"):
        summarize_env(results, plan, "dus_env/Synthetic-v0")


def test_pvalues_read_the_same_in_every_table() -> None:
    assert [format_pvalue(p) for p in (None, math.nan, 0.0004, 0.01234, 1.0)] == ["—", "—", "<0.001", "0.012", "1.000"]


def test_plain_table_alignment() -> None:
    text = plain_table(Table("title", ["agent", "acc"], [["uniform", "1.00"], ["h", "10.00"]], note="* note"))
    assert text.splitlines() == ["title", "agent      acc", "-------  -----", "uniform   1.00", "h        10.00", "* note"]


@pytest.mark.parametrize("rich_available", [True, False])
def test_print_tables_with_and_without_rich(rich_available: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not rich_available:
        monkeypatch.setitem(sys.modules, "rich.console", None)  # makes "from rich.console import ..." fail
    buffer = io.StringIO()
    print_tables([Table("env: metrics", ["agent", "fused acc %"], [["heuristic", "76.40 ± 2.00"]], note="* p < 0.05")], file=buffer)
    text = buffer.getvalue()
    assert "env: metrics" in text and "heuristic" in text and "76.40 ± 2.00" in text and "* p < 0.05" in text
    assert ("┃" in text) == rich_available


def test_plots_are_png_files_and_tolerate_a_diverged_episode(tmp_path: Path) -> None:
    full, short = fake_result("a", 1, 0.5, steps=4), fake_result("a", 2, 0.6, steps=2)
    plot_trajectories({"a": [full.trace, short.trace], "b": [full.trace]}, tmp_path / "t.png", "title")
    plot_final_accuracy({"a": [50.0, 60.0], "b": [55.0]}, tmp_path / "f.png", "title", baseline="a")
    for name in ("t.png", "f.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)


# -- suites and argument parsing -----------------------------------------------------------------


def test_every_suite_is_well_formed() -> None:
    evaluate = load_evaluate()
    import yaml

    suites = yaml.safe_load((REPO / "agents" / "suites.yml").read_text())
    assert {"smoke", "main"} <= set(suites)
    for name in suites:
        args = evaluate.parse_args(["--suite", name])
        plan = make_plan(args.agents, args.envs, args.env_kwargs, args.seeds, args.seed_offset, args.baseline or None)
        assert plan.seeds[0] >= 10_000
    smoke = evaluate.parse_args(["--suite", "smoke"])
    assert smoke.agents == ["uniform", "heuristic"] and smoke.seeds == 2
    assert smoke.env_kwargs == {**TINY_OVERRIDES, "learner": {"hidden_sizes": [16], "embedding_dim": 8}}
    main = evaluate.parse_args(["--suite", "main"])
    assert main.seeds == 10 and {"uniform", "random", "heuristic"} <= set(main.agents)
    assert set(main.envs) == {"dus_env/Synthetic-v0", "dus_env/SyntheticHard-v0", "dus_env/MFeat-v0"}


def test_command_line_overrides_the_suite() -> None:
    evaluate = load_evaluate()
    args = evaluate.parse_args(["--suite", "smoke", "--seeds", "3", "--env-kwargs", "decision_steps=2"])
    assert args.seeds == 3 and args.agents == ["uniform", "heuristic"]
    assert args.env_kwargs["decision_steps"] == 2 and args.env_kwargs["base_batch_size"] == 8
    defaults = evaluate.parse_args([])
    assert defaults.agents == ["uniform", "random", "heuristic"] and defaults.seed_offset == 10_000 and defaults.env_kwargs == {}


def test_bad_suites(tmp_path: Path) -> None:
    evaluate = load_evaluate()
    suites = tmp_path / "suites.yml"
    suites.write_text("typo:\n  agent: [uniform]\nwrong_type:\n  seeds: ten\n")
    for name, message in (
        ("typo", "unknown keys \\['agent'\\]"),
        ("wrong_type", "seeds='ten' is invalid"),
        ("absent", "unknown suite 'absent'"),
    ):
        with pytest.raises(UsageError, match=message):
            evaluate.parse_args(["--suite", name, "--suites-file", str(suites)])


def test_command_line_env_kwargs_merge_into_the_suites_nested_fields() -> None:
    evaluate = load_evaluate()
    args = evaluate.parse_args(["--suite", "smoke", "--env-kwargs", "learner.lr=0.01"])
    assert args.env_kwargs == {**TINY_OVERRIDES, "learner": {"hidden_sizes": [16], "embedding_dim": 8, "lr": 0.01}}
    replaced = evaluate.parse_args(["--suite", "smoke", "--env-kwargs", '{"learner": {"hidden_sizes": [8]}}'])
    assert replaced.env_kwargs["learner"] == {"hidden_sizes": [8], "embedding_dim": 8}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("smoke: [uniform\n", "is not valid YAML at line 2, column 1: expected ',' or ']'"),
        ("- smoke\n- main\n", "must map suite names to their options, not be a list"),
        ("smoke: uniform\n", "must be a mapping of options (description, agents"),
        ("smoke:\n  env_kwargs: [decision_steps]\n", "option env_kwargs=['decision_steps'] is invalid: expected a mapping"),
        ("smoke:\n  env_kwargs:\n", "option env_kwargs=None is invalid: expected a mapping"),
    ],
)
def test_malformed_suites_file_is_a_one_line_error(content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suites = tmp_path / "suites.yml"
    suites.write_text(content)
    code = load_evaluate().main(["--suite", "smoke", "--suites-file", str(suites), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("evaluate.py: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--agents", "uniform", "fixed:1,2,3"], "'fixed:1,2,3' gives 3 shares but the env has 2 modalities"),
        (["--agents", "uniform", "ppo:no/such/run"], "model path 'no/such/run' does not exist"),
        (["--seeds", "0"], "--seeds 0 is invalid"),
        (["--envs", "Nope-v0"], "unknown env id 'Nope-v0'"),
        (["--env-kwargs", "decision_steps=0"], "decision_steps=0 is invalid"),
        (["--workers", "0"], "--workers 0 is invalid"),
        (["--batch-size", "0"], "--batch-size 0 is invalid"),
        (["--address", "auto"], "--address auto needs --backend ray"),
    ],
)
def test_bad_input_exits_with_one_line(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = load_evaluate().main([*argv, "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# -- end to end ----------------------------------------------------------------------------------


def run_cli(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "evaluate.py"), *argv], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_unknown_agent_spec_exits_non_zero_naming_it(tmp_path: Path) -> None:
    completed = run_cli("--agents", "uniform", "greedy-oracle", "--out", str(tmp_path / "out"))
    assert completed.returncode != 0
    assert "unknown agent spec 'greedy-oracle'" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_cli_smoke_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "results"
    completed = run_cli(
        "--agents",
        "uniform",
        "heuristic",
        "--seeds",
        "2",
        "--workers",
        "2",
        "--env-kwargs",
        json.dumps(TINY_OVERRIDES),
        "--out",
        str(out),
    )
    assert completed.returncode == 0, completed.stderr
    assert "dus_env/Synthetic-v0: final test metrics over 2 seeds" in completed.stdout
    assert completed.stdout.strip().splitlines()[-1].startswith("evaluated 2 agents x 1 env x 2 seeds = 4 episodes")

    with (out / "episodes.csv").open(newline="") as handle:
        episodes = list(csv.DictReader(handle))
    assert [(r["agent"], int(r["seed"])) for r in episodes] == [
        ("uniform", 10_000),
        ("uniform", 10_001),
        ("heuristic", 10_000),
        ("heuristic", 10_001),
    ]
    for row in episodes:
        assert 0.0 <= float(row["test_fused_accuracy"]) <= 1.0
        assert {
            "test_modality_accuracies_0",
            "test_modality_accuracies_1",
            "test_modality_gap",
            "episode_return",
            "quantity_totals_0",
            "wall_time_s",
        } <= set(row)
        assert len(json.loads(row["quantity_history"])) == TINY_OVERRIDES["decision_steps"]

    with (out / "summary.csv").open(newline="") as handle:
        summary_rows = list(csv.DictReader(handle))
    assert [r["agent"] for r in summary_rows] == ["uniform", "heuristic"]
    uniform_mean = float(summary_rows[0]["fused_accuracy_mean_pct"])
    assert uniform_mean == pytest.approx(50.0 * sum(float(r["test_fused_accuracy"]) for r in episodes[:2]))

    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [10_000, 10_001]
    assert summary["env_kwargs"] == json.loads(json.dumps(TINY_OVERRIDES))
    assert summary["agents"] == [{"label": "uniform", "spec": "uniform"}, {"label": "heuristic", "spec": "heuristic"}]
    assert summary["baseline"] == "uniform"
    assert {"torch", "gymnasium", "numpy", "scipy", "dus_env"} <= set(summary["versions"])
    assert summary["env_configs"]["dus_env/Synthetic-v0"]["decision_steps"] == TINY_OVERRIDES["decision_steps"]
    heuristic = summary["results"]["dus_env/Synthetic-v0"][1]
    assert heuristic["agent"] == "heuristic" and "t_pvalue" in heuristic["versus_baseline"]

    with (out / "traces.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4 * (TINY_OVERRIDES["decision_steps"] + 1)
    for name in ("dus_env_Synthetic-v0_trajectories.png", "dus_env_Synthetic-v0_final_accuracy.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_results_do_not_depend_on_worker_count(tmp_path: Path) -> None:
    """Same seeds, same numbers: in-process and in two worker processes (wall time aside)."""
    common = [
        "--agents",
        "uniform",
        "random",
        "heuristic:0.02",
        "--seeds",
        "2",
        "--no-plots",
        "--env-kwargs",
        json.dumps({**TINY_OVERRIDES, "decision_steps": 3}),
    ]
    assert load_evaluate().main([*common, "--out", str(tmp_path / "one")]) == 0
    completed = run_cli(*common, "--workers", "2", "--out", str(tmp_path / "two"))
    assert completed.returncode == 0, completed.stderr

    def rows(directory: str) -> list[dict[str, str]]:
        with (tmp_path / directory / "episodes.csv").open(newline="") as handle:
            return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(handle)]

    assert rows("one") == rows("two")
    assert not list((tmp_path / "one").glob("*.png"))


def test_too_few_pairs_or_a_constant_difference_get_no_t_test() -> None:
    """Two seeds, or the same gain on every seed: the t-test is undefined, so no p-value and no star."""
    two = paired_comparison([0.8, 0.9], [0.7, 0.85])
    constant = paired_comparison([0.6, 0.7, 0.8, 0.9], [0.5, 0.6, 0.7, 0.8])
    for result in (two, constant):
        assert math.isnan(result.t_pvalue) and not result.significant()
        assert format_pvalue(result.t_pvalue) == "—"
    assert constant.mean_diff == pytest.approx(0.1)


def test_episode_files_are_rewritten_as_the_finished_episodes_grow_by_a_quarter() -> None:
    """Whole-file rewrites after every batch would cost time quadratic in the batches."""
    evaluate = load_evaluate()
    pace = evaluate.SavePace(0)
    assert [n for n in range(1, 41) if pace.due(n)] == [1, 2, 3, 4, 5, 7, 9, 12, 15, 19, 24, 30, 38]
    resumed = evaluate.SavePace(100)  # a resumed evaluation counts what it already holds
    assert not resumed.due(120) and resumed.due(125)

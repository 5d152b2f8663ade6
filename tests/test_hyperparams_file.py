"""``train_agent.py --hyperparams FILE``: a zoo-style file's entry as overrides (tune_agent.py's best.yml)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from agents.runs import UsageError, parse_hyperparams, resolve_run, run_folder, start_run
from tests.conftest import release_locks, tiny_env_kwargs_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_agent  # noqa: E402

TINY = [tiny_env_kwargs_json()]

BEST = """# written by tune_agent.py
default: &default
  n_envs: 2
  n_timesteps: 96
  n_steps: 16
  batch_size: 32
  learning_rate: 1.0e-3
dus_env/Synthetic-v0:
  <<: *default
  learning_rate: 2.0e-3
  policy_kwargs: {net_arch: [8]}
"""


@pytest.fixture
def best(tmp_path: Path) -> Path:
    path = tmp_path / "best.yml"
    path.write_text(BEST)
    return path


def args(*argv: str) -> train_agent.Args:
    return train_agent.parse_args(["--env-kwargs", *TINY, *argv])


def test_the_entry_of_the_env_is_used_and_key_values_after_it_win(best: Path) -> None:
    run = resolve_run(args("--hyperparams", str(best), "--run-dir", "unused"))
    assert run.hyperparams["learning_rate"] == 2e-3 and run.hyperparams["policy_kwargs"] == {"net_arch": [8]}
    assert (run.n_envs, run.hyperparams["n_steps"], run.total_timesteps) == (2, 16, 96)
    # Later items win; an item before the file is overridden by it (whole top-level values, as every override).
    assert parse_hyperparams([str(best), "learning_rate=5e-4", "n_steps=8"], "Synthetic-v0")["learning_rate"] == 5e-4
    assert parse_hyperparams(["learning_rate=5e-4", str(best)], "Synthetic-v0")["learning_rate"] == 2e-3
    # --timesteps still sets the budget over the file's n_timesteps.
    assert resolve_run(args("--hyperparams", str(best), "--timesteps", "64", "--run-dir", "unused")).total_timesteps == 64


def test_an_env_without_an_entry_gets_the_default_one(best: Path) -> None:
    values = parse_hyperparams([str(best)], "dus_env/Synthetic3-v0")
    assert values == {"n_envs": 2, "n_timesteps": 96, "n_steps": 16, "batch_size": 32, "learning_rate": 1e-3}


@pytest.mark.parametrize(
    "text, message",
    [
        ("dus_env/MFeat-v0: {n_envs: 2}\ndus_env/Synthetic3-v0: {n_envs: 4}\n", "has no entry for 'dus_env/Synthetic-v0' and no 'default'"),
        ("dus_env/Synthetic-v0: {n_envs: [2\n", "is not valid YAML at line"),
        ("- n_envs: 2\n", "is not a zoo-style hyperparameter file"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_option_and_its_ids(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    argv = ["--env-kwargs", *TINY, "--hyperparams", str(path), "--run-dir", str(tmp_path / "run")]
    assert train_agent.main(argv) == train_agent.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error: --hyperparams {path} ") and err.count("\n") == 1 and message in err
    if "no entry" in message:
        assert "its entries are dus_env/MFeat-v0, dus_env/Synthetic3-v0" in err
    assert not (tmp_path / "run").exists()


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--hyperparams .*nope\.yml: cannot read the hyperparameter file"):
        parse_hyperparams([str(tmp_path / "nope.yml")], "Synthetic-v0")


def test_the_files_values_name_the_run_folder_and_reach_config_yml(best: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from_file = run_folder(args("--hyperparams", str(best)))
    same_items = ["n_envs=2", "n_steps=16", "batch_size=32", "learning_rate=2e-3", "policy_kwargs={net_arch: [8]}"]
    assert from_file == run_folder(args("--hyperparams", *same_items))  # a file is overrides like any other
    assert from_file != run_folder(args()) and from_file.name.startswith("ppo_Synthetic-v0_0_")
    assert from_file != run_folder(args("--hyperparams", str(best), "learning_rate=5e-4"))
    try:
        started = start_run(args("--hyperparams", str(best)))
    finally:
        release_locks()
    assert started is not None and started.run.run_dir == from_file
    config = yaml.safe_load((from_file / "config.yml").read_text())
    assert config["hyperparams"]["learning_rate"] == 2e-3 and config["hyperparams"]["policy_kwargs"] == {"net_arch": [8]}
    # --resume with the same file finds the run, its n_timesteps included; a changed value is refused, named.
    argv = ["--env-kwargs", *TINY, "--hyperparams", str(best), "--resume"]
    try:
        resumed = start_run(train_agent.parse_args(argv), train_agent.given_options(argv))
        assert resumed is not None and resumed.run.run_dir == from_file
        changed = tmp_path / "changed.yml"
        changed.write_text(BEST.replace("2.0e-3", "3.0e-3"))
        argv = ["--env-kwargs", *TINY, "--hyperparams", str(changed), "--resume", "--run-dir", str(from_file)]
        with pytest.raises(UsageError, match="--hyperparams learning_rate=0.003 differs from the run's learning_rate=0.002"):
            start_run(train_agent.parse_args(argv), train_agent.given_options(argv))
    finally:
        release_locks()


@pytest.mark.parametrize("timesteps", [["--timesteps", "64"], ["--timesteps", "128"], []])
def test_resume_with_the_same_file_ignores_the_files_budget(timesteps: list[str], best: Path, tmp_path: Path) -> None:
    """A run started from best.yml (n_timesteps 96) with --timesteps 64 resumes with the same file, whatever
    --timesteps says now: the file's n_timesteps is its budget, not a request to change the run's."""
    run_dir = tmp_path / "run"
    try:
        started = start_run(args("--hyperparams", str(best), "--timesteps", "64", "--run-dir", str(run_dir)))
        assert started is not None and started.run.total_timesteps == 64  # --timesteps wins over the file's 96
    finally:
        release_locks()
    resume = ["--env-kwargs", *TINY, "--resume", "--run-dir", str(run_dir), *timesteps]
    try:
        argv = [*resume, "--hyperparams", str(best)]
        resumed = start_run(train_agent.parse_args(argv), train_agent.given_options(argv))
        assert resumed is not None and resumed.run.total_timesteps == (int(timesteps[1]) if timesteps else 64)
        release_locks()
        # A key=value n_timesteps is still refused: --timesteps is how a resumed run gets more steps.
        argv = [*resume, "--hyperparams", str(best), "n_timesteps=200"]
        with pytest.raises(UsageError, match="--hyperparams n_timesteps=200 is not how a resumed run gets more steps"):
            start_run(train_agent.parse_args(argv), train_agent.given_options(argv))
    finally:
        release_locks()


def test_invalid_yaml_is_named_the_same_for_a_hyperparams_file_and_a_search_space(tmp_path: Path) -> None:
    from agents.tuning import load_search_space

    path = tmp_path / "bad.yml"
    path.write_text("learning_rate: {loguniform: [1\n")
    with pytest.raises(UsageError) as from_file:
        parse_hyperparams([str(path)], "Synthetic-v0")
    with pytest.raises(UsageError) as from_space:
        load_search_space(path)
    assert str(from_file.value) == f"--hyperparams {path} is not valid YAML at line 2: expected ',' or ']', but got '<stream end>'"
    assert str(from_space.value) == str(from_file.value).replace("--hyperparams", "search space", 1)

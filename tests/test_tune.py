"""tune_agent.py: search spaces and checks (fast, without Ray), and sweeps on a local Ray (ray-marked, slow)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from agents.errors import UsageError
from agents.runs import is_run_folder
from agents.seed_ranges import SWEEP_EVAL_SEEDS
from agents.tuning import (
    DISTRIBUTIONS,
    SEARCH_SPACE_DIR,
    Distribution,
    SweepPlan,
    TrialRecord,
    best_trial,
    check_space,
    parse_search_space,
    prepare_sweep,
    trials_csv,
)
from dus_env.extras import install_command
from tests.conftest import release_locks, tiny_env_kwargs_json, write_features_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_agent  # noqa: E402
import tune_agent  # noqa: E402

TINY_JSON = tiny_env_kwargs_json()

TINY_SPACE = """
learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
n_steps: {choice: [8, 16]}
policy_kwargs: {choice: [{net_arch: [8]}, {net_arch: [16, 16]}]}
batch_size: {fixed: 16}
"""


# -- search spaces (fast) --------------------------------------------------------------------------------


def test_every_distribution_kind_parses() -> None:
    space = parse_search_space(
        yaml.safe_load(
            """
            learning_rate: {loguniform: [1e-5, 1e-3]}
            gamma: {uniform: [0.9, 0.999]}
            clip_range: {quniform: [0.1, 0.4, 0.05]}
            n_epochs: {randint: [3, 11]}
            batch_size: {lograndint: [32, 513]}
            policy_kwargs: {choice: ["dict(net_arch=[32])", {net_arch: [64, 64]}]}
            n_envs: {fixed: 8}
            """
        ),
        "space.yml",
    )
    # 1e-5 is a string to PyYAML: read as the number it is.
    assert space["learning_rate"] == Distribution("loguniform", (1e-5, 1e-3))
    assert space["n_epochs"].corners() == [3, 10] and space["n_envs"].corners() == [8]
    assert space["clip_range"].decode(0.35000000000000003) == 0.35  # to the step's decimals, as a user writes it
    assert {d.kind for d in space.values()} == set(DISTRIBUTIONS)
    # A choice holding a dict goes to Tune as JSON strings (Optuna takes scalar categories) and comes back whole.
    choice = space["policy_kwargs"]
    assert choice.encoded and choice.decode(json.dumps({"net_arch": [64, 64]})) == {"net_arch": [64, 64]}
    assert not parse_search_space({"n_steps": {"choice": [8, 16]}}, "s")["n_steps"].encoded
    assert space["n_epochs"].decode(np.int64(4)) == 4 and type(space["n_epochs"].decode(np.int64(4))) is int


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            {"learning_rate": {"loguniformm": [1e-5, 1e-3]}},
            "key 'learning_rate': unknown distribution 'loguniformm' (did you mean 'loguniform'?)",
        ),
        ({"learning_rate": [1e-5, 1e-3]}, "key 'learning_rate': expected one distribution written {kind: arguments}"),
        ({"learning_rate": {"uniform": [1e-3, 1e-5]}}, "key 'learning_rate': uniform takes [low, high]"),
        ({"learning_rate": {"loguniform": [0, 1e-3]}}, "loguniform takes [low, high] with 0 < low"),
        ({"n_steps": {"randint": [8.5, 16]}}, "key 'n_steps': randint takes [low, high] integers"),
        ({"n_steps": {"choice": []}}, "key 'n_steps': choice takes a non-empty list"),
        ({"clip_range": {"quniform": [0.1, 0.4]}}, "quniform takes [low, high, q]"),
        ({"n_timesteps": {"choice": [100, 200]}}, "key 'n_timesteps': the step budget is not searched"),
    ],
)
def test_a_bad_search_space_names_the_key_and_the_allowed_kinds(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_search_space(spec, "space.yml")
    assert str(error.value).startswith("search space space.yml, key ") and message in str(error.value)
    if "distribution" in message:
        assert "kinds: uniform: [low, high]; quniform" in str(error.value) and "fixed: value" in str(error.value)


@pytest.mark.parametrize("path", sorted(SEARCH_SPACE_DIR.glob("*.yml")), ids=lambda path: path.stem)
def test_every_shipped_search_space_works_for_its_algorithm(path: Path) -> None:
    space = parse_search_space(yaml.safe_load(path.read_text()), str(path))
    check_space(path.stem, "dus_env/Synthetic-v0", {}, space, str(path))


def test_shipped_search_spaces_cover_ppo_and_a2c() -> None:
    assert {"ppo", "a2c"} <= {path.stem for path in SEARCH_SPACE_DIR.glob("*.yml")}


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            {"n_step": {"choice": [8, 16]}},
            "key 'n_step': 8 does not work: unknown hyperparameter 'n_step' for PPO: did you mean 'n_steps'?",
        ),
        ({"policy_kwargs": {"choice": ["dict(net_arch=[8])", "eval('1')"]}}, "key 'policy_kwargs': \"eval('1')\" does not work"),
        ({"n_envs": {"randint": [0, 4]}}, "key 'n_envs': 0 does not work: hyperparameter n_envs=0 is invalid"),
    ],
)
def test_keys_and_values_the_algorithm_refuses_are_named_before_ray_starts(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match="search space s.yml") as error:
        check_space("ppo", "dus_env/Synthetic-v0", {}, parse_search_space(spec, "s.yml"), "s.yml")
    assert message in str(error.value)


def test_the_best_trial_is_the_best_last_return_of_those_that_trained_their_budget(tmp_path: Path) -> None:
    def record(name: str, status: str, last: float | None) -> TrialRecord:
        return TrialRecord(name, status, 128, last, last, {"n_steps": 8, "policy_kwargs": {"net_arch": [8]}}, tmp_path / name)

    stopped_high, completed = record("a", "stopped", 0.9), record("b", "completed", 0.5)
    assert best_trial([stopped_high, completed, record("c", "completed", 0.4), record("d", "failed", None)]) is completed
    assert best_trial([stopped_high, record("d", "failed", None)]) is stopped_high  # none completed: among all
    assert best_trial([record("d", "failed", None)]) is None
    space = parse_search_space({"n_steps": {"choice": [8, 16]}, "policy_kwargs": {"choice": [{"net_arch": [8]}]}}, "s")
    rows = list(csv.DictReader(trials_csv([completed], space).splitlines()))
    assert rows[0]["status"] == "completed" and rows[0]["n_steps"] == "8" and json.loads(rows[0]["policy_kwargs"]) == {"net_arch": [8]}


def test_train_model_hands_every_evaluation_to_the_hook(tmp_path: Path) -> None:
    """What a trial reports: the steps and the mean return of each evaluation, as ``evaluations.npz`` logs them."""
    from agents.runs import start_run
    from agents.training import train_model

    argv = ["--env-kwargs", TINY_JSON, "--hyperparams", "n_envs=2", "n_steps=16", "batch_size=16", "normalize=false"]
    argv += ["--timesteps", "96", "--eval-freq", "32", "--eval-episodes", "2", "--checkpoint-freq", "0", "--no-progress"]
    started = start_run(train_agent.parse_args([*argv, "--run-dir", str(tmp_path / "run")]))
    assert started is not None
    calls: list[tuple[int, float]] = []
    try:
        train_model(started, progress=False, on_evaluation=lambda steps, mean_return: calls.append((steps, mean_return)))
    finally:
        release_locks()
    logged = np.load(tmp_path / "run" / "eval" / "evaluations.npz")
    assert [steps for steps, _ in calls] == logged["timesteps"].tolist() == [32, 64, 96]
    assert [value for _, value in calls] == pytest.approx(logged["results"].mean(axis=1).tolist())


def test_trials_read_no_relative_path_of_the_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tune runs a trial in a working folder of its own: the sweep's relative --hyperparams file, Features-v0
    path and --search-space are read in the driver, and a trial's options work from any folder, with the same values."""
    driver, elsewhere = tmp_path / "driver", tmp_path / "trial_cwd"
    driver.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(driver)
    write_features_file(driver / "features.npz")
    Path("shared.yml").write_text("default: {n_envs: 2, n_steps: 16, batch_size: 16, policy_kwargs: {net_arch: [8]}}\n")
    Path("space.yml").write_text(TINY_SPACE)
    env_kwargs = [
        "path=features.npz",
        "decision_steps=3",
        "base_batch_size=8",
        "min_quantity=2",
        "max_quantity=14",
        "learner.hidden_sizes=[8]",
    ]
    argv = ["--env", "Features-v0", "--env-kwargs", *env_kwargs, "--hyperparams", "shared.yml", "normalize=false", "learning_rate=0.01"]
    args = tune_agent.parse_args([*argv, "--search-space", "space.yml", "--timesteps", "64", "--num-samples", "1", "--out", "sweep"])
    sweep = prepare_sweep(SweepPlan(search_space=args.search_space, out=args.out), tune_agent.run_options(args))
    trial = sweep.trial_options({"learning_rate": 1e-3, "n_steps": 8, "policy_kwargs": json.dumps({"net_arch": [16, 16]})}, elsewhere / "t")
    monkeypatch.chdir(elsewhere)
    from agents.runs import resolve_run

    run = resolve_run(trial)
    assert run.env_kwargs["path"] == str(driver / "features.npz") and run.env_kwargs["decision_steps"] == 3
    assert (run.n_envs, run.hyperparams["normalize"], run.hyperparams["batch_size"]) == (2, False, 16)
    # The sampled values win over the sweep's --hyperparams (the file's and the key=value ones alike).
    assert (run.hyperparams["learning_rate"], run.hyperparams["n_steps"], run.hyperparams["policy_kwargs"]) == (
        1e-3,
        8,
        {"net_arch": [16, 16]},
    )
    assert run.total_timesteps == 64 and run.run_dir == elsewhere / "t"


# -- the driver's errors (fast) ----------------------------------------------------------------------------


def test_without_the_ray_extra_the_error_is_one_line_with_the_install_command(tmp_path: Path) -> None:
    """Whether or not Ray is installed here: the subprocess hides it, as a base install lacks it."""
    code = (
        "import sys; sys.modules['ray'] = None; sys.path.insert(0, sys.argv[1]); import tune_agent; sys.exit(tune_agent.main(sys.argv[2:]))"
    )
    argv = ["--env-kwargs", TINY_JSON, "--hyperparams", "n_envs=2", "--out", str(tmp_path / "sweep")]
    result = subprocess.run([sys.executable, "-c", code, str(ROOT), *argv], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == tune_agent.EXIT_USAGE, result.stderr
    assert result.stderr.startswith("error: tune_agent.py needs the 'ray' extra") and result.stderr.count("\n") == 1
    assert install_command("ray") in result.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algo", "ppo3"], "--algo 'ppo3' is unknown: did you mean 'ppo'? choose one of ppo, a2c, reinforce,"),
        (["--algo", "dqn"], "DQN needs a discrete action space"),
        (["--search", "grid"], "--search='grid' is invalid: expected one of random, optuna"),
        (["--num-samples", "0"], "--num-samples=0 is invalid"),
        (
            ["--search-space", "SPACE", "--env-kwargs", TINY_JSON],
            "search space SPACE, key 'learning_rate': unknown distribution 'lognormal'",
        ),
        (["--algo", "sac", "--env-kwargs", TINY_JSON], "no search space is shipped for --algo sac (shipped: a2c, ppo, reinforce)"),
        (["--grace-period", "99999", "--timesteps", "256", "--env-kwargs", TINY_JSON], "--grace-period=99999 is invalid"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = tmp_path / "space.yml"
    space.write_text("learning_rate: {lognormal: [0, 1]}\n")
    argv = [str(space) if item == "SPACE" else item for item in argv]
    message = message.replace("SPACE", str(space))
    assert tune_agent.main([*argv, "--out", str(tmp_path / "sweep")]) == tune_agent.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "sweep").exists()


# -- sweeps on Ray (slow) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """Ray started in this process on 2 CPUs (trials run in its workers), shut down after the module."""
    from agents.ray_cluster import connect

    ray = connect(None, "tests/test_tune.py", num_cpus=2)
    yield
    ray.shutdown()


def sweep_argv(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    space = tmp_path / "space.yml"
    space.write_text(TINY_SPACE)
    return [
        *("--env-kwargs", TINY_JSON, "--hyperparams", "n_envs=2", "normalize=false", "--search-space", str(space)),
        *("--timesteps", "256", "--eval-freq", "128", "--eval-episodes", "2", "--out", str(out), *extra),
    ]


@pytest.mark.ray
@pytest.mark.slow
def test_an_asha_sweep_writes_run_folders_and_a_best_yml_that_train_agent_reads(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sweep"
    argv = sweep_argv(tmp_path, out, "--num-samples", "4", "--grace-period", "64", "--reduction-factor", "2", "--max-concurrent", "2")
    assert tune_agent.main(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("done: 4 trials of ppo on dus_env/Synthetic-v0") and f"--hyperparams {out / 'best.yml'}" in summary

    rows = list(csv.DictReader((out / "trials.csv").read_text().splitlines()))
    assert len(rows) == 4 and {row["status"] for row in rows} <= {"completed", "stopped"}
    assert any(row["status"] == "completed" for row in rows)
    for row in rows:
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == out / "trials" and is_run_folder(run_dir)  # stopped ones too
        config = yaml.safe_load((run_dir / "config.yml").read_text())
        assert config["eval"]["seed"] == SWEEP_EVAL_SEEDS.start and config["seed"] == 0 and config["vec"] == "native"
        assert config["hyperparams"]["learning_rate"] == float(row["learning_rate"]) and config["hyperparams"]["batch_size"] == 16
        assert config["hyperparams"]["n_steps"] == int(row["n_steps"]) and config["hyperparams"]["policy_kwargs"] == json.loads(
            row["policy_kwargs"]
        )
        evaluations = np.load(run_dir / "eval" / "evaluations.npz")
        assert evaluations["timesteps"][-1] == int(row["steps"])
        assert float(row["last_eval_return"]) == pytest.approx(evaluations["results"][-1].mean())  # the return, not test accuracy
        assert (run_dir / "final_model.zip").is_file() == (row["status"] == "completed")
    assert not (tmp_path / "ray_results").exists() and (out / "ray_tune").is_dir()

    best_name = summary.split("; best ")[1].split(":")[0]
    best_row = next(row for row in rows if row["trial"] == best_name)
    entry = yaml.safe_load((out / "best.yml").read_text())["dus_env/Synthetic-v0"]
    assert entry == yaml.safe_load((Path(best_row["run_dir"]) / "config.yml").read_text())["hyperparams"]
    assert entry["n_timesteps"] == 256 and entry["policy"] == "MlpPolicy"

    run_dir = tmp_path / "from_best"
    train = ["--env-kwargs", TINY_JSON, "--hyperparams", str(out / "best.yml"), "--timesteps", "32", "--run-dir", str(run_dir)]
    assert train_agent.main([*train, "--eval-freq", "0", "--eval-episodes", "1", "--checkpoint-freq", "0", "--no-progress"]) == 0
    trained = yaml.safe_load((run_dir / "config.yml").read_text())["hyperparams"]
    assert {key: trained[key] for key in ("learning_rate", "n_steps", "policy_kwargs", "batch_size", "n_envs")} == {
        key: entry[key] for key in ("learning_rate", "n_steps", "policy_kwargs", "batch_size", "n_envs")
    }
    assert trained["n_timesteps"] == 32  # --timesteps wins over the file's budget
    release_locks()


@pytest.mark.ray
@pytest.mark.slow
def test_an_optuna_sweep_without_early_stopping_trains_every_trial(local_ray: None, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    assert tune_agent.main(sweep_argv(tmp_path, out, "--num-samples", "2", "--search", "optuna", "--scheduler", "none")) == 0
    rows = list(csv.DictReader((out / "trials.csv").read_text().splitlines()))
    assert [row["status"] for row in rows] == ["completed", "completed"] and all(row["steps"] == "256" for row in rows)
    assert "dus_env/Synthetic-v0" in yaml.safe_load((out / "best.yml").read_text())
    assert yaml.safe_load((out / "sweep.yml").read_text())["plan"]["search"] == "optuna"


def test_help_says_hyperparams_takes_files_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        tune_agent.parse_args(["--help"])
    assert "--hyperparams KEY=VALUE|FILE" in capsys.readouterr().out

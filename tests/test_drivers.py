"""The drivers' command lines: tyro parsing, the one user-error class, console entry points, env id
forms, run folders that never collide, resume refusing changed settings, algorithms refused with
their reason, announced step rounding, and "n/a" statistics with too few seeds."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pytest
import yaml

import dus_env
from agents import errors, runs
from agents.errors import UsageError
from agents.runs import resolve_run, start_run
from dus_env.registration import ENV_IDS, resolve_env_id

REPO = Path(__file__).resolve().parents[1]
TINY = [f"{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}" for key, value in dus_env.TINY_OVERRIDES.items()]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"driver_{name}", REPO / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the script's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def start(options: object, given: set[str] | None = None) -> runs.RunStart | None:
    """:func:`start_run`, then release the folder's lock: one test process starts several runs in one folder."""
    from agents import folder_lock

    try:
        return start_run(options, given)
    finally:
        for handle in folder_lock._held:
            handle.close()
        folder_lock._held.clear()


@pytest.fixture(scope="module")
def train_agent() -> ModuleType:
    return load_script("train_agent")


@pytest.fixture(scope="module")
def evaluate() -> ModuleType:
    return load_script("evaluate")


# -- tyro parsing ---------------------------------------------------------------------------------------


def test_every_known_train_flag_parses(train_agent: ModuleType) -> None:
    args = train_agent.parse_args(
        [
            "--algo",
            "a2c",
            "--env",
            "MFeat-v0",
            "--env-kwargs",
            "a=1",
            "b.c=2",
            "--timesteps",
            "64",
            "--n-envs",
            "2",
            "--vec",
            "dummy",
            "--seed",
            "3",
            "--hyperparams",
            "n_steps=8",
            "gamma=0.9",
            "--run-dir",
            "r",
            "--tensorboard",
            "t",
            "--eval-freq",
            "7",
            "--eval-episodes",
            "2",
            "--eval-seed",
            "1000001",
            "--checkpoint-freq",
            "9",
            "--resume",
            "--no-progress",
        ]
    )
    assert (args.algo, args.env, args.env_kwargs, args.timesteps, args.n_envs, args.vec, args.seed) == (
        "a2c",
        "MFeat-v0",
        ["a=1", "b.c=2"],
        64,
        2,
        "dummy",
        3,
    )
    assert (args.hyperparams, args.run_dir, args.tensorboard, args.eval_freq, args.eval_episodes) == (
        ["n_steps=8", "gamma=0.9"],
        "r",
        "t",
        7,
        2,
    )
    assert (args.eval_seed, args.checkpoint_freq, args.resume, args.progress, args.export_only) == (1_000_001, 9, True, False, False)
    export = train_agent.parse_args(["--export-only", "--checkpoint", "128"])
    assert export.export_only and export.checkpoint == 128 and export.progress


def test_every_known_evaluate_flag_parses(evaluate: ModuleType) -> None:
    args = evaluate.parse_args(
        [
            "--agents",
            "uniform",
            "heuristic",
            "--envs",
            "Synthetic-v0",
            "--env-kwargs",
            "decision_steps=4",
            "learner.lr=0.1",
            "--seeds",
            "3",
            "--seed-offset",
            "10100",
            "--workers",
            "2",
            "--batch-size",
            "4",
            "--out",
            "o",
            "--resume",
            "--trusted-only",
            "--baseline",
            "heuristic",
            "--no-plots",
            "--no-progress",
        ]
    )
    assert (args.agents, args.envs, args.env_kwargs) == (
        ["uniform", "heuristic"],
        ["Synthetic-v0"],
        {"decision_steps": 4, "learner": {"lr": 0.1}},
    )
    assert (args.seeds, args.seed_offset, args.workers, args.batch_size, args.out) == (3, 10_100, 2, 4, "o")
    assert args.resume and args.trusted_only and args.baseline == "heuristic" and not args.plots and not args.progress


@pytest.mark.parametrize(
    ("driver", "argv"),
    [
        ("train_agent", ["--bogus"]),
        ("train_agent", ["--timesteps", "many"]),
        ("train_agent", ["--seed"]),
        ("evaluate", ["--bogus"]),
        ("evaluate", ["--seeds", "x"]),
        ("evaluate", ["--env-kwargs", "nokey"]),
    ],
)
def test_parsing_errors_exit_with_code_2(driver: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """tyro reports a malformed command line as argparse does: a message on stderr and exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        load_script(driver).main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err


def test_help_is_the_module_docstring_and_lists_only_working_algorithms(
    train_agent: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_agent.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "Train a sampling policy on a DUS environment" in out and "--no-progress" in out and "--env-kwargs" in out
    assert "trpo" in out and "sac" in out and "reinforce" in out
    assert "qrdqn" not in out and "recurrentppo" not in out and " dqn" not in out


def test_suite_values_are_type_checked_and_overridden(evaluate: ModuleType, tmp_path: Path) -> None:
    suites = tmp_path / "suites.yml"
    suites.write_text(
        "s:\n  seeds: 4\n  agents: [uniform]\n  env_kwargs: {learner: {hidden_sizes: [16]}}\nbad:\n  workers: two\n  agents: uniform\n"
    )
    args = evaluate.parse_args(["--suite=s", "--suites-file", str(suites), "--seeds", "2", "--env-kwargs", "learner.lr=0.1"])
    assert args.seeds == 2 and args.agents == ["uniform"] and args.env_kwargs == {"learner": {"hidden_sizes": [16], "lr": 0.1}}
    with pytest.raises(UsageError, match="option workers='two' is invalid: expected int"):
        evaluate.parse_args(["--suite", "bad", "--suites-file", str(suites)])


# -- one error class, entry points ---------------------------------------------------------------------


def test_one_user_error_class() -> None:
    import agents.benchmark
    import agents.sb3_agent
    import agents.specs

    assert runs.UsageError is errors.UsageError and issubclass(UsageError, ValueError)
    for module, old in (
        (agents.sb3_agent, "HyperparamsError"),
        (agents.specs, "AgentSpecError"),
        (agents.benchmark, "BenchmarkInputError"),
    ):
        assert not hasattr(module, old)
    with pytest.raises(UsageError):
        agents.specs.parse_spec("nope")


@pytest.mark.parametrize(
    ("command", "target", "title"),
    [
        ("dus-train", "train_agent:main", "Train a sampling policy"),
        ("dus-evaluate", "evaluate:main", "Benchmark sampling agents"),
        ("dus-tune", "tune_agent:main", "Sweep an algorithm's hyperparameters"),
    ],
)
def test_console_entry_points_are_the_scripts(command: str, target: str, title: str) -> None:
    (point,) = [point for point in entry_points(group="console_scripts") if point.name == command]
    assert point.value == target
    assert point.load().__module__ == target.split(":")[0]
    script = Path(sys.executable).parent / command
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and title in result.stdout and f"usage: {command}" in result.stdout


# -- env ids -------------------------------------------------------------------------------------------


def test_env_id_forms() -> None:
    assert resolve_env_id("Synthetic-v0") == resolve_env_id("dus_env/Synthetic-v0") == "dus_env/Synthetic-v0"
    assert all(resolve_env_id(env_id.split("/")[1]) == env_id for env_id in ENV_IDS)
    with pytest.raises(dus_env.ConfigError, match="unknown env id 'Synthetc-v0': did you mean dus_env/Synthetic-v0"):
        resolve_env_id("Synthetc-v0")
    with pytest.raises(dus_env.ConfigError, match="registered DUS envs are dus_env/Synthetic-v0"):
        resolve_env_id("CartPole-v1")


def test_both_drivers_take_the_short_id_and_record_the_full_one(train_agent: ModuleType, evaluate: ModuleType, tmp_path: Path) -> None:
    args = train_agent.parse_args(["--env", "Synthetic-v0", "--env-kwargs", *TINY, "--run-dir", str(tmp_path / "run")])
    start = start_run(args)
    assert start is not None and start.run.env_id == "dus_env/Synthetic-v0"
    assert yaml.safe_load((tmp_path / "run" / "config.yml").read_text())["env_id"] == "dus_env/Synthetic-v0"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["env_id"] == "dus_env/Synthetic-v0"
    from agents.benchmark import make_plan

    assert make_plan(["uniform"], ["Synthetic-v0"], {}, 1).env_ids == ("dus_env/Synthetic-v0",)


# -- run folders and resume ----------------------------------------------------------------------------


def test_run_folder_names(train_agent: ModuleType) -> None:
    def folder(*argv: str) -> Path:
        return runs.run_folder(train_agent.parse_args(list(argv)))

    assert folder() == folder("--timesteps", "999") == Path("runs/ppo_Synthetic-v0_0")  # the README's commands
    assert folder("--algo", "A2C", "--env", "MFeat-v0", "--seed", "2") == Path("runs/a2c_MFeat-v0_2")
    kv, as_json = folder("--env-kwargs", "decision_steps=40"), folder("--env-kwargs", '{"decision_steps": 40}')
    assert kv == as_json and kv.name.startswith("ppo_Synthetic-v0_0_") and len(kv.name.split("_")[-1]) == 8
    assert folder("--n-envs", "8") == folder("--hyperparams", "n_envs=8")
    assert folder("--hyperparams", "learning_rate=1e-4") == folder("--hyperparams", "learning_rate=0.0001")
    assert folder("--hyperparams", "learning_rate=1e-4", "--timesteps", "5") == folder("--hyperparams", "learning_rate=1e-4")
    names = {
        folder(),
        kv,
        folder("--env-kwargs", "decision_steps=41"),
        folder("--hyperparams", "learning_rate=1e-4"),
        folder("--n-envs", "8"),
        folder("--env-kwargs", "decision_steps=40", "--n-envs", "8"),
    }
    assert len(names) == 6
    # A value equal to the file's is no override; run options that differ from their defaults are.
    assert folder("--hyperparams", "learning_rate=3e-4") == folder("--n-envs", "64") == folder()
    other_runs = {folder("--eval-episodes", "3"), folder("--vec", "dummy"), folder("--checkpoint-freq", "100"), folder("--eval-seed", "7")}
    assert len(other_runs) == 4 and folder() not in other_runs


def test_runs_with_other_overrides_get_their_own_folders(train_agent: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same algo, env and seed, other overrides: a second run starts beside the first instead of failing."""
    monkeypatch.chdir(tmp_path)
    first = start(train_agent.parse_args(["--env-kwargs", *TINY]))
    assert first is not None
    (first.run.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    (first.run.checkpoint_dir / "rl_model_128_steps.zip").touch()  # the first run has trained
    second = start(train_agent.parse_args(["--env-kwargs", *TINY, "gap_penalty=0.5"]))
    assert second is not None and second.run.run_dir != first.run.run_dir
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == sorted([first.run.run_dir.name, second.run.run_dir.name])
    with pytest.raises(UsageError, match="already holds a run: pass --resume"):
        start(train_agent.parse_args(["--env-kwargs", *TINY]))


def test_resume_finds_the_folder_and_refuses_changed_settings(
    train_agent: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    started = start(train_agent.parse_args(["--env-kwargs", *TINY, "--n-envs", "2"]))
    assert started is not None
    argv = ["--resume", "--env-kwargs", *TINY, "--n-envs", "2", "--timesteps", "512"]
    resumed = start(train_agent.parse_args(argv), train_agent.given_options(argv))
    assert resumed is not None and resumed.run.run_dir == started.run.run_dir and resumed.run.total_timesteps >= 512

    run_dir = str(started.run.run_dir)
    for changed, message in (
        (["--env-kwargs", *TINY, "decision_steps=3"], "--env-kwargs gives"),
        (["--hyperparams", "learning_rate=0.5"], "--hyperparams learning_rate=0.5 differs from the run's learning_rate="),
        (["--n-envs", "4"], "--n-envs=4 differs from the run's n_envs=2"),
        (["--vec", "dummy"], "--vec gives 'dummy', the run has 'native'"),
        (["--seed", "5"], "--seed gives 5, the run has 0"),
        (["--algo", "a2c"], "--algo gives 'a2c', the run has 'ppo'"),
        (["--eval-seed", "1000007"], "--eval-seed gives 1000007"),
        (["--hyperparams", "n_timesteps=100000"], "is not how a resumed run gets more steps: pass --timesteps 100000"),
    ):
        argv = ["--resume", "--run-dir", run_dir, *changed]
        with pytest.raises(UsageError, match="--resume cannot change the settings of") as error:
            start(train_agent.parse_args(argv), train_agent.given_options(argv))
        assert message in str(error.value) and "Only --timesteps may change" in str(error.value)
    # Options left at their defaults are not compared: the run's own values hold.
    argv = ["--resume", "--run-dir", run_dir, "--timesteps", "256"]
    assert start(train_agent.parse_args(argv), train_agent.given_options(argv)) is not None


def test_resume_of_a_missing_folder_names_the_runs_there(
    train_agent: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert start(train_agent.parse_args(["--env-kwargs", *TINY])) is not None
    assert train_agent.main(["--resume"]) == train_agent.EXIT_USAGE
    err = capsys.readouterr().err
    assert "nothing to resume in runs/ppo_Synthetic-v0_0:" in err and "runs there: runs/ppo_Synthetic-v0_0_" in err


# -- algorithms and step counts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algo", "reason"),
    [
        ("dqn", "DQN needs a discrete action space; DUS envs have a continuous Box action space"),
        ("qrdqn", "QRDQN needs a discrete action space"),
        ("recurrentppo", "recurrent (LSTM) policy, and the exported policy that dus_env's DUSSampler runs is feed-forward"),
        ("ppo_lstm", "recurrent (LSTM) policy"),
    ],
)
def test_unusable_algorithms_are_refused_before_anything_is_written(
    algo: str, reason: str, train_agent: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_agent.main(["--algo", algo, "--run-dir", str(tmp_path / "run")]) == train_agent.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and reason in err and "algorithms that work: ppo, a2c, reinforce" in err
    assert not (tmp_path / "run").exists()
    assert algo not in runs.usable_algorithms()


def test_a_rounded_step_budget_is_announced_and_recorded(
    train_agent: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = train_agent.parse_args(
        ["--algo", "trpo", "--timesteps", "1024", "--n-envs", "2", "--env-kwargs", *TINY, "--run-dir", str(tmp_path / "run")]
    )
    start = start_run(args)
    out = capsys.readouterr().out
    assert start is not None and start.run.total_timesteps == 4096
    assert "note: 1,024 steps requested, 4,096 will be trained: TRPO trains whole rollouts of n_steps * n_envs = 2048 * 2" in out
    config = yaml.safe_load((tmp_path / "run" / "config.yml").read_text())
    assert config["total_timesteps"] == config["hyperparams"]["n_timesteps"] == 4096
    exact = resolve_run(
        train_agent.parse_args(
            [
                "--algo",
                "a2c",
                "--n-envs",
                "1",
                "--hyperparams",
                "n_steps=8",
                "--timesteps",
                "640",
                "--env-kwargs",
                *TINY,
                "--run-dir",
                str(tmp_path / "b"),
            ]
        )
    )
    assert exact.total_timesteps == 640 and "note:" not in capsys.readouterr().out


def test_dus_r_rounds_to_whole_batches_of_episodes_and_says_so(
    train_agent: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decision_steps = dus_env.TINY_OVERRIDES["decision_steps"]
    args = train_agent.parse_args(
        [
            "--algo",
            "reinforce",
            "--timesteps",
            "100",
            "--n-envs",
            "4",
            "--hyperparams",
            "episodes_per_batch=8",
            "group_size=4",
            "--env-kwargs",
            *TINY,
            "--run-dir",
            str(tmp_path / "run"),
        ]
    )
    run = resolve_run(args)
    batch = 8 * decision_steps
    assert run.total_timesteps == -(-100 // batch) * batch
    out = capsys.readouterr().out
    assert f"episodes_per_batch * decision_steps = 8 * {decision_steps} steps" in out


# -- statistics ----------------------------------------------------------------------------------------


def test_two_seeds_get_no_p_value(evaluate: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--seeds 2``: a paired t-test on 2 pairs (here also of zero variance) is "n/a", never a star."""
    assert evaluate.main(["--suite", "smoke", "--seeds", "2", "--out", str(tmp_path / "out"), "--no-plots", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (versus,) = [s["versus_baseline"] for s in summary["results"]["dus_env/Synthetic-v0"] if s["versus_baseline"]]
    assert versus["t_pvalue"] is None or math.isnan(versus["t_pvalue"])
    assert versus["significant"] is False
    assert "p < 0.001" not in capsys.readouterr().out.split("paired difference")[-1].split("\n")[4]


def test_ars_rounds_to_whole_updates_of_candidate_episodes() -> None:
    trained, why = runs.trained_timesteps("ars", {"n_envs": 2, "n_timesteps": 50, "n_delta": 8}, decision_steps=4)
    assert trained == 128 and why is not None and "2 * n_delta = 16 candidates" in why  # 16 candidates x 1 episode x 4 steps x 2 envs


def test_suites_file_is_read_under_either_spelling(evaluate: ModuleType) -> None:
    for argv in (
        ["--suites_file", "x.yml"],
        ["--suites-file", "x.yml"],
        ["--suites_file=x.yml"],
        ["--suites-file=y.yml", "--suites_file", "x.yml"],
    ):
        assert evaluate._option_value(argv, "--suites-file") == "x.yml"
    assert evaluate.SUITES_FILE.is_file() and evaluate.SUITES_FILE.parent.name == "agents"  # shipped inside the package

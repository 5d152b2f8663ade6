"""train_agent.py: option parsing and checks (fast), and end-to-end runs as a subprocess (slow)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dus_env
from agents.callbacks import EvaluationLog, next_multiple, record_info_scalars, save_sb3_checkpoint, sb3_checkpoint_names
from agents.manifest import load_manifest
from agents.run_files import SB3_CHECKPOINT_PREFIX
from agents.runs import RunStart, UsageError, parse_env_kwargs, resolve_run
from agents.sb3_agent import SB3Agent
from agents.seed_ranges import TRAIN_EVAL_SEEDS
from agents.training import RESUME_SEED_BASE, RESUME_SEED_SPAN, resume_seed, train_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_agent  # noqa: E402

TINY_JSON = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in dus_env.TINY_OVERRIDES.items()}, default=list)
FAST_EVAL = ["--eval-freq", "128", "--eval-episodes", "2", "--checkpoint-freq", "128", "--no-progress"]


def tiny_env() -> gym.Env:
    return gym.make("dus_env/Synthetic-v0", **dus_env.TINY_OVERRIDES)


# -- fast: options and checks ---------------------------------------------------------------------------


def test_defaults_train_ppo_on_synthetic() -> None:
    args = train_agent.parse_args([])
    assert (args.algo, args.env, args.seed, args.resume, args.hyperparams) == ("ppo", "dus_env/Synthetic-v0", 0, False, [])
    run = resolve_run(args)
    assert run.run_dir == Path("runs/ppo_Synthetic-v0_0")
    assert run.tensorboard_dir == Path("runs/ppo_Synthetic-v0_0/tb")
    assert (run.n_envs, run.vec) == (64, "native")
    # the file's budget, rounded up to whole PPO rollouts (n_steps * n_envs), as SB3 trains it
    rollout = run.hyperparams["n_steps"] * run.n_envs
    assert run.total_timesteps % rollout == 0 and 0 <= run.total_timesteps - 30_000 < rollout
    assert run.hyperparams["normalize"] == {"norm_obs": True, "norm_reward": True}


def test_options_reach_the_run(tmp_path: Path) -> None:
    args = train_agent.parse_args(
        [
            "--algo",
            "A2C",
            "--seed",
            "3",
            "--n-envs",
            "1",
            "--timesteps",
            "640",
            "--run-dir",
            str(tmp_path / "r"),
            "--env-kwargs",
            "decision_steps=6",
            "learner={hidden_sizes: [8]}",
            "--hyperparams",
            "n_steps=8",
            "normalize=false",
        ]
    )
    run = resolve_run(args)
    assert (run.algo, run.seed, run.n_envs, run.total_timesteps) == ("a2c", 3, 1, 640)
    assert run.env_kwargs == {"decision_steps": 6, "learner": {"hidden_sizes": [8]}}
    assert run.env_config.decision_steps == 6 and run.env_config.learner.hidden_sizes == (8,)
    assert run.hyperparams["n_steps"] == 8 and run.hyperparams["normalize"] is False
    config = yaml.safe_load(yaml.safe_dump(run.to_config()))
    assert config["hyperparams"]["n_timesteps"] == 640 and config["tensorboard_dir"] == "tb"
    assert config["layout"]["version"] == dus_env.LAYOUT_VERSION and "stable-baselines3" in config["versions"]


def test_env_kwargs_accept_json_or_key_values() -> None:
    assert parse_env_kwargs(['{"decision_steps": 4, "learner": {"hidden_sizes": [16]}}']) == {
        "decision_steps": 4,
        "learner": {"hidden_sizes": [16]},
    }
    assert parse_env_kwargs(["decision_steps=4", "gap_penalty=0.5"]) == {"decision_steps": 4, "gap_penalty": 0.5}
    with pytest.raises(UsageError, match="not valid JSON"):
        parse_env_kwargs(["{decision_steps: 4"])
    with pytest.raises(UsageError, match="expected key=value"):
        parse_env_kwargs(["decision_steps"])
    # the same syntax as evaluate.py: YAML values, dotted keys for nested fields
    assert parse_env_kwargs(["learner.hidden_sizes=[16]", "lr=3e-4", "path=my file.npz"]) == {
        "learner": {"hidden_sizes": [16]},
        "lr": 3e-4,
        "path": "my file.npz",
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algo", "ppo3"], "--algo 'ppo3' is unknown: did you mean 'ppo'? choose one of ppo, a2c, reinforce,"),
        (["--algo", "dqn"], "DQN needs a discrete action space; DUS envs have a continuous Box action space"),
        (["--algo", "qrdqn"], "QRDQN needs a discrete action space"),
        (["--algo", "recurrentppo"], "RecurrentPPO has a recurrent (LSTM) policy"),
        (["--env", "dus_env/Nope-v0"], "unknown env id 'dus_env/Nope-v0': registered DUS envs are dus_env/Synthetic-v0"),
        (["--env", "Synthetc-v0"], "unknown env id 'Synthetc-v0': did you mean dus_env/Synthetic-v0"),
        (["--env", "CartPole-v1"], "unknown env id 'CartPole-v1'"),
        (["--env-kwargs", "decision_steps=0"], "EnvConfig.decision_steps=0 is invalid"),
        (["--env-kwargs", "decison_steps=3"], "unknown option 'decison_steps'"),
        (["--hyperparams", "n_step=3"], "unknown hyperparameter 'n_step' for PPO: did you mean 'n_steps'"),
        (["--hyperparams", "normalize={clip: 3}"], "unknown hyperparameter 'clip' for normalize"),
        (
            ["--algo", "reinforce", "--hyperparams", "learning_rat=0.1"],
            "unknown hyperparameter 'learning_rat' for Reinforce: did you mean 'learning_rate'",
        ),
        (["--algo", "reinforce", "--n-envs", "3"], "Reinforce.episodes_per_batch=16 is invalid: it must be a multiple of n_envs=3"),
        (["--algo", "reinforce", "--hyperparams", "group_size=1"], "Reinforce.group_size=1 is invalid"),
        (["--algo", "reinforce", "--hyperparams", "policy_kwargs=dict(net_arch=[0])"], "Reinforce.policy_kwargs.net_arch=0 is invalid"),
        (["--timesteps", "0"], "n_timesteps=0 is invalid"),
        (["--eval-episodes", "0"], "--eval-episodes=0 is invalid"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_agent.main([*argv, "--run-dir", str(tmp_path / "run")]) == train_agent.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started


def newest_recorded_checkpoint(run_dir: Path) -> int | None:
    """Steps of the newest checkpoint the run's manifest lists (the only ones ``--resume`` trusts)."""
    manifest = load_manifest(run_dir) if run_dir.is_dir() else None
    return max(manifest.checkpoints, default=None) if manifest is not None else None


def test_an_existing_run_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "rl_model_128_steps.zip").touch()
    assert train_agent.main(["--run-dir", str(tmp_path / "run"), "--env-kwargs", TINY_JSON]) == train_agent.EXIT_USAGE
    assert "already holds a run: pass --resume" in capsys.readouterr().err
    assert train_agent.main(["--resume", "--run-dir", str(tmp_path / "none")]) == train_agent.EXIT_USAGE
    assert "nothing to resume" in capsys.readouterr().err


def test_checkpoints_are_written_under_the_names_the_loaders_look_for() -> None:
    assert sb3_checkpoint_names(512) == (f"{SB3_CHECKPOINT_PREFIX}_512_steps.zip", f"{SB3_CHECKPOINT_PREFIX}_vecnormalize_512_steps.pkl")


class RecordingLogger:
    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def record_mean(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)


def test_info_scalars_per_step_and_at_episode_end() -> None:
    env = tiny_env()
    _, first = env.reset(seed=0)
    infos = [first]
    done = False
    while not done:
        _, _, done, _, info = env.step(np.array([0.5, -0.5], dtype=np.float32))
        infos.append(info)
    logger = RecordingLogger()
    record_info_scalars(logger, infos[:2])
    assert {"dus/quantity_m0", "dus/quantity_m1", "dus/cumulative_score_m1", "dus/val_accuracy_m0", "dus/val_fused_accuracy"} <= set(
        logger.values
    )
    assert not any(key.startswith("dus/episode") for key in logger.values)
    assert logger.values["dus/quantity_m0"][1] > logger.values["dus/quantity_m1"][1]
    record_info_scalars(logger, infos[-1:])
    assert logger.values["dus/episode_test_accuracy"] == [infos[-1]["test_fused_accuracy"]]
    assert {"dus/episode_test_accuracy_m0", "dus/episode_test_accuracy_m1", "dus/episode_modality_gap"} <= set(logger.values)
    assert logger.values["dus/episode_share_m0"][0] + logger.values["dus/episode_share_m1"][0] == pytest.approx(1.0)


def test_evaluation_log_tracks_the_best_and_survives_a_restart(tmp_path: Path) -> None:
    log = EvaluationLog(tmp_path / "eval" / "evaluations.npz")
    assert log.add(100, [0.1, 0.3], [4, 4], [0.5, 0.6])
    assert not log.add(200, [0.1, 0.1], [4, 4], [0.5, 0.5])
    reloaded = EvaluationLog(tmp_path / "eval" / "evaluations.npz")
    assert reloaded.timesteps == [100, 200] and reloaded.best_mean_return == pytest.approx(0.2)
    assert reloaded.add(300, [0.4, 0.4], [4, 4], [0.7, 0.7])
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["evaluations.npz"]


def test_resume_seed_is_reproducible_and_clear_of_every_evaluation_seed() -> None:
    # A2C's 2 envs x 20 steps land checkpoints on 10000 and 20000, where evaluate.py's seeds start.
    steps = [40, 10_000, 20_000, 1_000_000, 30_000]
    seeds = {(run_seed, done): resume_seed(run_seed, done) for run_seed in (0, 1, 10_000) for done in steps}
    assert all(RESUME_SEED_BASE <= seed < RESUME_SEED_BASE + RESUME_SEED_SPAN for seed in seeds.values())
    assert RESUME_SEED_BASE > 1_000_000 + 10_000 and RESUME_SEED_BASE + RESUME_SEED_SPAN + 1024 < 2**32
    assert len(set(seeds.values())) == len(seeds)  # every run and checkpoint gets its own episodes
    assert all(resume_seed(*key) == seed for key, seed in seeds.items())


def test_a_resumed_sb3_run_never_trains_on_evaluation_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = resolve_run(
        train_agent.parse_args(
            [
                "--algo",
                "a2c",
                "--n-envs",
                "1",
                "--vec",
                "dummy",
                "--timesteps",
                "10008",
                "--run-dir",
                str(tmp_path / "run"),
                "--env-kwargs",
                TINY_JSON,
                "--hyperparams",
                "n_steps=8",
                "normalize=false",
                "--eval-freq",
                "0",
                "--checkpoint-freq",
                "0",
            ]
        )
    )
    model = A2C("MlpPolicy", DummyVecEnv([tiny_env]), n_steps=8, device="cpu")
    model.num_timesteps = 10_000
    save_sb3_checkpoint(model, run.run_dir, 10_000)
    reset_seeds: list[int | None] = []
    original_reset = dus_env.DUSEnv.reset

    def recording_reset(self: dus_env.DUSEnv, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        reset_seeds.append(seed)
        return original_reset(self, seed=seed, options=options)

    monkeypatch.setattr(dus_env.DUSEnv, "reset", recording_reset)
    trained, interrupted = train_model(RunStart(run, [10_000]), progress=False)
    assert not interrupted and trained.num_timesteps == 10_008
    assert [seed for seed in reset_seeds if seed is not None and seed not in TRAIN_EVAL_SEEDS] == [resume_seed(run.seed, 10_000)]
    # --eval-freq 0: one evaluation, at the end, on the evaluation seeds only.
    assert [seed for seed in reset_seeds if seed in TRAIN_EVAL_SEEDS] == list(run.eval_seeds)


def test_next_multiple_is_when_the_next_checkpoint_or_evaluation_is_due() -> None:
    assert [next_multiple(done, 128) for done in (0, 127, 128, 300)] == [128, 128, 256, 384]
    assert next_multiple(500, 0) is None


# -- slow: whole runs as a user would start them ------------------------------------------------------------


def run_cli(*argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "train_agent.py"), *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def scalar_tags(tb_dir: Path) -> set[str]:
    events = EventAccumulator(str(tb_dir))
    events.Reload()
    return set(events.Tags()["scalars"])


def check_finished_run(run_dir: Path, result: subprocess.CompletedProcess[str], model_file: str) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("done: ") and "final policy test accuracy" in summary and str(run_dir) in summary
    assert (run_dir / model_file).is_file()
    assert (run_dir / "exported").is_dir() and any((run_dir / "exported").iterdir())
    assert any((run_dir / "best_model").iterdir())
    evaluations = np.load(run_dir / "eval" / "evaluations.npz")
    assert evaluations["timesteps"].tolist()[:2] == [128, 256] and evaluations["test_accuracies"].shape[1] == 2
    assert not list(run_dir.rglob("*.tmp"))
    return yaml.safe_load((run_dir / "config.yml").read_text())


@pytest.mark.slow
def test_ppo_run_writes_everything_and_is_reproducible(tmp_path: Path) -> None:
    run_dir = tmp_path / "ppo"
    argv = ["--timesteps", "384", "--n-envs", "2", "--env-kwargs", TINY_JSON, "--hyperparams", "n_steps=32", "batch_size=32", *FAST_EVAL]
    result = run_cli("--run-dir", str(run_dir), *argv, cwd=tmp_path)
    config = check_finished_run(run_dir, result, "final_model.zip")
    again = run_cli("--run-dir", str(tmp_path / "again"), *argv, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    first, second = (PPO.load(d / "final_model.zip", device="cpu").policy.state_dict() for d in (run_dir, tmp_path / "again"))
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert config["algo"] == "ppo" and config["n_envs"] == 2 and config["env_config"]["decision_steps"] == 4
    assert (run_dir / "vecnormalize.pkl").is_file() and (run_dir / "best_model" / "vecnormalize.pkl").is_file()
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert "rl_model_384_steps.zip" in checkpoints and "rl_model_vecnormalize_384_steps.pkl" in checkpoints
    tags = scalar_tags(run_dir / "tb" / "PPO_0")
    assert {
        "dus/quantity_m0",
        "dus/episode_test_accuracy",
        "dus/episode_modality_gap",
        "train/value_loss",
        "eval/mean_reward",
        "eval/test_fused_accuracy",
    } <= tags
    agent = SB3Agent.load(run_dir, tiny_env())
    action = agent.act(tiny_env().reset(seed=0)[0])
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)


@pytest.mark.slow
def test_a2c_run_in_one_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "a2c"
    result = run_cli(
        "--algo",
        "a2c",
        "--n-envs",
        "1",
        "--run-dir",
        str(run_dir),
        "--timesteps",
        "256",
        "--env-kwargs",
        TINY_JSON,
        "--hyperparams",
        "n_steps=8",
        *FAST_EVAL,
        cwd=tmp_path,
    )
    config = check_finished_run(run_dir, result, "final_model.zip")
    assert config["algo"] == "a2c" and config["hyperparams"]["n_steps"] == 8
    # The algorithm's own scalars too, though A2C's default log_interval (100 updates) is never reached here.
    assert {"dus/val_fused_accuracy", "train/value_loss", "rollout/ep_rew_mean", "time/fps"} <= scalar_tags(run_dir / "tb" / "A2C_0")


@pytest.mark.slow
def test_reinforce_run_and_extension(tmp_path: Path) -> None:
    run_dir = tmp_path / "reinforce"
    tiny = [
        "--n-envs",
        "2",
        "--env-kwargs",
        TINY_JSON,
        "--hyperparams",
        "policy_kwargs=dict(net_arch=[16])",
        "episodes_per_batch=4",
        "group_size=2",
    ]
    result = run_cli("--algo", "reinforce", "--run-dir", str(run_dir), "--timesteps", "256", *tiny, *FAST_EVAL, cwd=tmp_path)
    check_finished_run(run_dir, result, "final_model.zip")
    assert SB3Agent.load(run_dir, tiny_env()).model.num_timesteps == 256
    assert (run_dir / "vecnormalize.pkl").is_file() and (run_dir / "checkpoints" / f"{SB3_CHECKPOINT_PREFIX}_128_steps.zip").is_file()
    tags = scalar_tags(run_dir / "tb" / "Reinforce_0")
    assert {"dus/quantity_m1", "dus/episode_test_accuracy", "train/loss", "rollout/ep_rew_mean", "eval/test_fused_accuracy"} <= tags
    # --resume with a larger total continues from the last checkpoint.
    more = run_cli("--resume", "--run-dir", str(run_dir), "--timesteps", "384", "--no-progress", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert "resuming" in more.stdout and "384 steps" in more.stdout.splitlines()[-1]
    assert SB3Agent.load(run_dir, tiny_env()).model.num_timesteps == 384
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert config["total_timesteps"] == 384 and config["resumes"][0]["from_timesteps"] == 256
    assert np.load(run_dir / "eval" / "evaluations.npz")["timesteps"].tolist() == [128, 256, 384]


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path: Path) -> None:
    run_dir = tmp_path / "interrupted"
    argv = [
        sys.executable,
        str(ROOT / "train_agent.py"),
        "--run-dir",
        str(run_dir),
        "--timesteps",
        "100000",
        "--n-envs",
        "2",
        "--env-kwargs",
        TINY_JSON,
        "--hyperparams",
        "n_steps=32",
        "batch_size=32",
        *FAST_EVAL,
    ]
    process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while newest_recorded_checkpoint(run_dir) is None and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == train_agent.EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    assert f"Resume with: python train_agent.py --resume --run-dir {run_dir}" in out
    done = newest_recorded_checkpoint(run_dir)
    assert done is not None and done % 64 == 0  # taken between updates (rollouts of 32 steps x 2 envs)
    assert f"checkpoint saved at {done:,} of 100,032 steps" in out
    assert (run_dir / "checkpoints" / f"rl_model_vecnormalize_{done}_steps.pkl").is_file()
    assert not (run_dir / "final_model.zip").exists()

    total = done + 128
    result = run_cli("--resume", "--run-dir", str(run_dir), "--timesteps", str(total), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming {run_dir} at {done:,} of {total:,} steps" in result.stdout
    assert f"{total:,} steps" in result.stdout.splitlines()[-1]
    assert (run_dir / "final_model.zip").is_file() and newest_recorded_checkpoint(run_dir) == total
    assert SB3Agent.load(run_dir, tiny_env()).model.num_timesteps == total


@pytest.mark.slow
def test_bad_input_from_the_command_line_has_no_traceback(tmp_path: Path) -> None:
    result = run_cli("--algo", "nope", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --algo 'nope' is unknown") and result.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()

"""``train_agent.py --backend rllib`` input checks and the SB3-to-RLlib PPO translation: no Ray needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import train_agent
from agents.errors import UsageError
from agents.rllib_config import rllib_ppo_settings
from agents.runs import default_run_dir, run_folder
from agents.sb3_agent import load_hyperparams

ROOT = Path(__file__).resolve().parents[1]


def test_missing_extra_is_one_line_naming_the_install_command(tmp_path: Path) -> None:
    """Without Ray (hidden from the import system here, so the test holds whether or not it is installed)."""
    script = (
        "import sys; sys.modules['ray'] = None; sys.path.insert(0, sys.argv[1]); import train_agent; "
        "sys.exit(train_agent.main(['--backend', 'rllib', '--run-dir', sys.argv[2]]))"
    )
    result = subprocess.run([sys.executable, "-c", script, str(ROOT), str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert result.returncode == train_agent.EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'rllib' extra" in lines[0] and "pip install -c constraints.txt" in lines[0], result.stderr
    assert not (tmp_path / "run").exists()  # nothing written before the check


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "tf"], "--backend='tf' is invalid: expected one of sb3, rllib"),
        (["--backend", "rllib", "--algo", "a2c"], "--backend rllib trains ppo only"),
        (["--num-env-runners", "2"], "--num-env-runners only goes with --backend rllib"),
        (["--address", "auto"], "--address only goes with --backend rllib"),
        (["--backend", "rllib", "--num-env-runners", "-1"], "--num-env-runners=-1 is invalid"),
        (["--backend", "rllib", "--num-env-runners", "3"], "n_envs=64 cannot be shared by 3 env runners"),
        (["--backend", "rllib", "--hyperparams", "target_kl=0.01"], "cannot train PPO with hyperparameter(s) target_kl"),
        (["--backend", "rllib", "--hyperparams", "learning_rate=lin_3e-4"], "takes a number for learning_rate"),
        (
            ["--backend", "rllib", "--hyperparams", "policy_kwargs=dict(net_arch=dict(pi=[64], vf=[32]))"],
            "one size list for actor and critic",
        ),
    ],
)
def test_bad_rllib_options_are_refused_before_ray_starts(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checks come before Ray is needed: make the extra look installed whether or not it is.
    monkeypatch.setattr(train_agent, "require", lambda *args: None)
    assert train_agent.main([*argv, "--run-dir", str(tmp_path / "run")]) == train_agent.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_ppo_hyperparameters_translate_to_rllib() -> None:
    hyperparams = load_hyperparams("ppo", "dus_env/Synthetic-v0", {})
    settings, notes = rllib_ppo_settings(hyperparams, num_env_runners=2)
    assert settings["training"] == {
        "lr": 3e-4,
        "minibatch_size": 320,
        "num_epochs": 10,
        "gamma": 1.0,
        "lambda_": 0.95,
        "clip_param": 0.2,
        "entropy_coeff": 0.0,
        "grad_clip": 0.5,
        "train_batch_size_per_learner": 64 * 20,
        "use_kl_loss": False,
        "vf_clip_param": float("inf"),
    }
    assert settings["env_runners"] == {"num_env_runners": 2, "num_envs_per_env_runner": 32, "rollout_fragment_length": 20}
    assert settings["model"] == {"fcnet_hiddens": [64, 64], "vf_share_layers": False, "free_log_std": True, "fcnet_activation": "tanh"}
    assert settings["mean_std_filter"] is True
    assert any("log_std_init" in note for note in notes) and any("norm_reward" in note for note in notes)
    # 0 remote runners: the driver's own runner steps all envs.
    assert rllib_ppo_settings(hyperparams, num_env_runners=0)[0]["env_runners"]["num_envs_per_env_runner"] == 64
    with pytest.raises(UsageError, match="policy=.*must be MlpPolicy"):
        rllib_ppo_settings({**hyperparams, "policy": "CnnPolicy"}, 0)


def test_rllib_runs_have_their_own_folder() -> None:
    assert default_run_dir("ppo", "dus_env/Synthetic-v0", 0, backend="rllib") == Path("runs/ppo-rllib_Synthetic-v0_0")
    args = train_agent.Args(backend="rllib")
    assert run_folder(args) == Path("runs/ppo-rllib_Synthetic-v0_0")
    assert run_folder(train_agent.Args(backend="rllib", num_env_runners=2)) == Path("runs/ppo-rllib_Synthetic-v0_0")  # the default
    assert run_folder(train_agent.Args(backend="rllib", num_env_runners=4)).name.startswith("ppo-rllib_Synthetic-v0_0_")
    assert run_folder(train_agent.Args()) == Path("runs/ppo_Synthetic-v0_0")


def test_an_rllib_run_given_as_an_sb3_model_points_to_its_export(tmp_path: Path) -> None:
    import gymnasium as gym

    from agents.sb3_agent import SB3Agent

    (tmp_path / "config.yml").write_text("algo: ppo\nbackend: rllib\n")
    with pytest.raises(FileNotFoundError, match=r"is an RLlib run .* exported:.*exported"):
        SB3Agent.load(tmp_path, gym.make("dus_env/Synthetic-v0"))

"""Algorithms by name, hyperparameter files and overrides, and loading SB3 policies as agents."""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import dus_env
from agents.errors import UsageError
from agents.sb3_agent import (
    HYPERPARAMS_DIR,
    SB3Agent,
    check_hyperparam_keys,
    default_policy,
    get_algorithm_class,
    hyperparams_file,
    load_hyperparams,
    parse_key_values,
    parse_policy_kwargs,
    run_settings,
    sb3_constructor_kwargs,
    vec_normalize_kwargs,
)

TINY = {key: (list(v) if isinstance(v, tuple) else v) for key, v in dus_env.TINY_OVERRIDES.items()}


def tiny_env(env_id: str = "dus_env/Synthetic-v0") -> gym.Env:
    return gym.make(env_id, **dus_env.TINY_OVERRIDES)


# -- algorithms ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ppo", "PPO"),
        ("PPO", "PPO"),
        ("A2c", "A2C"),
        ("sac", "SAC"),
        ("tqc", "TQC"),
        ("TRPO", "TRPO"),
        ("ars", "ARS"),
        ("recurrentppo", "RecurrentPPO"),
        ("recurrent_ppo", "RecurrentPPO"),
        ("ppo_lstm", "RecurrentPPO"),
        ("crossq", "CrossQ"),
    ],
)
def test_get_algorithm_class_by_name(name: str, expected: str) -> None:
    assert get_algorithm_class(name).__name__ == expected


def test_get_algorithm_class_unknown_lists_available() -> None:
    with pytest.raises(ValueError, match="unknown algorithm 'ppo2'") as error:
        get_algorithm_class("ppo2")
    for name in ("ppo", "a2c", "sac", "td3", "tqc", "trpo", "recurrentppo"):
        assert name in str(error.value)


def test_default_policy_is_the_mlp_one() -> None:
    assert default_policy(PPO) == "MlpPolicy"
    assert default_policy(get_algorithm_class("recurrentppo")) == "MlpLstmPolicy"


# -- hyperparameter files -----------------------------------------------------------------------------


def test_ppo_file_default_is_tuned_for_many_native_envs() -> None:
    hp = load_hyperparams("ppo", "dus_env/Synthetic-v0")
    # Whole episodes per rollout (20 decisions) from many envs of the native vector env.
    assert hp["n_envs"] >= 32 and hp["n_steps"] == 20 and (hp["n_steps"] * hp["n_envs"]) % hp["batch_size"] == 0
    assert hp["gamma"] == 1.0 and hp["n_timesteps"] <= 50_000
    assert parse_policy_kwargs(hp["policy_kwargs"])["net_arch"] == [64, 64]


def test_env_entry_is_complete_and_overrides_win() -> None:
    hp = load_hyperparams("ppo", "dus_env/Synthetic3-v0", {"learning_rate": 1e-4})
    assert hp["n_timesteps"] == 40_000  # from the env entry
    assert hp["n_steps"] == 20  # the entry copies default (`<<: *default`), as the zoo needs
    assert hp["learning_rate"] == 1e-4  # override


def test_unknown_env_uses_the_default_entry() -> None:
    assert load_hyperparams("a2c", "dus_env/Features-v0")["n_steps"] == 5


def test_algorithm_without_file_uses_default_yml() -> None:
    assert hyperparams_file("sac") == HYPERPARAMS_DIR / "default.yml"
    hp = load_hyperparams("sac", "dus_env/Synthetic-v0")
    assert set(hp) == {"n_envs", "n_timesteps", "normalize", "policy", "policy_kwargs"}
    kwargs = sb3_constructor_kwargs(SAC, hp)
    assert kwargs["policy"] == "MlpPolicy" and kwargs["policy_kwargs"] == {"net_arch": [64, 64]}


# recurrentppo: default.yml names MlpPolicy (the zoo needs a policy), refused with the fix (tests/test_zoo.py).
@pytest.mark.parametrize("algo", ["ppo", "a2c", "sac", "td3", "tqc", "trpo", "ars"])
def test_shipped_files_give_valid_constructor_arguments(algo: str) -> None:
    hp = load_hyperparams(algo, "dus_env/Synthetic-v0")
    sb3_constructor_kwargs(get_algorithm_class(algo), hp)
    vec_normalize_kwargs(hp)
    assert run_settings(hp)[0] >= 1


def test_file_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "ppo.yml").write_text("dus_env/Other-v0: {n_steps: 8}\n")
    with pytest.raises(UsageError, match="neither a 'default' entry nor one for 'dus_env/Synthetic-v0'"):
        load_hyperparams("ppo", "dus_env/Synthetic-v0", directory=tmp_path)
    (tmp_path / "ppo.yml").write_text("default: [1, 2\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_hyperparams("ppo", "dus_env/Synthetic-v0", directory=tmp_path)
    (tmp_path / "ppo.yml").write_text("default: 3\n")
    with pytest.raises(UsageError, match="must map"):
        load_hyperparams("ppo", "dus_env/Synthetic-v0", directory=tmp_path)
    with pytest.raises(UsageError, match="no hyperparameter file"):
        load_hyperparams("a2c", "dus_env/Synthetic-v0", directory=tmp_path)


def test_parse_key_values_reads_yaml_values() -> None:
    values = parse_key_values(
        ["n_steps=64", "learning_rate=3e-4", "normalize=false", "policy_kwargs={net_arch: [32]}", "clip_range=lin_0.2"]
    )
    assert values == {
        "n_steps": 64,
        "learning_rate": 3e-4,
        "normalize": False,
        "policy_kwargs": {"net_arch": [32]},
        "clip_range": "lin_0.2",
    }
    with pytest.raises(UsageError, match="expected key=value"):
        parse_key_values(["n_steps"])
    with pytest.raises(UsageError, match="not valid YAML"):
        parse_key_values(["policy_kwargs={net_arch: [32}"])


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(UsageError, match="unknown hyperparameter 'n_step' for PPO: did you mean 'n_steps'"):
        sb3_constructor_kwargs(PPO, {"n_step": 64})
    # Set by train_agent.py from its options, not by the files.
    for key in ("seed", "env", "tensorboard_log"):
        with pytest.raises(UsageError, match=f"unknown hyperparameter '{key}'"):
            sb3_constructor_kwargs(PPO, {key: 1})
    check_hyperparam_keys({"a": 1}, {"a", "b"}, "x")


def test_constructor_kwargs_parse_policy_kwargs_and_schedules() -> None:
    kwargs = sb3_constructor_kwargs(
        PPO,
        {
            "n_envs": 2,
            "n_timesteps": 10,
            "normalize": True,
            "learning_rate": "lin_3e-4",
            "policy_kwargs": "dict(net_arch=dict(pi=[32], vf=[64]), activation_fn=nn.ReLU, log_std_init=-1)",
        },
    )
    assert set(kwargs) == {"policy", "learning_rate", "policy_kwargs"}
    assert kwargs["policy_kwargs"] == {"net_arch": {"pi": [32], "vf": [64]}, "activation_fn": torch.nn.ReLU, "log_std_init": -1}
    assert kwargs["learning_rate"](1.0) == pytest.approx(3e-4) and kwargs["learning_rate"](0.5) == pytest.approx(1.5e-4)
    with pytest.raises(UsageError, match="lin_<number>"):
        sb3_constructor_kwargs(PPO, {"learning_rate": "fast"})


def test_policy_kwargs_refuse_code() -> None:
    for text in ("__import__('os').system('true')", "dict(net_arch=open('x'))", "dict(activation_fn=os.system)", "dict(**x)"):
        with pytest.raises(UsageError):
            parse_policy_kwargs(text)
    assert parse_policy_kwargs({"activation_fn": "Tanh", "optimizer_class": "th.optim.SGD"}) == {
        "activation_fn": torch.nn.Tanh,
        "optimizer_class": torch.optim.SGD,
    }


def test_vec_normalize_kwargs() -> None:
    assert vec_normalize_kwargs({"normalize": False}) is None
    assert vec_normalize_kwargs({}) is None
    assert vec_normalize_kwargs({"normalize": True, "gamma": 1.0}) == {"gamma": 1.0}
    assert vec_normalize_kwargs({"normalize": {"norm_reward": False}}) == {"norm_reward": False}
    with pytest.raises(UsageError, match="norm_rewards"):
        vec_normalize_kwargs({"normalize": {"norm_rewards": False}})
    with pytest.raises(UsageError, match="expected true, false or a dict"):
        vec_normalize_kwargs({"normalize": "yes please"})


def test_run_settings() -> None:
    assert run_settings({"n_envs": 2, "n_timesteps": "1e5"}) == (2, 100_000)
    assert run_settings({"n_envs": 1, "n_timesteps": 2.0e4}) == (1, 20_000)
    with pytest.raises(UsageError, match="n_envs=0 is invalid"):
        run_settings({"n_envs": 0, "n_timesteps": 10})
    with pytest.raises(UsageError, match="'n_timesteps' is missing"):
        run_settings({"n_envs": 1})


# -- SB3Agent -----------------------------------------------------------------------------------------


def write_run(folder: Path, env_id: str, normalize: bool) -> tuple[PPO, VecNormalize | None]:
    """A run directory as train_agent.py leaves it, with an untrained PPO (no learning needed here)."""
    folder.mkdir(parents=True, exist_ok=True)
    venv = DummyVecEnv([lambda: tiny_env(env_id)])
    vec_normalize = None
    if normalize:
        vec_normalize = VecNormalize(venv)
        # Statistics far from identity, so that forgetting them would change the actions.
        vec_normalize.obs_rms.mean = np.full(vec_normalize.observation_space.shape, 0.3)
        vec_normalize.obs_rms.var = np.full(vec_normalize.observation_space.shape, 0.01)
        (folder / "vecnormalize.pkl").write_bytes(pickle.dumps(vec_normalize))
    model = PPO("MlpPolicy", vec_normalize or venv, n_steps=16, batch_size=16, seed=0, device="cpu")
    model.save(folder / "final_model.zip")
    layout = tiny_env(env_id).unwrapped.layout
    config = {"algo": "ppo", "hyperparams": {"normalize": normalize}, "layout": layout.to_dict()}
    (folder / "config.yml").write_text(yaml.safe_dump(config))
    return model, vec_normalize


def test_load_run_dir_normalises_with_saved_statistics(tmp_path: Path) -> None:
    model, vec_normalize = write_run(tmp_path / "run", "dus_env/Synthetic-v0", normalize=True)
    env = tiny_env()
    agent = SB3Agent.load(str(tmp_path / "run"), env)
    observation, _ = env.reset(seed=3)
    expected = model.predict(vec_normalize.normalize_obs(observation), deterministic=True)[0]
    raw = model.predict(observation, deterministic=True)[0]
    action = agent.act(observation)
    assert action.dtype == np.float32 and action.shape == (2,)
    np.testing.assert_allclose(action, expected, rtol=1e-6)
    assert not np.allclose(action, raw)
    assert agent.vec_normalize is not None and agent.vec_normalize.training is False


def test_load_zip_without_config_needs_algo(tmp_path: Path) -> None:
    write_run(tmp_path / "run", "dus_env/Synthetic-v0", normalize=False)
    (tmp_path / "run" / "config.yml").unlink()
    with pytest.raises(ValueError, match="pass algo"):
        SB3Agent.load(tmp_path / "run" / "final_model.zip", tiny_env())
    agent = SB3Agent.load(tmp_path / "run" / "final_model.zip", tiny_env(), algo="PPO")
    assert agent.vec_normalize is None


def test_load_checkpoint_finds_its_statistics(tmp_path: Path) -> None:
    write_run(tmp_path / "run", "dus_env/Synthetic-v0", normalize=True)
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir()
    (tmp_path / "run" / "final_model.zip").rename(checkpoints / "rl_model_256_steps.zip")
    (tmp_path / "run" / "vecnormalize.pkl").rename(checkpoints / "rl_model_vecnormalize_256_steps.pkl")
    agent = SB3Agent.load(checkpoints / "rl_model_256_steps.zip", tiny_env())
    assert agent.vec_normalize is not None


def test_load_refuses_missing_statistics_of_a_normalised_run(tmp_path: Path) -> None:
    write_run(tmp_path / "run", "dus_env/Synthetic-v0", normalize=True)
    (tmp_path / "run" / "vecnormalize.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="normalised observations"):
        SB3Agent.load(tmp_path / "run", tiny_env())


def test_load_errors_for_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model at"):
        SB3Agent.load(tmp_path / "nothing.zip", tiny_env(), algo="ppo")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="no final_model.zip"):
        SB3Agent.load(tmp_path / "empty_run", tiny_env(), algo="ppo")
    (tmp_path / "broken.zip").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot load .*broken.zip as a PPO model"):
        SB3Agent.load(tmp_path / "broken.zip", tiny_env(), algo="ppo")
    write_run(tmp_path / "run", "dus_env/Synthetic-v0", normalize=True)
    (tmp_path / "run" / "vecnormalize.pkl").write_bytes(b"\x80garbage")
    with pytest.raises(ValueError, match="corrupt"):
        SB3Agent.load(tmp_path / "run", tiny_env())
    with pytest.raises(ValueError, match="unknown algorithm"):
        SB3Agent.load(tmp_path / "run", tiny_env(), algo="nope")


def test_load_refuses_a_policy_for_another_number_of_modalities(tmp_path: Path) -> None:
    write_run(tmp_path / "run3", "dus_env/Synthetic3-v0", normalize=False)
    with pytest.raises(ValueError, match="trained on 3 modalities, the env has 2"):
        SB3Agent.load(tmp_path / "run3", tiny_env())
    (tmp_path / "run3" / "config.yml").unlink()  # the spaces alone must catch it too
    with pytest.raises(ValueError, match="trained on 3 modalities, the env has 2"):
        SB3Agent.load(tmp_path / "run3", tiny_env(), algo="ppo")


def test_the_agent_is_named_after_its_algorithm() -> None:
    # make_agent sets the display name of every agent; the constructor takes none.
    assert "name" not in inspect.signature(SB3Agent.__init__).parameters
    env = tiny_env()
    model = PPO("MlpPolicy", DummyVecEnv([tiny_env]), n_steps=16, batch_size=16, device="cpu")
    assert SB3Agent(env.unwrapped.layout, env.unwrapped.mapping, model).name == "ppo"


def test_load_refuses_another_algorithm(tmp_path: Path) -> None:
    write_run(tmp_path / "run", "dus_env/Synthetic-v0", normalize=False)
    with pytest.raises(ValueError, match="was trained with ppo, not a2c"):
        SB3Agent.load(tmp_path / "run", tiny_env(), algo="a2c")
    assert SB3Agent.load(tmp_path / "run", tiny_env(), algo="PPO").name == "ppo"
    # DUS-R is an SB3 algorithm too (agents.reinforce.Reinforce): the same check, by name.
    with pytest.raises(ValueError, match="was trained with ppo, not reinforce"):
        SB3Agent.load(tmp_path / "run", tiny_env(), algo="reinforce")

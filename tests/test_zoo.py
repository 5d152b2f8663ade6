"""rl-baselines3-zoo compatibility: the shipped hyperparameter files train through the zoo's own code,
and ``evaluate.py`` / ``SB3Agent.load`` read zoo runs with their normalisation and env kwargs.

The slow tests run ``rl_zoo3.train`` for every (file, algorithm, entry): a few hundred steps each,
in tiny envs (``--env-kwargs``: the env's size, not the entry's hyperparameters). One subprocess per
(file, algorithm) runs the zoo's ``train()`` once per entry with the command line a user types,
which spares the ~6 s import per run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import dus_env
from agents.errors import UsageError
from agents.sb3_agent import (
    HYPERPARAMS_DIR,
    SB3Agent,
    get_algorithm_class,
    load_hyperparams,
    run_settings,
    sb3_constructor_kwargs,
    vec_normalize_kwargs,
)
from agents.zoo_run import find_zoo_run, read_zoo_yaml
from dus_env.registration import ENV_IDS

ROOT = Path(__file__).resolve().parent.parent
#: The zoo files and the algorithms each serves (default.yml: any algorithm without its own file).
ZOO_FILES = {"ppo.yml": ("ppo",), "a2c.yml": ("a2c",), "default.yml": ("sac", "td3", "trpo")}
#: Keys the zoo cannot do without: ``n_timesteps`` (read even with ``-n``) and ``policy`` (a constructor argument).
ZOO_REQUIRED = ("n_timesteps", "policy")
#: The tiny env in the zoo's ``--env-kwargs`` syntax (each value is Python).
TINY_ZOO_KWARGS = [f"{key}:{dict(value) if isinstance(value, dict) else value!r}" for key, value in dus_env.TINY_OVERRIDES.items()]
TINY: dict[str, Any] = json.loads(json.dumps(dus_env.TINY_OVERRIDES, default=list))
#: Zoo options that only make the run short: its length, no in-training evaluation, a fixed seed.
SHORT = ["-n", "256", "--eval-freq", "-1", "--seed", "0", "--num-threads", "1", "--verbose", "0"]
#: Cost-only overrides, by algorithm. They leave the entry's completeness proven: the zoo refuses a
#: missing n_timesteps or policy whatever -params says. PPO's 64 envs x 20 steps would make one
#: rollout 1280 steps; 16 envs keep one whole 320-step minibatch. TRPO's n_steps is its own
#: default (2048 per env, not in the entry).
COST_OVERRIDES: dict[str, list[str]] = {"ppo": ["-params", "n_envs:16"], "trpo": ["-params", "n_steps:128"]}
DRIVER = """
import json, sys
from rl_zoo3.train import train
for argv in json.loads(sys.argv[1]):
    print("zoo run:", " ".join(argv), flush=True)
    sys.argv = ["rl_zoo3.train", *argv]
    train()
"""


def tiny_env() -> gym.Env:
    return gym.make("dus_env/Synthetic-v0", **TINY)


def zoo_entries(file: str) -> dict[str, dict[str, Any]]:
    return yaml.safe_load((HYPERPARAMS_DIR / file).read_text())


def env_for_entry(entries: dict[str, Any], entry: str, index: int = 0) -> str:
    """The env id that trains with ``entry``: its own id, or for ``default`` an id without an entry."""
    if entry != "default":
        return entry
    return [env_id for env_id in ENV_IDS if env_id not in entries and not env_id.endswith("Features-v0")][index]


def zoo_name(env_id: str) -> str:
    """The zoo's folder name for an env id (``huggingface_sb3.EnvironmentName``)."""
    return env_id.replace("/", "-")


def zoo_argv(algo: str, env_id: str, file: str, log: Path) -> list[str]:
    return [
        "--algo",
        algo,
        "--env",
        env_id,
        "--gym-packages",
        "dus_env",
        "-conf",
        str(HYPERPARAMS_DIR / file),
        "-f",
        str(log),
        *SHORT,
        "--env-kwargs",
        *TINY_ZOO_KWARGS,
        *COST_OVERRIDES.get(algo, []),
    ]


def run_zoo(runs: list[list[str]], cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(runs)], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"rl_zoo3.train failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


# -- the files, as the zoo and train_agent.py read them (fast) ----------------------------------------


@pytest.mark.parametrize("file", [*ZOO_FILES, "reinforce.yml"])
def test_every_entry_is_complete(file: str) -> None:
    entries = zoo_entries(file)
    assert "default" in entries
    for name, entry in entries.items():
        missing = [key for key in ("n_envs", "n_timesteps") if key not in entry]
        assert not missing, f"{file}: entry {name!r} lacks {missing}"
        if file != "reinforce.yml":
            assert all(key in entry for key in ZOO_REQUIRED), f"{file}: entry {name!r} lacks one of {ZOO_REQUIRED}"
            # The zoo turns a string schedule "lin_X" into a schedule and fails on any other string:
            # YAML 1.1 reads 3e-4 (no dot) as a string.
            assert not isinstance(entry.get("learning_rate"), str) or entry["learning_rate"].startswith("lin_")


@pytest.mark.parametrize(("file", "algo"), [(file, algo) for file, algos in ZOO_FILES.items() for algo in algos])
def test_train_agent_reads_each_entry_as_it_is(file: str, algo: str) -> None:
    entries = zoo_entries(file)
    for entry in entries:
        env_id = env_for_entry(entries, entry)
        hyperparams = load_hyperparams(algo, env_id)
        assert hyperparams == entries[entry]
        sb3_constructor_kwargs(get_algorithm_class(algo), hyperparams)
        assert vec_normalize_kwargs(hyperparams) is not None and run_settings(hyperparams)[0] >= 1


def test_env_entry_is_not_merged_over_default(tmp_path: Path) -> None:
    (tmp_path / "ppo.yml").write_text(
        "default: {n_envs: 2, n_timesteps: 64, n_steps: 8}\ndus_env/Synthetic3-v0: {n_envs: 4, n_timesteps: 128}\n"
    )
    assert load_hyperparams("ppo", "dus_env/Synthetic3-v0", directory=tmp_path) == {"n_envs": 4, "n_timesteps": 128}
    # The short form finds the same entry; an id without an entry gets `default`.
    assert load_hyperparams("ppo", "Synthetic3-v0", directory=tmp_path)["n_envs"] == 4
    assert load_hyperparams("ppo", "dus_env/MFeat-v0", {"n_steps": 16}, directory=tmp_path)["n_steps"] == 16


def test_zoo_value_forms_are_accepted_and_checked() -> None:
    assert vec_normalize_kwargs({"normalize": "dict(norm_obs=True, norm_reward=False)", "gamma": 0.9}) == {
        "norm_obs": True,
        "norm_reward": False,
        "gamma": 0.9,
    }
    with pytest.raises(UsageError, match="normalize=.*invalid.*print\\(1\\)..is not allowed"):
        vec_normalize_kwargs({"normalize": "dict(norm_obs=print(1))"})
    recurrent = get_algorithm_class("recurrentppo")
    expected = "policy='MlpPolicy' is not a RecurrentPPO policy: accepted are MlpLstmPolicy.*policy=MlpLstmPolicy"
    with pytest.raises(UsageError, match=expected):
        sb3_constructor_kwargs(recurrent, load_hyperparams("recurrentppo", "dus_env/Synthetic-v0"))
    assert sb3_constructor_kwargs(recurrent, {"policy": "MlpLstmPolicy"})["policy"] == "MlpLstmPolicy"


# -- zoo run folders, read by SB3Agent.load (fast: a model saved into the zoo's layout) ---------------


def normalizer(env_kwargs: dict[str, Any] | None, mean: float = 5.0) -> VecNormalize:
    """``VecNormalize`` of Synthetic-v0 with observation statistics ``mean`` and variance 100."""
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("dus_env/Synthetic-v0", **(env_kwargs or {}))]), norm_reward=False)
    stats_of_obs = venv.obs_rms
    assert isinstance(stats_of_obs, RunningMeanStd)
    stats_of_obs.mean[:] = mean
    stats_of_obs.var[:] = 100.0
    return venv


def write_zoo_run(
    log: Path, env_kwargs: dict[str, Any] | None, normalize: Any = "dict(norm_obs=True, norm_reward=False)", stats: bool = True
) -> Path:
    """A zoo run folder as ``rl_zoo3.train`` writes it, with an untrained PPO model (observations scaled by 100)."""
    env_id = "dus_env/Synthetic-v0"
    folder = log / "ppo" / f"{zoo_name(env_id)}_1"
    params = folder / zoo_name(env_id)
    params.mkdir(parents=True)
    venv = normalizer(env_kwargs)
    PPO("MlpPolicy", venv, n_steps=16, batch_size=16, seed=0).save(folder / f"{zoo_name(env_id)}.zip")
    if stats:
        venv.save(str(params / "vecnormalize.pkl"))
    (params / "config.yml").write_text(yaml.dump(OrderedDict([("n_timesteps", 256), ("normalize", normalize), ("policy", "MlpPolicy")])))
    (params / "args.yml").write_text(yaml.dump(OrderedDict([("algo", "ppo"), ("env", env_id), ("env_kwargs", env_kwargs)])))
    return folder


def test_zoo_yaml_is_read_without_running_code(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(yaml.dump(OrderedDict([("policy_kwargs", {"activation_fn": np.float32}), ("n_envs", 2)])))
    assert read_zoo_yaml(path) == {"policy_kwargs": {"activation_fn": "<python/name:numpy.float32>"}, "n_envs": 2}


@pytest.mark.parametrize("which", ["run folder", "model file"])
def test_load_zoo_run_applies_its_statistics(tmp_path: Path, which: str) -> None:
    folder = write_zoo_run(tmp_path, TINY)
    run = find_zoo_run(folder)
    assert run is not None and run.algo == "ppo" and run.env_kwargs == TINY
    env = tiny_env()
    agent = SB3Agent.load(folder if which == "run folder" else folder / "dus_env-Synthetic-v0.zip", env)
    assert agent.name == "ppo" and agent.vec_normalize is not None
    # Observations 15 with mean 5 and variance 100: 1 after normalisation.
    size = int(np.prod(env.observation_space.shape or (0,)))
    expected = agent.model.predict(np.ones(size, dtype=np.float32), deterministic=True)[0]
    assert np.allclose(agent.act(np.full(size, 15.0)), expected) and not np.allclose(
        expected, agent.model.predict(np.full(size, 15.0, dtype=np.float32), deterministic=True)[0]
    )


def test_load_zoo_checkpoint_prefers_its_own_statistics(tmp_path: Path) -> None:
    folder = write_zoo_run(tmp_path, TINY)
    shutil.copy(folder / "dus_env-Synthetic-v0.zip", folder / "rl_model_64_steps.zip")
    normalizer(TINY, mean=-1.0).save(str(folder / "rl_model_vecnormalize_64_steps.pkl"))
    for model, mean in (("rl_model_64_steps.zip", -1.0), ("dus_env-Synthetic-v0.zip", 5.0)):
        agent = SB3Agent.load(folder / model, tiny_env())
        assert agent.vec_normalize is not None and np.allclose(agent.vec_normalize.obs_rms.mean, mean)


def test_load_zoo_run_refuses_missing_statistics(tmp_path: Path) -> None:
    folder = write_zoo_run(tmp_path, TINY, stats=False)
    env = tiny_env()
    with pytest.raises(FileNotFoundError, match="normalised observations .*dus_env-Synthetic-v0/vecnormalize.pkl are missing"):
        SB3Agent.load(folder, env)


def test_load_zoo_run_without_observation_normalisation_needs_no_statistics(tmp_path: Path) -> None:
    folder = write_zoo_run(tmp_path, TINY, normalize={"norm_obs": False, "norm_reward": True}, stats=False)
    assert SB3Agent.load(folder, tiny_env()).vec_normalize is None


def test_load_zoo_run_reports_other_env_kwargs(tmp_path: Path) -> None:
    folder = write_zoo_run(tmp_path, {**TINY, "decision_steps": 6})
    env = tiny_env()
    with pytest.raises(ValueError, match="trained in another env \\(decision_steps: 6 in training, 4 here\\).*--env-kwargs"):
        SB3Agent.load(folder, env)
    # Settings the run did not set are free: a run without env kwargs loads in the tiny env.
    other = write_zoo_run(tmp_path / "other", None)
    assert SB3Agent.load(other, env).vec_normalize is not None


def test_load_zoo_log_folder_names_its_runs(tmp_path: Path) -> None:
    write_zoo_run(tmp_path, TINY)
    with pytest.raises(FileNotFoundError, match="folder of rl-baselines3-zoo runs, not one run: pass one of .*dus_env-Synthetic-v0_1"):
        SB3Agent.load(tmp_path / "ppo", tiny_env())


# -- the zoo's own training, enjoy, then evaluate.py (slow) -------------------------------------------


@pytest.fixture(scope="module")
def zoo_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One log folder for the module, so that the enjoy/evaluate test scores a run the training test wrote."""
    return tmp_path_factory.mktemp("zoo")


def zoo_train(log: Path, file: str, algo: str) -> dict[str, str]:
    """Train every entry of ``file`` with ``algo`` through the zoo (once per module); ``{entry: env id}``."""
    entries = zoo_entries(file)
    runs = {entry: env_for_entry(entries, entry, index) for index, entry in enumerate(entries)}
    if file == "default.yml":  # one entry: vary the env over the algorithms instead
        runs = {"default": ["dus_env/Synthetic-v0", "dus_env/Synthetic3-v0", "dus_env/SyntheticMFeatMix-v0"][ZOO_FILES[file].index(algo)]}
    if not all((log / "logs" / algo / f"{zoo_name(env_id)}_1").is_dir() for env_id in runs.values()):
        run_zoo([zoo_argv(algo, env_id, file, log / "logs") for env_id in runs.values()], cwd=log)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize(("file", "algo"), [(file, algo) for file, algos in ZOO_FILES.items() for algo in algos])
def test_zoo_trains_every_entry(zoo_logs: Path, file: str, algo: str) -> None:
    entries = zoo_entries(file)
    runs = zoo_train(zoo_logs, file, algo)
    overridden = {item.split(":")[0] for item in COST_OVERRIDES.get(algo, [])[1:]}
    for entry, env_id in runs.items():
        folder = zoo_logs / "logs" / algo / f"{zoo_name(env_id)}_1"
        assert (folder / f"{zoo_name(env_id)}.zip").is_file()
        run = find_zoo_run(folder)
        assert run is not None and run.algo == algo and run.env_kwargs == TINY
        # The zoo trained with this very entry (n_timesteps tells the entries apart).
        expected = {key: value for key, value in entries[entry].items() if key not in overridden}
        used = {key: run.hyperparams[key] for key in expected}
        normalize = used.pop("normalize")
        assert used == {key: value for key, value in expected.items() if key != "normalize"}
        assert normalize.items() >= expected["normalize"].items()
        assert (run.params / "vecnormalize.pkl").is_file()


@pytest.mark.slow
def test_zoo_enjoy_and_evaluate_a_zoo_run(zoo_logs: Path, tmp_path: Path) -> None:
    env_id = "dus_env/Synthetic-v0"
    zoo_train(zoo_logs, "a2c.yml", "a2c")
    shutil.copytree(zoo_logs / "logs" / "a2c" / "dus_env-Synthetic-v0_1", tmp_path / "logs" / "a2c" / "dus_env-Synthetic-v0_1")
    enjoy = subprocess.run(
        [
            sys.executable,
            "-m",
            "rl_zoo3.enjoy",
            "--algo",
            "a2c",
            "--env",
            env_id,
            "--gym-packages",
            "dus_env",
            "-f",
            "logs",
            "--exp-id",
            "1",
            "--no-render",
            "-n",
            "8",
            "--num-threads",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert enjoy.returncode == 0, enjoy.stdout[-2000:] + enjoy.stderr[-2000:]
    assert "Loading running average" in enjoy.stdout

    run = tmp_path / "logs" / "a2c" / "dus_env-Synthetic-v0_1"
    evaluate = [
        sys.executable,
        str(ROOT / "evaluate.py"),
        "--agents",
        "uniform",
        f"a2c:{run}",
        "--envs",
        env_id,
        "--seeds",
        "2",
        "--no-plots",
        "--env-kwargs",
        json.dumps(TINY),
    ]
    # Scored in the env the run trained in (its env kwargs), with its statistics.
    done = subprocess.run([*evaluate, "--out", str(tmp_path / "results")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    episodes = (tmp_path / "results" / "episodes.csv").read_text()
    assert episodes.count("a2c") >= 2
    # Statistics gone: refused instead of scoring raw observations (other env kwargs: see the fast tests).
    (run / "dus_env-Synthetic-v0" / "vecnormalize.pkl").unlink()
    missing = subprocess.run([*evaluate, "--out", str(tmp_path / "missing")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "vecnormalize.pkl are missing" in missing.stderr, missing.stderr[-2000:]

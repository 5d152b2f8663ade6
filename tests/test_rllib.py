"""RLlib: every id in Ray's registry on the native vector env, and ``train_agent.py --backend rllib``
training, checkpointing, resuming and exporting under the runs/ layout (``ray``-marked: the extras)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml

import dus_env
import train_agent
from agents.manifest import load_manifest
from tests.conftest import release_locks, tiny_env_kwargs_json

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TINY_JSON = tiny_env_kwargs_json()
TINY = json.loads(TINY_JSON)
# 4 envs x 4 steps = 16 steps per iteration; evaluations and checkpoints every 2 iterations.
FAST = [
    "--backend",
    "rllib",
    "--num-env-runners",
    "2",
    "--env-kwargs",
    TINY_JSON,
    "--hyperparams",
    "n_envs=4",
    "n_steps=4",
    "batch_size=8",
    "n_epochs=2",
    "--eval-freq",
    "32",
    "--eval-episodes",
    "2",
    "--checkpoint-freq",
    "32",
    "--no-progress",
]


@pytest.fixture(scope="module")
def ray_local() -> Any:
    """One local Ray with 2 CPUs for the module (train_agent.py joins a Ray that is already up)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_register_puts_every_id_in_rays_registry() -> None:
    from ray.tune.registry import ENV_CREATOR, _global_registry

    import dus_env.rllib

    assert dus_env.rllib.register() == dus_env.ENV_IDS
    assert all(_global_registry.contains(ENV_CREATOR, env_id) for env_id in dus_env.ENV_IDS)


def test_creator_gives_a_native_vector_env_and_a_single_env() -> None:
    from ray.rllib.env.env_context import EnvContext

    import dus_env.rllib

    create = dus_env.rllib.make_creator("dus_env/Synthetic-v0")
    assert isinstance(create(EnvContext(dict(TINY), worker_index=1)).unwrapped, dus_env.DUSEnv)
    # What RLlib passes for the vector entry point: a plain dict (the runner's index is lost).
    venv = create({**TINY, "num_envs": 3})
    assert isinstance(venv.unwrapped, dus_env.DUSVectorEnv) and venv.num_envs == 3
    venv.close()


def test_ppo_config_trains_on_the_native_vector_env(ray_local: Any) -> None:
    from ray.rllib.algorithms.ppo import PPOConfig

    import dus_env.rllib

    config = (
        PPOConfig()
        .environment("dus_env/Synthetic-v0", env_config=dict(TINY))
        .env_runners(num_env_runners=2, num_envs_per_env_runner=2, **dus_env.rllib.ENV_RUNNER_SETTINGS)
        .callbacks(dus_env.rllib.SeedBlocks)
        .training(train_batch_size_per_learner=16, minibatch_size=8, num_epochs=1)
        .debugging(seed=100)
    )
    algo = config.build_algo()

    def runner_state(runner: Any) -> tuple[int, str, list[int] | None]:
        wrapper = runner.env
        while not isinstance(wrapper, dus_env.rllib.RunnerSeeds):
            wrapper = wrapper.env
        return runner.worker_index, type(runner.env.unwrapped).__name__, wrapper.seeds

    try:
        result = algo.train()
        states = algo.env_runner_group.foreach_env_runner(runner_state, local_env_runner=False)
    finally:
        algo.stop()
    assert result["env_runners"]["num_env_steps_sampled"] >= 16
    # Each runner steps a native vector env; runner w (seeded 100 + w by RLlib) resets env i with 100 + 2w + i.
    assert sorted(states) == [(1, "DUSVectorEnv", [102, 103]), (2, "DUSVectorEnv", [104, 105])]


def assert_export_is_rllibs_deterministic_action(run_dir: Path) -> None:
    """The artifact computes what RLlib's own inference does: the MeanStdFilter, the module, the mean, clipped."""
    import torch
    from ray.rllib.algorithms.algorithm import Algorithm

    from dus_env.policy_artifact import PolicyArtifact

    algo = Algorithm.from_checkpoint(str(run_dir / "final_model"))
    try:
        env = gym.make("dus_env/Synthetic-v0", **TINY)
        rng = np.random.default_rng(0)
        seen = []
        for seed in range(4):  # whole episodes: later observations are where the filter's std is small
            observation, _ = env.reset(seed=seed)
            done = False
            while not done:
                seen.append(observation)
                observation, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, size=2).astype(np.float32))
                done = terminated or truncated
        observations = np.stack(seen).astype(np.float32)
        (connector,) = [c for c in algo.env_runner_group.local_env_runner._env_to_module.connectors if type(c).__name__ == "MeanStdFilter"]
        (running,) = connector._filters.values()
        filtered = np.stack([running(observation, update=False) for observation in observations])
        module = algo.get_module()
        with torch.no_grad():
            inputs = module.forward_inference({"obs": torch.as_tensor(filtered)})["action_dist_inputs"].numpy()
    finally:
        algo.stop()
    expected = np.clip(inputs[:, :2], -1.0, 1.0)
    for backend in ("onnx", "torch"):
        np.testing.assert_allclose(PolicyArtifact(run_dir / "exported", backend).act(observations), expected, atol=2e-6)


def test_train_checkpoint_resume_export(ray_local: Any, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert train_agent.main(["--run-dir", str(run_dir), "--timesteps", "64", *FAST]) == 0
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert (config["backend"], config["num_env_runners"]) == ("rllib", 2)
    manifest = load_manifest(run_dir)
    assert manifest is not None and sorted(manifest.checkpoints) == [32, 64] and manifest.final_steps == 64
    assert all(name.startswith("checkpoints/rllib_") for files in manifest.checkpoints.values() for name in files)
    assert np.load(run_dir / "eval" / "evaluations.npz")["timesteps"].tolist() == [32, 64]
    assert (run_dir / "best_model" / "policy.onnx").is_file()
    assert_export_is_rllibs_deterministic_action(run_dir)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (run_dir / "tb" / "RLlib_PPO_1").iterdir()
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"dus/quantity_m0", "dus/val_fused_accuracy", "dus/episode_test_accuracy", "rollout/ep_rew_mean", "train/loss"} <= tags

    # Resume for more steps: continues from the checkpoint at 64, evaluates and exports again.
    release_locks()
    assert train_agent.main(["--resume", "--run-dir", str(run_dir), "--timesteps", "96", "--no-progress"]) == 0
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert config["resumes"][0]["from_timesteps"] == 64
    assert np.load(run_dir / "eval" / "evaluations.npz")["timesteps"].tolist() == [32, 64, 96]
    assert json.loads((run_dir / "exported" / "metadata.json").read_text())["source"]["num_timesteps"] == 96

    # The export is the artifact SB3 policies export: DUSSampler and the exported: agent take it.
    sampler = dus_env.DUSSampler.from_artifact(run_dir / "exported", n_classes=10, iterations_per_decision=2, total_decisions=4)
    assert sampler.mapping.n_modalities == 2
    release_locks()
    assert train_agent.main(["--export-only", "--run-dir", str(run_dir), "--checkpoint", "64"]) == 0
    assert json.loads((run_dir / "exported" / "metadata.json").read_text())["source"]["num_timesteps"] == 64


def test_more_env_runners_than_cpus_is_refused_not_a_hang(ray_local: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--run-dir", str(tmp_path / "run"), "--timesteps", "32", *FAST]
    argv[argv.index("--num-env-runners") + 1] = "4"
    assert train_agent.main(argv) == train_agent.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--num-env-runners 4 needs as many CPUs, the Ray cluster has 2" in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_then_a_kill_then_resume_finishes(tmp_path: Path) -> None:
    """SIGINT while the first checkpoint is written: the save completes and training stops there. The
    resumed run is SIGKILLed while writing its final model: the half-written folder never counts, and
    the next --resume finishes from the last checkpoint."""
    run_dir = tmp_path / "run"

    def run(fault: str | None, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("DUS_ENV_FAULT", None)
        if fault:
            env["DUS_ENV_FAULT"] = fault
        command = [sys.executable, str(ROOT / "train_agent.py"), "--run-dir", str(run_dir), *argv]
        return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    stopped = run("mid_checkpoint:INT", "--timesteps", "64", *FAST)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "interrupted: checkpoint saved at 32 of 64 steps" in stopped.stdout
    manifest = load_manifest(run_dir)
    assert manifest is not None and sorted(manifest.checkpoints) == [32] and manifest.final is None

    killed = run("mid_final", "--resume", "--no-progress")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "at 32 of 64 steps" in killed.stdout
    assert (run_dir / ".final_model.tmp").is_dir() and not (run_dir / "final_model").exists()

    finished = run(None, "--resume", "--no-progress")
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "has finished training (64 steps) but not its final model and export" in finished.stdout
    assert not list(run_dir.rglob(".*.tmp"))
    manifest = load_manifest(run_dir)
    assert manifest is not None and sorted(manifest.checkpoints) == [32, 64]
    assert manifest.final_steps == 64 and manifest.export_steps == 64

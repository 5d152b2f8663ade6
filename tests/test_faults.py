"""Runs survive every fault: real training processes killed at injected points, then resumed.

The points are :func:`dus_env.faults.fault_point` names (``DUS_ENV_FAULT``): deterministic, no sleeps.
After any kill, ``--resume`` must reach exactly the requested steps with a final model and an
export that the manifest lists and that match it, leave no temporary file, and keep one
evaluation row per step count.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

import dus_env
from agents.manifest import MANIFEST_FILE, RunManifest, damage, load_manifest, save_manifest, sha256_file

ROOT = Path(__file__).resolve().parents[1]
TINY_JSON = json.dumps(dus_env.TINY_OVERRIDES)
PPO = ["--algo", "ppo", "--n-envs", "2", "--hyperparams", "n_steps=32", "batch_size=32", "--timesteps", "384"]
REINFORCE = ["--algo", "reinforce", "--timesteps", "1280"]
COMMON = ["--env-kwargs", TINY_JSON, "--checkpoint-freq", "128", "--eval-freq", "128", "--eval-episodes", "2", "--no-progress"]


def train(run_dir: Path, *args: str, fault: str | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DUS_ENV_FAULT": fault or ""}
    return subprocess.run(
        [sys.executable, str(ROOT / "train_agent.py"), "--run-dir", str(run_dir), *args],
        cwd=run_dir.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def resume(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return train(run_dir, "--resume", "--no-progress", *args)


def assert_complete(run_dir: Path, steps: int) -> None:
    """The run has trained exactly ``steps`` (or the first update boundary after), its final model
    and export are listed and intact, and nothing half-written is left."""
    manifest = load_manifest(run_dir)
    assert manifest is not None
    newest = max(manifest.checkpoints)
    assert steps <= newest < steps + 128
    assert manifest.final is not None and damage(run_dir, manifest.final) is None
    assert manifest.export is not None and damage(run_dir, manifest.export) is None
    assert (run_dir / "exported" / "policy.onnx").is_file()
    leftovers = [p for p in run_dir.rglob(".*") if p.name.endswith(".tmp") or p.name.startswith(".exported.")]
    assert leftovers == []
    timesteps = np.load(run_dir / "eval" / "evaluations.npz")["timesteps"].tolist()
    assert timesteps == sorted(set(timesteps))  # one row per step count, in order


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algo", "point"),
    [
        ("ppo", "before_checkpoint"),  # training has run, no checkpoint yet
        ("ppo", "mid_checkpoint@2"),  # the second checkpoint half-written
        ("ppo", "after_eval@2"),  # an evaluation logged, the checkpoint after it not yet written
        ("ppo", "mid_final"),  # the final model half-written
        ("ppo", "after_final"),  # final model written, no export
        ("ppo", "mid_export"),  # the export's staging folder written, not in place
        ("reinforce", "before_checkpoint"),
        ("reinforce", "mid_checkpoint"),
        ("reinforce", "mid_final"),
        ("reinforce", "mid_export"),
    ],
)
def test_a_kill_at_any_point_is_resumed_to_a_complete_run(algo: str, point: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    options = PPO if algo == "ppo" else REINFORCE
    killed = train(run_dir, *options, *COMMON, fault=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = resume(run_dir)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    total = int(options[options.index("--timesteps") + 1])
    assert_complete(run_dir, total)
    if point == "before_checkpoint":
        assert "has no checkpoint yet (stopped before the first one): starting the run from the beginning" in finished.stdout
    if point in ("mid_final", "after_final", "mid_export"):
        assert "has finished training" in finished.stdout and "finishing them" in finished.stdout
    # Once complete, --resume has nothing left to do.
    again = resume(run_dir)
    assert again.returncode == 0 and "is complete" in again.stdout


@pytest.mark.slow
def test_a_second_ctrl_c_during_the_save_waits_for_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    stopped = train(run_dir, *PPO, *COMMON, fault="before_checkpoint:INT,mid_checkpoint:INT")
    assert stopped.returncode == 130, stopped.stderr
    assert "checkpoint saved at 128 of 384 steps" in stopped.stdout and "nothing saved" not in stopped.stderr
    assert "saving: Ctrl-C will take effect once the files are written" in stopped.stderr
    assert 128 in load_manifest(run_dir).checkpoints
    finished = resume(run_dir)
    assert finished.returncode == 0, finished.stderr
    assert_complete(run_dir, 384)


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished PPO run with checkpoints at 128, 256 and 384 steps (copied by each test)."""
    run_dir = tmp_path_factory.mktemp("complete") / "run"
    result = train(run_dir, *PPO, *COMMON)
    assert result.returncode == 0, result.stderr
    return run_dir


def copy_run(source: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    return run_dir


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(complete_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(complete_run, tmp_path)
    newest = run_dir / "checkpoints" / "rl_model_384_steps.zip"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    result = resume(run_dir, "--timesteps", "512")
    assert result.returncode == 0, result.stderr
    assert "warning: skipping the checkpoint at 384 steps: checkpoints/rl_model_384_steps.zip has changed" in result.stderr
    assert "resuming" in result.stdout and "at 256 of 512 steps" in result.stdout
    assert_complete(run_dir, 512)


@pytest.mark.slow
def test_a_renamed_checkpoint_is_not_trusted_by_its_name(complete_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(complete_run, tmp_path)
    shutil.copy(run_dir / "checkpoints" / "rl_model_128_steps.zip", run_dir / "checkpoints" / "rl_model_99999_steps.zip")
    result = resume(run_dir, "--timesteps", "512")
    assert result.returncode == 0, result.stderr
    assert "at 384 of 512 steps" in result.stdout  # the manifest's newest, not the file name's


def test_an_edited_config_is_refused_and_left_as_it_was(complete_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(complete_run, tmp_path)
    config_path = run_dir / "config.yml"
    config = yaml.safe_load(config_path.read_text())
    config["algo"] = "a2c"  # a PPO checkpoint must not continue as A2C
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    before = config_path.read_text()
    result = resume(run_dir, "--timesteps", "512")
    assert result.returncode == 2
    assert "does not describe the run its checkpoints come from (ppo on dus_env/Synthetic-v0" in result.stderr
    assert config_path.read_text() == before


def test_config_is_rewritten_only_after_a_checkpoint_loads(complete_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(complete_run, tmp_path)
    manifest = load_manifest(run_dir)
    for files in manifest.checkpoints.values():  # damaged in a way the checksums cannot see
        for name in files:
            (run_dir / name).write_bytes(b"not a zip file")
            files[name] = sha256_file(run_dir / name)
    save_manifest(run_dir, manifest)
    before = (run_dir / "config.yml").read_text()
    result = resume(run_dir, "--timesteps", "512")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "warning: the checkpoint at 384 steps does not load" in result.stderr
    assert "no checkpoint of" in result.stderr and "loads" in result.stderr
    assert (run_dir / "config.yml").read_text() == before


def test_stale_temporary_files_are_removed_by_the_next_run_in_the_folder(complete_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(complete_run, tmp_path)
    (run_dir / ".final_model.zip.x1y2.tmp").write_bytes(b"half")
    (run_dir / "checkpoints" / ".rl_model_512_steps.zip.a1b2.tmp").write_bytes(b"half")
    (run_dir / ".exported.k3j4").mkdir()
    (run_dir / ".exported.k3j4" / "policy.onnx").write_bytes(b"half")
    result = resume(run_dir)
    assert result.returncode == 0 and "is complete" in result.stdout
    assert [p.name for p in run_dir.rglob(".*")] == [".lock"]  # the lock file stays (it is never stale)


def test_a_damaged_manifest_is_a_clear_error(complete_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(complete_run, tmp_path)
    (run_dir / MANIFEST_FILE).write_text("{not json")
    result = resume(run_dir)
    assert result.returncode == 2 and "run.json is damaged" in result.stderr and "Traceback" not in result.stderr
    new = train(run_dir, *PPO, *COMMON)
    assert new.returncode == 2 and "no readable run.json" in new.stderr  # never started over a damaged run


def test_export_only_re_exports_the_final_model_or_a_checkpoint(complete_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(complete_run, tmp_path)
    shutil.rmtree(run_dir / "exported")
    result = train(run_dir, "--export-only")
    assert result.returncode == 0, result.stderr
    assert f"exported {run_dir} to {run_dir / 'exported'}" in result.stdout
    manifest = load_manifest(run_dir)
    assert manifest.export is not None and damage(run_dir, manifest.export) is None
    metadata = json.loads((run_dir / "exported" / "metadata.json").read_text())
    assert metadata["source"]["num_timesteps"] == 384
    result = train(run_dir, "--export-only", "--checkpoint", "128")
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "exported" / "metadata.json").read_text())["source"]["num_timesteps"] == 128


@pytest.mark.parametrize(
    ("args", "damage_final", "message"),
    [
        (["--export-only", "--checkpoint", "100"], False, "--checkpoint 100 is not a checkpoint of"),
        (["--export-only"], True, "final_model.zip has changed since it was written"),
        (["--checkpoint", "128"], False, "--checkpoint only goes with --export-only"),
    ],
)
def test_export_only_refuses_what_it_cannot_trust(
    complete_run: Path, tmp_path: Path, args: list[str], damage_final: bool, message: str
) -> None:
    run_dir = copy_run(complete_run, tmp_path)
    if damage_final:
        with (run_dir / "final_model.zip").open("r+b") as handle:
            handle.seek(200)
            handle.write(b"\x00\xff")
    result = train(run_dir, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_pickle_loads_are_announced_and_refused_when_asked(complete_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(complete_run, tmp_path)
    evaluate = [sys.executable, str(ROOT / "evaluate.py"), "--seeds", "2", "--no-plots", "--env-kwargs", TINY_JSON]
    announced = subprocess.run(
        [*evaluate, "--agents", f"ppo:{run_dir}", "--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=240
    )
    assert announced.returncode == 0, announced.stderr
    assert f"note: loading SB3 model {run_dir / 'final_model.zip'} with pickle, which runs code from the file" in announced.stderr
    refused = subprocess.run(
        [*evaluate, "--agents", f"ppo:{run_dir}", "--trusted-only", "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert refused.returncode == 2 and "DUS_ENV_TRUSTED_ONLY=1 refuses pickle loads" in refused.stderr
    assert "exported:RUN_DIR/exported" in refused.stderr and "Traceback" not in refused.stderr
    exported = subprocess.run(
        [*evaluate, "--agents", f"exported:{run_dir / 'exported'}", "--trusted-only", "--out", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert exported.returncode == 0, exported.stderr
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "train_agent.py"), "--resume", "--run-dir", str(run_dir), "--timesteps", "512"],
        env={**os.environ, "DUS_ENV_TRUSTED_ONLY": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 2 and "SB3 checkpoint" in resumed.stderr and "refuses pickle loads" in resumed.stderr


def test_cleanup_touches_only_folders_train_agent_made(tmp_path: Path) -> None:
    from agents.runs import remove_stale_files

    folder = tmp_path / "not_a_run"
    (folder / "eval").mkdir(parents=True)
    (folder / ".notes.abc.tmp").write_text("mine")
    (folder / ".exported.backup").mkdir()
    remove_stale_files(folder)
    assert (folder / ".notes.abc.tmp").exists() and (folder / ".exported.backup").exists()
    (folder / "config.yml").write_text("algo: ppo\n")  # a config.yml alone does not make a run folder
    remove_stale_files(folder)
    assert (folder / ".notes.abc.tmp").exists()
    save_manifest(folder, RunManifest("ppo", "dus_env/Synthetic-v0", "0" * 64))
    remove_stale_files(folder)
    assert not (folder / ".notes.abc.tmp").exists() and not (folder / ".exported.backup").exists()
    assert (folder / "eval").exists()  # cleanup removes half-written files only


# -- evaluate.py --------------------------------------------------------------------------------


def evaluate_command(out: Path, *args: str) -> list[str]:
    """The evaluation these tests interrupt and resume: 3 agents x 4 seeds in batches of 2."""
    return [
        sys.executable,
        str(ROOT / "evaluate.py"),
        "--agents",
        "uniform",
        "heuristic",
        "bss",
        "--seeds",
        "4",
        "--batch-size",
        "2",
        "--no-plots",
        "--out",
        str(out),
        "--env-kwargs",
        TINY_JSON,
        *args,
    ]


def evaluate(out: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        evaluate_command(out, *args), env={**os.environ, "DUS_ENV_FAULT": fault or ""}, capture_output=True, text=True, timeout=240
    )


def episode_sets(out: Path) -> tuple[set, set]:
    import csv

    with (out / "episodes.csv").open() as handle:
        episodes = {(row["agent"], row["env"], row["seed"]) for row in csv.DictReader(handle)}
    with (out / "traces.csv").open() as handle:
        traces = {(row["agent"], row["env"], row["seed"]) for row in csv.DictReader(handle)}
    return episodes, traces


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["mid_results@3", "mid_results@3:INT"])
def test_a_killed_evaluation_keeps_one_consistent_set_and_resumes(tmp_path: Path, fault: str) -> None:
    out = tmp_path / "results"
    killed = evaluate(out, fault=fault)
    assert killed.returncode == (130 if fault.endswith("INT") else -signal.SIGKILL), killed.stderr
    episodes, traces = episode_sets(out)
    assert episodes == traces and len(episodes) in (4, 6)  # whole batches of 2 episodes, the same in both files
    refused = evaluate(out)
    assert refused.returncode == 2 and "already holds results: pass --resume" in refused.stderr
    resumed = evaluate(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out}: {len(episodes)} of 12 episodes already done" in resumed.stdout
    episodes, traces = episode_sets(out)
    assert episodes == traces and len(episodes) == 12
    assert (out / "summary.json").is_file()
    assert [p.name for p in out.glob(".episodes-*")] == [os.readlink(out / ".episodes")]  # no stale generation


def test_resume_needs_the_out_folder(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--resume"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--resume needs the --out folder" in result.stderr


def test_a_user_folder_with_a_config_yml_is_not_taken_for_a_run(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    (folder / "eval").mkdir(parents=True)
    (folder / "config.yml").write_text("lr: 0.1\n")
    (folder / "eval" / "results.csv").write_text("x\n")
    result = train(folder, *PPO, *COMMON)
    assert result.returncode == 2 and "holds a config.yml but no readable run.json" in result.stderr
    assert (folder / "config.yml").read_text() == "lr: 0.1\n" and (folder / "eval" / "results.csv").exists()


@pytest.mark.slow
def test_an_extended_run_killed_before_its_new_final_model_is_finished_on_resume(complete_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(complete_run, tmp_path)
    killed = train(run_dir, "--resume", "--no-progress", "--timesteps", "512", fault="after_final")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = resume(run_dir)
    assert finished.returncode == 0, finished.stderr
    assert "has finished training (512 steps) but not its export: finishing them" in finished.stdout
    manifest = load_manifest(run_dir)
    assert manifest.final_steps == manifest.export_steps == 512
    assert json.loads((run_dir / "exported" / "metadata.json").read_text())["source"]["num_timesteps"] == 512


def test_a_second_process_in_the_same_run_folder_is_refused(complete_run: Path, tmp_path: Path) -> None:
    from agents.folder_lock import lock_folder

    run_dir = copy_run(complete_run, tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); "
            f"from agents.folder_lock import lock_folder; from pathlib import Path; "
            f"lock_folder(Path({str(run_dir)!r}), 'test'); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = resume(run_dir)
        assert result.returncode == 2 and "is in use by another train_agent.py process" in result.stderr
    finally:
        holder.kill()
        holder.wait()
    assert resume(run_dir).returncode == 0  # the lock goes with its process
    del lock_folder


@pytest.mark.parametrize("change", [["--agents", "uniform"], ["--env-kwargs", json.dumps({**dus_env.TINY_OVERRIDES, "decision_steps": 3})]])
def test_resuming_with_other_options_is_refused(tmp_path: Path, change: list[str]) -> None:
    out = tmp_path / "results"
    assert evaluate(out, fault="mid_results@3").returncode == -signal.SIGKILL
    before = (out / "episodes.csv").read_text()
    command = evaluate_command(out, "--resume")
    index = command.index(change[0])
    command[index + 1 : index + (4 if change[0] == "--agents" else 2)] = change[1:]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 2 and "episodes this evaluation would not run" in result.stderr
    assert (out / "episodes.csv").read_text() == before  # nothing dropped


@pytest.mark.slow
def test_a_dus_r_run_of_dus_env_0_4_is_refused_with_what_to_do(complete_run: Path, tmp_path: Path) -> None:
    """0.4's DUS-R wrote its own ``.pt`` checkpoints and final model; 0.5 cannot read them and says
    what to do instead of failing on a missing ``.zip``."""
    from agents.sb3_agent import SB3Agent

    run_dir = copy_run(complete_run, tmp_path)
    manifest = load_manifest(run_dir)
    assert manifest is not None
    manifest.checkpoints = {steps: {f"checkpoints/reinforce_{steps}_steps.pt": "0" * 64} for steps in manifest.checkpoints}
    manifest.final = {"final_model.pt": "0" * 64}
    save_manifest(run_dir, manifest)
    (run_dir / "final_model.zip").rename(run_dir / "final_model.pt")
    for args in (("--resume",), ("--export-only",)):
        result = train(run_dir, *args)
        assert result.returncode == 2, result.stderr
        assert "a DUS-R run of dus_env 0.4" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(FileNotFoundError, match="DUS-R run of dus_env 0.4"):
        SB3Agent.load(run_dir, gym.make("dus_env/Synthetic-v0", **dus_env.TINY_OVERRIDES))

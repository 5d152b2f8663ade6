"""``evaluate.py --backend ray``: the same episodes as the local backend, a killed worker's batch run again, clear errors.

The ``ray``-marked tests need the ray extra (``tests/conftest.py`` skips them without it). The test of
the missing extra is not marked: it runs in every pass, with Ray hidden from a child interpreter.
Tests that run ``evaluate.py`` as a child process start their own Ray there (its workers are the
child's descendants, which is how the kill test finds its own and no other Ray's workers).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.benchmark import EpisodeJob
from agents.errors import UsageError
from agents.ray_benchmark import TASK_NAME
from dus_env import TINY_OVERRIDES
from tests.conftest import tiny_env_kwargs_json
from tests.test_evaluate import REPO, load_evaluate

#: Three agents on Synthetic-v0, with its default config: episodes of about 0.2 s.
AGENTS_ON_SYNTHETIC = ["--agents", "uniform", "heuristic", "fixed:0.3,0.7", "--envs", "Synthetic-v0", "--no-plots", "--no-progress"]

#: A small paired plan: the three agents on the tiny Synthetic-v0, three seeds.
PLAN = [*AGENTS_ON_SYNTHETIC, "--seeds", "3", "--env-kwargs", tiny_env_kwargs_json(decision_steps=3)]


def run_evaluate(*argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


def csv_rows(path: Path) -> list[list[str]]:
    """The file's rows as written (header first), with the wall-time column blanked: the only value
    that is measured rather than computed, so it differs between any two runs."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if "wall_time_s" in rows[0]:
        column = rows[0].index("wall_time_s")
        for row in rows[1:]:
            row[column] = ""
    return rows


def summary_numbers(out: Path) -> Any:
    """summary.json's per-agent numbers without the wall times."""
    results = json.loads((out / "summary.json").read_text())["results"]
    for rows in results.values():
        for row in rows:
            del row["wall_time"]
    return results


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("evaluate.py:")]


@pytest.fixture(scope="module")
def ray_here() -> Iterator[Any]:
    """Ray in this process with 2 CPUs, shut down after the module's tests."""
    from agents.ray_cluster import connect

    ray = connect(None, "tests/test_ray_evaluate.py", num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_missing_ray_extra_is_a_one_line_error(tmp_path: Path) -> None:
    """Without the ray extra (hidden here, so the test means the same with Ray installed) --backend ray
    stops with the install command, exit 2, and writes nothing."""
    out = tmp_path / "out"
    script = (
        "import runpy, sys; sys.modules['ray'] = None; "
        f"sys.argv = ['evaluate.py', *{[*PLAN, '--backend', 'ray', '--out', str(out)]!r}]; "
        f"runpy.run_path({str(REPO / 'evaluate.py')!r}, run_name='__main__')"
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip().splitlines() == [
        "evaluate.py: error: evaluate.py --backend ray needs the 'ray' extra (Ray core and Ray Tune; ray is not installed): "
        "pip install -c constraints.txt 'dus_env[ray]' (from a clone: pip install -c constraints.txt -e '.[ray]')"
    ]
    assert not out.exists()


@pytest.mark.parametrize("case", ["resume without --out", "out holds results", "unresumable results"])
def test_the_folder_checks_come_before_ray_starts(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong --resume/--out is named at once: Ray (seconds to start, or a cluster to join) is started
    only once every input is checked. Runs without the ray extra too: here Ray is never reached."""
    evaluate = load_evaluate()

    def no_ray(*_: Any, **__: Any) -> None:
        raise AssertionError("Ray was started before the input checks")

    monkeypatch.setattr(evaluate, "connect", no_ray)
    out = tmp_path / "out"
    out.mkdir()
    (out / "episodes.csv").write_text("env_id,agent,spec,seed\ndus_env/Synthetic-v0,other,other,1\n")
    argv, message = {
        "resume without --out": (["--resume"], "--resume needs the --out folder"),
        "out holds results": (["--out", str(out)], "already holds results"),
        "unresumable results": (["--out", str(out), "--resume"], "cannot be resumed"),
    }[case]
    assert evaluate.main([*PLAN, "--backend", "ray", *argv]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0], lines


@pytest.mark.ray
@pytest.mark.slow
def test_ray_backend_writes_the_local_backends_episodes(ray_here: Any, tmp_path: Path) -> None:
    """Same seeds, same bytes: episodes.csv and traces.csv, and the summary's numbers (wall times aside)."""
    evaluate = load_evaluate()
    for backend in ("local", "ray"):
        assert evaluate.main([*PLAN, "--batch-size", "2", "--backend", backend, "--out", str(tmp_path / backend)]) == 0
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert (local / "traces.csv").read_bytes() == (distributed / "traces.csv").read_bytes()
    assert csv_rows(local / "episodes.csv") == csv_rows(distributed / "episodes.csv")
    assert len(csv_rows(local / "episodes.csv")) == 1 + 3 * 3
    assert summary_numbers(local) == summary_numbers(distributed)
    summary = json.loads((distributed / "summary.json").read_text())
    assert (summary["backend"], summary["workers"], summary["address"]) == ("ray", None, None)
    assert json.loads((local / "summary.json").read_text())["backend"] == "local"


@pytest.mark.ray
def test_a_failing_batch_raises_its_own_error(ray_here: Any) -> None:
    """An error in the episode code reaches evaluate.py as itself (its one-line message), not wrapped by Ray."""
    from agents.ray_benchmark import run_batches

    job = EpisodeJob("dus_env/Synthetic-v0", dict(TINY_OVERRIDES), "ppo:no/such/run", "ppo", 10_000)
    with pytest.raises(UsageError) as caught:
        list(run_batches([[job]]))
    assert type(caught.value) is UsageError
    # The worker got the path made absolute in this process (a worker's working folder is its own).
    assert f"model path '{Path.cwd() / 'no/such/run'}' does not exist" in str(caught.value)


def test_workers_get_absolute_model_paths_and_the_same_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.ray_benchmark import worker_jobs
    from agents.specs import absolute_spec

    monkeypatch.chdir(tmp_path)
    assert absolute_spec("ppo:runs/ppo_Synthetic-v0_0") == f"ppo:{tmp_path / 'runs/ppo_Synthetic-v0_0'}"
    assert absolute_spec("exported:x/exported+bss:adaptive", Path("/data")) == "exported:/data/x/exported+bss:adaptive"
    assert absolute_spec("reinforce:/abs/run") == "reinforce:/abs/run"
    assert absolute_spec("heuristic:0.05+bss") == "heuristic:0.05+bss"
    jobs = [EpisodeJob("dus_env/Synthetic-v0", {}, "ppo:runs/a", "mine", seed) for seed in (1, 2)]
    sent = worker_jobs(jobs)
    assert [(job.spec, job.label, job.seed) for job in sent] == [(f"ppo:{tmp_path / 'runs/a'}", "mine", seed) for seed in (1, 2)]
    assert jobs[0].spec == "ppo:runs/a"


def _ancestors(pid: int) -> Iterator[int]:
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        pid = int(stat.rpartition(")")[2].split()[1])  # the field after the (command) is the state, then the parent
        yield pid


def _running_tasks(driver: int) -> list[int]:
    """Processes descended from ``driver`` that are running an evaluate batch (Ray titles them ``ray::evaluate_batch``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith(f"ray::{TASK_NAME}") and driver in _ancestors(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds Ray's worker processes through /proc (Linux)")
def test_a_killed_worker_loses_no_episode(tmp_path: Path) -> None:
    """SIGKILL a worker in the middle of a batch: Ray runs that batch again and the run ends with every episode.

    The episodes are the default Synthetic-v0's (about 0.2 s each, one per batch), so that a worker is
    caught running one: the tiny config's take a few ms, less than one look through /proc."""
    plan = [*AGENTS_ON_SYNTHETIC, "--seeds", "4", "--batch-size", "1"]
    assert load_evaluate().main([*plan, "--out", str(tmp_path / "local")]) == 0
    child = subprocess.Popen(
        [sys.executable, str(REPO / "evaluate.py"), *plan, "--backend", "ray", "--out", str(tmp_path / "ray")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    try:
        deadline = time.monotonic() + 120
        while killed is None and child.poll() is None and time.monotonic() < deadline:
            running = _running_tasks(child.pid)
            if running:
                killed = running[0]
                os.kill(killed, signal.SIGKILL)
            else:
                time.sleep(0.005)
        stdout, stderr = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert killed is not None, f"no Ray worker ran a batch while the evaluation ran:\n{stderr}"
    assert child.returncode == 0, stderr
    assert "evaluated 3 agents x 1 env x 4 seeds = 12 episodes" in stdout
    assert csv_rows(tmp_path / "ray" / "episodes.csv") == csv_rows(tmp_path / "local" / "episodes.csv")
    assert (tmp_path / "ray" / "traces.csv").read_bytes() == (tmp_path / "local" / "traces.csv").read_bytes()


@pytest.mark.ray
@pytest.mark.slow
def test_an_unreachable_cluster_is_a_one_line_error(tmp_path: Path) -> None:
    """--address with no cluster behind it: exit 2 and one line naming the address (Ray's own connection
    warnings may come before it). Ray's connection waits are shortened here: by default it tries for minutes."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "RAY_gcs_server_port_wait_time_s": "1", "RAY_py_gcs_connect_timeout_s": "2"}
    completed = run_evaluate(*PLAN, "--backend", "ray", "--address", f"127.0.0.1:{port}", "--out", str(tmp_path / "out"), env=env)
    assert completed.returncode == 2, completed.stderr
    lines = error_lines(completed.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"evaluate.py: error: --address 127.0.0.1:{port}: cannot join the Ray cluster")
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out").exists()

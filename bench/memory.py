"""Peak memory of one environment and of a whole training run.

* one env: a fresh Python process plays N episodes; its peak resident set (``ru_maxrss``) is
  reported next to the peak of the same process after only importing the packages, so the env's
  own share is visible;
* a training run: ``train_agent.py`` runs for a few thousand steps in a child process while this
  script samples, every 0.2 s, the summed resident memory of that process and all its
  descendants (the SubprocVecEnv workers with ``--vec subproc``; the default native vector env
  trains in the process itself) from ``/proc``; the peak of that sum is reported.

    python bench/memory.py
    python bench/memory.py --env dus_env/MFeat-v0 --timesteps 4000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ENV_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import gymnasium as gym, numpy as np, torch
    import dus_env
    torch.set_num_threads(1)
    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    env = gym.make(sys.argv[1])
    for seed in range(int(sys.argv[2])):
        env.reset(seed=seed)
        terminated = False
        while not terminated:
            _, _, terminated, _, _ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    print(imported, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def tree_rss_kib(root_pid: int) -> int:
    """Summed VmRSS (KiB) of ``root_pid`` and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid, parent = int(entry), int(fields.get("PPid", "0").strip())
        children.setdefault(parent, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="dus_env/Synthetic-v0")
    parser.add_argument("--episodes", type=int, default=20, help="episodes played by the one-env process")
    parser.add_argument("--timesteps", type=int, default=3000, help="steps of the measured training run")
    args = parser.parse_args()
    result = subprocess.run(
        [sys.executable, "-c", ENV_SCRIPT, args.env, str(args.episodes)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    imported, peak = (int(x) for x in result.stdout.split())
    print(
        f"{args.env}: one env, {args.episodes} episodes: peak RSS {peak / 1024:.0f} MiB "
        f"(after imports {imported / 1024:.0f} MiB, env's own share {(peak - imported) / 1024:.0f} MiB)"
    )
    with tempfile.TemporaryDirectory() as run_dir:
        command = [
            sys.executable,
            "train_agent.py",
            "--env",
            args.env,
            "--timesteps",
            str(args.timesteps),
            "--run-dir",
            str(Path(run_dir) / "run"),
            "--no-progress",
            "--eval-freq",
            "1000",
        ]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak_tree, start = 0, time.perf_counter()
        while process.poll() is None:
            peak_tree = max(peak_tree, tree_rss_kib(process.pid))
            time.sleep(0.2)
        if process.returncode != 0:
            raise SystemExit(f"training run failed: {process.stderr.read() if process.stderr else ''}")
    print(
        f"training run (PPO, {args.timesteps} steps, default n_envs, {time.perf_counter() - start:.0f} s): "
        f"peak summed RSS of the process tree {peak_tree / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()

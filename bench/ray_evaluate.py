"""evaluate.py's ray backend against its local process pool on one machine, and Ray's per-task cost.

Prints, from one run:

1. Dispatch throughput (episodes/s) of ``evaluate.run_episodes`` on the same plan with
   ``--workers 2`` (a process pool, started inside each call as in every evaluate.py run) and with
   ``--backend ray`` (Ray started once beforehand with 2 CPUs, its workers warm after a warm-up
   round: how a running cluster serves one evaluation after another), alternating the two a few
   times since the machine is shared and noisy; then the ratio ray / workers 2 (target >= 0.9),
   once as measured and once with the pool's start-up (measured apart) taken out of the local
   figure, which compares the two at work with warm workers.
2. The same end to end: ``evaluate.py`` as a child process (imports, plan check, pool or Ray
   start-up, result files), wall time per run and episodes/s, alternating too.
3. Ray's per-task overhead: the round trip of an empty task (one at a time, and per task when 1000
   are in flight), and a batch task's round trip minus the same batch run in this process.
4. The cost of one default ``Synthetic-v0`` episode of the uniform agent (one torch thread), alone
   and per episode in batches of 16 and 64: with 2 and 3 it is what a simulation of a larger
   benchmark on a cluster needs (docs/scaling.md).

    python bench/ray_evaluate.py              # about 12 minutes on 2 cores; needs the ray extra
    python bench/ray_evaluate.py --quick      # a smoke run (under a minute)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import evaluate
from agents.benchmark import EpisodeJob, batches, init_worker, limit_threads, make_plan, run_batch
from agents.ray_benchmark import remote_evaluate_batch
from agents.ray_cluster import connect
from dus_env import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[1]
AGENTS = ["uniform", "heuristic", "fixed:0.3,0.7"]
ENV_ID = "dus_env/Synthetic-v0"


def plan_jobs(seeds: int, env_kwargs: dict[str, Any]) -> list[EpisodeJob]:
    return make_plan(AGENTS, [ENV_ID], env_kwargs, seeds).jobs()


def dispatch_seconds(jobs: list[EpisodeJob], backend: str, batch_size: int) -> float:
    """Wall time of ``evaluate.run_episodes`` until every batch is back (what evaluate.py waits for)."""
    started = time.perf_counter()
    done = sum(len(batch) for batch in evaluate.run_episodes(jobs, 2, batch_size, backend))
    elapsed = time.perf_counter() - started
    assert done == len(jobs)
    return elapsed


def pool_startup_seconds() -> float:
    """What a ``--workers 2`` run spends starting its pool: 2 processes as evaluate.py starts them, each
    importing the benchmark (torch, gymnasium, dus_env) before its first batch, then shut down."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    started = time.perf_counter()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method), initializer=init_worker) as pool:
        # limit_threads lives in agents.benchmark: unpickling it imports what a batch needs, and it does nothing else.
        for future in [pool.submit(limit_threads) for _ in range(2)]:
            future.result()
    return time.perf_counter() - started


def cli_seconds(argv: Sequence[str]) -> float:
    """Wall time of one ``evaluate.py`` run in a child process (everything a user waits for)."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, str(REPO / "evaluate.py"), *argv, "--no-plots", "--no-progress", "--out", f"{folder}/out"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started


def alternate(rounds: int, runs: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each run once per round, the order reversed every other round (drift in the machine's load hits both alike)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(runs[name]())
            print(f"  round {i + 1}: {name:<10} {times[name][-1]:7.2f} s", flush=True)
    return times


def report_throughput(title: str, times: dict[str, list[float]], episodes: int) -> None:
    """Median episodes/s of each run and the ratio ray / workers 2 (the issue's target: within 10%)."""
    rates = {name: [episodes / t for t in ts] for name, ts in times.items()}
    print(title)
    for name, values in rates.items():
        print(f"  {name:<10} median {statistics.median(values):7.1f} episodes/s (runs: {', '.join(f'{v:.1f}' for v in values)})")
    ratio = statistics.median(rates["ray"]) / statistics.median(rates["workers 2"])
    print(f"  ray / workers 2 = {ratio:.3f} (target >= 0.90)")


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def task_overhead(ray: Any, batch: list[EpisodeJob], repeats: int) -> None:
    """Ray's cost per task, empty and with a real batch (warm workers and caches on both sides)."""

    @ray.remote(num_cpus=1)
    def empty() -> None:
        return None

    ray.get([empty.remote() for _ in range(20)])
    one_at_a_time = median_seconds(lambda: ray.get(empty.remote()), 200)
    started = time.perf_counter()
    ray.get([empty.remote() for _ in range(1000)])
    in_flight = (time.perf_counter() - started) / 1000
    print("Ray per-task overhead")
    print(f"  empty task round trip, one at a time: {1e3 * one_at_a_time:.2f} ms")
    print(f"  empty task, 1000 in flight:           {1e3 * in_flight:.3f} ms per task")

    task = remote_evaluate_batch(ray)
    for size in (1, len(batch)):
        jobs = batch[:size]
        ray.get([task.remote(jobs, False) for _ in range(4)])  # both workers build their env and agent
        run_batch(jobs)
        remote = median_seconds(partial(lambda jobs: ray.get(task.remote(jobs, False)), jobs), repeats)
        local = median_seconds(partial(run_batch, jobs), repeats)
        print(
            f"  batch of {size:>2} episodes: as a Ray task {1e3 * remote:.1f} ms, in this process {1e3 * local:.1f} ms, "
            f"overhead {1e3 * (remote - local):+.1f} ms"
        )


def episode_cost(repeats: int) -> None:
    """Seconds per default Synthetic-v0 episode of the uniform agent, one torch thread, by batch size."""
    jobs = make_plan(["uniform"], [ENV_ID], {}, 64).jobs()
    print(f"Default {ENV_ID} episode, uniform agent, one torch thread")
    for size in (1, 16, 64):
        batch = jobs[:size]
        run_batch(batch)  # builds and caches the vector env of this size
        seconds = median_seconds(partial(run_batch, batch), repeats)
        print(f"  batch of {size:>2}: {seconds:.3f} s per batch, {1e3 * seconds / size:.1f} ms per episode")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=512, help="seeds per agent (3 agents) in the throughput plan")
    parser.add_argument("--batch-size", type=int, default=32, help="evaluate.py --batch-size of the throughput plan")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each comparison")
    parser.add_argument("--quick", action="store_true", help="tiny env config, few seeds and rounds: a smoke run")
    options = parser.parse_args()
    env_kwargs: dict[str, Any] = dict(TINY_OVERRIDES) if options.quick else {}
    seeds, rounds, repeats = (8, 2, 3) if options.quick else (options.seeds, options.rounds, 7)
    limit_threads()
    jobs = plan_jobs(seeds, env_kwargs)
    n_batches = len(batches(jobs, options.batch_size))
    print(
        f"plan: {', '.join(AGENTS)} on {ENV_ID}{' (tiny)' if env_kwargs else ''} x {seeds} seeds = {len(jobs)} episodes "
        f"in {n_batches} batches of {options.batch_size}"
    )

    started = time.perf_counter()
    ray = connect(None, "bench/ray_evaluate.py", num_cpus=2)
    print(f"Ray start-up in this process: {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    dispatch_seconds(jobs, "ray", options.batch_size)  # warm-up: Ray's workers import torch and build their caches
    print(f"warm-up round on Ray (workers start): {time.perf_counter() - started:.1f} s")

    times = alternate(
        rounds,
        {
            "workers 2": lambda: dispatch_seconds(jobs, "local", options.batch_size),
            "ray": lambda: dispatch_seconds(jobs, "ray", options.batch_size),
        },
    )
    report_throughput("Dispatch throughput (evaluate.run_episodes; the pool's start-up counted, Ray's not)", times, len(jobs))
    startup = statistics.median(pool_startup_seconds() for _ in range(rounds))
    times["workers 2"] = [t - startup for t in times["workers 2"]]
    report_throughput(f"Dispatch throughput, the pool's start-up ({startup:.1f} s, median of {rounds}) left out too", times, len(jobs))

    task_overhead(ray, make_plan(["uniform"], [ENV_ID], env_kwargs, 16).jobs(), repeats)
    ray.shutdown()
    episode_cost(repeats)

    # Last, with this process's Ray shut down: each evaluate.py --backend ray starts its own.
    argv = [
        "--agents",
        *AGENTS,
        "--envs",
        ENV_ID,
        "--seeds",
        str(seeds),
        "--batch-size",
        str(options.batch_size),
        "--env-kwargs",
        json.dumps(env_kwargs),
    ]
    times = alternate(
        rounds, {"workers 2": lambda: cli_seconds([*argv, "--workers", "2"]), "ray": lambda: cli_seconds([*argv, "--backend", "ray"])}
    )
    report_throughput("End to end (evaluate.py child process, start-up and result files included)", times, len(jobs))


if __name__ == "__main__":
    main()

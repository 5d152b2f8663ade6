"""How many decision steps per second: one env, process vectorisation, and the native vector env.

Prints, from one run on one machine, side by side: decision steps per second of ``DUSEnv`` alone,
of SB3's ``SubprocVecEnv`` with 2 workers (one torch thread each), and of ``DUSVectorEnv`` at
several ``num_envs`` and torch thread counts; the best native figure over ``SubprocVecEnv`` (target
>= 6x, stretch 10x); the native env's memory per env; the achieved GFLOP/s of its training and
validation work next to a large ``torch.mm`` at the same thread count (the machine's practical
limit); and the ratio of the native env's step time to a bare batched-matmul training loop written
here by hand doing the same work without any of the environment (target <= 1.15).

Actions are fixed and non-uniform by default (half the envs give 25/75 of the budget to the two
modalities, half 62.5/37.5, as a learning policy would spread them), which is the realistic case:
envs of one batch then need different row counts and the batch is padded to the largest.

    python bench/vector_throughput.py                     # about 5 minutes on 2 cores
    python bench/vector_throughput.py --quick             # a smoke run (seconds)
    python bench/vector_throughput.py --uniform --num-envs 64 256 --threads 2
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dus_env
from dus_env.batched.optim import ADAM_BETAS, ADAM_EPS
from dus_env.env import DUSEnv
from dus_env.tasks import SyntheticTaskConfig
from dus_env.vector_env import DUSVectorEnv

ENV_ID = "dus_env/Synthetic-v0"


def actions_for(num_envs: int, mapping: dus_env.QuantityMapping, uniform: bool) -> np.ndarray:
    if uniform:
        return np.zeros((num_envs, 2), dtype=np.float32)
    shares = np.where(np.arange(num_envs)[:, None] % 2 == 0, [0.25, 0.75], [0.625, 0.375])
    return np.stack([mapping.action(row * mapping.total) for row in shares]).astype(np.float32)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(function, repeats: int) -> tuple[float, float]:
    """Median CPU and wall seconds of ``repeats`` calls (after one warm-up call)."""
    function()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        function()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


# -- the contenders --------------------------------------------------------------------------------


def single_env(steps: int, uniform: bool) -> float:
    torch.set_num_threads(1)
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    action = actions_for(1, cast(DUSEnv, env.unwrapped).mapping, uniform)[0]

    def run() -> None:
        for _ in range(steps):
            *_, terminated, _, _ = env.step(action)
            if terminated:
                env.reset()

    return steps / timed(run, 3)[1]


def subproc_env(steps: int, uniform: bool) -> float:
    from stable_baselines3.common.vec_env import SubprocVecEnv

    torch.set_num_threads(1)
    venv = SubprocVecEnv([lambda: gym.make("dus_env:" + ENV_ID) for _ in range(2)], start_method="forkserver")
    venv.seed(0)
    venv.reset()
    mapping = dus_env.preset("Synthetic").quantity_mapping()
    actions = actions_for(2, mapping, uniform)

    def run() -> None:
        for _ in range(steps):
            venv.step(actions)

    wall = timed(run, 3)[1]
    venv.close()
    return 2 * steps / wall


def native_env(num_envs: int, threads: int, steps: int, uniform: bool) -> dict[str, Any]:
    torch.set_num_threads(threads)
    before = rss_mib()
    envs = gym.make_vec(ENV_ID, num_envs=num_envs, torch_threads=None, autoreset_mode="same_step")
    envs.reset(seed=0)
    native = cast(DUSVectorEnv, envs.unwrapped)
    actions = actions_for(num_envs, native.mapping, uniform)
    envs.step(actions)
    memory = (rss_mib() - before) / num_envs

    def run() -> None:
        for _ in range(steps):
            envs.step(actions)

    cpu, wall = timed(run, 3)
    quantities = np.stack([native.mapping.quantities(a) for a in actions])
    flops = step_flops(native.config, quantities)
    envs.close()
    return {
        "steps_per_s": num_envs * steps / wall,
        "wall_per_step": wall / steps,
        "cpu_per_step": cpu / steps,
        "gflops": flops * steps / wall / 1e9,
        "memory_mib": memory,
        "quantities": quantities,
    }


def synthetic_task(config: dus_env.EnvConfig) -> tuple[SyntheticTaskConfig, int]:
    """The task config of ``ENV_ID`` and its training-set size: the contenders are written for a
    synthetic task of one fixed size."""
    task = config.task
    if not isinstance(task, SyntheticTaskConfig) or not isinstance(task.n_train, int):
        raise TypeError(f"{ENV_ID} is expected to have a synthetic task of a fixed n_train, not {task!r}")
    return task, task.n_train


def step_flops(config: dus_env.EnvConfig, quantities: np.ndarray) -> float:
    """Useful FLOPs of one decision step of all envs: forward of every participating row (2 * in * out
    per linear layer), backward counted as 2x forward, K iterations, plus the validation forward pass."""
    task, _ = synthetic_task(config)
    learner = config.learner
    widths = (task.feature_dim, *learner.hidden_sizes, learner.embedding_dim, task.n_classes)
    per_row = sum(2 * i * o for i, o in itertools.pairwise(widths))
    training = 3 * per_row * quantities.sum() * config.iterations_per_step
    validation = per_row * task.n_val * quantities.size
    return float(training + validation)


def matmul_gflops(threads: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    wall = timed(lambda: torch.mm(a, b), 5)[1]
    return 2 * 2048**3 / wall / 1e9


def bare_batched_step(num_envs: int, threads: int, quantities: np.ndarray, steps: int) -> float:
    """The same work by hand: stacked weights, gathered rows, baddbmm, fused logits by scatter-add,
    cross-entropy, autograd, fused Adam, then the validation forward pass; no env around it."""
    torch.set_num_threads(threads)
    config = dus_env.preset("Synthetic")
    task, n_train = synthetic_task(config)
    learner = config.learner
    generator = torch.Generator().manual_seed(0)
    widths = (task.feature_dim, *learner.hidden_sizes, learner.embedding_dim)
    params = []
    for _ in range(2):
        layers = [(torch.randn(num_envs, i, o, generator=generator) * 0.1, torch.zeros(num_envs, o)) for i, o in itertools.pairwise(widths)]
        layers.append((torch.randn(num_envs, widths[-1], task.n_classes, generator=generator) * 0.1, torch.zeros(num_envs, task.n_classes)))
        params.append([(w.requires_grad_(), b.requires_grad_()) for w, b in layers])
    flat = [t for modality in params for layer in modality for t in layer]
    first, second = [torch.zeros_like(t) for t in flat], [torch.zeros_like(t) for t in flat]
    train = [torch.randn(num_envs, n_train, task.feature_dim, generator=generator) for _ in range(2)]
    labels = torch.randint(0, task.n_classes, (num_envs, n_train), generator=generator)
    val = [torch.randn(num_envs, task.n_val, task.feature_dim, generator=generator) for _ in range(2)]
    batch = int(quantities.max(axis=1).max())
    counts = [int(quantities[:, j].max()) for j in range(2)]
    offsets = (torch.arange(num_envs) * n_train).unsqueeze(1)
    dump = (torch.arange(num_envs) * (batch + 1)).unsqueeze(1)
    step_count = [0]

    def forward(modality: int, x: torch.Tensor) -> torch.Tensor:
        h = x
        for index, (w, b) in enumerate(params[modality]):
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if index < len(params[modality]) - 1:
                h = h.relu_()
        return h

    def iteration() -> None:
        rows = torch.randint(0, n_train, (num_envs, batch), generator=generator)
        fused = torch.zeros(num_envs * (batch + 1), task.n_classes)
        for j in range(2):
            members = torch.rand(num_envs, batch, generator=generator).argsort(dim=1)[:, : counts[j]]
            x = train[j].view(-1, task.feature_dim).index_select(0, (rows.gather(1, members) + offsets).view(-1))
            logits = forward(j, x.view(num_envs, counts[j], task.feature_dim))
            fused = fused.index_add(0, (members + dump).view(-1), logits.view(-1, task.n_classes))
        loss = F.cross_entropy(fused.view(num_envs, batch + 1, -1)[:, :batch].reshape(-1, task.n_classes), labels.gather(1, rows).view(-1))
        for t in flat:
            t.grad = None
        loss.backward()
        step_count[0] += 1
        with torch.no_grad():  # every t has a grad after the backward pass (the cast says so)
            torch._fused_adam_(
                flat,
                cast(list[torch.Tensor], [t.grad for t in flat]),
                first,
                second,
                [],
                [torch.tensor(float(step_count[0]))] * len(flat),
                lr=learner.lr,
                beta1=ADAM_BETAS[0],
                beta2=ADAM_BETAS[1],
                weight_decay=0.0,
                eps=ADAM_EPS,
                amsgrad=False,
                maximize=False,
            )

    def decision_step() -> None:
        for _ in range(config.iterations_per_step):
            iteration()
        with torch.no_grad():
            logits = torch.stack([forward(j, val[j]) for j in range(2)])
            torch.cat((logits.sum(0).argmax(2).unsqueeze(0), logits.argmax(3))).float().mean(2)

    def run() -> None:
        for _ in range(steps):
            decision_step()

    return timed(run, 3)[1] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[8, 32, 128, 512], help="native env sizes")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts for the native env")
    parser.add_argument("--uniform", action="store_true", help="uniform actions (every env the same quantities)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny step counts, small num_envs")
    args = parser.parse_args()
    if args.quick:
        args.num_envs, args.threads = [4, 8], [1]
    env_budget = 8 if args.quick else 400  # env steps per timed repeat of a native configuration
    single = single_env(3 if args.quick else 40, args.uniform)
    subproc = subproc_env(3 if args.quick else 40, args.uniform)
    rows = []
    for threads in args.threads:
        limit = matmul_gflops(threads)
        for num_envs in args.num_envs:
            steps = max(2, env_budget // num_envs)
            native = native_env(num_envs, threads, steps, args.uniform)
            bare = bare_batched_step(num_envs, threads, native["quantities"], steps)
            rows.append((threads, num_envs, native, bare, limit))
    print(
        f"{ENV_ID}, {'uniform' if args.uniform else 'mixed (25/75 and 62.5/37.5)'} actions, {os.cpu_count()} cores, "
        f"torch {torch.__version__}"
    )
    print(
        f"{'contender':<28} {'threads':>7} {'steps/s':>9} {'x subproc':>9} {'MiB/env':>8} {'GFLOP/s':>8} {'mm GFLOP/s':>10} {'env/bare':>8}"
    )
    print(f"{'DUSEnv alone':<28} {1:>7} {single:>9.1f} {single / subproc:>9.2f}")
    print(f"{'SubprocVecEnv, 2 workers':<28} {1:>7} {subproc:>9.1f} {1.0:>9.2f}")
    for threads, num_envs, native, bare, limit in rows:
        print(
            f"{f'DUSVectorEnv num_envs={num_envs}':<28} {threads:>7} {native['steps_per_s']:>9.1f} "
            f"{native['steps_per_s'] / subproc:>9.2f} {native['memory_mib']:>8.2f} {native['gflops']:>8.1f} {limit:>10.1f} "
            f"{native['wall_per_step'] / bare:>8.3f}"
        )
    best = max(rows, key=lambda row: row[2]["steps_per_s"])
    print(
        f"best native: {best[2]['steps_per_s']:.1f} steps/s (num_envs={best[1]}, {best[0]} threads) = "
        f"{best[2]['steps_per_s'] / subproc:.2f}x SubprocVecEnv (target >= 6x, stretch 10x); "
        f"env/bare there {best[2]['wall_per_step'] / best[3]:.3f} (target <= 1.15)"
    )


if __name__ == "__main__":
    main()

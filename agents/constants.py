"""State-free allocations: the grid of constant budget shares, and the best of them for an env.

A sampling policy earns its keep only by beating what needs no state at all: uniform sampling,
the single constant allocation that is best *on average over the env's task distribution*
(grid-searched on tuning seeds, :func:`tune_best_constant`, the ``best-constant`` agent of
``evaluate.py``), and the constant that is best *for each instance* (:func:`instance_oracle`, used by
``bench/headroom.py``), an estimate of what knowing the instance is worth to a constant policy. The
gap between the last two estimates what a policy can gain by reading the training state.

Constant episodes run directly on a :class:`dus_env.core.TrainingCore` (no agent, no wrapper): a
whole grid times a set of seeds is one batched computation, and the instance oracle needs what the
env API does not offer, the same task instance with a second model seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from dus_env.config import EnvConfig
from dus_env.core import TrainingCore
from dus_env.env import episode_seeds
from dus_env.quantities import QuantityMapping

from . import seed_ranges

#: Seeds the best single constant is tuned on (:data:`agents.seed_ranges.TUNING_SEEDS`): disjoint from
#: every training, evaluation and table seed.
TUNING_SEEDS: tuple[int, ...] = tuple(seed_ranges.TUNING_SEEDS)
#: Grid step of the budget shares.
DEFAULT_STEP = 0.05
#: Envs per batched computation (memory stays at a few hundred MB for the registered presets).
DEFAULT_BATCH = 256


def share_grid(mapping: QuantityMapping, step: float = DEFAULT_STEP) -> np.ndarray:
    """Every allocation the mapping can realise with shares on a ``step`` grid, as quantities ``[G, M]``.

    Shares outside the quantity range are clipped by the mapping; allocations that end up equal
    are kept once, so each row is a distinct constant policy. Uniform is always a row.
    """
    if not 0 < step <= 0.5:
        raise ValueError(f"step={step!r} is invalid: allowed range is (0, 0.5]")
    m = mapping.n_modalities
    ticks = np.round(np.arange(step, 1.0, step), 10)
    rows = {tuple(mapping.uniform().tolist())}
    for shares in itertools.product(ticks, repeat=m - 1):
        last = 1.0 - sum(shares)
        if last <= 1e-9:
            continue
        full = np.array([*shares, last])
        rows.add(tuple(mapping.quantities(mapping.action(full * mapping.total)).tolist()))
    return np.array(sorted(rows), dtype=np.int64)


def seed_pair(seed: int, replicate: int = 0) -> tuple[int, int]:
    """(task seed, model seed) of env seed ``seed``; ``replicate > 0`` keeps the task, draws another model seed.

    ``replicate = 0`` is exactly the episode ``env.reset(seed=seed)`` plays.
    """
    task_seed, model_seed = episode_seeds(np.random.default_rng(seed))
    if replicate:
        model_seed = episode_seeds(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(replicate,))))[1]
    return task_seed, model_seed


def constant_accuracies(
    config: EnvConfig,
    seed_pairs: list[tuple[int, int]],
    grid: np.ndarray,
    batch: int = DEFAULT_BATCH,
) -> np.ndarray:
    """Final fused test accuracy ``[S, G]`` of every constant ``grid[g]`` on every ``seed_pairs[s]``."""
    jobs = [(s, g) for s in range(len(seed_pairs)) for g in range(len(grid))]
    result = np.full((len(seed_pairs), len(grid)), np.nan)
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        core = TrainingCore(config, len(chunk))
        core.reset(np.arange(len(chunk)), [seed_pairs[s] for s, _ in chunk])
        quantities = np.stack([grid[g] for _, g in chunk])
        for _ in range(config.decision_steps):
            outcome = core.step(quantities)
            if outcome.final is not None:
                for env, accuracy in zip(outcome.final.envs.tolist(), outcome.final.test_fused_accuracy.tolist()):
                    s, g = chunk[env]
                    result[s, g] = accuracy
            if core.done.all():
                break
    return result


def shares_of(quantities: np.ndarray) -> np.ndarray:
    """Each modality's share of the samples (also right under the free budget, where the total varies)."""
    quantities = np.asarray(quantities, dtype=np.float64)
    return quantities / quantities.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class TunedConstant:
    """The best single constant of an env: its quantities and shares, and the mean accuracy of every grid point."""

    quantities: tuple[int, ...]
    shares: tuple[float, ...]
    grid: np.ndarray
    mean_accuracy: np.ndarray


def tune_best_constant(config: EnvConfig, seeds: Sequence[int] = TUNING_SEEDS, step: float = DEFAULT_STEP) -> TunedConstant:
    """The constant with the best mean final test accuracy over the tuning ``seeds`` (cached per process)."""
    return _tune_best_constant(config, tuple(int(s) for s in seeds), float(step))


@lru_cache(maxsize=16)
def _tune_best_constant(config: EnvConfig, seeds: tuple[int, ...], step: float) -> TunedConstant:
    grid = share_grid(config.quantity_mapping(), step)
    accuracies = constant_accuracies(config, [seed_pair(s) for s in seeds], grid)
    mean = accuracies.mean(axis=0)
    best = int(np.argmax(mean))
    return TunedConstant(tuple(int(q) for q in grid[best]), tuple(float(x) for x in shares_of(grid[best])), grid, mean)


@dataclass(frozen=True)
class InstanceOracle:
    """Per-instance best constant: chosen on a replicate run, scored on the evaluation run.

    :param chosen: grid index picked for each seed (on the replicate model seed).
    :param accuracy: test accuracy of the pick on each seed's own episode (model seed of ``reset(seed)``).
    :param in_sample: the best grid accuracy on each seed's own episode (picked and scored on the same
        run: optimistic, the selection also fits the run's noise).
    :param table: accuracy ``[S, G]`` of every grid point on each seed's own episode.
    """

    chosen: np.ndarray
    accuracy: np.ndarray
    in_sample: np.ndarray
    table: np.ndarray


def instance_oracle(config: EnvConfig, seeds: list[int], grid: np.ndarray) -> InstanceOracle:
    """The per-instance best constant: what a constant policy that knew the instance would score.

    Why a replicate: picking the best of ``G`` constants on the very episode it is scored on also
    picks the luckiest model initialisation and row order, which no policy can know. The pick is
    made on the same task instance trained from another model seed, and scored on the episode
    ``reset(seed)`` plays. One replicate makes the pick itself noisy, so this is an estimate, on
    the low side of the true per-instance best; the in-sample maximum beside it is on the high side.
    """
    evaluation = constant_accuracies(config, [seed_pair(s) for s in seeds], grid)
    replicate = constant_accuracies(config, [seed_pair(s, replicate=1) for s in seeds], grid)
    chosen = np.argmax(replicate, axis=1)
    rows = np.arange(len(seeds))
    return InstanceOracle(chosen, evaluation[rows, chosen], evaluation.max(axis=1), evaluation)

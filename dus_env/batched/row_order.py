"""Row orders: which training rows each epoch of a row stream visits, and in which order.

The learner option ``row_order`` picks one; every learner draws its rows through
:class:`~dus_env.batched.data.RowStreams`, so an order composes with every learner and with the
sampled quantities (the quantities say how many rows, the order says which ones).

* ``epoch`` (:class:`EpochOrder`): each epoch a uniformly random permutation of all rows.
* ``bss_curriculum`` (:class:`CurriculumOrder`): BSS's curriculum (:mod:`dus_env.methods.bss`):
  an epoch visits, shuffled, the ``lambda_t`` fraction of the rows the balance measurer ranks most
  balanced; the pool grows with ``t`` (decision steps or epochs).
* ``bss_adaptive`` (:class:`AdaptiveOrder`): each epoch draws its order without replacement with
  probabilities proportional to BSS's adaptive weights (Efraimidis-Spirakis keys
  ``-log(u) / w``, ascending: the same distribution as ``torch.multinomial`` without replacement,
  from the env's counter-based uniforms).

Measuring is a forward pass of every modality over the env's training split (batched over envs
in cache-sized chunks, as an evaluation). It runs at an episode's reset (with the fresh model, as
the official code does before its first epoch) and then every ``bss_measure_every`` decision
steps (0 = never again). A new measurement or pool size takes effect from the stream's *next*
epoch: an epoch in progress is finished as drawn, so every row of a pool is still seen once per
epoch. So that a batch never needs more rows than the pool holds, the pool has at least
``EnvConfig.max_quantity`` rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..learners import LearnerConfig
from ..methods.bss import adaptive_weights, balance_measures, curriculum_fraction, curriculum_scores
from .data import INT64_MAX, StackedSplit
from .evaluation import env_chunks
from .model import StackedModel
from .random import to_uniform

NO_ENVS = np.zeros(0, dtype=np.int64)


class EpochOrder:
    """Uniform permutations of all rows (see the module docstring)."""

    def __init__(self, split: StackedSplit) -> None:
        self.split = split

    def reset_envs(self, envs: np.ndarray, model: StackedModel) -> None:
        """New episodes for ``envs`` (their models freshly drawn)."""

    def start_decision(self, model: StackedModel, decisions: np.ndarray) -> np.ndarray:
        """Before every decision step's row draws, with each env's decision index; returns the envs
        whose next epochs must be redrawn."""
        return NO_ENVS

    def sort_keys(
        self, envs: np.ndarray, epochs: np.ndarray, values: torch.Tensor, padding: torch.Tensor | None
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Keys ``[k, R]`` whose ascending order is the epoch's row order for ``envs``, and how many of
        the rows the epoch visits (its first ones in that order).

        :param epochs: the epoch of each env's draw.
        :param values: the draw's random int64 values ``[k, R]``.
        :param padding: rows beyond each env's split (they must sort last), ``None`` if there are none.
        """
        if padding is not None:
            values = values.masked_fill(padding, INT64_MAX)
        return values, self.split.rows[envs]


class _BalanceOrder(EpochOrder):
    """What both BSS orders share: measuring every training row of an env with its current model."""

    def __init__(self, split: StackedSplit, config: LearnerConfig, min_pool: int) -> None:
        super().__init__(split)
        self.config = config
        self.min_pool = min_pool
        self.measure_every = config.bss_measure_interval
        self.decisions = np.zeros(len(split.rows), dtype=np.int64)

    def reset_envs(self, envs: np.ndarray, model: StackedModel) -> None:
        self.decisions[envs] = 0
        self._measure(model, envs)

    def start_decision(self, model: StackedModel, decisions: np.ndarray) -> np.ndarray:
        self.decisions[:] = decisions
        if not self.measure_every:
            return NO_ENVS
        due = np.flatnonzero((decisions > 0) & (decisions % self.measure_every == 0))
        if due.size:
            self._measure(model, due)
        return due

    @torch.no_grad()
    def _measure(self, model: StackedModel, envs: np.ndarray) -> None:
        split = self.split
        positions = torch.arange(split.capacity, device=split.labels.device)
        for chunk in env_chunks(model, split, torch.as_tensor(envs, device=split.labels.device)):
            logits = [model.modality_logits(j, x[chunk], chunk) for j, x in enumerate(split.features)]
            similarity, loss = balance_measures(logits, split.labels[chunk])
            valid = positions < split.rows_device[chunk].unsqueeze(1)
            self._store(chunk, similarity, loss, valid)

    def _store(self, envs: torch.Tensor | slice, similarity: torch.Tensor, loss: torch.Tensor, valid: torch.Tensor) -> None:
        raise NotImplementedError


class CurriculumOrder(_BalanceOrder):
    """BSS curriculum: a growing pool of the most balanced rows (see the module docstring)."""

    def __init__(self, split: StackedSplit, config: LearnerConfig, min_pool: int) -> None:
        super().__init__(split, config, min_pool)
        #: Each row's rank by balance score, 0 = most balanced (padding rows rank last).
        self.ranks = torch.zeros(len(split.rows), split.capacity, dtype=torch.int64, device=split.labels.device)

    def start_decision(self, model: StackedModel, decisions: np.ndarray) -> np.ndarray:
        measured = super().start_decision(model, decisions)
        if self.config.bss_grow_unit == "decisions":
            # The pool of the next epochs grows with the decision index: redraw them all.
            return np.arange(len(decisions))
        return measured

    def _store(self, envs: torch.Tensor | slice, similarity: torch.Tensor, loss: torch.Tensor, valid: torch.Tensor) -> None:
        # A diverged model's NaN scores rank as the worst real rows, still before the padding rows
        # (a stable sort keeps row order among ties): padding never enters a pool.
        scores = curriculum_scores(similarity, loss, valid).nan_to_num(nan=math.inf).masked_fill(~valid, math.inf)
        order = scores.argsort(dim=1, stable=True)
        positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
        self.ranks[envs] = torch.empty_like(order).scatter_(1, order, positions)

    def pool_sizes(self, envs: np.ndarray, epochs: np.ndarray) -> np.ndarray:
        """Rows in the pool of each env's epoch: ``max(floor(lambda_t * n), max_quantity)``, at most ``n``."""
        config = self.config
        times = epochs if config.bss_grow_unit == "epochs" else self.decisions[envs]
        fractions = np.array([curriculum_fraction(int(t), config.bss_lambda0, config.bss_grow) for t in times])
        rows = self.split.rows[envs]
        return np.minimum(np.maximum(np.floor(rows * fractions).astype(np.int64), self.min_pool), rows)

    def sort_keys(
        self, envs: np.ndarray, epochs: np.ndarray, values: torch.Tensor, padding: torch.Tensor | None
    ) -> tuple[torch.Tensor, np.ndarray]:
        pools = self.pool_sizes(envs, epochs)
        index = torch.as_tensor(envs, device=values.device)
        outside = self.ranks[index] >= torch.as_tensor(pools, device=values.device).unsqueeze(1)
        return values.masked_fill(outside, INT64_MAX), pools


class AdaptiveOrder(_BalanceOrder):
    """BSS adaptive: weighted draws without replacement (see the module docstring)."""

    def __init__(self, split: StackedSplit, config: LearnerConfig, min_pool: int) -> None:
        super().__init__(split, config, min_pool)
        #: Each row's draw weight (0 for padding rows).
        self.weights = torch.zeros(len(split.rows), split.capacity, dtype=torch.float64, device=split.labels.device)

    def _store(self, envs: torch.Tensor | slice, similarity: torch.Tensor, loss: torch.Tensor, valid: torch.Tensor) -> None:
        # A diverged model's NaN weights become uniform ones, so its real rows still come before padding.
        weights = adaptive_weights(similarity.double(), loss.double(), valid).nan_to_num(nan=1.0)
        self.weights[envs] = weights.masked_fill(~valid, 0.0)

    def sort_keys(
        self, envs: np.ndarray, epochs: np.ndarray, values: torch.Tensor, padding: torch.Tensor | None
    ) -> tuple[torch.Tensor, np.ndarray]:
        weights = self.weights[torch.as_tensor(envs, device=values.device)]
        # A zero weight (padding) gives +inf: last.
        keys = -torch.log(to_uniform(values)) / weights
        return keys, self.split.rows[envs]


ROW_ORDERS = {"epoch": EpochOrder, "bss_curriculum": CurriculumOrder, "bss_adaptive": AdaptiveOrder}


def make_row_order(config: LearnerConfig, split: StackedSplit, min_pool: int) -> EpochOrder:
    """The row order ``config.row_order`` names, for the training split ``split``."""
    if config.row_order == "epoch":
        return EpochOrder(split)
    return ROW_ORDERS[config.row_order](split, config, min_pool)

"""One training iteration of every env's learner, given the per-env quantities ``n_ij``.

* ``joint`` (late-fusion baseline): env ``i`` draws one paired batch of ``b_i = max_j n_ij`` rows;
  modality ``j`` takes part in a seeded random subset of ``n_ij`` of them and is left out of the
  fused logits of the rest; one fused cross-entropy step. A modality with more samples than the
  others therefore also trains on samples where it must predict alone. Only the participating
  rows of a modality go through its encoder (they are gathered, then their logits scattered into
  the fused batch), so masked-out rows cost nothing.
* ``alternating`` (MLA-style): each modality draws its own batch of ``n_ij`` rows and is updated in
  turn, through a head shared by all modalities; an update changes only that modality's encoder
  and the head.

Envs with different quantities share one computation: every batch is padded to the largest
``n_ij`` over envs, and padded rows are masked out of the loss (weight 0) and of the scores.

At each decision the learner hands over the losses and the modality scores ``s_t^ij`` of the
iterations since the last one, computed from the logits those iterations already produced (one
batched softmax per modality for all of them: the scores only matter at the next decision).

Everything random for a decision step (rows, participation) is drawn, and the features gathered,
once before its ``K`` iterations: the quantities do not change within a step, and each iteration is
then only the forward pass, the loss, the backward pass and the optimizer update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..monitor import true_class_probability
from .data import INT64_MAX, RowStreams, StackedSplit
from .model import StackedModel
from .optim import StackedOptimizer
from .random import PARTICIPATION, random_values


@dataclass(frozen=True)
class IterationRecord:
    """What the ``K`` iterations of one decision step produced: ``losses [K, N]``, ``scores [K, N, M]``."""

    losses: torch.Tensor
    scores: torch.Tensor


@dataclass(frozen=True)
class ModalityBatches:
    """Modality ``j``'s inputs for the ``K`` iterations of a step, drawn and gathered at once.

    :param features: ``[N, K, W, d]``.
    :param labels: ``[N, K, W]``.
    :param valid: bool ``[N, W]``, the rows that count (the same in every iteration); ``None`` = all.
    :param counts: ``[N]`` valid rows per env.
    :param target: ``[N, K, W]`` rows of the fused batch (joint learner, partial participation only).
    """

    features: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor | None
    counts: torch.Tensor
    target: torch.Tensor | None = None


@torch.no_grad()
def modality_scores(logits: torch.Tensor, batches: ModalityBatches) -> torch.Tensor:
    """``s^j`` of every iteration and env ``[K, N]`` from the step's logits ``[K, N, W, C]``: the mean
    softmax probability of the true class over the valid rows (the score formula, see
    :mod:`dus_env.monitor`), one batched softmax for the whole step."""
    probability = true_class_probability(logits, batches.labels.transpose(0, 1))
    if batches.valid is None:
        return probability.mean(dim=-1)
    # masked_fill, not a product: a padded row's NaN must not reach a healthy env's score.
    return probability.masked_fill(~batches.valid, 0.0).sum(dim=-1) / batches.counts


def masked_mean(values: torch.Tensor, valid: torch.Tensor | None, counts: torch.Tensor) -> torch.Tensor:
    """Per-env mean of ``values [N, W]`` over the valid rows."""
    if valid is None:
        return values.mean(dim=1)
    return values.masked_fill(~valid, 0.0).sum(dim=1) / counts


class _Learner:
    """What both learners hold: the stacked model, its optimizer, the training split and its row streams."""

    def __init__(self, model: StackedModel, optimizer: StackedOptimizer, train: StackedSplit, n_streams: int) -> None:
        self.model = model
        self.optimizer = optimizer
        self.train = train
        self.streams = RowStreams(train, n_streams)
        self.device = model.flat.device
        #: Iterations run in each env's episode (the participation draws' counter).
        self.iterations = np.zeros(model.n_envs, dtype=np.int64)

    def reset_envs(self, envs: np.ndarray, keys: np.ndarray) -> None:
        """New episodes for ``envs`` with keys ``keys`` (their parameters are re-drawn by the caller)."""
        self.streams.reset_envs(envs, keys)
        self.iterations[envs] = 0
        self.optimizer.reset_envs(torch.as_tensor(envs, device=self.device))

    def _valid(self, counts: np.ndarray, width: int) -> torch.Tensor | None:
        """Rows ``< counts[i]`` of a batch of ``width`` (``None`` when every env fills the width)."""
        if (counts == width).all():
            return None
        return torch.arange(width, device=self.device) < torch.as_tensor(counts, device=self.device).unsqueeze(1)


class JointLearner(_Learner):
    """Late fusion with per-modality participation masks (see the module docstring)."""

    def __init__(self, model: StackedModel, optimizer: StackedOptimizer, train: StackedSplit) -> None:
        super().__init__(model, optimizer, train, n_streams=1)

    def run(self, quantities: np.ndarray, repeats: int) -> IterationRecord:
        """``repeats`` iterations of every env with quantities int64 ``[N, M]``."""
        model, n_envs = self.model, self.model.n_envs
        batch_sizes = quantities.max(axis=1)
        width = int(batch_sizes.max())
        rows = self.streams.take(0, batch_sizes, width, repeats)
        labels = self.train.gather_labels(rows)
        row_valid = self._valid(batch_sizes, width)
        sizes = torch.as_tensor(batch_sizes, device=self.device)
        batches = self._modality_batches(quantities, rows, labels, row_valid, width, repeats)
        kept: list[list[torch.Tensor]] = [[] for _ in batches]
        losses = []
        for k in range(repeats):
            fused = None
            for j, batch in enumerate(batches):
                if batch.target is None:
                    logits = model.modality_logits(j, batch.features[:, k])
                    fused = logits if fused is None else fused + logits
                    kept[j].append(logits.detach())
            if any(batch.target is not None for batch in batches):
                # Partial participation: each member's logits go to its row of the fused batch; the
                # padding members of an env land in one extra dump row that the loss never reads.
                dump_row = torch.zeros(n_envs, 1 if fused is not None else width + 1, model.n_classes, device=self.device)
                extended = (dump_row if fused is None else torch.cat((fused, dump_row), dim=1)).view(-1, model.n_classes)
                for j, batch in enumerate(batches):
                    if batch.target is not None:
                        logits = model.modality_logits(j, batch.features[:, k])
                        extended = extended.index_add(0, batch.target[:, k].reshape(-1), logits.reshape(-1, model.n_classes))
                        kept[j].append(logits.detach())
                fused = extended.view(n_envs, width + 1, model.n_classes)[:, :width]
            assert fused is not None
            per_row = F.cross_entropy(fused.reshape(-1, model.n_classes), labels[:, k].reshape(-1), reduction="none")
            loss = masked_mean(per_row.view(n_envs, width), row_valid, sizes)
            model.grad.zero_()
            loss.sum().backward()
            self.optimizer.step(range(len(model.segments)))
            losses.append(loss.detach())
        scores = torch.stack([modality_scores(torch.stack(logits), batch) for logits, batch in zip(kept, batches)], dim=-1)
        self.iterations += repeats
        return IterationRecord(torch.stack(losses), scores)

    def _modality_batches(
        self, quantities: np.ndarray, rows: torch.Tensor, labels: torch.Tensor, row_valid: torch.Tensor | None, width: int, repeats: int
    ) -> list[ModalityBatches]:
        """Who takes part where: modality ``j`` takes the first ``n_ij`` rows of a random order of env
        ``i``'s ``b_i`` rows; a modality with ``n_ij = b_i`` in every env takes all rows in order (no
        gather and no scatter)."""
        n_envs, n_modalities = quantities.shape
        batch_sizes = quantities.max(axis=1)
        order = None
        if not all((quantities[:, j] == batch_sizes).all() for j in range(n_modalities)):
            counters = (self.iterations[:, None, None] + np.arange(repeats)[:, None]) * n_modalities + np.arange(n_modalities)
            draws = random_values(self.streams.keys, PARTICIPATION, counters, width, self.device)
            if row_valid is not None:
                draws.masked_fill_(~row_valid.view(n_envs, 1, 1, width), INT64_MAX)
            order = draws.argsort(dim=3)
        dump = (torch.arange(n_envs, device=self.device) * (width + 1)).view(-1, 1, 1)
        batches = []
        for j in range(n_modalities):
            counts = torch.as_tensor(quantities[:, j], device=self.device)
            if (quantities[:, j] == batch_sizes).all():
                batches.append(ModalityBatches(self.train.gather(j, rows), labels, row_valid, counts))
                continue
            assert order is not None
            n_most = int(quantities[:, j].max())
            members = order[:, :, j, :n_most]
            valid = self._valid(quantities[:, j], n_most)
            target = members if valid is None else torch.where(valid.unsqueeze(1), members, width)
            batches.append(ModalityBatches(
                self.train.gather(j, rows.gather(2, members)), labels.gather(2, members), valid, counts, target + dump
            ))
        return batches


class AlternatingLearner(_Learner):
    """MLA-style: every modality trains alone on its own batch, in turn, through the shared head."""

    def __init__(self, model: StackedModel, optimizer: StackedOptimizer, train: StackedSplit) -> None:
        super().__init__(model, optimizer, train, n_streams=model.n_modalities)

    def run(self, quantities: np.ndarray, repeats: int) -> IterationRecord:
        """``repeats`` iterations of every env with quantities int64 ``[N, M]``."""
        model = self.model
        head = len(model.segments) - 1
        batches = []
        for j in range(model.n_modalities):
            width = int(quantities[:, j].max())
            rows = self.streams.take(j, quantities[:, j], width, repeats)
            counts = torch.as_tensor(quantities[:, j], device=self.device)
            batches.append(ModalityBatches(self.train.gather(j, rows), self.train.gather_labels(rows), self._valid(quantities[:, j], width), counts))
        totals = torch.as_tensor(quantities.sum(axis=1), device=self.device)
        kept: list[list[torch.Tensor]] = [[] for _ in batches]
        losses = []
        for k in range(repeats):
            total = torch.zeros(model.n_envs, device=self.device)
            for j, batch in enumerate(batches):
                logits = model.modality_logits(j, batch.features[:, k])
                per_row = F.cross_entropy(logits.reshape(-1, model.n_classes), batch.labels[:, k].reshape(-1), reduction="none")
                loss = masked_mean(per_row.view(logits.shape[:2]), batch.valid, batch.counts)
                model.grad.zero_()
                loss.sum().backward()
                self.optimizer.step([j])
                self.optimizer.step([head])
                total = total + loss.detach() * batch.counts
                kept[j].append(logits.detach())
            losses.append(total / totals)
        scores = torch.stack([modality_scores(torch.stack(logits), batch) for logits, batch in zip(kept, batches)], dim=-1)
        self.iterations += repeats
        return IterationRecord(torch.stack(losses), scores)


LEARNERS = {"joint": JointLearner, "alternating": AlternatingLearner}

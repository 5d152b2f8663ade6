"""One training iteration of every env's learner, given the per-env quantities ``n_ij``.

* ``joint`` (late-fusion baseline): env ``i`` draws one paired batch of ``b_i = max_j n_ij`` rows;
  modality ``j`` takes part in a seeded random subset of ``n_ij`` of them and is left out of the
  fused logits of the rest; one fused cross-entropy step. A modality with more samples than the
  others therefore also trains on samples where it must predict alone. Only the participating
  rows of a modality go through its encoder (they are gathered, then their logits scattered into
  the fused batch), so masked-out rows cost nothing.
* ``alternating`` (MLA-style): each modality draws its own batch of ``n_ij`` rows and is updated in
  turn, through a head shared by all modalities; an update changes only that modality's encoder
  and the head. ``mla`` is ``alternating`` with MLA's projection of the head's gradient
  (:mod:`dus_env.methods.mla`).
* ``ogm_ge``: ``joint`` whose encoder gradients are modulated and enhanced every iteration
  (:mod:`dus_env.methods.ogm_ge`).
* ``mie``: modalities in turn, each with its own batch and head, trained with SAM and with
  gradients modified by the other modalities' accumulated layer inputs (:mod:`dus_env.methods.mie`).

Rows come from the row streams in the order the ``row_order`` option names
(:mod:`dus_env.batched.row_order`), for every learner.

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

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..config import EnvConfig
from ..methods.mie import flat_modification, sam_perturbation
from ..methods.mla import projection_alpha, update_projector
from ..methods.ogm_ge import enhanced_gradient, ogm_ge_coefficients
from ..monitor import true_class_probability
from .data import INT64_MAX, RowStreams, StackedSplit
from .model import Layer, StackedModel
from .optim import StackedOptimizer
from .random import GRADIENT_NOISE, PARTICIPATION, normal_rows, random_values
from .row_order import EpochOrder, make_row_order


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
    """Per-env mean of ``values [N, W, ...]`` over the valid rows (dimension 1)."""
    if valid is None:
        return values.mean(dim=1)
    mask = valid.view(*valid.shape, *([1] * (values.ndim - 2)))
    return values.masked_fill(~mask, 0.0).sum(dim=1) / counts.view(-1, *([1] * (values.ndim - 2)))


class _Learner(ABC):
    """What every learner holds: the stacked model, its optimizer, the training split and its row streams."""

    def __init__(self, model: StackedModel, optimizer: StackedOptimizer, train: StackedSplit, n_streams: int, order: EpochOrder) -> None:
        self.model = model
        self.optimizer = optimizer
        self.train = train
        self.streams = RowStreams(train, n_streams, order)
        self.device = model.flat.device
        #: Iterations run in each env's episode (the participation draws' counter).
        self.iterations = np.zeros(model.n_envs, dtype=np.int64)

    def reset_envs(self, envs: np.ndarray, keys: np.ndarray) -> None:
        """New episodes for ``envs`` with keys ``keys`` (their parameters are re-drawn by the caller)."""
        self.streams.order.reset_envs(envs, self.model)
        self.streams.reset_envs(envs, keys)
        self.iterations[envs] = 0
        self.optimizer.reset_envs(torch.as_tensor(envs, device=self.device))

    @abstractmethod
    def run(self, quantities: np.ndarray, repeats: int) -> IterationRecord:
        """``repeats`` iterations of every env with quantities int64 ``[N, M]``: one decision step."""

    def _start_decision(self, repeats: int) -> None:
        """Let the row order measure and redraw before the step's rows are drawn."""
        redraw = self.streams.order.start_decision(self.model, self.iterations // repeats)
        if redraw.size:
            self.streams.redraw_next(redraw)

    def _valid(self, counts: np.ndarray, width: int) -> torch.Tensor | None:
        """Rows ``< counts[i]`` of a batch of ``width`` (``None`` when every env fills the width)."""
        if (counts == width).all():
            return None
        return torch.arange(width, device=self.device) < torch.as_tensor(counts, device=self.device).unsqueeze(1)

    def _own_batches(self, quantities: np.ndarray, repeats: int) -> list[ModalityBatches]:
        """Every modality's own batches of ``n_ij`` rows from its own stream (the alternating learners)."""
        batches = []
        for j in range(self.model.n_modalities):
            width = int(quantities[:, j].max())
            rows = self.streams.take(j, quantities[:, j], width, repeats)
            counts = torch.as_tensor(quantities[:, j], device=self.device)
            batches.append(
                ModalityBatches(self.train.gather(j, rows), self.train.gather_labels(rows), self._valid(quantities[:, j], width), counts)
            )
        return batches

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, batch: ModalityBatches) -> torch.Tensor:
        """Per-env mean cross-entropy ``[N]`` of logits ``[N, W, C]`` over the batch's valid rows."""
        per_row = F.cross_entropy(logits.reshape(-1, self.model.n_classes), labels.reshape(-1), reduction="none")
        return masked_mean(per_row.view(logits.shape[:2]), batch.valid, batch.counts)


class JointLearner(_Learner):
    """Late fusion with per-modality participation masks (see the module docstring)."""

    def __init__(self, model: StackedModel, optimizer: StackedOptimizer, train: StackedSplit, order: EpochOrder) -> None:
        super().__init__(model, optimizer, train, n_streams=1, order=order)

    def run(self, quantities: np.ndarray, repeats: int) -> IterationRecord:
        """``repeats`` iterations of every env with quantities int64 ``[N, M]``."""
        self._start_decision(repeats)
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
            self._modify_gradients(k, [logits[k] for logits in kept], batches)
            self.optimizer.step(range(len(model.segments)))
            losses.append(loss.detach())
        scores = torch.stack([modality_scores(torch.stack(logits), batch) for logits, batch in zip(kept, batches)], dim=-1)
        self.iterations += repeats
        return IterationRecord(torch.stack(losses), scores)

    def _modify_gradients(self, k: int, logits: list[torch.Tensor], batches: list[ModalityBatches]) -> None:
        """Between the backward pass and the update of iteration ``k`` (model-side methods override it)."""

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
            batches.append(
                ModalityBatches(self.train.gather(j, rows.gather(2, members)), labels.gather(2, members), valid, counts, target + dump)
            )
        return batches


class OGMGELearner(JointLearner):
    """``joint`` with OGM-GE's gradient modulation (:mod:`dus_env.methods.ogm_ge`).

    Scores are the mean true-class probability of each modality over the rows it took part in;
    the modulation window is counted in iterations of the episode (``modulation_start`` to
    ``modulation_end``, both included); the enhancement noise comes from the env's counter-based
    stream (domain ``GRADIENT_NOISE``), so it is reproducible and independent of the batch.
    """

    def __init__(
        self,
        model: StackedModel,
        optimizer: StackedOptimizer,
        train: StackedSplit,
        order: EpochOrder,
        alpha: float,
        start: int,
        end: int | None,
        enhancement: bool,
    ) -> None:
        super().__init__(model, optimizer, train, order)
        self.alpha, self.start, self.end, self.enhancement = alpha, start, end, enhancement

    @torch.no_grad()
    def _modify_gradients(self, k: int, logits: list[torch.Tensor], batches: list[ModalityBatches]) -> None:
        model = self.model
        iteration = self.iterations + k
        active = (iteration >= self.start) & (iteration <= (self.end if self.end is not None else np.iinfo(np.int64).max))
        if not active.any():
            return
        scores = torch.stack(
            [masked_mean(true_class_probability(z, batch.labels[:, k]), batch.valid, batch.counts) for z, batch in zip(logits, batches)],
            dim=-1,
        )
        on = torch.as_tensor(active, device=self.device)
        coefficients = torch.where(on.unsqueeze(1), ogm_ge_coefficients(scores, self.alpha), 1.0)
        grads = [(j, index, layer.weight.grad) for j, encoder in enumerate(model.encoders) for index, layer in enumerate(encoder)]
        for t, (j, index, grad) in enumerate(grads):
            assert grad is not None
            if not self.enhancement:
                enhanced_gradient(grad, coefficients[:, j], None)
                continue
            # One stream per env, iteration and tensor, so a tensor's draws do not depend on the
            # others' sizes; a first layer's padded input rows take the trailing values and no noise.
            counters = iteration * len(grads) + t
            noise = normal_rows(self.streams.keys, GRADIENT_NOISE, counters, grad[0].numel(), self.device)
            noise = noise.mul_(on.unsqueeze(1)).view_as(grad)
            valid = None
            if index == 0 and (model.input_widths[:, j] < grad.shape[1]).any():
                widths = torch.as_tensor(model.input_widths[:, j], device=self.device)
                valid = (torch.arange(grad.shape[1], device=self.device) < widths.unsqueeze(1)).unsqueeze(2)
            enhanced_gradient(grad, coefficients[:, j], noise, valid)


class _InTurnLearner(_Learner):
    """Every modality trains alone on its own batch of ``n_ij`` rows, in turn: forward, backward, the
    method's gradient changes (:meth:`_modify_gradients`), then an update of its encoder and its head."""

    #: Whether :meth:`_modify_gradients` needs each layer's input of the forward pass.
    records_inputs = False

    def __init__(self, model: StackedModel, optimizer: StackedOptimizer, train: StackedSplit, order: EpochOrder) -> None:
        super().__init__(model, optimizer, train, n_streams=model.n_modalities, order=order)

    def run(self, quantities: np.ndarray, repeats: int) -> IterationRecord:
        """``repeats`` iterations of every env with quantities int64 ``[N, M]``."""
        self._start_decision(repeats)
        model = self.model
        self._before_step(quantities)
        batches = self._own_batches(quantities, repeats)
        totals = torch.as_tensor(quantities.sum(axis=1), device=self.device)
        kept: list[list[torch.Tensor]] = [[] for _ in batches]
        losses = []
        for k in range(repeats):
            total = torch.zeros(model.n_envs, device=self.device)
            for j, batch in enumerate(batches):
                inputs: list[torch.Tensor] | None = [] if self.records_inputs else None
                logits = model.modality_logits(j, batch.features[:, k], inputs=inputs)
                loss = self._loss(logits, batch.labels[:, k], batch)
                model.grad.zero_()
                loss.sum().backward()
                self._modify_gradients(j, k, batch, inputs)
                self.optimizer.step([j])
                self.optimizer.step([model.head_segment(j)])
                total = total + loss.detach() * batch.counts
                kept[j].append(logits.detach())
            losses.append(total / totals)
        scores = torch.stack([modality_scores(torch.stack(logits), batch) for logits, batch in zip(kept, batches)], dim=-1)
        self.iterations += repeats
        return IterationRecord(torch.stack(losses), scores)

    def _before_step(self, quantities: np.ndarray) -> None:
        """Once per decision step, before its rows are drawn."""

    def _modify_gradients(self, modality: int, k: int, batch: ModalityBatches, inputs: list[torch.Tensor] | None) -> None:
        """Between modality ``modality``'s backward pass and its update in iteration ``k``."""


class AlternatingLearner(_InTurnLearner):
    """MLA-style: every modality trains alone on its own batch, in turn, through the shared head.

    :param projection: project the head's gradient as MLA does (:mod:`dus_env.methods.mla`); each
        env keeps its projector ``[E, E]``, the identity at reset, and folds in every modality
        update's mean embedding after that update.
    """

    def __init__(self, model: StackedModel, optimizer: StackedOptimizer, train: StackedSplit, order: EpochOrder, projection: bool) -> None:
        super().__init__(model, optimizer, train, order)
        self.records_inputs = projection
        size = model.embedding_dim
        self.projectors = torch.eye(size, device=self.device).repeat(model.n_envs, 1, 1) if projection else None

    def reset_envs(self, envs: np.ndarray, keys: np.ndarray) -> None:
        super().reset_envs(envs, keys)
        if self.projectors is not None:
            self.projectors[torch.as_tensor(envs, device=self.device)] = torch.eye(self.model.embedding_dim, device=self.device)

    def _before_step(self, quantities: np.ndarray) -> None:
        # Where each stream stands in its epoch before the step's draws (MLA's alpha schedule).
        self._quantities = quantities
        self._starts, self._pools = self.streams.positions.copy(), self.streams.limits[:, :, 0].copy()

    def _modify_gradients(self, modality: int, k: int, batch: ModalityBatches, inputs: list[torch.Tensor] | None) -> None:
        if inputs is not None:
            pools = self._pools[:, modality]
            position = (self._starts[:, modality] + k * self._quantities[:, modality]) % pools
            self._project(inputs[-1].detach(), batch, position / pools)

    @torch.no_grad()
    def _project(self, embeddings: torch.Tensor, batch: ModalityBatches, epoch_fractions: np.ndarray) -> None:
        """Project the head's weight gradient by the directions so far, then fold this update's in.

        :param epoch_fractions: where each env's batch lies in its epoch (the epoch's pool of rows,
            counted at the step's start: exact unless the pool changes within the step).
        """
        assert self.projectors is not None
        grad = self.model.heads[0].weight.grad
        assert grad is not None
        grad.copy_(torch.bmm(self.projectors, grad))
        alpha = projection_alpha(torch.as_tensor(epoch_fractions, dtype=torch.float32, device=self.device))
        self.projectors = update_projector(self.projectors, masked_mean(embeddings, batch.valid, batch.counts), alpha)


class MIELearner(_InTurnLearner):
    """MIE / IGM (:mod:`dus_env.methods.mie`): modalities in turn on their own batches and heads, SAM
    updates, and each linear layer's weight gradient modified by ``T`` built from the other
    modalities' accumulated layer inputs ``Y`` (layers of another input width are left alone).

    ``Y`` is accumulated per env, modality and layer over the episode; ``T`` is rebuilt at every
    decision step (before any accumulation ``Y = 0`` and ``T = I``).
    """

    records_inputs = True

    def __init__(
        self,
        model: StackedModel,
        optimizer: StackedOptimizer,
        train: StackedSplit,
        order: EpochOrder,
        rho: float,
        alpha: float,
        flat_ratio: float,
    ) -> None:
        super().__init__(model, optimizer, train, order)
        self.rho, self.alpha, self.flat_ratio = rho, alpha, flat_ratio
        n_envs = model.n_envs
        #: ``Y`` of every modality and layer: ``[N, in, in]``.
        self.covariances = [
            [torch.zeros(n_envs, layer.in_features, layer.in_features, device=self.device) for layer in model.modality_layers(j)]
            for j in range(model.n_modalities)
        ]

    def reset_envs(self, envs: np.ndarray, keys: np.ndarray) -> None:
        super().reset_envs(envs, keys)
        index = torch.as_tensor(envs, device=self.device)
        for layers in self.covariances:
            for covariance in layers:
                covariance[index] = 0.0

    @torch.no_grad()
    def _modifications(self) -> list[list[torch.Tensor | None]]:
        """``T`` of every modality and layer from the other modalities' ``Y`` of the same width (``None``: none has it)."""
        result: list[list[torch.Tensor | None]] = []
        for j, layers in enumerate(self.covariances):
            row: list[torch.Tensor | None] = []
            for layer_index, own in enumerate(layers):
                others = [i for i, c in enumerate(self.covariances) if i != j and c[layer_index].shape == own.shape]
                if not others:
                    row.append(None)
                elif layer_index == 0 and (self.model.input_widths[:, [j, *others]] < own.shape[-1]).any():
                    row.append(self._padded_first_layer(j, others))
                else:
                    row.append(flat_modification(torch.stack([self.covariances[i][layer_index] for i in others]).sum(dim=0), self.alpha))
            result.append(row)
        return result

    def _padded_first_layer(self, modality: int, others: list[int]) -> torch.Tensor:
        """``T`` of a first layer whose inputs are zero-padded: per env, from the other modalities of
        the same *data* width, on the data columns only (identity elsewhere), as the unpadded task
        would have it (its first layers of other widths have other shapes and are left alone)."""
        widths = self.model.input_widths
        size = self.covariances[modality][0].shape[-1]
        modification = torch.eye(size, device=self.device).repeat(self.model.n_envs, 1, 1)
        groups: dict[tuple[int, tuple[int, ...]], list[int]] = {}
        for env in range(self.model.n_envs):
            width = int(widths[env, modality])
            groups.setdefault((width, tuple(i for i in others if widths[env, i] == width)), []).append(env)
        for (width, matching), envs in groups.items():
            if not matching:
                continue
            index = torch.as_tensor(envs, device=self.device)
            covariance = torch.stack([self.covariances[i][0][index, :width, :width] for i in matching]).sum(dim=0)
            modification[index, :width, :width] = flat_modification(covariance, self.alpha)
        return modification

    def _before_step(self, quantities: np.ndarray) -> None:
        self._step_modifications = self._modifications()

    def _modify_gradients(self, modality: int, k: int, batch: ModalityBatches, inputs: list[torch.Tensor] | None) -> None:
        assert inputs is not None
        layers = self.model.modality_layers(modality)
        self._accumulate(modality, inputs, batch)
        if self.rho > 0.0 and self.flat_ratio > 0.0:
            self._sharpness_aware(modality, layers, batch, k)
        with torch.no_grad():
            for layer, modification in zip(layers, self._step_modifications[modality]):
                if modification is not None:
                    assert layer.weight.grad is not None
                    layer.weight.grad.copy_(torch.bmm(modification, layer.weight.grad))

    @torch.no_grad()
    def _accumulate(self, modality: int, inputs: list[torch.Tensor], batch: ModalityBatches) -> None:
        """``Y += z z^T`` with ``z`` each layer's mean input over the batch's valid rows."""
        for covariance, layer_input in zip(self.covariances[modality], inputs):
            mean = masked_mean(layer_input.detach(), batch.valid, batch.counts)
            covariance.baddbmm_(mean.unsqueeze(2), mean.unsqueeze(1))

    def _sharpness_aware(self, modality: int, layers: list[Layer], batch: ModalityBatches, k: int) -> None:
        """Replace the gradient ``g`` by ``(1 - f) g + f grad L(w + rho g / ||g||)``, the weights restored."""
        model = self.model
        tensors = [t for layer in layers for t in (layer.weight, layer.bias)]
        with torch.no_grad():
            first = [t.grad.clone() for t in tensors]  # type: ignore[union-attr]
            saved = [t.detach().clone() for t in tensors]
            for t, g in zip(tensors, first):
                t.add_(sam_perturbation(g, self.rho))
        logits = model.modality_logits(modality, batch.features[:, k])
        loss = self._loss(logits, batch.labels[:, k], batch)
        model.grad.zero_()
        loss.sum().backward()
        with torch.no_grad():
            for t, g, w in zip(tensors, first, saved):
                t.copy_(w)
                t.grad.mul_(self.flat_ratio).add_(g, alpha=1.0 - self.flat_ratio)  # type: ignore[union-attr]


def make_learner(config: EnvConfig, model: StackedModel, optimizer: StackedOptimizer, train: StackedSplit) -> _Learner:
    """The learner ``config.learner.kind`` names, drawing its rows in the ``row_order`` it names."""
    learner = config.learner
    order = make_row_order(learner, train, min_pool=config.max_quantity)
    if learner.kind == "joint":
        return JointLearner(model, optimizer, train, order)
    if learner.kind == "ogm_ge":
        return OGMGELearner(
            model,
            optimizer,
            train,
            order,
            learner.ogm_alpha,
            learner.modulation_start,
            learner.modulation_end,
            learner.gaussian_enhancement,
        )
    if learner.kind in ("alternating", "mla"):
        return AlternatingLearner(model, optimizer, train, order, projection=learner.uses_projection)
    if learner.kind == "mie":
        return MIELearner(model, optimizer, train, order, learner.rho, learner.mie_alpha, learner.flat_ratio)
    raise AssertionError(f"unhandled learner kind {learner.kind!r}")

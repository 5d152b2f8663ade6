"""Learners: the multimodal learning method that consumes the per-modality sample quantities.

A learner owns the model and the optimizer and performs one training iteration given the
quantities ``n_j``. At each decision it hands over the losses and the modality scores ``s_t^j`` of
the iterations since the last one, computed from the logits those iterations already produced.

* ``joint`` (late-fusion baseline): one paired batch of ``max_j n_j`` samples; modality ``j``
  takes part in a seeded random subset of ``n_j`` of them and is left out of the fused logits of
  the rest; one fused cross-entropy step. A modality with more samples than the others therefore
  also trains on samples where it must predict alone.
* ``alternating`` (MLA-style): each modality draws its own batch of ``n_j`` samples and is updated
  in turn, through a head shared by all modalities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.nn import functional as F

from .models import MultimodalModel
from .monitor import true_class_probability
from .tasks import Task
from .validation import as_tuple, check_choice, check_float, check_int

LEARNER_KINDS = ("joint", "alternating")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class LearnerConfig:
    """Model and optimizer of the learner.

    :param kind: ``joint`` or ``alternating`` (see the module docstring).
    :param hidden_sizes: hidden layer widths of every modality encoder.
    :param embedding_dim: width of each encoder's output.
    :param optimizer: ``adam`` or ``sgd`` (with ``momentum``).
    :param lr: learning rate.
    :param momentum: SGD momentum (ignored by Adam).
    :param weight_decay: L2 penalty.
    """

    kind: str = "joint"
    hidden_sizes: tuple[int, ...] = (64,)
    embedding_dim: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_choice(owner, "kind", self.kind, LEARNER_KINDS)
        hidden = as_tuple(owner, "hidden_sizes", self.hidden_sizes)
        object.__setattr__(self, "hidden_sizes", hidden)
        for width in hidden:
            check_int(owner, "hidden_sizes", width, 1, 65_536)
        check_int(owner, "embedding_dim", self.embedding_dim, 1, 65_536)
        check_choice(owner, "optimizer", self.optimizer, OPTIMIZERS)
        check_float(owner, "lr", self.lr, 0.0, low_open=True)
        check_float(owner, "momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_float(owner, "weight_decay", self.weight_decay, 0.0)

    @property
    def shared_head(self) -> bool:
        """MLA-style alternating training updates every modality through one shared head."""
        return self.kind == "alternating"


class IndexStream:
    """Training-set rows in epochs: a seeded permutation consumed in order, reshuffled when spent.

    Why epochs and not sampling with replacement: every sample is seen once per epoch, as in an
    ordinary training loop, so the learner's behaviour matches the loop a policy is exported to.
    """

    def __init__(self, n_rows: int, generator: torch.Generator) -> None:
        self.n_rows = n_rows
        self.generator = generator
        self.order = torch.randperm(n_rows, generator=generator)
        self.position = 0

    def take(self, count: int) -> torch.Tensor:
        if count > self.n_rows:
            raise ValueError(f"cannot draw {count} samples per iteration from a training split of {self.n_rows}")
        end = self.position + count
        if end <= self.n_rows:
            rows = self.order[self.position : end]
            self.position = end
            return rows
        tail = self.order[self.position :]
        self.order = torch.randperm(self.n_rows, generator=self.generator)
        self.position = count - len(tail)
        return torch.cat((tail, self.order[: self.position]))


@dataclass(frozen=True)
class IterationRecord:
    """What the iterations since the last :meth:`collect` produced: ``losses [K]``, ``scores [K, M]``."""

    losses: np.ndarray
    scores: np.ndarray


class Learner(Protocol):
    model: MultimodalModel

    def train_iteration(self, quantities: np.ndarray) -> None:
        """One training iteration with ``quantities[j]`` samples for modality ``j``."""
        ...

    def collect(self) -> IterationRecord:
        """Losses and modality scores of the iterations since the last call (at least one)."""
        ...


def make_optimizer(config: LearnerConfig, model: MultimodalModel) -> torch.optim.Optimizer:
    """The configured optimizer; ``foreach`` kernels are a few percent faster for these small models."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, foreach=True)


class _ScoreKeeper:
    """Keeps each iteration's detached logits and labels; scores them all at once on ``collect``.

    Why deferred: the scores only matter at the next decision, and one batched softmax over K
    iterations costs a fraction of K small ones in the hot loop. The logits are the ones the
    training step computed anyway, so scoring adds no forward pass.
    """

    def __init__(self, n_modalities: int) -> None:
        self.logits: list[list[torch.Tensor]] = [[] for _ in range(n_modalities)]
        self.labels: list[list[torch.Tensor]] = [[] for _ in range(n_modalities)]
        self.losses: list[torch.Tensor] = []

    def keep(self, modality: int, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.logits[modality].append(logits.detach())
        self.labels[modality].append(labels)

    def collect(self) -> IterationRecord:
        if not self.losses:
            raise RuntimeError("no training iteration since the last collect()")
        # All (modality, iteration) batches go through one softmax. Within a decision step a
        # modality's batches all have the same size, so each modality's run of probabilities
        # reshapes to [K, n_j] and averages in one operation. Every extra operation here costs
        # several times its isolated time, coming right after the training loop.
        probabilities = true_class_probability(
            torch.cat([x for kept in self.logits for x in kept]), torch.cat([y for kept in self.labels for y in kept])
        )
        runs = probabilities.split([sum(y.shape[0] for y in kept) for kept in self.labels])
        scores = torch.stack([self._iteration_means(run, kept) for run, kept in zip(runs, self.labels)], dim=1)
        record = IterationRecord(torch.stack(self.losses).numpy(), scores.numpy())
        for kept in (*self.logits, *self.labels):
            kept.clear()
        self.losses.clear()
        return record

    @staticmethod
    def _iteration_means(run: torch.Tensor, labels: list[torch.Tensor]) -> torch.Tensor:
        """Per-iteration means of one modality's probabilities (batch sizes as kept)."""
        sizes = [y.shape[0] for y in labels]
        if sizes.count(sizes[0]) == len(sizes):
            return run.view(len(sizes), sizes[0]).mean(dim=1)
        return torch.stack([chunk.mean() for chunk in run.split(sizes)])


class _TrainingState:
    """What every learner holds: the model, its optimizer, the training split and the score keeper."""

    def __init__(self, config: LearnerConfig, model: MultimodalModel, task: Task, generator: torch.Generator) -> None:
        self.model = model
        self.optimizer = make_optimizer(config, model)
        self.features = task.train.features
        self.labels = task.train.labels
        self.generator = generator
        self.keeper = _ScoreKeeper(model.n_modalities)

    def collect(self) -> IterationRecord:
        return self.keeper.collect()


class JointLearner(_TrainingState):
    """Late fusion with per-modality participation masks (see the module docstring)."""

    def __init__(self, config: LearnerConfig, model: MultimodalModel, task: Task, generator: torch.Generator) -> None:
        super().__init__(config, model, task, generator)
        self.rows = IndexStream(len(task.train), generator)

    def train_iteration(self, quantities: np.ndarray) -> None:
        counts = quantities.tolist()
        batch_size = max(counts)
        rows = self.rows.take(batch_size)
        labels = self.labels[rows]
        # The modality with the most samples takes part in every sample of the batch, so the
        # fused logits start from its logits and the others are added where they take part.
        first = counts.index(batch_size)
        fused = self.model.modality_logits(first, self.features[first][rows])
        self.keeper.keep(first, fused, labels)
        for j, count in enumerate(counts):
            if j == first:
                continue
            if count == batch_size:
                logits = self.model.modality_logits(j, self.features[j][rows])
                fused = fused + logits
                self.keeper.keep(j, logits, labels)
            else:
                members = torch.randperm(batch_size, generator=self.generator)[:count]
                logits = self.model.modality_logits(j, self.features[j][rows[members]])
                fused = fused.index_add(0, members, logits)
                self.keeper.keep(j, logits, labels[members])
        loss = F.cross_entropy(fused, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.keeper.losses.append(loss.detach())


class AlternatingLearner(_TrainingState):
    """MLA-style: every modality trains alone on its own batch, in turn, through the shared head."""

    def __init__(self, config: LearnerConfig, model: MultimodalModel, task: Task, generator: torch.Generator) -> None:
        super().__init__(config, model, task, generator)
        self.streams = [IndexStream(len(task.train), generator) for _ in range(model.n_modalities)]

    def train_iteration(self, quantities: np.ndarray) -> None:
        counts = quantities.tolist()
        total = torch.zeros(())
        for j, count in enumerate(counts):
            rows = self.streams[j].take(count)
            labels = self.labels[rows]
            logits = self.model.modality_logits(j, self.features[j][rows])
            loss = F.cross_entropy(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total = total + loss.detach() * count
            self.keeper.keep(j, logits, labels)
        self.keeper.losses.append(total / sum(counts))


def build_learner(
    config: LearnerConfig, task: Task, generator: torch.Generator, model: MultimodalModel | None = None
) -> Learner:
    """A freshly initialised model and optimizer for one episode, all randomness from ``generator``.

    Pass the previous episode's ``model`` to reuse its memory: its parameters are re-drawn, so
    the episode is the same as with a new model.
    """
    if model is None or model.feature_dims != task.feature_dims or model.n_classes != task.n_classes:
        # Built on the meta device so that construction draws nothing from torch's global RNG.
        with torch.device("meta"):
            model = MultimodalModel(
                task.feature_dims, task.n_classes, config.hidden_sizes, config.embedding_dim, config.shared_head
            )
        model = model.to_empty(device="cpu")
    model.reset_parameters(generator)
    learner_class = JointLearner if config.kind == "joint" else AlternatingLearner
    return learner_class(config, model, task, generator)

"""Accuracy measures shared by the environment, the benchmarks and the plug-in sampler."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .models import MultimodalModel
from .tasks import Split


def balanced_accuracy(predictions: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Mean per-class recall over the classes present in ``labels`` (macro recall).

    Why balanced: a policy that starves a modality can trade a rare class for a frequent one; plain
    accuracy would not show it on imbalanced user data.
    """
    counts = torch.bincount(labels, minlength=n_classes)
    hits = torch.bincount(labels[predictions == labels], minlength=n_classes)
    present = counts > 0
    return float((hits[present].double() / counts[present].double()).mean())


@dataclass(frozen=True)
class Evaluation:
    """Fused and per-modality accuracies of a model on one split (all in ``[0, 1]``)."""

    fused_accuracy: float
    fused_balanced_accuracy: float
    modality_accuracies: tuple[float, ...]
    modality_balanced_accuracies: tuple[float, ...]

    @property
    def modality_gap(self) -> float:
        """Best minus worst unimodal accuracy: how unequally the modalities were learned."""
        return max(self.modality_accuracies) - min(self.modality_accuracies)


@torch.no_grad()
def evaluate(model: MultimodalModel, split: Split, n_classes: int) -> Evaluation:
    """One forward pass over the whole split; predictions are argmaxes of unimodal and summed logits."""
    was_training = model.training
    model.eval()
    logits = model(split.features)
    model.train(was_training)
    labels = split.labels
    unimodal = logits.argmax(dim=2)
    fused = logits.sum(dim=0).argmax(dim=1)
    return Evaluation(
        fused_accuracy=float((fused == labels).double().mean()),
        fused_balanced_accuracy=balanced_accuracy(fused, labels, n_classes),
        modality_accuracies=tuple(float((row == labels).double().mean()) for row in unimodal),
        modality_balanced_accuracies=tuple(balanced_accuracy(row, labels, n_classes) for row in unimodal),
    )

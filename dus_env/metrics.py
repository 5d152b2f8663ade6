"""Accuracy measures shared by the environment, the benchmarks and the plug-in sampler."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .models import MultimodalModel
from .tasks import Split


def balanced_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Per-sample weights whose dot product with a 0/1 correctness vector is the balanced accuracy.

    Sample ``i`` weighs ``1 / (count[y_i] * n_present_classes)``: the mean per-class recall over
    the classes present in ``labels`` (macro recall) becomes one matrix product, for any number of
    prediction rows at once.
    """
    counts = torch.bincount(labels, minlength=n_classes).double()
    present = int((counts > 0).sum())
    return 1.0 / (counts[labels] * present)


def balanced_accuracy(predictions: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Mean per-class recall over the classes present in ``labels`` (macro recall).

    Why balanced: a policy that starves a modality can trade a rare class for a frequent one; plain
    accuracy would not show it on imbalanced user data.
    """
    return float((predictions == labels).double() @ balanced_weights(labels, n_classes))


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

    @property
    def balanced_modality_gap(self) -> float:
        """The same gap on balanced accuracies (what the reward's imbalance penalty uses)."""
        return max(self.modality_balanced_accuracies) - min(self.modality_balanced_accuracies)


class SplitEvaluator:
    """Evaluates models on one split; the label statistics are computed once per split, not per call."""

    def __init__(self, split: Split, n_classes: int) -> None:
        self.split = split
        self.weights = balanced_weights(split.labels, n_classes)

    @torch.no_grad()
    def __call__(self, model: MultimodalModel) -> Evaluation:
        """One forward pass; row 0 is the fused prediction (summed logits), rows 1.. each modality's."""
        # Switching modes walks the whole module tree (tens of microseconds per call, every
        # decision step), so it is done only when a layer's behaviour depends on it.
        was_training = model.training and model.mode_dependent
        if was_training:
            model.eval()
        logits = model(self.split.features)
        if was_training:
            model.train()
        predictions = torch.cat((logits.sum(dim=0).argmax(dim=1).unsqueeze(0), logits.argmax(dim=2)))
        correct = (predictions == self.split.labels).double()
        plain = correct.mean(dim=1).tolist()
        balanced = (correct @ self.weights).tolist()
        return Evaluation(plain[0], balanced[0], tuple(plain[1:]), tuple(balanced[1:]))


def evaluate(model: MultimodalModel, split: Split, n_classes: int) -> Evaluation:
    """Fused and per-modality accuracies of ``model`` on ``split`` (one-off; see :class:`SplitEvaluator`)."""
    return SplitEvaluator(split, n_classes)(model)

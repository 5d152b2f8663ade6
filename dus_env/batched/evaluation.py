"""Fused and per-modality accuracies of every env's model on one of its splits, in one forward pass."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .data import StackedSplit
from .model import StackedModel


@dataclass(frozen=True)
class StackedEvaluation:
    """Accuracies in ``[0, 1]`` of ``k`` envs (float64 tensors): fused ``[k]``, per modality ``[k, M]``."""

    fused_accuracy: torch.Tensor
    fused_balanced_accuracy: torch.Tensor
    modality_accuracies: torch.Tensor
    modality_balanced_accuracies: torch.Tensor

    def balanced_modality_gap(self) -> torch.Tensor:
        """Best minus worst unimodal balanced accuracy ``[k]`` (what the reward's imbalance penalty uses)."""
        values = self.modality_balanced_accuracies
        return values.max(dim=1).values - values.min(dim=1).values


#: Bytes of one layer's activations per chunk of envs in an evaluation pass: small enough to stay in
#: the CPU's cache, so the element-wise passes (bias, ReLU) do not go to main memory.
CHUNK_BYTES = 1 << 20


def env_chunks(model: StackedModel, split: StackedSplit, envs: torch.Tensor | None = None) -> Iterator[torch.Tensor | slice]:
    """The envs (all, or int64 ``envs [k]``) in chunks whose activations stay in cache (see ``CHUNK_BYTES``):
    what a pass over a whole split, of every env, iterates over."""
    selected = torch.arange(model.n_envs, device=model.flat.device) if envs is None else envs
    width = max((*model.hidden_sizes, model.embedding_dim, model.n_classes))
    chunk = max(1, CHUNK_BYTES // (4 * split.capacity * width))
    for start in range(0, len(selected), chunk):
        yield slice(start, start + chunk) if envs is None else selected[start : start + chunk]


@torch.no_grad()
def evaluate_split(model: StackedModel, split: StackedSplit, envs: torch.Tensor | None = None) -> StackedEvaluation:
    """Row 0 of the predictions is the fused one (summed logits), rows 1.. each modality's.

    Envs are evaluated in chunks (see ``CHUNK_BYTES``); the numbers do not depend on the chunking.

    :param envs: int64 ``[k]``, the envs to evaluate; ``None`` = all.
    """
    parts = [_evaluate(model, split, index) for index in env_chunks(model, split, envs)]
    return StackedEvaluation(
        *(
            torch.cat(values)
            for values in zip(
                *((p.fused_accuracy, p.fused_balanced_accuracy, p.modality_accuracies, p.modality_balanced_accuracies) for p in parts)
            )
        )
    )


def _evaluate(model: StackedModel, split: StackedSplit, envs: torch.Tensor | slice) -> StackedEvaluation:
    logits = torch.stack([model.modality_logits(j, x[envs], envs) for j, x in enumerate(split.features)])
    predictions = torch.cat((logits.sum(dim=0).argmax(dim=2).unsqueeze(0), logits.argmax(dim=3)))
    correct = (predictions == split.labels[envs]).double()
    plain = (correct * split.plain_weights[envs]).sum(dim=2)
    balanced = (correct * split.balanced_weights[envs]).sum(dim=2)
    return StackedEvaluation(plain[0], balanced[0], plain[1:].T, balanced[1:].T)

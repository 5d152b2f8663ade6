"""BSS: balance-aware sequence sampling, the order in which training samples are seen.

Guan et al., "Balance-aware Sequence Sampling Makes Multi-modal Learning Better", IJCAI 2025
(official code: njustkmg/IJCAI25-BSS, ``train-CL.py`` and ``train-SPL.py``). A *balance measurer*
scores every training sample with the current model:

* ``sim``: cosine similarity of the unimodal softmax outputs (the mean over modality pairs when
  ``M > 2``, not in the paper), high = the modalities agree;
* ``loss = 0.9 * sum_j CE(logits^j, y) + 0.1 * CE(fused logits, y)``;
* both min-max normalised over the training split.

Two schedulers use it:

* **curriculum** (``train-CL.py``): ``score = (1 - sim) + loss``, ascending = most balanced first;
  epoch ``t`` trains on the first ``lambda_t`` fraction,
  ``lambda_t = min(1, sqrt((1 - lambda0^2) / T_grow * (t + 1) + lambda0^2))`` (``lambda0 = 0.1``,
  ``T_grow = 40`` epochs in the code), shuffled. The code ranks once, with the untrained model;
  re-ranking at an interval is an option here.
* **adaptive** (``train-SPL.py``): every epoch, re-measure and draw the epoch's order without
  replacement with probabilities proportional to ``1 - (loss - sim) + 0.01``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

UNIMODAL_WEIGHT = 0.9
FUSED_WEIGHT = 0.1
ADAPTIVE_FLOOR = 0.01


def balance_measures(modality_logits: Sequence[torch.Tensor] | torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw ``(sim, loss)`` per sample ``[...]`` from each modality's logits ``[..., C]`` (fused = their sum).

    :param modality_logits: ``M >= 2`` tensors ``[..., C]`` (or one ``[M, ..., C]``).
    :param labels: int64 ``[...]``.
    """
    logits = list(modality_logits)
    if len(logits) < 2:
        raise ValueError(f"balance_measures needs at least 2 modalities, got {len(logits)}")
    for j, z in enumerate(logits):
        if z.shape[:-1] != labels.shape:
            raise ValueError(
                f"modality_logits[{j}] has shape {tuple(z.shape)}: expected {tuple(labels.shape)} + (n_classes,), one row per label"
            )
    probabilities = [torch.softmax(z, dim=-1) for z in logits]
    pairs = [(a, b) for i, a in enumerate(probabilities) for b in probabilities[i + 1 :]]
    similarity = torch.stack([F.cosine_similarity(a, b, dim=-1) for a, b in pairs]).mean(dim=0)
    flat_labels = labels.reshape(-1)

    def cross_entropy(z: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z.reshape(-1, z.shape[-1]), flat_labels, reduction="none").view(labels.shape)

    loss = UNIMODAL_WEIGHT * sum(cross_entropy(z) for z in logits) + FUSED_WEIGHT * cross_entropy(sum(logits))
    return similarity, loss


def min_max(values: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``(v - min) / (max - min)`` along the last axis over the ``valid`` entries (0 where all are equal)."""
    if valid is None:
        low, high = values.min(dim=-1, keepdim=True).values, values.max(dim=-1, keepdim=True).values
    else:
        low = values.masked_fill(~valid, math.inf).min(dim=-1, keepdim=True).values
        high = values.masked_fill(~valid, -math.inf).max(dim=-1, keepdim=True).values
    return (values - low) / (high - low).clamp_min(torch.finfo(values.dtype).tiny)


def curriculum_scores(similarity: torch.Tensor, loss: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``(1 - sim) + loss`` of the normalised measures: sort ascending for most balanced first."""
    return (1.0 - min_max(similarity, valid)) + min_max(loss, valid)


def adaptive_weights(similarity: torch.Tensor, loss: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - (loss - sim) + 0.01`` of the normalised measures: the adaptive order's draw weights (positive)."""
    return 1.0 - (min_max(loss, valid) - min_max(similarity, valid)) + ADAPTIVE_FLOOR


def curriculum_fraction(t: int | float, lambda0: float, grow: float) -> float:
    """``lambda_t``, the fraction of the ranked samples in the training pool at epoch (or step) ``t >= 0``.

    :raises ValueError: ``t < 0``, ``lambda0`` outside ``(0, 1]`` or ``grow <= 0``.
    """
    if not t >= 0:
        raise ValueError(f"t={t} is invalid: expected an epoch or step index >= 0")
    if not 0.0 < lambda0 <= 1.0:
        raise ValueError(f"lambda0={lambda0} is invalid: expected a fraction in (0, 1]")
    if not grow > 0:
        raise ValueError(f"grow={grow} is invalid: expected a positive number of epochs or steps")
    return min(1.0, math.sqrt((1.0 - lambda0**2) / grow * (t + 1) + lambda0**2))

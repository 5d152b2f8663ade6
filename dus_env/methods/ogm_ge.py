"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement.

Peng, Wei, Deng, Wang, Hu, "Balanced Multimodal Learning via On-the-fly Gradient Modulation",
CVPR 2022 (official code: GeWu-Lab/OGM-GE_CVPR2022, ``main.py``). Per iteration, with
``s^u = sum_i softmax(logits^u_i)[y_i]`` the modality scores on the batch:

* discrepancy ratio of modality ``u``: ``rho^u = s^u / s^other`` (two modalities);
* coefficient ``k^u = 1 - tanh(alpha * relu(rho^u - 1))``: below 1 for the dominant modality only;
* each encoder weight's gradient ``g <- k^u g + N(0, std(g)^2)`` (the noise is the
  "generalisation enhancement"; ``std`` of the unmodulated gradient, per tensor).

Where this follows the paper and where the code: the coefficient is the issue's and the paper's
``relu(rho - 1)``, continuous at balance; the official code writes ``relu(rho)``, so there a
dominant modality with ``rho`` just above 1 is already damped by ``tanh(alpha)``. As in the code,
the noise goes to every encoder in the modulation window (``k = 1`` for the others) and only to
weight tensors (the code modulates its 4-D convolution kernels; biases and the fusion head are
left alone).

More than two modalities (not in the paper): ``rho^u = s^u / mean_{v != u} s^v``, each modality
against the mean of the others. For ``M = 2`` this is the paper's ratio; for ``M > 2`` every
modality above the mean of the rest is damped, the stronger the further above.

Scores: the env's learners pass *means* over the rows a modality saw, since under DUS the
modalities of one batch see different row counts; on a shared batch the ratio of means equals
the paper's ratio of sums.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def ogm_ge_coefficients(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """``k^u`` for scores ``[..., M]`` (``M >= 2``), same shape: 1 for every non-dominant modality.

    :raises ValueError: fewer than 2 modalities, or a negative ``alpha`` (it would amplify the dominant one).
    """
    n_modalities = scores.shape[-1] if scores.ndim else 0
    if n_modalities < 2:
        raise ValueError(f"scores of shape {tuple(scores.shape)} are invalid: need a last dimension of at least 2 modalities")
    if not alpha >= 0:
        raise ValueError(f"alpha={alpha} is invalid: expected a number >= 0")
    others = (scores.sum(dim=-1, keepdim=True) - scores) / (n_modalities - 1)
    # Scores of 0 (an underflowed softmax) must not give 0/0: a ratio against "nothing" is huge, not NaN.
    ratio = scores / others.clamp_min(torch.finfo(scores.dtype).tiny)
    return 1.0 - torch.tanh(alpha * torch.relu(ratio - 1.0))


def enhanced_gradient(
    grad: torch.Tensor, coefficient: torch.Tensor, standard_normal: torch.Tensor | None, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """``k g + std(g) * z`` for gradients ``[B, ...]`` of ``B`` independent tensors (in place).

    :param coefficient: ``[B]``, ``k`` of each tensor's modality.
    :param standard_normal: ``N(0, 1)`` draws shaped like ``grad``, or ``None`` for OGM without
        the enhancement.
    :param valid: bool, broadcastable to ``grad``: the entries that are real weights (``None`` =
        all). Zero-padded input rows of a padded task are not: they get no noise and do not count
        in ``std``, so a padded task is modulated as the unpadded one.
    """
    view = (-1,) + (1,) * (grad.ndim - 1)
    if standard_normal is None:
        return grad.mul_(coefficient.view(view))
    flat = grad.flatten(1)
    if valid is None:
        std = flat.std(dim=1)
    else:
        mask = valid.expand_as(grad).flatten(1)
        count = mask.sum(dim=1)
        mean = (flat * mask).sum(dim=1) / count
        std = (((flat - mean.unsqueeze(1)) * mask).square().sum(dim=1) / (count - 1)).sqrt()
        standard_normal = standard_normal * valid
    # The official code's ``std() + 1e-8``: a zero gradient still gets a (tiny) perturbation; a
    # one-element tensor has no sample standard deviation (NaN), and gets only that tiny one.
    std = std.nan_to_num(nan=0.0, posinf=0.0) + 1e-8
    return grad.mul_(coefficient.view(view)).add_(standard_normal * std.view(view))


@torch.no_grad()
def modulate_encoders(
    encoders: Iterable[nn.Module],
    scores: torch.Tensor,
    alpha: float,
    gaussian_enhancement: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """OGM-GE in an ordinary training loop: call between ``loss.backward()`` and ``optimizer.step()``.

    :param encoders: one module per modality; its weight tensors (``ndim >= 2``) are modulated.
    :param scores: ``[M]`` modality scores of the batch (e.g. :func:`dus_env.modality_score` of each
        modality's logits).
    :param generator: where the enhancement noise comes from (a seeded one makes runs repeatable).
    :returns: the coefficients ``[M]``.
    """
    encoders = list(encoders)
    if scores.ndim != 1 or len(scores) != len(encoders):
        raise ValueError(f"scores of shape {tuple(scores.shape)} are invalid: expected one score per encoder ({len(encoders)})")
    coefficients = ogm_ge_coefficients(scores.detach().float(), alpha)
    for modality, encoder in enumerate(encoders):
        for parameter in encoder.parameters():
            if parameter.grad is None or parameter.ndim < 2:
                continue
            noise = None
            if gaussian_enhancement:
                noise = torch.randn(parameter.grad.shape, generator=generator, device=parameter.grad.device).unsqueeze(0)
            enhanced_gradient(parameter.grad.unsqueeze(0), coefficients[modality].view(1), noise)
    return coefficients

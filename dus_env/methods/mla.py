"""MLA: the shared head's gradient projection of alternating unimodal adaptation.

Zhang, Latham, Lim, "Multimodal Representation Learning by Alternating Unimodal Adaptation",
CVPR 2024 (official code: Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation,
``GSPlugin`` in ``utils/utils.py``). Modalities are trained in turn through one shared head ``W``;
so that training modality ``m`` does not undo what the head learned for the modalities before it,
the head's weight gradient is projected orthogonally to their feature directions (orthogonal
weight modification, a recursive least-squares projector):

* ``P_0 = I``; after an update of a modality with mean batch feature ``r`` (the head's input),
  ``k = P r``, ``P <- P - k k^T / (alpha + r^T k)``;
* the next update of the head uses ``grad W <- P grad W`` (``W`` as ``[in, out]``).

Then ``r^T (W - lr P g) = r^T W - lr (P r)^T g`` and ``P r = alpha / (alpha + r^T r) r`` for the
first direction: the head's output on a learned direction barely moves. ``alpha`` follows the
official schedule ``0.1 ** (1 + position in the epoch)``, from 0.1 at an epoch's start to 0.01 at
its end.

Paper's intent versus the official code: the code calls its projection with the head module but
matches the parameter name ``"module.weight"``, which a bare ``nn.Linear`` never has (its
parameters are ``"weight"`` and ``"bias"``), so the projection never runs there; it would also
fold the *current* batch into ``P`` before projecting that batch's own gradient, and divide ``P``
by its Frobenius norm after every update. Implemented here: the paper's recursion, the current
gradient projected by the directions of the updates *before* it, ``P`` not rescaled (its
eigenvalues stay in ``(0, 1]``: unseen directions keep their full step).

What that means over an episode: every update folds in one more mean feature, and a few hundred
of them span most of a 32-wide embedding, so ``P`` shrinks in every direction (on
``Synthetic-MLA-v0`` its largest eigenvalue is about 0.4 after 10 of 20 decisions and 0.1 at the
end). With Adam, which divides out the gradient's scale, the head keeps learning at the projected
directions' relative rates; with SGD its steps shrink with ``P`` (the official code's Frobenius
rescaling would counter that, and change what the projection protects).
"""

from __future__ import annotations

import torch
from torch import nn


def projection_alpha(epoch_fraction: torch.Tensor | float) -> torch.Tensor | float:
    """The official ``alpha = 0.1 ** (1 + batch_index / batches_per_epoch)``."""
    return 0.1 ** (1.0 + epoch_fraction)


def update_projector(projector: torch.Tensor, mean_features: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """``P - k k^T / (alpha + r^T k)`` with ``k = P r``, for ``P [..., E, E]``, ``r [..., E]``, ``alpha`` scalar or ``[...]``."""
    k = (projector @ mean_features.unsqueeze(-1)).squeeze(-1)
    denominator = torch.as_tensor(alpha, dtype=projector.dtype, device=projector.device) + (mean_features * k).sum(dim=-1)
    return projector - k.unsqueeze(-1) * k.unsqueeze(-2) / denominator.unsqueeze(-1).unsqueeze(-1)


class HeadProjector:
    """MLA's projection for a shared ``nn.Linear`` head in an ordinary training loop.

    Per modality update: ``loss.backward()``, :meth:`project` (before ``optimizer.step()``), then
    :meth:`absorb` with the features the head saw::

        projector = HeadProjector(head)
        for modality in range(M):
            features = encoders[modality](x[modality]); loss = criterion(head(features), y)
            loss.backward(); projector.project(); optimizer.step(); optimizer.zero_grad()
            projector.absorb(features, epoch_fraction=step / steps_per_epoch)
    """

    def __init__(self, head: nn.Linear) -> None:
        self.head = head
        self.projector = torch.eye(head.in_features, device=head.weight.device, dtype=head.weight.dtype)

    @torch.no_grad()
    def project(self) -> None:
        """``grad W <- grad W P`` (PyTorch's ``[out, in]`` layout, ``P`` symmetric)."""
        if self.head.weight.grad is not None:
            self.head.weight.grad.copy_(self.head.weight.grad @ self.projector)

    @torch.no_grad()
    def absorb(self, features: torch.Tensor, epoch_fraction: float = 0.0) -> None:
        """Fold the mean of ``features [B, in]`` into ``P`` (the direction later updates must keep)."""
        self.projector = update_projector(self.projector, features.detach().mean(dim=0), projection_alpha(epoch_fraction))

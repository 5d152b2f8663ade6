"""MIE / IGM: sharpness-aware minimisation and flat gradient modification between modalities.

Modal-aware Interactive Enhancement (Jiang, Chi, Yang), whose published follow-up is IGM,
"Interactive Multimodal Learning via Flat Gradient Modification", IJCAI 2025 (official code:
njustkmg/IJCAI25-IGM, ``train_CREMA.py``, ``models/AudioVideo.py``). Two parts:

* **SAM** (Foret et al., ICLR 2021): with ``g = grad L(w)``, perturb every weight tensor by
  ``eps = rho * g / ||g||``, take ``g' = grad L(w + eps)``, restore ``w`` and step with
  ``(1 - flat_ratio) g + flat_ratio g'`` (the code's loss ``(1 - f) L(w) + f L(w + eps)``).
* **Flat gradient modification**: for every linear layer, accumulate the outer products of the
  mean batch input ``Y = sum_t z_t z_t^T`` (``z_t`` the batch mean of the layer's input), take the
  SVD ``Y = V Sigma V^T``, ``Lambda = exp(-alpha (Sigma - s_min) / (s_max - s_min))``,
  ``T = V Lambda V^T``, and update *another* modality's layer of the same shape with
  ``grad W <- grad W T`` (PyTorch's ``[out, in]`` layout): directions the other modality's inputs
  occupy most get the smallest steps, so one modality's training interferes least with the other.

Paper versus code, and what is implemented: the code perturbs each tensor by its own norm (as
here), but never restores the weights (the step is taken from ``w + eps``) and re-evaluates only
the classifier at the perturbed point; implemented is the paper's SAM (full forward pass at
``w + eps``, weights restored). The code trains in stages (one modality for some epochs, then
``Y`` of that modality over the whole training set, then the other modality with ``T``);
the env's learner trains all modalities every iteration (they take turns within it, as MLA), so it
accumulates ``Y`` of each modality during training and rebuilds ``T`` from the other modalities'
``Y`` (their sum when ``M > 2``) at every decision step. The code's ``rho`` (``noise_ratio``) is
``1e-10``, which makes SAM a no-op; the default here is SAM's usual 0.05.
"""

from __future__ import annotations

import torch


def sam_perturbation(grad: torch.Tensor, rho: float) -> torch.Tensor:
    """``rho * g / ||g||`` for gradients ``[B, ...]`` of ``B`` independent tensors (each its own norm)."""
    if not rho >= 0:
        raise ValueError(f"rho={rho} is invalid: expected a radius >= 0")
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad * (rho / norm).view((-1,) + (1,) * (grad.ndim - 1))


def flat_modification(covariance: torch.Tensor, alpha: float) -> torch.Tensor:
    """``T = V Lambda V^T`` from accumulated ``Y [..., d, d]`` (symmetric positive semi-definite).

    For such a matrix the SVD and the eigendecomposition coincide; ``eigh`` is the cheaper of the
    two. A ``Y`` with one distinct singular value (e.g. all zero: nothing accumulated yet) gives
    ``T = I``, and so does a non-finite one (a diverged model's: ``eigh`` would fail for the whole batch).
    """
    if not alpha >= 0:
        raise ValueError(f"alpha={alpha} is invalid: expected a temperature >= 0")
    finite = torch.isfinite(covariance).all(dim=-1).all(dim=-1)
    covariance = torch.where(finite[..., None, None], covariance, 0.0)
    values, vectors = torch.linalg.eigh(covariance)
    values = values.clamp_min(0.0)
    low, high = values.min(dim=-1, keepdim=True).values, values.max(dim=-1, keepdim=True).values
    spread = (values - low) / (high - low).clamp_min(torch.finfo(values.dtype).tiny)
    scales = torch.exp(-alpha * spread)
    return (vectors * scales.unsqueeze(-2)) @ vectors.transpose(-1, -2)

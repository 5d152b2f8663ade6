"""One encoder per modality and a late-fusion head whose fused logits are the sum of unimodal ones.

Why sum fusion: each modality's own logits are then its unimodal prediction, so the modality
scores ``s_t^j`` come from the logits the training step already computed, at no extra cost, and
masking a modality out of a sample is just leaving its logits out of the sum.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp_encoder(input_dim: int, hidden_sizes: tuple[int, ...], embedding_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = input_dim
    for size in (*hidden_sizes, embedding_dim):
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers)


#: Layers that behave differently in train and eval mode; a model without them needs no mode switch.
MODE_DEPENDENT_LAYERS = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


class MultimodalModel(nn.Module):
    """Encoders ``f_j`` and heads ``h_j`` (or one shared head): unimodal logits ``h_j(f_j(x^j))``.

    :param feature_dims: input dimension of each modality.
    :param n_classes: number of classes.
    :param hidden_sizes: widths of the hidden layers of every encoder.
    :param embedding_dim: width of each encoder's output.
    :param shared_head: one head for all modalities (MLA-style alternating training) instead of
        one per modality.
    """

    def __init__(
        self,
        feature_dims: tuple[int, ...],
        n_classes: int,
        hidden_sizes: tuple[int, ...],
        embedding_dim: int,
        shared_head: bool,
    ) -> None:
        super().__init__()
        self.feature_dims = tuple(feature_dims)
        self.n_classes = n_classes
        self.encoders = nn.ModuleList(mlp_encoder(dim, hidden_sizes, embedding_dim) for dim in feature_dims)
        n_heads = 1 if shared_head else len(feature_dims)
        self.heads = nn.ModuleList(nn.Linear(embedding_dim, n_classes) for _ in range(n_heads))
        self.mode_dependent = any(isinstance(m, MODE_DEPENDENT_LAYERS) for m in self.modules())

    @property
    def n_modalities(self) -> int:
        return len(self.encoders)

    def modality_logits(self, modality: int, x: torch.Tensor) -> torch.Tensor:
        head = self.heads[modality if len(self.heads) > 1 else 0]
        return head(self.encoders[modality](x))

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Unimodal logits of every modality, stacked ``[M, N, C]``; their sum is the fused prediction."""
        return torch.stack([self.modality_logits(j, x) for j, x in enumerate(features)])

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default ``nn.Linear`` init, drawn from ``generator`` instead of the global RNG.

        Why: an episode must be reproducible from its seed alone, whatever else the process did.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.uniform_(-bound, bound, generator=generator)

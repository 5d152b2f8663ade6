"""``N`` multimodal models of one shape, with their parameters stacked in one flat buffer.

Each model is the one :class:`dus_env.models.MultimodalModel` describes: per modality an MLP encoder
``f_j`` (``Linear + ReLU`` per layer, embedding included) and a linear head ``h_j`` (or one head
shared by all modalities), unimodal logits ``h_j(f_j(x^j))`` whose sum is the fused prediction.

Layout: parameter tensor ``t`` (a weight ``[N, in, out]`` or a bias ``[N, out]``) is a contiguous
block of the 1-D buffer ``flat``; gradients live in ``grad`` with the same layout, and autograd
accumulates into them in place. So the optimizer updates every parameter of every env in a few
operations on ``flat``, and a *segment* (the blocks of one modality's encoder, or of the heads) is
one contiguous range of it, which the alternating learners update alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..models import MultimodalModel


@dataclass(frozen=True)
class Layer:
    """One linear layer of every env: weight ``[N, in, out]``, bias ``[N, out]`` (views into ``flat``)."""

    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])


class StackedModel:
    """The parameters and forward passes of ``n_envs`` models (see the module docstring).

    :param n_envs: number of models ``N``.
    :param feature_dims: input dimension of each modality.
    :param n_classes: number of classes.
    :param hidden_sizes: hidden layer widths of every encoder.
    :param embedding_dim: width of each encoder's output.
    :param shared_head: one head for all modalities instead of one per modality.
    :param device: where the parameters live.
    """

    def __init__(
        self,
        n_envs: int,
        feature_dims: tuple[int, ...],
        n_classes: int,
        hidden_sizes: tuple[int, ...],
        embedding_dim: int,
        shared_head: bool,
        device: torch.device,
    ) -> None:
        self.n_envs = n_envs
        self.feature_dims = tuple(feature_dims)
        self.n_classes = n_classes
        self.hidden_sizes = tuple(hidden_sizes)
        self.embedding_dim = embedding_dim
        self.shared_head = shared_head
        self.flat = torch.zeros(n_envs * self._params_per_env(), device=device)
        self.grad = torch.zeros_like(self.flat)
        #: ``[N, M]``: input columns of each env's modality that carry data (the rest is zero padding).
        self.input_widths = np.tile(np.array(self.feature_dims, dtype=np.int64), (n_envs, 1))
        self._build_views()

    def _params_per_env(self) -> int:
        shapes = [shape for encoder in self._encoder_shape_lists() for shape in encoder] + self._head_shapes()
        return sum(i * o + o for i, o in shapes)

    def _encoder_shape_lists(self) -> list[list[tuple[int, int]]]:
        return [self._encoder_shapes(dim) for dim in self.feature_dims]

    def _head_shapes(self) -> list[tuple[int, int]]:
        return [(self.embedding_dim, self.n_classes)] * (1 if self.shared_head else len(self.feature_dims))

    def _build_views(self) -> None:
        """The per-layer parameters as views of ``flat`` (and their gradients of ``grad``)."""
        self._offset = 0
        self._env_index_parts: list[torch.Tensor] = []
        #: Ranges of ``flat``: ``segments[j]`` is modality ``j``'s encoder, then one per head (:meth:`head_segment`).
        self.segments: list[tuple[int, int]] = []
        self.encoders: list[list[Layer]] = []
        for shapes in self._encoder_shape_lists():
            start = self._offset
            self.encoders.append([self._layer(i, o) for i, o in shapes])
            self.segments.append((start, self._offset))
        self.heads = []
        for i, o in self._head_shapes():
            start = self._offset
            self.heads.append(self._layer(i, o))
            self.segments.append((start, self._offset))
        #: int64 ``[N * P]``: the env of each element of ``flat`` (for per-env optimizer factors).
        self.element_env = torch.cat(self._env_index_parts)
        del self._env_index_parts

    def __getstate__(self) -> dict:
        # Parameters pickle without their ``.grad``; the views are rebuilt from the two buffers instead.
        state = dict(self.__dict__)
        for name in ("encoders", "heads", "segments", "element_env"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build_views()

    def _encoder_shapes(self, input_dim: int) -> list[tuple[int, int]]:
        widths = (input_dim, *self.hidden_sizes, self.embedding_dim)
        return list(itertools.pairwise(widths))

    def _block(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A parameter of every env: a contiguous block of ``flat`` whose gradient is the same block of ``grad``."""
        size = self.n_envs * math.prod(shape)
        data = self.flat[self._offset : self._offset + size].view(self.n_envs, *shape)
        parameter = nn.Parameter(data)
        parameter.grad = self.grad[self._offset : self._offset + size].view(self.n_envs, *shape)
        self._env_index_parts.append(torch.arange(self.n_envs, device=self.flat.device).repeat_interleave(math.prod(shape)))
        self._offset += size
        return parameter

    def _layer(self, in_features: int, out_features: int) -> Layer:
        return Layer(self._block((in_features, out_features)), self._block((out_features,)))

    @property
    def n_modalities(self) -> int:
        return len(self.encoders)

    def layers(self) -> list[Layer]:
        """Every layer, in the order :meth:`MultimodalModel.reset_parameters` visits them."""
        return [layer for encoder in self.encoders for layer in encoder] + self.heads

    # -- forward passes --------------------------------------------------------------------------

    def head_segment(self, modality: int) -> int:
        """Index in :attr:`segments` of the head modality ``modality`` predicts through."""
        return self.n_modalities + (modality if len(self.heads) > 1 else 0)

    def head_layer(self, modality: int) -> Layer:
        return self.heads[modality if len(self.heads) > 1 else 0]

    def modality_layers(self, modality: int) -> list[Layer]:
        """Modality ``modality``'s encoder layers, then its head."""
        return [*self.encoders[modality], self.head_layer(modality)]

    def modality_logits(
        self, modality: int, x: torch.Tensor, envs: torch.Tensor | slice | None = None, inputs: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Modality ``modality``'s logits ``[n, R, C]`` for inputs ``x [n, R, d]``.

        :param envs: the envs the rows of ``x`` belong to (int64 ``[n]`` or a slice); ``None`` = all, in order.
        :param inputs: if given, each layer's input (``x``, the hidden activations, the embedding) is
            appended to it, in :meth:`modality_layers` order.
        """
        head = self.head_layer(modality)
        h = x
        for layer in self.modality_layers(modality):
            if inputs is not None:
                inputs.append(h)
            weight, bias = (layer.weight, layer.bias) if envs is None else (layer.weight[envs], layer.bias[envs])
            h = torch.baddbmm(bias.unsqueeze(1), h, weight)
            if layer is not head:
                # In place: baddbmm's backward does not need its output, and a fresh tensor per layer
                # would double the memory traffic of these memory-bound element-wise passes.
                h = h.relu_()
        return h

    # -- per-env state ---------------------------------------------------------------------------

    @torch.no_grad()
    def reset_env(self, env: int, generator: torch.Generator, input_widths: Sequence[int] | None = None) -> None:
        """Re-draw env ``env``'s parameters: PyTorch's default ``nn.Linear`` init, from ``generator``.

        The draws (weight ``[out, in]`` then bias, layer by layer) are those of
        :meth:`dus_env.models.MultimodalModel.reset_parameters`, so without padding
        (``input_widths`` ``None`` or the full widths) :meth:`to_module` of a fresh env equals a
        ``MultimodalModel`` initialised from the same generator state.

        :param input_widths: per modality, how many leading input columns carry data (a task whose
            features were zero-padded to a common width, :func:`dus_env.tasks.base.pad_features`).
            Modality ``j``'s first layer is then initialised as a layer of ``input_widths[j]`` inputs
            (bound ``1/sqrt(width)``, the padded rows zero), so padding changes neither the
            initial model's function nor its distribution: a padded task trains as the unpadded one
            (learners whose update depends on a weight's shape read :attr:`input_widths` for it).
        """
        self.input_widths[env] = self.feature_dims if input_widths is None else input_widths
        first_layers = {id(encoder[0]): j for j, encoder in enumerate(self.encoders)}
        for layer in self.layers():
            in_features, out_features = layer.weight.shape[1:]
            j = first_layers.get(id(layer))
            width = in_features if input_widths is None or j is None else int(input_widths[j])
            bound = 1.0 / math.sqrt(width)
            weight = torch.empty(out_features, width).uniform_(-bound, bound, generator=generator)
            bias = torch.empty(out_features).uniform_(-bound, bound, generator=generator)
            layer.weight[env].zero_()
            layer.weight[env, :width].copy_(weight.T)
            layer.bias[env].copy_(bias)

    @torch.no_grad()
    def to_module(self, env: int) -> MultimodalModel:
        """A copy of env ``env``'s model as an ordinary ``nn.Module`` (CPU), e.g. to inspect or keep it."""
        module = MultimodalModel(self.feature_dims, self.n_classes, self.hidden_sizes, self.embedding_dim, self.shared_head)
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        for linear, layer in zip(linears, self.layers()):
            linear.weight.copy_(layer.weight[env].T)
            linear.bias.copy_(layer.bias[env])
        return module

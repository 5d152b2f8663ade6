"""The stacked task splits of ``N`` envs and their row streams.

Every env has its own task instance (synthetic) or split (mfeat, features); the splits of all envs
are stored as ``[N, R, d]`` tensors, ``R`` the largest row count, with per-env row counts so that
instances of different sizes can share the stack (padding rows are never drawn and weigh zero in
every accuracy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..metrics import balanced_weights
from ..tasks import Split
from .random import ROW_ORDER, random_values

if TYPE_CHECKING:
    from .row_order import EpochOrder

INT64_MAX = torch.iinfo(torch.int64).max


class StackedSplit:
    """One split (train, val or test) of every env, with the weights its accuracies need.

    :param n_envs: ``N``.
    :param capacity: ``R``, rows reserved per env.
    :param feature_dims: per-modality feature dimension.
    :param n_classes: number of classes (for the balanced-accuracy weights).
    """

    def __init__(self, n_envs: int, capacity: int, feature_dims: tuple[int, ...], n_classes: int, device: torch.device) -> None:
        self.capacity = capacity
        self.n_classes = n_classes
        self.features = tuple(torch.zeros(n_envs, capacity, dim, device=device) for dim in feature_dims)
        self.labels = torch.zeros(n_envs, capacity, dtype=torch.int64, device=device)
        #: Rows of each env (host copy for the row streams' bookkeeping, device copy for masks).
        self.rows = np.zeros(n_envs, dtype=np.int64)
        self.rows_device = torch.zeros(n_envs, dtype=torch.int64, device=device)
        #: ``[N, R]`` float64: ``correct @ weights`` is the balanced (macro-recall) / plain accuracy.
        self.balanced_weights = torch.zeros(n_envs, capacity, dtype=torch.float64, device=device)
        self.plain_weights = torch.zeros(n_envs, capacity, dtype=torch.float64, device=device)

    def fill(self, env: int, split: Split) -> None:
        """Copy env ``env``'s split in (its rows first, zeros after)."""
        n = len(split)
        if n > self.capacity:
            raise ValueError(f"split has {n} rows, the stack holds {self.capacity} per env")
        for stacked, features in zip(self.features, split.features):
            stacked[env, :n] = features
            stacked[env, n:] = 0.0
        self.labels[env, :n] = split.labels
        self.labels[env, n:] = 0
        self.rows[env] = n
        self.rows_device[env] = n
        self.balanced_weights[env] = 0.0
        self.balanced_weights[env, :n] = balanced_weights(split.labels, self.n_classes)
        self.plain_weights[env] = 0.0
        self.plain_weights[env, :n] = 1.0 / n

    def env_split(self, env: int) -> Split:
        """Env ``env``'s split as a :class:`~dus_env.tasks.Split` of views (no copy)."""
        n = int(self.rows[env])
        return Split(tuple(x[env, :n] for x in self.features), self.labels[env, :n])

    def gather(self, modality: int, rows: torch.Tensor) -> torch.Tensor:
        """Features ``[N, ..., d]`` of modality ``modality`` at per-env row indices ``rows [N, ...]``."""
        table = self.features[modality]
        n_envs, capacity, dim = table.shape
        offsets = (torch.arange(n_envs, device=rows.device) * capacity).view(-1, *([1] * (rows.ndim - 1)))
        return table.view(n_envs * capacity, dim).index_select(0, (rows + offsets).view(-1)).view(*rows.shape, dim)

    def gather_labels(self, rows: torch.Tensor) -> torch.Tensor:
        """Labels ``[N, ...]`` at per-env row indices ``rows [N, ...]``."""
        return self.labels.gather(1, rows.reshape(len(rows), -1)).view(rows.shape)


class RowStreams:
    """Training rows in epochs, per env and stream: an epoch's row order consumed in order, then the next.

    Why epochs and not sampling with replacement: every sample is seen once per epoch, as in an
    ordinary training loop. Stream ``s`` of env ``i`` draws epoch ``e``'s random values from
    ``(key_i, s, e)`` alone (:mod:`dus_env.batched.random`); the row order (``order``, see
    :mod:`dus_env.batched.row_order`) turns them into the epoch's sequence of rows, and says how
    many rows the epoch visits (all of them, or a curriculum's pool). The orders of the current and
    the next epoch are kept, so a draw that crosses the end of an epoch continues in the next one.

    :param n_streams: independent streams per env (1 for the joint learners, one per modality for
        the alternating ones).
    :param order: the row order (:class:`~dus_env.batched.row_order.EpochOrder`, the default, or a BSS order).
    """

    def __init__(self, split: StackedSplit, n_streams: int, order: EpochOrder | None = None) -> None:
        from .row_order import EpochOrder  # the orders build on this module

        self.split = split
        self.n_streams = n_streams
        self.order = order if order is not None else EpochOrder(split)
        n_envs, self.device = len(split.rows), split.labels.device
        self.keys = np.zeros(n_envs, dtype=np.uint64)
        self.orders = torch.zeros(n_envs, n_streams, 2, split.capacity, dtype=torch.int64, device=self.device)
        #: Rows the current (``[..., 0]``) and the next (``[..., 1]``) epoch of each env and stream visit.
        self.limits = np.zeros((n_envs, n_streams, 2), dtype=np.int64)
        self.positions = np.zeros((n_envs, n_streams), dtype=np.int64)
        self.epochs = np.zeros((n_envs, n_streams), dtype=np.int64)

    def reset_envs(self, envs: np.ndarray, keys: np.ndarray) -> None:
        """Start the streams of ``envs`` at epoch 0 with their new ``keys`` (uint64)."""
        self.keys[envs] = keys
        self.positions[envs] = 0
        self.epochs[envs] = 0
        for stream in range(self.n_streams):
            for epoch in (0, 1):
                self._draw(envs, stream, epoch, np.full(len(envs), epoch))

    def redraw_next(self, envs: np.ndarray) -> None:
        """Redraw the next epoch of ``envs``' streams (their row order changed); the current ones go on as drawn."""
        for stream in range(self.n_streams):
            self._draw(envs, stream, 1, self.epochs[envs, stream] + 1)

    def _draw(self, envs: np.ndarray, stream: int, slot: int, epochs: np.ndarray) -> None:
        """Epoch ``epochs[i]``'s order of ``envs[i]``'s stream ``stream`` into slot ``slot`` (0 current, 1 next)."""
        values = random_values(self.keys[envs], ROW_ORDER, epochs * self.n_streams + stream, self.split.capacity, self.device)
        rows = self.split.rows[envs]
        padding = None
        if (rows < self.split.capacity).any():
            padding = torch.arange(self.split.capacity, device=self.device) >= torch.as_tensor(rows, device=self.device).unsqueeze(1)
        keys, limits = self.order.sort_keys(envs, epochs, values, padding)
        self.orders[torch.as_tensor(envs, device=self.device), stream, slot] = keys.argsort(dim=1)
        self.limits[envs, stream, slot] = limits

    def take(self, stream: int, counts: np.ndarray, width: int, repeats: int) -> torch.Tensor:
        """The next ``repeats`` draws of ``counts[i]`` rows from every env's stream ``stream``.

        :return: int64 ``[N, repeats, width]``; entries past ``counts[i]`` in a draw are valid rows of
            no meaning, for the caller to mask.
        """
        n_rows = self.split.rows
        too_many = np.flatnonzero(counts > n_rows)
        if too_many.size:
            env = int(too_many[0])
            raise ValueError(f"env {env}: cannot draw {int(counts[env])} samples per iteration from a training split of {int(n_rows[env])}")
        current, following = self.limits[:, stream, 0], self.limits[:, stream, 1]
        if (self.positions[:, stream] + repeats * counts > current + following).any():
            # More than one epoch boundary ahead: one draw at a time (each crosses at most one).
            return torch.cat([self.take(stream, counts, width, 1) for _ in range(repeats)], dim=1)
        device = self.device
        start = torch.as_tensor(self.positions[:, stream], device=device).view(-1, 1, 1)
        step = torch.as_tensor(counts, device=device).view(-1, 1, 1)
        offsets = (start + step * torch.arange(repeats, device=device).view(1, -1, 1) + torch.arange(width, device=device)).view(
            len(counts), -1
        )
        limit = torch.as_tensor(current, device=device).unsqueeze(1)
        in_next = offsets >= limit
        offsets = torch.where(in_next, offsets - limit, offsets).clamp_(max=self.split.capacity - 1)
        orders = self.orders[:, stream]
        rows = torch.where(in_next, orders[:, 1].gather(1, offsets), orders[:, 0].gather(1, offsets))
        self._advance(stream, repeats * counts)
        return rows.view(len(counts), repeats, width)

    def _advance(self, stream: int, counts: np.ndarray) -> None:
        positions = self.positions[:, stream]
        positions += counts
        wrapped = np.flatnonzero(positions >= self.limits[:, stream, 0])
        if wrapped.size:
            positions[wrapped] -= self.limits[wrapped, stream, 0]
            self.epochs[wrapped, stream] += 1
            index = torch.as_tensor(wrapped, device=self.device)
            self.orders[index, stream, 0] = self.orders[index, stream, 1]
            self.limits[wrapped, stream, 0] = self.limits[wrapped, stream, 1]
            self._draw(wrapped, stream, 1, self.epochs[wrapped, stream] + 1)

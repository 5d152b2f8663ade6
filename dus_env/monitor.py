"""The cumulative modality score: how well each modality has learned so far in the episode.

Per-iteration score of modality ``j`` (mean probability its own prediction gives the true class)::

    s_t^j = (1/n_b) * sum_i  y_i^T p_i^j

and its running mean, the cumulative score::

    ŝ_1^j = s_1^j,    ŝ_t^j = ((t-1)/t) * ŝ_{t-1}^j + (1/t) * s_t^j

The recursion is the mean of ``s_1 .. s_t``; the monitor keeps the running sum (in float64) and
divides, which gives the same numbers and lets a whole decision step's iterations be folded in
with one operation. The discrepancy between modalities is read from the ``ŝ^j`` side by side; the
monitor derives the two forms the observation uses. This module is shared by the environment
and by ``DUSSampler``, so a policy sees the same numbers in training and in a user's own loop.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def true_class_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``y_i^T p_i``: the softmax probability each sample's logits ``[N, C]`` give its label ``[N]``.

    The one place the score formula lives; ``s^j`` is its mean over the batch.
    """
    # Softmax over the class axis of the transposed view: for a handful of classes, PyTorch's CPU
    # kernel over a short last dimension is about 4x slower than over dim 0 (same values).
    return torch.softmax(logits.T, dim=0).gather(0, labels.unsqueeze(0)).squeeze(0)


def modality_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``s^j`` of one batch: ``logits [n, C]`` of modality ``j`` and their ``labels [n]`` -> 0-d."""
    return true_class_probability(logits, labels).mean()


class DiscrepancyMonitor:
    """Keeps ``ŝ_t^j`` and ``s_t^j`` for ``M`` modalities; reset at the start of each episode.

    State is a few float64 numpy numbers: it changes once per decision (a batch of iterations at
    a time), and the observation is built from it in numpy.
    """

    def __init__(self, n_modalities: int) -> None:
        if n_modalities < 1:
            raise ValueError(f"n_modalities={n_modalities} is invalid: need at least one modality")
        self.n_modalities = n_modalities
        self._total = np.zeros(n_modalities)
        self.cumulative = np.zeros(n_modalities)
        self.last = np.zeros(n_modalities)
        self.iterations = 0

    def reset(self) -> None:
        self._total[:] = 0.0
        self.cumulative[:] = 0.0
        self.last[:] = 0.0
        self.iterations = 0

    def update(self, scores: torch.Tensor | np.ndarray) -> None:
        """Fold in one iteration's scores ``s_t`` (shape ``[M]``, each in ``[0, 1]``)."""
        values = np.asarray(scores, dtype=np.float64)
        self.update_many(values.reshape(1, -1) if values.shape == (self.n_modalities,) else values)

    def update_many(self, scores: torch.Tensor | np.ndarray) -> None:
        """Fold in consecutive iterations' scores, shape ``[K, M]``, oldest first."""
        values = np.asarray(scores, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.n_modalities:
            raise ValueError(
                f"scores have shape {tuple(values.shape)}, expected ({self.n_modalities},) or "
                f"(iterations, {self.n_modalities}): one score per modality"
            )
        self._total += values.sum(axis=0)
        self.iterations += values.shape[0]
        np.divide(self._total, self.iterations, out=self.cumulative)
        self.last[:] = values[-1]

    def relative_gap(self) -> np.ndarray:
        """``ŝ^j - mean_k ŝ^k``: below zero for a modality that lags behind the others."""
        return self.cumulative - self.cumulative.mean()

    def ratio_to_best(self) -> np.ndarray:
        """``ŝ^j / max_k ŝ^k`` in ``[0, 1]`` (1 for the leading modality; 1 for all before any update)."""
        best = self.cumulative.max()
        if best <= 0:
            return np.ones_like(self.cumulative)
        return self.cumulative / best

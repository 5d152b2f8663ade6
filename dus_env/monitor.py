"""The cumulative modality score: how well each modality has learned so far in the episode.

Per-iteration score of modality ``j`` (mean probability its own prediction gives the true class)::

    s_t^j = (1/n_b) * sum_i  y_i^T p_i^j

and its running mean, the cumulative score::

    ŝ_1^j = s_1^j,    ŝ_t^j = ((t-1)/t) * ŝ_{t-1}^j + (1/t) * s_t^j

The recursion is the mean of ``s_1 .. s_t``; the monitor keeps the running sum (in double
precision) and divides, which gives the same numbers and lets a whole decision step's iterations
be folded in at once. The discrepancy between modalities is read from the ``ŝ^j`` side by side; the
monitor derives the two forms the observation uses. This module is shared by the environment
and by ``DUSSampler``, so a policy sees the same numbers in training and in a user's own loop.
"""

from __future__ import annotations

import math

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

    The state is a few Python floats: it changes once per decision, for a handful of modalities,
    right after the training loop, where every numpy or torch call costs several microseconds.
    ``cumulative`` and ``last`` give numpy copies; the ``*_values`` lists are the raw state.
    """

    def __init__(self, n_modalities: int) -> None:
        if n_modalities < 1:
            raise ValueError(f"n_modalities={n_modalities} is invalid: need at least one modality")
        self.n_modalities = n_modalities
        self.reset()

    def reset(self) -> None:
        self._total = [0.0] * self.n_modalities
        self.cumulative_values = [0.0] * self.n_modalities
        self.last_values = [0.0] * self.n_modalities
        self.iterations = 0

    @property
    def cumulative(self) -> np.ndarray:
        """ŝ_t^j per modality (float64)."""
        return np.array(self.cumulative_values)

    @property
    def last(self) -> np.ndarray:
        """s_t^j of the last iteration per modality (float64)."""
        return np.array(self.last_values)

    def update(self, scores: torch.Tensor | np.ndarray) -> None:
        """Fold in one iteration's scores ``s_t`` (shape ``[M]``, each in ``[0, 1]``)."""
        values = np.asarray(scores, dtype=np.float64)
        self.update_many(values.reshape(1, -1) if values.shape == (self.n_modalities,) else values)

    def update_many(self, scores: torch.Tensor | np.ndarray) -> None:
        """Fold in consecutive iterations' scores, shape ``[K, M]``, oldest first."""
        rows = scores.tolist()
        if not rows or not isinstance(rows[0], list) or any(len(row) != self.n_modalities for row in rows):
            raise ValueError(
                f"scores have shape {tuple(np.shape(scores))}, expected ({self.n_modalities},) or "
                f"(iterations, {self.n_modalities}): one score per modality"
            )
        if not all(math.isfinite(value) for row in rows for value in row):
            raise ValueError(
                f"modality scores {rows} hold NaN or inf: the logits they come from are not finite (training diverged?)"
            )
        total = self._total
        for row in rows:
            for j, value in enumerate(row):
                total[j] += value
        self.iterations += len(rows)
        self.cumulative_values = [value / self.iterations for value in total]
        self.last_values = [float(value) for value in rows[-1]]

    def relative_gap(self) -> list[float]:
        """``ŝ^j - mean_k ŝ^k``: below zero for a modality that lags behind the others."""
        mean = sum(self.cumulative_values) / self.n_modalities
        return [value - mean for value in self.cumulative_values]

    def ratio_to_best(self) -> list[float]:
        """``ŝ^j / max_k ŝ^k`` in ``[0, 1]`` (1 for the leading modality; 1 for all before any update)."""
        best = max(self.cumulative_values)
        if best <= 0:
            return [1.0] * self.n_modalities
        return [value / best for value in self.cumulative_values]

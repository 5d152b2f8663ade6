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

from types import EllipsisType

import numpy as np
import torch


@torch.no_grad()
def true_class_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``y_i^T p_i``: the softmax probability the logits ``[..., C]`` give each label ``[...]``.

    The one place the score formula lives (the env's batched learners and ``DUSSampler`` both call
    it); ``s^j`` is its mean over the batch. Computed as ``1 / sum_c exp(z_c - z_y)``: the same value
    as a softmax without a pass over the short class axis, which PyTorch's CPU kernels handle
    several times slower (and ``exp`` of a large difference gives ``inf``, hence probability 0).
    """
    true_logits = logits.gather(-1, labels.unsqueeze(-1))
    return (logits - true_logits).exp_().sum(dim=-1).reciprocal_()


def modality_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``s^j`` of one batch: ``logits [n, C]`` of modality ``j`` and their ``labels [n]`` -> 0-d."""
    return true_class_probability(logits, labels).mean()


class DiscrepancyMonitor:
    """Keeps ``ŝ_t^j`` and ``s_t^j`` for ``M`` modalities of one training run, or of ``N`` at once.

    With ``n_envs=None`` the state has shape ``[M]`` (one run: ``DUSSampler``); with ``n_envs=N`` it
    has shape ``[N, M]`` (the batched core, where ``DUSEnv`` is ``N = 1``). Everything is float64
    numpy: the state changes once per decision, for a handful of numbers per env.

    :param n_modalities: ``M``.
    :param n_envs: ``None`` for one run, else the number of runs tracked together.
    """

    def __init__(self, n_modalities: int, n_envs: int | None = None) -> None:
        if n_modalities < 1:
            raise ValueError(f"n_modalities={n_modalities} is invalid: need at least one modality")
        self.n_modalities = n_modalities
        self.shape = (n_modalities,) if n_envs is None else (n_envs, n_modalities)
        self._total = np.zeros(self.shape)
        self._last = np.zeros(self.shape)
        self._iterations = np.zeros(self.shape[:-1], dtype=np.int64)

    def reset(self, envs: np.ndarray | None = None) -> None:
        """Clear every run (``envs=None``) or the runs ``envs`` of a batched monitor."""
        index = ... if envs is None else envs
        self._total[index] = 0.0
        self._last[index] = 0.0
        self._iterations[index] = 0

    @property
    def iterations(self) -> int | np.ndarray:
        """Iterations folded in so far (an int, or ``[N]`` for a batched monitor)."""
        return int(self._iterations) if self._iterations.ndim == 0 else self._iterations.copy()

    @property
    def cumulative(self) -> np.ndarray:
        """ŝ_t^j per modality (float64, the state's shape; 0 before any update)."""
        counts = np.maximum(self._iterations, 1)[..., None]
        return self._total / counts

    @property
    def last(self) -> np.ndarray:
        """s_t^j of the last iteration per modality (float64)."""
        return self._last.copy()

    def update(self, scores: torch.Tensor | np.ndarray) -> None:
        """Fold in one iteration's scores ``s_t`` (the state's shape, each in ``[0, 1]``)."""
        self.update_many(np.asarray(scores, dtype=np.float64)[None])

    def update_many(self, scores: torch.Tensor | np.ndarray, envs: np.ndarray | None = None) -> None:
        """Fold in consecutive iterations' scores, shape ``[K, *state shape]``, oldest first.

        :param envs: a batched monitor's runs to update (bool ``[N]``); ``None`` = all.
        """
        values = np.asarray(scores, dtype=np.float64)
        if values.ndim != len(self.shape) + 1 or values.shape[1:] != self.shape or values.shape[0] == 0:
            expected = "(" + ", ".join(["iterations", *map(str, self.shape)]) + ")"
            raise ValueError(f"scores have shape {values.shape}, expected {self.shape} or {expected}: one score per modality")
        index: np.ndarray | EllipsisType = ...
        if envs is not None:
            values, index = values[:, envs], envs
        if not np.isfinite(values).all():
            raise ValueError(
                f"modality scores {values.tolist()} hold NaN or inf: the logits they come from are not finite (training diverged?)"
            )
        self._total[index] += values.sum(axis=0)
        self._last[index] = values[-1]
        self._iterations[index] += values.shape[0]

    def relative_gap(self) -> np.ndarray:
        """``ŝ^j - mean_k ŝ^k``: below zero for a modality that lags behind the others."""
        cumulative = self.cumulative
        return cumulative - cumulative.mean(axis=-1, keepdims=True)

    def ratio_to_best(self) -> np.ndarray:
        """``ŝ^j / max_k ŝ^k`` in ``[0, 1]`` (1 for the leading modality; 1 for all before any update)."""
        cumulative = self.cumulative
        best = cumulative.max(axis=-1, keepdims=True)
        return np.where(best > 0, cumulative / np.where(best > 0, best, 1.0), 1.0)

"""The cumulative modality score: how well each modality has learned so far in the episode.

Per-iteration score of modality ``j`` (mean probability its own prediction gives the true class)::

    s_t^j = (1/n_b) * sum_i  y_i^T p_i^j

and its running mean, the cumulative score::

    ŝ_1^j = s_1^j,    ŝ_t^j = ((t-1)/t) * ŝ_{t-1}^j + (1/t) * s_t^j

The discrepancy between modalities is read from the ``ŝ^j`` side by side; the monitor derives the
two forms the observation uses. This module is shared by the environment and by ``DUSSampler``,
so a policy sees the same numbers in training and in a user's own loop.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def modality_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``s^j`` for one modality: mean softmax probability of the true class, a 0-d tensor."""
    return torch.softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).mean()


class DiscrepancyMonitor:
    """Keeps ``ŝ_t^j`` and ``s_t^j`` for ``M`` modalities; reset at the start of each episode.

    Updates stay in torch (no ``.item()`` per iteration): one training iteration costs about a
    millisecond, and the monitor must not show up next to it.
    """

    def __init__(self, n_modalities: int) -> None:
        if n_modalities < 1:
            raise ValueError(f"n_modalities={n_modalities} is invalid: need at least one modality")
        self.n_modalities = n_modalities
        self.cumulative = torch.zeros(n_modalities, dtype=torch.float64)
        self.last = torch.zeros(n_modalities, dtype=torch.float64)
        self.iterations = 0

    def reset(self) -> None:
        self.cumulative.zero_()
        self.last.zero_()
        self.iterations = 0

    @torch.no_grad()
    def update(self, scores: torch.Tensor) -> None:
        """Fold in one iteration's scores ``s_t`` (shape ``[M]``, each in ``[0, 1]``)."""
        if scores.shape != (self.n_modalities,):
            raise ValueError(
                f"scores have shape {tuple(scores.shape)}, expected ({self.n_modalities},): one score per modality"
            )
        self.iterations += 1
        t = self.iterations
        self.cumulative.mul_((t - 1) / t).add_(scores, alpha=1.0 / t)
        self.last.copy_(scores)

    def relative_gap(self) -> torch.Tensor:
        """``ŝ^j - mean_k ŝ^k``: below zero for a modality that lags behind the others."""
        return self.cumulative - self.cumulative.mean()

    def ratio_to_best(self) -> torch.Tensor:
        """``ŝ^j / max_k ŝ^k`` in ``[0, 1]`` (1 for the leading modality; 1 for all before any update)."""
        best = self.cumulative.max()
        if best <= 0:
            return torch.ones_like(self.cumulative)
        return self.cumulative / best

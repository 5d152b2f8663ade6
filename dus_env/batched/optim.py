"""Adam and SGD over a :class:`~dus_env.batched.model.StackedModel`'s flat buffer, for all envs at once.

The update rules are PyTorch's (``torch.optim.Adam`` and ``torch.optim.SGD`` with L2 weight decay
added to the gradient, no dampening, no Nesterov); they act element-wise, so one update of the
stacked buffer equals ``N`` separate optimizers. Adam's bias correction depends on how many updates
a parameter has had, which differs between envs after an autoreset and between segments under the
alternating learner (an encoder is updated once per iteration, a shared head once per modality), so
step counts are kept per env and per segment.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import StackedModel

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class StackedOptimizer:
    """The configured optimizer of every env (see the module docstring).

    :param kind: ``adam`` or ``sgd``.
    :param lr: learning rate.
    :param momentum: SGD momentum (ignored by Adam).
    :param weight_decay: L2 penalty added to the gradient.
    """

    def __init__(self, model: StackedModel, kind: str, lr: float, momentum: float, weight_decay: float) -> None:
        self.model = model
        self.kind = kind
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.first_moment = torch.zeros_like(model.flat)
        self.second_moment = torch.zeros_like(model.flat) if kind == "adam" else None
        #: Updates so far, per env and segment (host memory: it only sets scalars of the update).
        self.steps = np.zeros((model.n_envs, len(model.segments)), dtype=np.int64)

    @torch.no_grad()
    def reset_envs(self, envs: torch.Tensor) -> None:
        """Forget the state of ``envs`` (int64 ``[k]``): a fresh optimizer for their new episodes."""
        mask = torch.isin(self.model.element_env, envs)
        self.first_moment.masked_fill_(mask, 0.0)
        if self.second_moment is not None:
            self.second_moment.masked_fill_(mask, 0.0)
        self.steps[envs.cpu().numpy()] = 0

    @torch.no_grad()
    def step(self, segments: range | list[int]) -> None:
        """Update the parameters of ``segments`` (consecutive indices) of every env from ``model.grad``."""
        segments = list(segments)
        self.steps[:, segments] += 1
        start, stop = self.model.segments[segments[0]][0], self.model.segments[segments[-1]][1]
        counts = self.steps[:, segments]
        if (counts == counts[0, 0]).all():
            self._update(start, stop, int(counts[0, 0]), None)
        else:
            # Envs (or segments) at different step counts: per-element bias corrections.
            per_element = torch.cat(
                [
                    torch.as_tensor(self.steps[:, s], device=self.model.flat.device)[self.model.element_env[a:b]]
                    for s in segments
                    for a, b in [self.model.segments[s]]
                ]
            )
            self._update(start, stop, 0, per_element.double())

    def _update(self, start: int, stop: int, step: int, per_element_steps: torch.Tensor | None) -> None:
        params = self.model.flat[start:stop]
        first = self.first_moment[start:stop]
        grad = self.model.grad[start:stop]
        if self.weight_decay and (self.second_moment is None or per_element_steps is not None):
            grad = grad.add(params, alpha=self.weight_decay)
        if self.second_moment is None:
            first.mul_(self.momentum).add_(grad)
            params.add_(first, alpha=-self.lr)
            return
        beta1, beta2 = ADAM_BETAS
        second = self.second_moment[start:stop]
        if per_element_steps is None:
            # PyTorch's fused CPU kernel: one pass over memory instead of eight (Adam's cost at large N
            # is memory traffic, not arithmetic). The step tensor holds the count after this update.
            torch._fused_adam_(
                [params],
                [self.model.grad[start:stop]],
                [first],
                [second],
                [],
                [torch.tensor(float(step), device=params.device)],
                lr=self.lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=self.weight_decay,
                eps=ADAM_EPS,
                amsgrad=False,
                maximize=False,
            )
            return
        first.lerp_(grad, 1.0 - beta1)
        second.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        correction1 = (1.0 - beta1**per_element_steps).float()
        correction2 = (1.0 - beta2**per_element_steps).float()
        denominator = (second.sqrt() / correction2.sqrt()).add_(ADAM_EPS)
        params.sub_(first / denominator * (self.lr / correction1))

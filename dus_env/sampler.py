"""``DUSSampler``: a sampling policy inside an ordinary PyTorch multimodal training loop.

The sampler keeps the same discrepancy monitor as the environment and builds its observations
with the same :class:`~dus_env.observation.ObservationLayout`, so an exported policy sees in your
loop exactly the inputs it was trained on. It needs torch and numpy (and onnxruntime for the ONNX
backend), not gymnasium or Stable-Baselines3.

Use::

    sampler = DUSSampler.from_artifact("runs/ppo_Synthetic-v0_0/exported", n_classes=10)
    for iteration in range(n_iterations):
        if sampler.decision_pending:                      # optional: fresher validation input
            sampler.set_validation(val_modality_acc, val_fused_acc)
        quantities = sampler.quantities()                 # n_j for this iteration
        logits, labels, loss = train_one_iteration(quantities)   # your code
        sampler.observe(logits, labels, loss=loss)

A decision is made every ``iterations_per_decision`` observed iterations (the ``K`` the policy
was trained with, by default), exactly where the environment made one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .heuristic import DEFAULT_TEMPERATURE, check_temperature, heuristic_action
from .monitor import DiscrepancyMonitor, modality_score
from .observation import ObservationLayout, TrainingStatus
from .policy_artifact import PolicyArtifact
from .quantities import QuantityMapping

Policy = Callable[[np.ndarray], np.ndarray]


class DUSSampler:
    """Turns the training status of your loop into per-modality sample quantities.

    :param policy: observation ``[D]`` -> action ``[M]`` in ``[-1, 1]``.
    :param mapping: action-to-quantity map (quantity range and budget).
    :param n_classes: classes of your task (normalises the loss slot).
    :param iterations_per_decision: ``K``: iterations between two decisions.
    :param total_decisions: ``T``: decisions in your whole run (sets the progress slot; after
        ``T`` decisions the policy keeps deciding with progress 1).
    """

    def __init__(
        self,
        policy: Policy,
        mapping: QuantityMapping,
        n_classes: int,
        iterations_per_decision: int,
        total_decisions: int,
    ) -> None:
        if n_classes < 2:
            raise ValueError(f"n_classes={n_classes} is invalid: need at least 2 classes")
        if iterations_per_decision < 1 or total_decisions < 1:
            raise ValueError(
                f"iterations_per_decision={iterations_per_decision} and total_decisions={total_decisions} must be >= 1"
            )
        self.policy = policy
        self.mapping = mapping
        self.layout = ObservationLayout(mapping.n_modalities)
        self.n_classes = n_classes
        self.iterations_per_decision = iterations_per_decision
        self.total_decisions = total_decisions
        self.monitor = DiscrepancyMonitor(mapping.n_modalities)
        #: The loaded :class:`PolicyArtifact` when built by :meth:`from_artifact` (its metadata, layout).
        self.artifact: PolicyArtifact | None = None
        self.reset()

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def from_artifact(
        cls,
        path: str | Path,
        n_classes: int,
        *,
        backend: str = "onnx",
        iterations_per_decision: int | None = None,
        total_decisions: int | None = None,
        base_batch_size: int | None = None,
    ) -> "DUSSampler":
        """A sampler running an exported policy (see :mod:`dus_env.policy_artifact`).

        ``iterations_per_decision`` and ``total_decisions`` default to the training env's ``K`` and
        ``T``. ``base_batch_size`` rescales the quantity range to your batch size (same ratios).
        """
        artifact = PolicyArtifact(path, backend)
        env = artifact.env_config
        mapping = artifact.mapping
        if base_batch_size is not None:
            ratio = base_batch_size / mapping.base_batch_size
            mapping = QuantityMapping(
                mapping.n_modalities,
                base_batch_size,
                max(1, min(base_batch_size, round(mapping.min_quantity * ratio))),
                max(base_batch_size, round(mapping.max_quantity * ratio)),
                mapping.budget,
            )
        sampler = cls(
            artifact.act,
            mapping,
            n_classes,
            iterations_per_decision or int(env["iterations_per_step"]),
            total_decisions or int(env["decision_steps"]),
        )
        sampler.artifact = artifact
        return sampler

    @classmethod
    def heuristic(
        cls,
        mapping: QuantityMapping,
        n_classes: int,
        iterations_per_decision: int,
        total_decisions: int,
        temperature: float = DEFAULT_TEMPERATURE,
    ) -> "DUSSampler":
        """A sampler running DUS-H (:mod:`dus_env.heuristic`), no artifact needed."""
        temperature = check_temperature(temperature)
        layout = ObservationLayout(mapping.n_modalities)
        return cls(
            lambda observation: heuristic_action(layout, mapping, observation, temperature),
            mapping,
            n_classes,
            iterations_per_decision,
            total_decisions,
        )

    # -- the loop ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new training run: scores, validation inputs and decisions are cleared."""
        self.monitor.reset()
        self._decisions = 0
        self._since_decision = 0
        self._loss_sum = 0.0
        self._loss_count = 0
        self._loss = math.log(self.n_classes)
        self._val_modality = np.zeros(self.mapping.n_modalities)
        self._val_fused = 0.0
        self._quantities = self.mapping.uniform()
        self._pending = True
        self.last_observation: np.ndarray | None = None

    @property
    def decision_pending(self) -> bool:
        """True when the next :meth:`quantities` call makes a decision (time to set validation)."""
        return self._pending

    def set_validation(self, modality_accuracies: Sequence[float], fused_accuracy: float) -> None:
        """Latest *balanced* validation accuracies (see :func:`dus_env.metrics.balanced_accuracy`)."""
        values = np.asarray(modality_accuracies, dtype=np.float64)
        if values.shape != (self.mapping.n_modalities,):
            raise ValueError(f"{values.size} modality accuracies given, expected {self.mapping.n_modalities}")
        if not np.all(np.isfinite(values)) or not math.isfinite(fused_accuracy):
            raise ValueError("validation accuracies must be finite numbers in [0, 1]")
        self._val_modality = values
        self._val_fused = float(fused_accuracy)

    def quantities(self) -> np.ndarray:
        """Per-modality sample quantities for the next iteration (int64 ``[M]``)."""
        if self._pending:
            self._decide()
        return self._quantities.copy()

    def observe(
        self,
        logits: Sequence[torch.Tensor],
        labels: torch.Tensor | Sequence[torch.Tensor],
        loss: float | torch.Tensor | None = None,
    ) -> None:
        """Record one iteration: each modality's logits on the samples it saw, and their labels.

        :param logits: ``logits[j]`` of shape ``[n_j, C]``, modality ``j``'s own prediction.
        :param labels: one label tensor for all modalities (same samples), or one per modality.
        :param loss: the iteration's training loss (for the ``train_loss`` slot); optional.
        """
        if len(logits) != self.mapping.n_modalities:
            raise ValueError(f"logits for {len(logits)} modalities given, expected {self.mapping.n_modalities}")
        per_modality = [labels] * len(logits) if isinstance(labels, torch.Tensor) else list(labels)
        if len(per_modality) != len(logits):
            raise ValueError(f"labels for {len(per_modality)} modalities given, expected {len(logits)}")
        scores = torch.empty(len(logits))
        for j, (modality_logits, modality_labels) in enumerate(zip(logits, per_modality)):
            if modality_logits.ndim != 2 or modality_logits.shape[0] != modality_labels.shape[0]:
                raise ValueError(
                    f"modality {j}: logits of shape {tuple(modality_logits.shape)} do not match "
                    f"{modality_labels.shape[0]} labels; expected [n_{j}, n_classes]"
                )
            if modality_logits.shape[1] != self.n_classes:
                raise ValueError(f"modality {j}: logits have {modality_logits.shape[1]} classes, expected {self.n_classes}")
            if modality_logits.shape[0] == 0:
                raise ValueError(f"modality {j}: no samples in this iteration; every modality needs at least one")
            if int(modality_labels.min()) < 0 or int(modality_labels.max()) >= self.n_classes:
                raise ValueError(
                    f"modality {j}: labels out of range [{int(modality_labels.min())}, {int(modality_labels.max())}], "
                    f"expected class ids in [0, {self.n_classes})"
                )
            scores[j] = modality_score(modality_logits.detach(), modality_labels)
        self.observe_scores(scores, loss)

    def observe_scores(self, scores: torch.Tensor, loss: float | torch.Tensor | None = None) -> None:
        """Record one iteration from its modality scores ``s_t^j`` directly (if you compute them)."""
        self.monitor.update(torch.as_tensor(scores, dtype=torch.float64))
        if loss is not None:
            value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
            if not math.isfinite(value):
                raise ValueError(f"training loss is {value}: training diverged, the sampler cannot score it")
            self._loss_sum += value
            self._loss_count += 1
        self._since_decision += 1
        if self._since_decision >= self.iterations_per_decision:
            self._pending = True

    def _decide(self) -> None:
        if self._loss_count:
            self._loss = self._loss_sum / self._loss_count
        status = TrainingStatus(
            monitor=self.monitor,
            val_modality_accuracy=self._val_modality,
            val_fused_accuracy=self._val_fused,
            quantities=self._quantities,
            progress=min(1.0, self._decisions / self.total_decisions),
            train_loss=self._loss,
            n_classes=self.n_classes,
        )
        self.last_observation = self.layout.build(status)
        self._quantities = self.mapping.quantities(self.policy(self.last_observation))
        self._decisions += 1
        self._since_decision = 0
        self._loss_sum, self._loss_count = 0.0, 0
        self._pending = False

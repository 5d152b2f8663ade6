"""``DUSSampler``: a sampling policy inside an ordinary PyTorch multimodal training loop.

The sampler keeps the same discrepancy monitor as the environment and builds its observations
with the same :class:`~dus_env.observation.ObservationLayout`, so an exported policy sees in your
loop exactly the inputs it was trained on. It needs torch and numpy (and onnxruntime for the ONNX
backend), not gymnasium or Stable-Baselines3.

Use::

    sampler = DUSSampler.from_artifact("runs/ppo_Synthetic-v0_0/exported", n_classes=10,
                                       iterations_per_decision=10, total_decisions=n_iterations // 10)
    for iteration in range(n_iterations):
        if sampler.decision_pending:                      # required before the first decision
            sampler.set_validation_logits(val_modality_logits, val_fused_logits, val_labels)
        masks = sampler.participation_masks(generator=generator)   # [M, b]: who takes part where
        logits, labels, loss = train_one_iteration(masks)          # your code
        sampler.observe(logits, labels, loss=loss)

A decision is made every ``iterations_per_decision`` (``K``) observed iterations, exactly where
the environment made one; the run has ``total_decisions`` (``T``) of them, ``K * T`` iterations.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import EnvConfig
from .heuristic import DEFAULT_TEMPERATURE, check_temperature, heuristic_action
from .metrics import balanced_weights
from .monitor import DiscrepancyMonitor, modality_score
from .observation import ObservationLayout, TrainingStatus
from .policy_artifact import PolicyArtifact
from .quantities import QuantityMapping

Policy = Callable[[np.ndarray], np.ndarray]

#: Values of ``missing_validation``: what a decision uses when no validation numbers were given.
MISSING_VALIDATION_MODES = ("error", "stale")


class MissingValidationError(RuntimeError):
    """A decision was due before any validation accuracies were given to the sampler.

    A RuntimeError, not a ValueError: no argument is wrong, the calls came in the wrong order.
    """


# -- participation masks ---------------------------------------------------------------------------


def participation_masks(quantities: Sequence[int] | np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Which rows of one paired batch each modality takes part in, as the env's ``joint`` learner draws them.

    A step with quantities ``n_j`` draws one paired batch of ``b = max_j n_j`` rows (row ``i`` is
    one sample, all its modalities); modality ``j`` takes part in a uniformly random subset of
    ``n_j`` of them and is left out of the fused prediction of the others. Every row has at least
    one participant (a modality with ``n_j = b`` takes part in all). In your loop: draw ``b`` rows,
    run modality ``j``'s encoder on the rows where ``mask[j]``, fuse per row only the participating
    modalities (e.g. sum their logits), and give ``logits[j]`` (its ``n_j`` rows) to
    :meth:`DUSSampler.observe`.

    :param quantities: ``n_j`` per modality, positive integers ``[M]``.
    :param generator: CPU generator for the random subsets (seed it for reproducible masks); ``None``
        uses torch's default generator.
    :return: bool ``[M, b]`` on the CPU; row ``j`` has exactly ``n_j`` True entries.
    """
    counts = _check_quantities(quantities)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator={generator!r} is invalid: expected a torch.Generator or None")
    rows = int(counts.max())
    masks = torch.zeros(len(counts), rows, dtype=torch.bool)
    for j, count in enumerate(counts.tolist()):
        masks[j, torch.randperm(rows, generator=generator)[:count]] = True
    return masks


def _check_quantities(quantities: Any, n_modalities: int | None = None) -> np.ndarray:
    """``quantities`` as int64 ``[M]``, or a ValueError naming what is wrong with them."""
    if isinstance(quantities, torch.Tensor):
        quantities = quantities.detach().cpu().numpy()
    try:
        values = np.asarray(quantities)
    except ValueError as error:
        raise ValueError(f"quantities={quantities!r} is invalid: expected one integer per modality") from error
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"quantities of shape {values.shape} are invalid: expected a 1-D array, one count per modality")
    if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"quantities={values.tolist()} are invalid: expected integer counts, got dtype {values.dtype}")
    if n_modalities is not None and values.size != n_modalities:
        raise ValueError(f"quantities={values.tolist()} has {values.size} values, expected {n_modalities}: one per modality")
    if values.min() < 1:
        raise ValueError(f"quantities={values.tolist()} are invalid: every modality needs at least 1 sample")
    return values.astype(np.int64)


# -- argument checks -------------------------------------------------------------------------------


def _check_positive_int(name: str, value: Any, meaning: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}={value!r} is invalid: expected an integer >= {low} ({meaning})")
    return int(value)


_K_MEANING = "K, training iterations between two decisions"
_T_MEANING = "T, decisions over the whole run"


def _check_run_length(iterations_per_decision: Any, total_decisions: Any, trained_with: tuple[int, int] | None = None) -> tuple[int, int]:
    """``(K, T)``, or a ValueError that explains both and, for a trained policy, what it was trained with.

    Why no default: the policy's ``progress`` slot is ``decisions / T``, and ``K`` sets how much
    training lies between decisions. The training env's values describe *its* run, not yours; a
    silent default would show the policy a progress (and a pace) that is not your run's.
    """
    missing = [
        name
        for name, value in (("iterations_per_decision", iterations_per_decision), ("total_decisions", total_decisions))
        if value is None
    ]
    if missing:
        hint = ""
        if trained_with is not None:
            k, t = trained_with
            hint = f" This policy was trained with iterations_per_decision={k}, total_decisions={t} ({k * t} iterations)."
        raise ValueError(
            f"{' and '.join(missing)} must be given: iterations_per_decision (K) is the number of training "
            f"iterations between two decisions, total_decisions (T) the number of decisions over your whole run, "
            f"so the run has K*T iterations (e.g. iterations_per_decision=10, total_decisions=n_iterations // 10).{hint}"
        )
    return (
        _check_positive_int("iterations_per_decision", iterations_per_decision, _K_MEANING),
        _check_positive_int("total_decisions", total_decisions, _T_MEANING),
    )


def _check_missing_validation(value: Any) -> str:
    if not isinstance(value, str) or value not in MISSING_VALIDATION_MODES:
        raise ValueError(f"missing_validation={value!r} is invalid: expected one of {', '.join(map(repr, MISSING_VALIDATION_MODES))}")
    return value


def _check_n_classes(n_classes: Any) -> int:
    if isinstance(n_classes, QuantityMapping):
        raise ValueError("n_classes is a QuantityMapping: pass the mapping as mapping=..., n_classes as the first argument")
    return _check_positive_int("n_classes", n_classes, "classes of your task", low=2)


# -- quantity ranges -------------------------------------------------------------------------------


def _scaled_mapping(
    reference: QuantityMapping,
    n_modalities: int,
    base_batch_size: int,
    min_quantity: int | None = None,
    max_quantity: int | None = None,
    budget: str | None = None,
) -> QuantityMapping:
    """``reference``'s quantity range at another batch size ``B'``, unless given explicitly.

    The distances of ``min`` and ``max`` from ``B`` are scaled by ``B' / B`` and rounded, so a range
    centred on ``B`` stays centred on ``B'`` (an all-zero action keeps meaning uniform sampling);
    ``min`` is then raised to 1 if needed, so that ``1 <= min <= B' <= max`` holds for any ``B'``.
    For the env's default 8..56 around B=32 this is ``B/4 .. 2B - B/4``.
    """
    ratio = base_batch_size / reference.base_batch_size
    if min_quantity is None:
        min_quantity = max(1, base_batch_size - round((reference.base_batch_size - reference.min_quantity) * ratio))
    if max_quantity is None:
        max_quantity = base_batch_size + round((reference.max_quantity - reference.base_batch_size) * ratio)
    return QuantityMapping(n_modalities, base_batch_size, min_quantity, max_quantity, budget or reference.budget)


def _env_default_mapping(n_modalities: int) -> QuantityMapping:
    """The quantity range of a default :class:`~dus_env.config.EnvConfig` (B=32, 8..56, fixed budget)."""
    return QuantityMapping(n_modalities, EnvConfig.base_batch_size, EnvConfig.min_quantity, EnvConfig.max_quantity, EnvConfig.budget)


def _heuristic_mapping(
    mapping: QuantityMapping | None,
    n_modalities: int | None,
    base_batch_size: int | None,
    min_quantity: int | None,
    max_quantity: int | None,
    budget: str | None,
) -> QuantityMapping:
    """The mapping given, or one built from ``n_modalities`` and ``base_batch_size`` (exactly one way)."""
    given = {
        name: value
        for name, value in (
            ("n_modalities", n_modalities),
            ("base_batch_size", base_batch_size),
            ("min_quantity", min_quantity),
            ("max_quantity", max_quantity),
            ("budget", budget),
        )
        if value is not None
    }
    if mapping is not None:
        if given:
            raise ValueError(f"give either mapping= or n_modalities= and base_batch_size=, not both: got mapping and {sorted(given)}")
        if not isinstance(mapping, QuantityMapping):
            raise ValueError(f"mapping={mapping!r} is invalid: expected a dus_env.QuantityMapping")
        return mapping
    if n_modalities is None or base_batch_size is None:
        raise ValueError(
            "n_modalities and base_batch_size are required (or mapping=QuantityMapping(...)): n_modalities is the "
            "number of modalities M, base_batch_size the per-modality samples per iteration under uniform sampling B"
        )
    m = _check_positive_int("n_modalities", n_modalities, "number of modalities M")
    b = _check_positive_int("base_batch_size", base_batch_size, "per-modality samples per iteration under uniform sampling")
    low = None if min_quantity is None else _check_positive_int("min_quantity", min_quantity, "smallest n_j")
    high = None if max_quantity is None else _check_positive_int("max_quantity", max_quantity, "largest n_j")
    return _scaled_mapping(_env_default_mapping(m), m, b, low, high, budget)


# -- the sampler -----------------------------------------------------------------------------------


class DUSSampler:
    """Turns the training status of your loop into per-modality sample quantities.

    :param policy: observation ``[D]`` -> action ``[M]`` in ``[-1, 1]``.
    :param mapping: action-to-quantity map (quantity range and budget).
    :param n_classes: classes of your task (normalises the loss slot, sets chance level).
    :param iterations_per_decision: ``K``: training iterations between two decisions.
    :param total_decisions: ``T``: decisions in your whole run, so the run has ``K * T`` iterations
        (sets the progress slot; after ``T`` decisions the policy keeps deciding with progress 1).
    :param missing_validation: what a decision does when :meth:`set_validation` was never called
        since the last :meth:`reset`: ``"error"`` raises :class:`MissingValidationError` (the
        policy would otherwise read numbers nobody measured); ``"stale"`` uses chance level
        ``1 / n_classes`` for every validation slot (what an untrained model scores; the env's
        own value at reset is close to it). Either way, once numbers were given, a decision without
        fresh ones reuses the last ones.
    """

    def __init__(
        self,
        policy: Policy,
        mapping: QuantityMapping,
        n_classes: int,
        iterations_per_decision: int,
        total_decisions: int,
        *,
        missing_validation: str = "error",
    ) -> None:
        self.n_classes = _check_n_classes(n_classes)
        self.iterations_per_decision, self.total_decisions = _check_run_length(iterations_per_decision, total_decisions)
        self.missing_validation = _check_missing_validation(missing_validation)
        self.policy = policy
        self.mapping = mapping
        self.layout = ObservationLayout(mapping.n_modalities)
        self.monitor = DiscrepancyMonitor(mapping.n_modalities)
        #: The loaded :class:`PolicyArtifact` when built by :meth:`from_artifact` (its metadata, layout).
        self.artifact: PolicyArtifact | None = None
        self.reset()

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def pretrained(
        cls,
        n_classes: int,
        *,
        iterations_per_decision: int | None = None,
        total_decisions: int | None = None,
        backend: str = "onnx",
        base_batch_size: int | None = None,
        missing_validation: str = "error",
    ) -> DUSSampler:
        """A sampler running the policy shipped with the package (:mod:`dus_env.policies`).

        The same arguments as :meth:`from_artifact`, without the path: trained on
        ``dus_env/SyntheticMFeatMix-v0``, where giving the weak modality more data pays on some tasks
        and hurts on others, so that it rebalances only where the training state says it helps.
        """
        from .policies import pretrained_path

        return cls.from_artifact(
            pretrained_path(),
            n_classes,
            iterations_per_decision=iterations_per_decision,
            total_decisions=total_decisions,
            backend=backend,
            base_batch_size=base_batch_size,
            missing_validation=missing_validation,
        )

    @classmethod
    def from_artifact(
        cls,
        path: str | Path,
        n_classes: int,
        *,
        iterations_per_decision: int | None = None,
        total_decisions: int | None = None,
        backend: str = "onnx",
        base_batch_size: int | None = None,
        missing_validation: str = "error",
    ) -> DUSSampler:
        """A sampler running an exported policy (see :mod:`dus_env.policy_artifact`).

        :param iterations_per_decision: ``K`` of *your* run (required).
        :param total_decisions: ``T`` of *your* run (required). Neither defaults to the training
            env's values: a policy reads its progress from ``T``; the error message says what it
            was trained with.
        :param backend: ``"onnx"`` (onnxruntime, the default) or ``"torch"`` (``torch.export``, torch alone).
        :param base_batch_size: your ``B``; rescales the trained quantity range by the same ratios.
        :param missing_validation: ``"error"`` or ``"stale"`` (see :class:`DUSSampler`). An exported
            policy reads the validation slots, hence the default ``"error"``.
        """
        artifact = PolicyArtifact(path, backend)
        env = artifact.env_config
        trained_with = (int(env["iterations_per_step"]), int(env["decision_steps"]))
        k, t = _check_run_length(iterations_per_decision, total_decisions, trained_with)
        mapping = artifact.mapping
        if base_batch_size is not None:
            b = _check_positive_int("base_batch_size", base_batch_size, "per-modality samples per iteration under uniform sampling")
            mapping = _scaled_mapping(mapping, mapping.n_modalities, b)
        sampler = cls(artifact.act, mapping, n_classes, k, t, missing_validation=missing_validation)
        sampler.artifact = artifact
        return sampler

    @classmethod
    def heuristic(
        cls,
        n_classes: int,
        *,
        n_modalities: int | None = None,
        base_batch_size: int | None = None,
        min_quantity: int | None = None,
        max_quantity: int | None = None,
        budget: str | None = None,
        mapping: QuantityMapping | None = None,
        iterations_per_decision: int | None = None,
        total_decisions: int | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        missing_validation: str = "stale",
    ) -> DUSSampler:
        """A sampler running DUS-H (:mod:`dus_env.heuristic`), no artifact needed.

        Give either ``n_modalities`` and ``base_batch_size`` (``min_quantity``, ``max_quantity``
        and ``budget`` default to the env's: ``B/4``, ``1.75 B``, ``"fixed"``, as for B=32, 8..56),
        or a ready ``mapping``.

        :param iterations_per_decision: ``K`` of your run (required).
        :param total_decisions: ``T`` of your run (required).
        :param temperature: DUS-H's softmax temperature (smaller reacts more strongly).
        :param missing_validation: defaults to ``"stale"``: DUS-H reads only the score gaps, so
            validation numbers cannot change its decisions; chance level then fills the validation
            slots of :attr:`last_observation`. ``"error"`` is accepted for a strict loop.
        """
        n_classes = _check_n_classes(n_classes)  # first: the old signature passed the mapping here
        temperature = check_temperature(temperature)
        mapping = _heuristic_mapping(mapping, n_modalities, base_batch_size, min_quantity, max_quantity, budget)
        k, t = _check_run_length(iterations_per_decision, total_decisions)
        layout = ObservationLayout(mapping.n_modalities)
        return cls(
            lambda observation: heuristic_action(layout, mapping, observation, temperature),
            mapping,
            n_classes,
            k,
            t,
            missing_validation=missing_validation,
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
        self._validation: tuple[np.ndarray, float] | None = None
        self._quantities = self.mapping.uniform()
        self._pending = True
        self.last_observation: np.ndarray | None = None

    @property
    def decision_pending(self) -> bool:
        """True when the next :meth:`quantities` call makes a decision (time to set validation)."""
        return self._pending

    def set_validation(self, modality_accuracies: Sequence[float], fused_accuracy: float) -> None:
        """Latest *balanced* validation accuracies, fractions in ``[0, 1]``.

        Call it before the first decision and whenever :attr:`decision_pending` is true; a decision
        without fresh numbers reuses the last ones. Compute them with
        :func:`dus_env.metrics.balanced_accuracy`, or let :meth:`set_validation_logits` do it.
        """
        if isinstance(modality_accuracies, torch.Tensor):
            modality_accuracies = modality_accuracies.detach().cpu().numpy()
        try:
            values = np.asarray(modality_accuracies, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"modality_accuracies={modality_accuracies!r} is invalid: expected one number per modality") from error
        m = self.mapping.n_modalities
        if values.shape != (m,):
            raise ValueError(f"modality_accuracies has {values.size} values (shape {values.shape}), expected {m}: one per modality")
        if isinstance(fused_accuracy, (bool, np.bool_)) or (
            isinstance(modality_accuracies, np.ndarray) and modality_accuracies.dtype == np.bool_
        ):
            raise ValueError("validation accuracies must be numbers in [0, 1], not booleans")
        try:
            fused = float(fused_accuracy)
        except (TypeError, ValueError) as error:
            raise ValueError(f"fused_accuracy={fused_accuracy!r} is invalid: expected a number in [0, 1]") from error
        for name, value in [*((f"modality_accuracies[{j}]", v) for j, v in enumerate(values.tolist())), ("fused_accuracy", fused)]:
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name}={value!r} is invalid: expected a balanced accuracy in [0, 1] (a fraction, not percent)")
        self._validation = (values, fused)

    @torch.no_grad()
    def set_validation_logits(
        self, modality_logits: Sequence[torch.Tensor], fused_logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[list[float], float]:
        """:meth:`set_validation` from your model's validation logits: balanced accuracies computed here.

        The balanced accuracy (macro recall over the classes present in ``labels``) is computed
        with :func:`dus_env.metrics.balanced_weights`, the function behind the env's own numbers.

        :param modality_logits: ``modality_logits[j]`` ``[n, C]``, modality ``j``'s prediction alone (a
            list, or one stacked tensor ``[M, n, C]``).
        :param fused_logits: ``[n, C]``, the fused prediction (the env sums the modality logits).
        :param labels: ``[n]`` integer class ids in ``[0, C)``.
        :return: the per-modality and fused balanced accuracies that were set (e.g. for your logs).
        """
        labels = self._check_labels(labels)
        m = self.mapping.n_modalities
        if len(modality_logits) != m:
            raise ValueError(f"modality_logits has {len(modality_logits)} entries, expected {m}: one [n, C] tensor per modality")
        named = [*((f"modality_logits[{j}]", x) for j, x in enumerate(modality_logits)), ("fused_logits", fused_logits)]
        predictions = torch.stack([self._predictions(name, x, len(labels)) for name, x in named])
        values = ((predictions == labels).double() @ balanced_weights(labels, self.n_classes)).tolist()
        self.set_validation(values[:-1], values[-1])
        return values[:-1], values[-1]

    def _check_labels(self, labels: Any) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) == 0:
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels of shape {shape} are invalid: expected a non-empty 1-D tensor of class ids")
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels have dtype {labels.dtype}: expected integer class ids (e.g. torch.long)")
        labels = labels.detach().cpu().long()
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= self.n_classes:
            raise ValueError(f"labels out of range [{low}, {high}], expected class ids in [0, {self.n_classes})")
        return labels

    def _predictions(self, name: str, logits: Any, n: int) -> torch.Tensor:
        """Arg-max classes ``[n]`` (CPU) of one validation logit tensor, after checking it."""
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (n, self.n_classes):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(
                f"{name} of shape {shape} is invalid: expected [{n}, {self.n_classes}] (one row per label, one column per class)"
            )
        if not logits.is_floating_point():
            raise ValueError(f"{name} has dtype {logits.dtype}: expected floating-point logits")
        if not bool(torch.isfinite(logits).all()):
            raise ValueError(f"{name} holds NaN or inf: the model's validation logits must be finite (training diverged?)")
        return logits.argmax(dim=1).cpu()

    def quantities(self) -> np.ndarray:
        """Per-modality sample quantities for the next iteration (int64 ``[M]``); decides when one is pending."""
        if self._pending:
            self._decide()
        return self._quantities.copy()

    def participation_masks(
        self, quantities: Sequence[int] | np.ndarray | torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """:func:`participation_masks` of ``quantities`` (default: :meth:`quantities`, deciding if pending).

        :return: bool ``[M, b]``, ``b = max_j n_j``; row ``j`` marks the ``n_j`` rows modality ``j`` sees.
        """
        if quantities is None:
            quantities = self.quantities()
        return participation_masks(_check_quantities(quantities, self.mapping.n_modalities), generator)

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
        if isinstance(logits, torch.Tensor) or len(logits) != self.mapping.n_modalities:
            given = "one tensor" if isinstance(logits, torch.Tensor) else f"{len(logits)} tensors"
            raise ValueError(
                f"logits: {given} given, expected a list of {self.mapping.n_modalities} tensors [n_j, n_classes], one per modality"
            )
        if isinstance(labels, torch.Tensor) and labels.ndim != 1:
            raise ValueError(
                f"labels of shape {tuple(labels.shape)} are invalid: expected class ids [n] (not one-hot), "
                "or a list of one such tensor per modality"
            )
        per_modality = [labels] * len(logits) if isinstance(labels, torch.Tensor) else list(labels)
        if len(per_modality) != len(logits):
            raise ValueError(
                f"labels: {len(per_modality)} tensors given, expected one tensor of class ids for all "
                f"modalities or a list of {len(logits)}, one per modality"
            )
        scores = torch.empty(len(logits))
        for j, (modality_logits, modality_labels) in enumerate(zip(logits, per_modality)):
            if not isinstance(modality_logits, torch.Tensor) or not modality_logits.is_floating_point():
                raise ValueError(
                    f"logits[{j}] must be a float torch.Tensor [n_{j}, n_classes], got {type(modality_logits).__name__}"
                    + (f" of dtype {modality_logits.dtype}" if isinstance(modality_logits, torch.Tensor) else "")
                )
            if (
                not isinstance(modality_labels, torch.Tensor)
                or modality_labels.ndim != 1
                or modality_labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8)
            ):
                kind = (
                    f"a tensor of shape {tuple(modality_labels.shape)} and dtype {modality_labels.dtype}"
                    if isinstance(modality_labels, torch.Tensor)
                    else f"a {type(modality_labels).__name__}"
                )
                raise ValueError(
                    f"labels for modality {j} must be an integer torch.Tensor of class ids [n_{j}] "
                    f"(torch.as_tensor(y, dtype=torch.long) converts numpy arrays and lists), got {kind}"
                )
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

    def _validation_inputs(self) -> tuple[np.ndarray, float]:
        """The validation numbers for this decision: the last given, else chance level or an error."""
        if self._validation is not None:
            return self._validation
        if self.missing_validation == "error":
            raise MissingValidationError(
                "no validation accuracies were given before this decision, and the policy observes them: call "
                "sampler.set_validation(modality_accuracies, fused_accuracy) or "
                "sampler.set_validation_logits(modality_logits, fused_logits, labels) before the first quantities() / "
                "participation_masks() call and every time sampler.decision_pending is true; or build the sampler with "
                "missing_validation='stale' (chance level 1/n_classes until numbers are given, then the last ones)"
            )
        chance = 1.0 / self.n_classes
        return np.full(self.mapping.n_modalities, chance), chance

    def _decide(self) -> None:
        val_modality, val_fused = self._validation_inputs()  # first: an error leaves the sampler unchanged
        if self._loss_count:
            self._loss = self._loss_sum / self._loss_count
        status = TrainingStatus(
            monitor=self.monitor,
            val_modality_accuracy=val_modality,
            val_fused_accuracy=val_fused,
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

"""The environment's config: task + learner + the decision problem around them.

``EnvConfig`` is frozen and validated on creation. ``resolve_config`` turns a preset name plus
keyword overrides (what ``gymnasium.make`` passes) into one, with errors that name the bad key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, cast

from .learners import LearnerConfig
from .observation import ObservationLayout
from .quantities import BUDGET_MODES, QuantityMapping
from .tasks import MFeatTaskConfig, SyntheticTaskConfig, TaskConfig, task_config_from_dict
from .tasks.mfeat import mfeat_view_widths
from .validation import (
    MAX_SCALE,
    ConfigError,
    UnknownOptionError,
    check_bool,
    check_choice,
    check_device,
    check_fields,
    check_float,
    check_int,
    check_one_width,
    fail,
)


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines a DUS environment.

    :param task: where the data comes from (synthetic, mfeat or features).
    :param learner: model and optimizer of the multimodal learner.
    :param base_batch_size: ``B``, per-modality samples per iteration under uniform sampling.
    :param min_quantity: smallest per-modality quantity per iteration (at least 1).
    :param max_quantity: largest per-modality quantity per iteration.
    :param budget: ``fixed`` (every iteration uses ``M * B`` samples) or ``free``.
    :param iterations_per_step: ``K``, training iterations between two decisions.
    :param decision_steps: ``T``, decisions per episode (the training budget).
    :param reward_scale: multiplies every reward (the return is scaled by the same factor).
    :param gap_penalty: weight of the imbalance penalty on the gap between the best and worst
        unimodal validation accuracy (0 = reward is the pure balanced-accuracy gain).
    :param divergence_penalty: reward of the step whose training loss became non-finite.
    :param torch_threads: ``torch.set_num_threads`` applied when the env is created (one thread per
        env process is fastest for these small models); ``None`` leaves torch's setting alone.
    :param shuffle_modalities: present the modalities in a random order per episode, drawn from the
        episode's task seed: observation slots, action components and ``info`` follow the same
        order, and ``info["modality_order"]`` says which original modality each position is. A
        policy then cannot learn "favour index 1": it has to read the state. The modalities must
        share one feature width (synthetic tasks; mfeat with several view sets, which pads them).
    :param max_task_bytes: largest memory one env's task may take while it is built (default 4 GiB);
        a larger task is refused before anything is allocated, with its size in the message.
    :param device: where the models train and are evaluated: ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``
        (the batched vector env gains most from a GPU; a single env's tiny model is faster on the CPU).
    """

    task: TaskConfig = field(default_factory=SyntheticTaskConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    base_batch_size: int = 32
    min_quantity: int = 8
    max_quantity: int = 56
    budget: str = "fixed"
    iterations_per_step: int = 10
    decision_steps: int = 20
    reward_scale: float = 1.0
    gap_penalty: float = 0.0
    divergence_penalty: float = 1.0
    torch_threads: int | None = 1
    shuffle_modalities: bool = False
    device: str = "cpu"
    max_task_bytes: int = 4 << 30

    def _check_task_size(self, owner: str) -> None:
        """Refuse, before anything is allocated, a task whose data would exceed ``max_task_bytes`` per env."""
        sizes = getattr(self.task, "max_split_sizes", None)
        width = getattr(self.task, "max_feature_width", None)
        if sizes is None or width is None:
            return  # the features task's size is the file's, known once it is read
        rows = sum(sizes())
        # float64 while the task is generated (mfeat/synthetic build in numpy float64), per modality.
        needed = rows * width() * self.task.n_modalities * 8
        if needed > self.max_task_bytes:
            fail(
                owner,
                "max_task_bytes",
                self.max_task_bytes,
                f"the task needs about {needed / 2**30:.1f} GiB per env ({rows:,} samples x {self.task.n_modalities} modalities x "
                f"{width()} features x 8 bytes): make the task smaller (fewer samples: n_train, n_val, n_test; or fewer features) "
                "or raise max_task_bytes",
            )

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if isinstance(self.task, dict):
            object.__setattr__(self, "task", task_config_from_dict(self.task))
        if isinstance(self.learner, dict):
            check_fields("LearnerConfig", self.learner, _LEARNER_FIELDS)
            object.__setattr__(self, "learner", LearnerConfig(**self.learner))
        check_int(owner, "base_batch_size", self.base_batch_size, 1, 1_000_000)
        check_int(owner, "min_quantity", self.min_quantity, 1, self.base_batch_size)
        check_int(owner, "max_quantity", self.max_quantity, self.base_batch_size, 1_000_000)
        check_choice(owner, "budget", self.budget, BUDGET_MODES)
        check_int(owner, "iterations_per_step", self.iterations_per_step, 1, 1_000_000)
        check_int(owner, "decision_steps", self.decision_steps, 1, 1_000_000)
        check_float(owner, "reward_scale", self.reward_scale, 0.0, MAX_SCALE, low_open=True)
        check_float(owner, "gap_penalty", self.gap_penalty, 0.0, MAX_SCALE)
        check_float(owner, "divergence_penalty", self.divergence_penalty, 0.0, MAX_SCALE)
        if self.torch_threads is not None:
            check_int(owner, "torch_threads", self.torch_threads, 1, 1024)
        check_bool(owner, "shuffle_modalities", self.shuffle_modalities)
        check_int(owner, "max_task_bytes", self.max_task_bytes, 1)
        self._check_task_size(owner)
        if self.shuffle_modalities and isinstance(self.task, MFeatTaskConfig) and not self.task.has_view_sets:
            check_one_width(
                mfeat_view_widths(self.task.view_sets[0]),
                f"give the views {list(self.task.views)} as a list of view sets (views=[{list(self.task.views)}]), which pads them",
            )
        check_device(owner, "device", self.device)
        bounds: tuple[int, int] | None = getattr(self.task, "n_train_bounds", None)  # not every task kind has one
        if bounds is not None and self.max_quantity > bounds[0]:
            n_train = bounds[0]
            what = f"n_train={n_train}" if bounds[0] == bounds[1] else f"smallest n_train={n_train} (n_train ranges over {list(bounds)})"
            fail(owner, "max_quantity", self.max_quantity, f"cannot exceed the task's {what}")

    def quantity_mapping(self) -> QuantityMapping:
        """The action-to-quantity map of an env with this config."""
        return QuantityMapping(self.task.n_modalities, self.base_batch_size, self.min_quantity, self.max_quantity, self.budget)

    def observation_layout(self) -> ObservationLayout:
        """The observation layout of an env with this config."""
        return ObservationLayout(self.task.n_modalities)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for YAML/JSON); ``EnvConfig(**d)`` rebuilds the same config."""
        return dataclasses.asdict(self)


_ENV_FIELDS = {f.name for f in dataclasses.fields(EnvConfig)} - {"task", "learner"}
_LEARNER_FIELDS = {f.name for f in dataclasses.fields(LearnerConfig) if f.init}


def resolve_config(base: EnvConfig, overrides: dict[str, Any]) -> EnvConfig:
    """``base`` with ``overrides`` applied; what ``gymnasium.make(id, **overrides)`` goes through.

    Accepted keys: any ``EnvConfig`` field; ``task`` / ``learner`` as dicts of the fields to change
    (``task={"kind": "mfeat"}`` switches the source and starts from that kind's defaults); and any
    single task or learner field by name at the top level, e.g. ``path="f.npz"`` or ``lr=3e-4``.
    """
    env_values: dict[str, Any] = {}
    task_values: dict[str, Any] = {}
    learner_values: dict[str, Any] = {}
    task_fields = {f.name for f in dataclasses.fields(base.task) if f.init}
    for key, value in overrides.items():
        if key == "task":
            task_values.update(_as_dict(base.task, value, "task"))
        elif key == "learner":
            learner_values.update(_as_dict(base.learner, value, "learner"))
        elif key in _ENV_FIELDS:
            env_values[key] = value
        elif key in task_fields:
            task_values[key] = value
        elif key in _LEARNER_FIELDS:
            learner_values[key] = value
        else:
            raise UnknownOptionError(
                f"unknown option {key!r} (unexpected keyword argument {key!r}): accepted are the env fields {sorted(_ENV_FIELDS)}, "
                f"the learner fields {sorted(_LEARNER_FIELDS)}, the {base.task.kind} task fields {sorted(task_fields)}, "
                "'task' and 'learner'"
            )
    task = base.task
    if task_values:
        kind = task_values.get("kind", base.task.kind)
        start = {} if kind != base.task.kind else {k: v for k, v in _init_values(base.task).items()}
        task = task_config_from_dict({**start, **task_values, "kind": kind})
    check_fields("LearnerConfig", learner_values, _LEARNER_FIELDS)
    learner = dataclasses.replace(base.learner, **learner_values) if learner_values else base.learner
    return dataclasses.replace(base, task=task, learner=learner, **env_values)


def _init_values(config: Any) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}


def _as_dict(current: Any, value: Any, name: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if dataclasses.is_dataclass(value):
        values = _init_values(value)
        if name == "task":
            values["kind"] = cast("TaskConfig", value).kind  # is_dataclass narrows to a type that declares no `kind`
        return values
    raise ConfigError(f"{name}={value!r} is invalid: expected a dict of fields or a {type(current).__name__}")

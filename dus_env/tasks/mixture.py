"""A distribution over task sources: each episode draws one component config, then its instance.

Why: a sampling policy should be right both where rebalancing toward the weak modality pays (the
synthetic mix: corrupted strong modalities) and where it hurts (real mfeat views, where the strong
view is clean). Training on one source teaches one regime; a mixture puts both in one env, so
every agent, driver and artifact of the project works with it unchanged.

The components share what the batched model needs to be one shape: the number of modalities and
of classes. Their features are zero-padded to the widest component (as mfeat view sets are, which
changes nothing but shapes, see :func:`dus_env.tasks.base.pad_features`), and
every instance reports the union of the components' parameters (``instance_component`` says which
component it is; the parameters of the others hold NaN, -1 or ``""``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..validation import ConfigError, as_tuple, check_float, fail
from .base import Task, pad_features
from .mfeat import MFeatTaskConfig, build_mfeat_task
from .synthetic import SyntheticTaskConfig, build_synthetic_task

_COMPONENTS: dict[str, Any] = {"synthetic": SyntheticTaskConfig, "mfeat": MFeatTaskConfig}
_BUILDERS: dict[str, Any] = {"synthetic": build_synthetic_task, "mfeat": build_mfeat_task}


@dataclass(frozen=True)
class MixtureTaskConfig:
    """Several synthetic / mfeat task configs, one drawn per episode.

    :param components: the task configs (or dicts with a ``kind`` of ``synthetic`` or ``mfeat``),
        all with the same number of modalities and of classes.
    :param weights: probability of each component (normalised); ``None`` = equal.
    """

    kind: str = field(default="mixture", init=False)
    components: tuple[Any, ...] = ()
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        components = tuple(_component(owner, c) for c in as_tuple(owner, "components", self.components))
        if len(components) < 2:
            fail(owner, "components", self.components, "give at least two task configs to mix")
        object.__setattr__(self, "components", components)
        for name, values in (("n_modalities", {c.n_modalities for c in components}), ("n_classes", {c.n_classes for c in components})):
            if len(values) > 1:
                fail(
                    owner,
                    "components",
                    [c.kind for c in components],
                    f"every component needs the same {name} (one model shape), got {sorted(values)}",
                )
        if self.weights is not None:
            weights = tuple(as_tuple(owner, "weights", self.weights))
            if len(weights) != len(components):
                fail(owner, "weights", weights, f"expected {len(components)} values, one per component")
            for weight in weights:
                check_float(owner, "weights", weight, 0.0, low_open=True)
            object.__setattr__(self, "weights", weights)

    @property
    def n_modalities(self) -> int:
        return int(self.components[0].n_modalities)

    @property
    def n_classes(self) -> int:
        return int(self.components[0].n_classes)

    @property
    def n_train_bounds(self) -> tuple[int, int]:
        """Smallest and largest training set of any component's instance."""
        sizes = [c.n_train_bounds if hasattr(c, "n_train_bounds") else (c.max_split_sizes()[0],) * 2 for c in self.components]
        return min(low for low, _ in sizes), max(high for _, high in sizes)

    def max_split_sizes(self) -> tuple[int, int, int]:
        sizes = [c.max_split_sizes() for c in self.components]
        return tuple(max(s[i] for s in sizes) for i in range(3))

    def width(self) -> int:
        """The common feature width every instance is padded to."""
        return max(c.max_feature_width() for c in self.components)

    def probabilities(self) -> np.ndarray:
        weights = np.ones(len(self.components)) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        return weights / weights.sum()


def _component(owner: str, value: Any) -> Any:
    """A component config from a config or a dict (parsed as every task config is), of a kind a mixture takes."""
    if isinstance(value, dict):
        from . import task_config_from_dict  # the package imports this module: a late import

        kind = value.get("kind", "synthetic")
        if kind not in _COMPONENTS:
            raise ConfigError(f"{owner}.components: kind={kind!r} is invalid: a mixture takes {', '.join(map(repr, _COMPONENTS))}")
        try:
            value = task_config_from_dict(value)
        except ConfigError as error:
            raise ConfigError(f"{owner}.components: {error}") from None
    if getattr(value, "kind", None) not in _COMPONENTS:
        fail(owner, "components", value, f"expected task configs (or dicts) of kind {', '.join(map(repr, _COMPONENTS))}")
    return value


def build_mixture_task(config: MixtureTaskConfig, rng: np.random.Generator) -> Task:
    """Draw the component from ``rng``, then its instance from the same generator."""
    index = int(rng.choice(len(config.components), p=config.probabilities()))
    component = config.components[index]
    task = pad_features(_BUILDERS[component.kind](component, rng), config.width())
    parameters: dict[str, np.ndarray] = {"component": np.array(index)}
    for other in config.components:
        parameters.update({k: v for k, v in other.empty_parameters().items() if k not in parameters})
    parameters.update(task.parameters)
    return task.with_parameters(parameters)

"""Small checks shared by every config, so that each bad value is reported the same way.

Every message names the config class, the field, the value received and what is allowed: the user
should know what to change without reading the source.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


class ConfigError(ValueError):
    """A config field holds a value outside its allowed range or of the wrong kind."""


class UnknownOptionError(ConfigError, TypeError):
    """An option or field name the config does not have.

    Also a ``TypeError``, as Python reports an unexpected keyword argument: libraries that probe
    optional ``gymnasium.make`` keywords (torchrl's ``GymEnv`` tries ``frameskip``) fall back on a
    ``TypeError``; a wrong *value* stays a plain :class:`ConfigError`.
    """


def fail(owner: str, field: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{owner}.{field}={value!r} is invalid: {allowed}")


def check_int(owner: str, field: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(owner, field, value, "expected an integer")
    if value < low or (high is not None and value > high):
        fail(owner, field, value, f"allowed range is [{low}, {high if high is not None else 'inf'}]")


def check_float(
    owner: str,
    field: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        fail(owner, field, value, "expected a finite number")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        fail(owner, field, value, f"allowed range is {left}{low}, {high}{right}")


def check_choice(owner: str, field: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        fail(owner, field, value, f"expected one of {', '.join(map(repr, choices))}")


def check_length(owner: str, field: str, value: tuple, length: int, what: str) -> None:
    if len(value) != length:
        fail(owner, field, value, f"expected {length} values, one per {what}")


def as_tuple(owner: str, field: str, value: Any) -> tuple:
    """A list/tuple field as a tuple; a single number or name becomes a 1-tuple, a string is not split."""
    if isinstance(value, (str, numbers.Number)):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        fail(owner, field, value, "expected a list of values")
    raise AssertionError  # unreachable: fail raises


def check_fields(owner: str, values: dict[str, Any], allowed: Iterable[str]) -> None:
    """Unknown keys in a dict of config fields are named, with the accepted ones."""
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise UnknownOptionError(f"unknown field(s) {unknown} for {owner}: allowed are {sorted(allowed)}")


def check_split_fractions(owner: str, val_fraction: Any, test_fraction: Any) -> None:
    """Each fraction in (0, 0.5], and together they leave training data in every class."""
    check_float(owner, "val_fraction", val_fraction, 0.0, 0.5, low_open=True)
    check_float(owner, "test_fraction", test_fraction, 0.0, 0.5, low_open=True)
    if val_fraction + test_fraction >= 0.9:
        fail(
            owner,
            "test_fraction",
            test_fraction,
            f"val_fraction + test_fraction must stay below 0.9 to leave training data (val_fraction={val_fraction})",
        )


def check_one_width(widths: tuple[int, ...], advice: str) -> None:
    """``EnvConfig.shuffle_modalities`` needs modalities of one feature width: one rule for the config's
    early check (mfeat views, known when the config is made) and the core's (any task, at reset)."""
    if len(set(widths)) > 1:
        fail(
            "EnvConfig",
            "shuffle_modalities",
            True,
            f"the modalities have different feature widths {tuple(widths)}, and a shuffled order needs one width: {advice}",
        )


def check_device(owner: str, field: str, value: Any) -> None:
    """``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``, and a CUDA device only where one is available."""
    if not isinstance(value, str) or not (value in ("cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())):
        fail(owner, field, value, "expected 'cpu', 'cuda' or 'cuda:<index>'")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            fail(owner, field, value, "CUDA is not available on this machine: use 'cpu'")
        index = int(value[5:]) if ":" in value else 0
        if index >= torch.cuda.device_count():
            fail(owner, field, value, f"this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_bool(owner: str, field: str, value: Any) -> None:
    """A true/false field: ``"no"`` or ``1`` is not a bool (a non-empty string would read as true)."""
    if not isinstance(value, (bool, np.bool_)):
        fail(owner, field, value, "expected true or false")


#: Largest signal, reward or penalty scale a config accepts: products of such values with unit-scale
#: features and accuracies stay far inside float32 (about 3.4e38) through every forward pass.
MAX_SCALE = 1e6

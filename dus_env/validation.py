"""Small checks shared by every config, so that each bad value is reported the same way.

Every message names the config class, the field, the value received and what is allowed: the user
should know what to change without reading the source.
"""

from __future__ import annotations

import math
from typing import Any, Iterable


class ConfigError(ValueError):
    """A config field holds a value outside its allowed range or of the wrong kind."""


def fail(owner: str, field: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{owner}.{field}={value!r} is invalid: {allowed}")


def check_int(owner: str, field: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
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

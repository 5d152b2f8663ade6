"""Command-line parsing shared by the drivers (``train_agent.py``, ``evaluate.py``).

``--env-kwargs`` (both drivers) and ``--hyperparams`` (training) read alike: one JSON object, or
``key=value`` items whose values are YAML (``decision_steps=40``, ``lr=3e-4``, ``views=[pix, mor]``,
``path=my file.npz``) and whose dotted keys set nested fields (``learner.hidden_sizes=[16]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def yaml_number(value: Any) -> Any:
    """``"3e-4"`` -> ``3e-4``: YAML 1.1 (PyYAML) reads exponents without a dot as strings."""
    return float(value) if isinstance(value, str) and _SCIENTIFIC.match(value) else value


def json_object_argument(items: Sequence[str], option: str, error: type[Exception]) -> dict[str, Any] | None:
    """The option's values read as one JSON object, or ``None`` when they are not a single ``{...}``.

    :param items: the option's values, as the command line gave them.
    :param option: the option's name, e.g. ``"--env-kwargs"``, for the message.
    :param error: the caller's one-line input error, raised for malformed JSON or JSON that is not an object.
    """
    if len(items) != 1 or not items[0].lstrip().startswith("{"):
        return None
    try:
        values = json.loads(items[0])
    except json.JSONDecodeError as exc:
        raise error(f"{option} {items[0]!r} is not valid JSON: {exc}") from exc
    if not isinstance(values, dict):
        raise error(f"{option} {items[0]!r} must be a JSON object")
    return values


def parse_key_values(items: Sequence[str], option: str, error: type[Exception], example: str) -> dict[str, Any]:
    """``["n_steps=64", "learner.lr=3e-4"]`` -> ``{"n_steps": 64, "learner": {"lr": 3e-4}}``.

    :param items: ``key=value`` strings; values are YAML, dotted keys nest.
    :param option: the option's name, for messages.
    :param error: the caller's one-line input error.
    :param example: a valid item shown in the message of an invalid one.
    """
    result: dict[str, Any] = {}
    for item in items:
        key, has_value, text = item.partition("=")
        if not has_value or not key.strip():
            raise error(f"{option} item {item!r} is invalid: expected key=value, e.g. {example}")
        try:
            value = yaml_number(yaml.safe_load(text)) if text.strip() else None
        except yaml.YAMLError as exc:
            raise error(f"{option} value of {key.strip()!r} is not valid YAML: {text!r}") from exc
        *parents, leaf = key.strip().split(".")
        target = result
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise error(f"{option} item {item!r} sets a field inside {parent!r}, which is not a dict")
        target[leaf] = value
    return result


def merge_nested(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base`` key by key, at every level: where both hold a dict they merge, else the override wins.

    So ``learner.lr=0.01`` on the command line changes the learning rate of a suite's
    ``learner: {hidden_sizes: [16]}`` and keeps its hidden sizes. Neither argument is modified.
    """
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_env_kwargs(items: Sequence[str], error: type[Exception]) -> dict[str, Any]:
    """``--env-kwargs``: one JSON object, or ``key=value`` items (see the module docstring)."""
    values = json_object_argument(items, "--env-kwargs", error)
    if values is not None:
        return values
    return parse_key_values(items, "--env-kwargs", error, example="decision_steps=40")

"""Command-line parsing shared by the drivers (``train_agent.py``, ``evaluate.py``)."""

from __future__ import annotations

import json
from typing import Any, Sequence


def json_object_argument(items: Sequence[str], option: str, error: type[Exception]) -> dict[str, Any] | None:
    """The option's values read as one JSON object, or ``None`` when they are not a single ``{...}``.

    Both drivers take ``--env-kwargs`` as one JSON object or as ``key=value`` pairs; this is the JSON
    form, so that it reads and fails alike in both. ``None`` leaves the pairs to the caller.

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

"""Result files of a benchmark, written atomically, and the rows that go into them.

Why atomic: a benchmark or a training run can go on for hours and be interrupted at any moment.
Every file is written to a temporary file in the same directory and moved over the target with
``os.replace``, which is atomic on POSIX and Windows: a reader (or a rerun, or a resumed run) sees
the previous complete file or the new complete file, never half of one. Training
(``agents/training.py``, ``agents/reinforce.py``) writes its models and logs with the same writers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np

from dus_env.faults import fault_point

from .rollout import EpisodeResult

#: Distributions whose versions are recorded with every result (absent ones are reported as such).
RECORDED_PACKAGES = (
    "dus_env",
    "torch",
    "gymnasium",
    "numpy",
    "scipy",
    "matplotlib",
    "stable-baselines3",
    "sb3-contrib",
)


@contextmanager
def atomic_output(path: str | Path, binary: bool = False, fault: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on a clean exit it replaces ``path``, otherwise it is removed.

    :param path: the final file; its directory is created if needed.
    :param binary: ``True`` for bytes (PNG), ``False`` for UTF-8 text with untranslated newlines (CSV).
    :param fault: a :func:`dus_env.faults.fault_point` name, reached with the data written and not
        yet in place (what a kill in the middle of a save leaves).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        opened: IO[Any] = os.fdopen(descriptor, "wb") if binary else os.fdopen(descriptor, "w", encoding="utf-8", newline="")
        with opened as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file readable by its owner only; results are meant to be shared.
        os.chmod(temporary, 0o666 & ~_umask())
        if fault is not None:
            fault_point(fault)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes, fault: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path`` as a :class:`~pathlib.Path` (``fault``: see :func:`atomic_output`)."""
    with atomic_output(path, binary=True, fault=fault) as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as handle:
        handle.write(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented, strictly valid JSON (NaN and inf become ``null``) atomically."""
    write_text(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` as CSV atomically; the header is the union of keys in first-seen order.

    Rows that miss a column (e.g. modality 2 on a two-modality env) leave the cell empty.
    """
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)
    write_text(path, buffer.getvalue())


def lists_for_tuples(value: Any) -> Any:
    """Tuples as lists, recursively: ``(16,)`` from a config then equals ``[16]`` from YAML, and
    ``yaml.safe_dump`` accepts the value."""
    if isinstance(value, dict):
        return {key: lists_for_tuples(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [lists_for_tuples(item) for item in value]
    return value


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, tuples and paths turned into JSON types; NaN/inf into ``None``."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def episode_row(result: EpisodeResult, spec: str) -> dict[str, Any]:
    """One ``episodes.csv`` row: identity of the episode, its return, and every final test/quantity metric.

    Lists become one column per modality (``test_modality_accuracies_0``); the per-step quantity
    history is kept as one JSON cell so the row alone shows what the agent did; the instance's drawn
    parameters (``instance_*``) and ``modality_order`` say which instance it was. Accuracies are
    fractions in ``[0, 1]``, exactly as the env reports them.

    :param result: the episode.
    :param spec: the agent spec that rebuilds the agent (with ``{env}`` filled in).
    """
    row: dict[str, Any] = {
        "env": result.env_id,
        "agent": result.agent,
        "spec": spec,
        "seed": result.seed,
        "episode_return": result.episode_return,
        "decisions": result.final["step"],
        "diverged": result.final["diverged"],
        "wall_time_s": result.wall_time,
    }
    for key, value in result.final.items():
        if key == "quantity_history":
            row[key] = json.dumps(value)
        elif key.startswith(("test_", "quantity_", "instance_")) or key == "modality_order":
            if isinstance(value, (list, tuple)):
                row.update({f"{key}_{j}": item for j, item in enumerate(value)})
            else:
                row[key] = value
    return row


def trace_rows(result: EpisodeResult) -> list[dict[str, Any]]:
    """``traces.csv`` rows: one per decision step (step 0 is the state after ``reset``), lists split per modality."""
    rows = []
    for step, entry in enumerate(result.trace):
        row: dict[str, Any] = {"env": result.env_id, "agent": result.agent, "seed": result.seed, "step": step}
        for key, value in entry.items():
            if isinstance(value, (list, tuple)):
                row.update({f"{key}_{j}": item for j, item in enumerate(value)})
            else:
                row[key] = value
        rows.append(row)
    return rows


def environment_versions() -> dict[str, str]:
    """Python, platform and the versions of :data:`RECORDED_PACKAGES`, to say what produced a result."""
    return {"python": platform.python_version(), "platform": platform.platform(), **package_versions(RECORDED_PACKAGES)}


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """The installed version of each distribution in ``names``, ``"not installed"`` for absent ones."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _cell(value: Any) -> Any:
    """CSV cell: floats at full precision (``repr``), NaN as an empty cell, bools as true/false."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    return value


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current

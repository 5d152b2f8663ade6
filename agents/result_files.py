"""``episodes.csv`` and ``traces.csv`` of an evaluation: always one consistent set, and resumable.

Why: both files are rewritten from the same finished episodes, but two atomic writes are two
moments, and a kill between them would leave files that disagree on which episodes ran. So every
write goes to a fresh hidden generation folder ``.episodes-XXXX/`` (both CSVs, plus
``episodes.jsonl`` with every episode's full result), then the output folder's ``.episodes``
symlink is switched to it in one atomic rename; ``episodes.csv`` and ``traces.csv`` are relative
symlinks through ``.episodes``. A reader, or a kill, sees the previous set or the new one, never a
mix. ``episodes.jsonl`` is what ``evaluate.py --resume`` reads to skip finished episodes (JSON,
no pickle).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dus_env.faults import fault_point

from .results import write_csv, write_text
from .rollout import EpisodeResult

CURRENT = ".episodes"
GENERATION_PREFIX = ".episodes-"
FILES = ("episodes.csv", "traces.csv")
RESULTS_FILE = "episodes.jsonl"


@dataclasses.dataclass(frozen=True)
class FinishedEpisode:
    """One line of ``episodes.jsonl``: the episode's result and exactly what produced it."""

    spec: str
    env_kwargs: dict[str, Any]
    result: EpisodeResult


def write_result_set(
    out: Path, episodes: Sequence[Mapping[str, Any]], traces: Sequence[Mapping[str, Any]], finished: Sequence[FinishedEpisode]
) -> None:
    """Write the CSV rows and the full results as one new generation and switch to it atomically."""
    out.mkdir(parents=True, exist_ok=True)
    generation = Path(tempfile.mkdtemp(prefix=GENERATION_PREFIX, dir=out))
    generation.chmod(0o755)  # mkdtemp makes it private; results are meant to be shared
    try:
        write_csv(generation / "episodes.csv", episodes)
        write_csv(generation / "traces.csv", traces)
        write_text(generation / RESULTS_FILE, "".join(json.dumps(dataclasses.asdict(f), default=_plain) + "\n" for f in finished))
        fault_point("mid_results")
        _switch(out, generation.name)
    except BaseException:
        shutil.rmtree(generation, ignore_errors=True)
        raise
    for name in FILES:
        _ensure_link(out / name, f"{CURRENT}/{name}")
    remove_stale_generations(out)


def read_finished(out: Path) -> list[FinishedEpisode]:
    """The episodes of the output folder's current set (empty if it has none)."""
    path = out / CURRENT / RESULTS_FILE
    if not path.is_file():
        if (out / "episodes.csv").exists():
            raise ValueError(
                f"{out} holds results of an evaluate.py from before dus_env 0.4 (no {CURRENT}/{RESULTS_FILE}): "
                "they cannot be resumed; use another --out"
            )
        return []
    results = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
            results.append(FinishedEpisode(record["spec"], record["env_kwargs"], EpisodeResult(**record["result"])))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path} line {number} is damaged ({error}): start the evaluation in a new --out folder") from None
    return results


def remove_stale_generations(out: Path) -> None:
    """Remove generation folders the current set does not use (a kill before a switch leaves one).
    Only ``.episodes-*`` folders and ``.episodes.new-*`` links, which nothing but this module makes."""
    if not out.is_dir():
        return
    current = os.readlink(out / CURRENT) if (out / CURRENT).is_symlink() else None
    for path in out.glob(GENERATION_PREFIX + "*"):
        if path.is_dir() and path.name != current:
            shutil.rmtree(path, ignore_errors=True)
    for path in out.glob(CURRENT + ".new-*"):
        path.unlink(missing_ok=True)


def _switch(out: Path, target: str) -> None:
    """Point ``out/.episodes`` at ``target`` in one rename (a symlink replaced by another)."""
    staging = out / f"{CURRENT}.new-{os.getpid()}"
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    os.replace(staging, out / CURRENT)


def _ensure_link(path: Path, target: str) -> None:
    """``path`` as a relative symlink to ``target`` (replacing a regular file of an older version atomically)."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    staging = path.with_name(f".{path.name}.link-{os.getpid()}")
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    os.replace(staging, path)


def plain_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` as they read back from JSON (tuples become lists), for comparing a plan with a record."""
    return json.loads(json.dumps(dict(kwargs), default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return str(value)

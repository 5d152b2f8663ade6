"""One process per run or results folder: an advisory lock held for the process's lifetime.

Why: a second ``train_agent.py`` (or ``--export-only``, or ``evaluate.py --resume``) in a folder
another process is writing would remove that process's temporary files as stale and interleave its
writes. ``fcntl.flock`` on ``<folder>/.lock`` is released by the kernel when the process ends, even
by SIGKILL, so a killed run never leaves a lock behind. (No lock on systems without ``fcntl``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
_held: list[IO[Any]] = []


class FolderInUseError(Exception):
    """Another process holds the folder's lock."""


def lock_folder(folder: Path, what: str) -> None:
    """Hold ``folder``'s lock until this process ends; :class:`FolderInUseError` if another process holds it."""
    if fcntl is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 (held open until the process ends: that is the lock)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FolderInUseError(f"{folder} is in use by another {what} process: wait for it to end, or choose another folder") from None
    _held.append(handle)

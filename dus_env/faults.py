"""Deterministic fault injection: a process kills itself at a named point when asked to.

Why: the guarantees that matter most to a user who trains for hours (a run killed at any moment
can be resumed and finished; no temporary file is left behind; result files agree) can only be
tested by killing real processes at the moments that matter, and sleeps would make such tests
flaky. Code that writes durable state calls :func:`fault_point` at those moments; the environment
variable ``DUS_ENV_FAULT`` names the points to fire, e.g.::

    DUS_ENV_FAULT=mid_checkpoint               # SIGKILL at the first checkpoint's write
    DUS_ENV_FAULT=mid_checkpoint@3             # ... at the third one
    DUS_ENV_FAULT=before_checkpoint:INT,mid_checkpoint:INT   # Ctrl-C, then Ctrl-C again during the save

Each entry is ``point[@occurrence][:KILL|INT|TERM]`` (default: first occurrence, SIGKILL). Unset,
every call is one dictionary lookup: nothing in normal runs depends on it.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "DUS_ENV_FAULT"
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}
_seen: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Send this process the signal ``DUS_ENV_FAULT`` asks for at point ``name`` (if it asks)."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    _seen[name] = _seen.get(name, 0) + 1
    for entry in spec.split(","):
        point, _, signal_name = entry.strip().partition(":")
        point, _, occurrence = point.partition("@")
        if point == name and _seen[name] == int(occurrence or 1):
            os.kill(os.getpid(), SIGNALS[(signal_name or "KILL").upper()])

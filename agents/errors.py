"""The one error for bad user input, shared by every driver and the library code they call.

Why one class: the drivers (``train_agent.py``, ``evaluate.py``, the ``bench/`` scripts) turn
exactly this error (and :class:`dus_env.ConfigError`, a bad config value of the environment
library) into a one-line message and exit code 2. With one class, code that checks input raises
it directly and no layer has to catch one error type only to re-raise it as another.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad user input (an option, a hyperparameter, an agent spec, a suite, a run folder): the one
    error a driver turns into a one-line message and exit code 2.

    The message names the bad value and says what to change. A ``ValueError``, so that library
    callers who catch ``ValueError`` for bad arguments keep working.
    """

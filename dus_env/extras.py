"""Optional extras (``ray``, ``rllib``): import them, or fail with one line that says how to install.

Why: the base install stays Ray-free (Ray with RLlib is several hundred MB and pins its own
gymnasium); a user who asks for a Ray feature without the extra should see the ``pip install``
command to run, not a ``ModuleNotFoundError`` from deep inside a driver.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: What each extra is for, as the message names it.
EXTRAS = {"ray": "Ray core and Ray Tune", "rllib": "RLlib"}


class MissingExtraError(ImportError):
    """A feature needs an optional extra that is not installed; the message is the install command."""


def install_command(extra: str) -> str:
    """The command that installs ``extra`` (with the CPU torch pin of ``constraints.txt``)."""
    return f"pip install -c constraints.txt 'dus_env[{extra}]' (from a clone: pip install -c constraints.txt -e '.[{extra}]')"


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (e.g. ``"ray.rllib"``) for ``feature``; without it, :class:`MissingExtraError`.

    :param module: the module to import.
    :param extra: the extra that provides it, a key of :data:`EXTRAS`.
    :param feature: what the user asked for, for the message (``"train_agent.py --backend rllib"``).
    """
    if extra not in EXTRAS:
        raise ValueError(f"extra={extra!r} is unknown: expected one of {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and module != error.name and not module.startswith(f"{error.name}."):
            raise  # the extra is installed but broken: that traceback is the useful one
        raise MissingExtraError(
            f"{feature} needs the '{extra}' extra ({EXTRAS[extra]}; {module} is not installed): {install_command(extra)}"
        ) from error

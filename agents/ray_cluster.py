"""Connecting to Ray: one function for every driver (``train_agent.py --backend rllib``,
``evaluate.py --backend ray``, ``tune_agent.py``), so that ``--address`` means the same everywhere.

Without ``--address`` Ray starts in this process with the cores this process may use (a laptop, or
one CI machine); ``--address auto`` joins the cluster started on this machine with ``ray start
--head``; ``--address ray://host:10001`` joins a remote one through Ray Client. Every node must have
the same dus_env installed (README, "Scaling out"): tasks import ``dus_env`` and ``agents`` there.
"""

from __future__ import annotations

import os
from typing import Any

from dus_env.extras import require

from .errors import UsageError

#: Ray's waits when joining ``--address``, in seconds (its defaults let an unreachable address hang for minutes).
JOIN_TIMEOUTS = {"RAY_gcs_server_port_wait_time_s": "10", "RAY_py_gcs_connect_timeout_s": "10"}


def usable_cores() -> int:
    """The cores this process may run on (``taskset`` / container limits), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def import_ray(feature: str) -> Any:
    """``ray``, or :class:`dus_env.extras.MissingExtraError` naming the install command."""
    return require("ray", "ray", feature)


def connect(address: str | None, feature: str, num_cpus: int | None = None) -> Any:
    """Start or join Ray once per process and return the ``ray`` module.

    :param address: ``None`` (start Ray here), ``"auto"`` or ``"ray://host:port"`` / ``"host:port"``.
    :param feature: the command that needs Ray, for the messages.
    :param num_cpus: CPUs of a Ray started here (default: :func:`usable_cores`); ignored when joining.
    :raises UsageError: the cluster at ``address`` cannot be reached.
    """
    ray = import_ray(feature)
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    # Workers on this machine find dus_env/agents where this process does (an editable install or a
    # clone on sys.path); a cluster's nodes need the package installed (README, "Scaling out").
    options["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(_import_roots())}}
    if address is None:
        # "local": always a new Ray in this process, even when 'ray start' runs a cluster on this machine
        # (which a bare ray.init() would join instead).
        ray.init(address="local", num_cpus=num_cpus or usable_cores(), **options)
        return ray
    # Ray waits minutes for a cluster that does not answer; a few seconds say enough (a user's own settings win).
    for name, seconds in JOIN_TIMEOUTS.items():
        os.environ.setdefault(name, seconds)
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(
            f"--address {address}: cannot join the Ray cluster ({first_line}); start one with 'ray start --head' "
            "and pass --address auto on its head node, or ray://<head>:10001 from elsewhere"
        ) from error
    return ray


def _import_roots() -> list[str]:
    """The folders ``dus_env`` and ``agents`` are imported from, first, then the current ``PYTHONPATH``."""
    import agents
    import dus_env

    roots = [os.path.dirname(os.path.dirname(os.path.abspath(module.__file__ or ""))) for module in (dus_env, agents)]
    current = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return list(dict.fromkeys([*roots, *current]))

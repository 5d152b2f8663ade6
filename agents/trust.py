"""Loading a pickle-bearing file runs code from it: say so, once per file, or refuse.

Stable-Baselines3 models (``.zip``), ``VecNormalize`` statistics (``.pkl``), their checkpoints and
replay buffers are read with pickle, which executes whatever the file says. The README says so;
this module says it at run time, where it matters (once per file, on stderr), and with
``DUS_ENV_TRUSTED_ONLY=1`` (``evaluate.py --trusted-only``) refuses such loads altogether: a run's
pickle-free export (``exported:RUN/exported``) evaluates the same policy. DUS-R files are read with
``torch.load(weights_only=True)`` and exported artifacts are ONNX/``torch.export`` (checked pickle-free): neither needs this.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "DUS_ENV_TRUSTED_ONLY"
_announced: set[str] = set()


class UntrustedLoadError(ValueError):
    """A pickle load was refused (``DUS_ENV_TRUSTED_ONLY=1``)."""


def refuses_pickle() -> bool:
    return os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def allow_pickle_load(path: str | Path, what: str) -> None:
    """Call before unpickling ``path``: refuse it (:class:`UntrustedLoadError`) or say once that it runs code.

    :param what: what the file is, for the message (``"SB3 model"``, ``"VecNormalize statistics"``, ...).
    """
    path = Path(path)
    if refuses_pickle():
        raise UntrustedLoadError(
            f"{what} {path} is read with pickle, which can run code from the file, and {ENV_VAR}=1 refuses pickle loads: "
            "evaluate the run's pickle-free export instead (agent spec exported:RUN_DIR/exported), or unset "
            f"{ENV_VAR} for files you trust"
        )
    key = str(path.resolve())
    if key not in _announced:
        _announced.add(key)
        print(
            f"note: loading {what} {path} with pickle, which runs code from the file: load only files you trust "
            f"({ENV_VAR}=1 refuses such loads)",
            file=sys.stderr,
        )

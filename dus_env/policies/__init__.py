"""Policies that ship with the package: ``DUSSampler.pretrained()`` and the ``pretrained`` agent spec.

``synthetic_mfeat_mix/`` is an exported policy artifact (format: :mod:`dus_env.policy_artifact`)
trained on ``dus_env/SyntheticMFeatMix-v0``: synthetic tasks where giving the weak modality more data
pays, and real mfeat view pairs where it mostly does not, with the modality order shuffled per
episode. How it was trained, selected and evaluated (held-out seeds and view pairs): the README's
*Shipped policy* section and ``docs/results.md``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The folder name of the default shipped policy.
PRETRAINED = "synthetic_mfeat_mix"


def pretrained_path(name: str = PRETRAINED) -> Path:
    """The folder of a shipped policy artifact (inside the installed package)."""
    folder = Path(str(resources.files(__package__).joinpath(name)))
    if not (folder / "metadata.json").is_file():
        available = sorted(p.name for p in Path(str(resources.files(__package__))).iterdir() if (p / "metadata.json").is_file())
        raise ValueError(f"pretrained policy {name!r} is not shipped with this dus_env: available are {available}")
    return folder

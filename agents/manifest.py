"""The run manifest ``run.json``: the one record of what a run folder holds.

Why a manifest and not file names: a name can lie (a checkpoint renamed ``rl_model_99999_steps.zip``),
a kill can leave a file half-written, a disk can damage one, and ``config.yml`` can be edited. The
manifest is rewritten atomically after every checkpoint, final model and export, and records for
each the files and their sha256; ``--resume`` trusts only what it lists and what still matches.
Its ``config_hash`` covers everything that defines the run except the step budget (which
``--resume --timesteps`` may raise), so a ``config.yml`` edited into another run is refused.

A run's states follow from it: no checkpoint (start from the beginning), checkpoints short of the
budget (resume from the newest intact one), the budget reached without an intact final model or
export (finish them), all present (nothing to do).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dus_env.policy_artifact import sha256_file

from .results import write_text

MANIFEST_FILE = "run.json"
MANIFEST_VERSION = 1


class ManifestError(ValueError):
    """``run.json`` cannot be read (damaged or from an unknown version)."""


@dataclass
class RunManifest:
    """What a run folder holds (see the module docstring).

    :param algo: the algorithm that trained it.
    :param env_id: its env id.
    :param config_hash: :func:`config_hash` of its settings.
    :param checkpoints: env steps -> {file path relative to the run folder: sha256}.
    :param final: the final model's files, once written.
    :param final_steps: the env steps that final model was trained for.
    :param export: the exported policy's files, once written.
    :param export_steps: the env steps of the model that was exported.
    """

    algo: str
    env_id: str
    config_hash: str
    checkpoints: dict[int, dict[str, str]] = field(default_factory=dict)
    final: dict[str, str] | None = None
    final_steps: int | None = None
    export: dict[str, str] | None = None
    export_steps: int | None = None
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["checkpoints"] = {str(steps): files for steps, files in sorted(self.checkpoints.items())}
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunManifest:
        try:
            data = json.loads(text)
            if data.get("version") != MANIFEST_VERSION:
                raise ManifestError(f"version {data.get('version')!r}, this code reads version {MANIFEST_VERSION}")
            data["checkpoints"] = {int(steps): dict(files) for steps, files in data["checkpoints"].items()}
            return cls(**data)
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
            raise ManifestError(f"{MANIFEST_FILE} is damaged: {error}") from error


def file_records(run_dir: Path, paths: Iterable[Path]) -> dict[str, str]:
    """``{path relative to run_dir: sha256}`` of files that exist now."""
    return {path.relative_to(run_dir).as_posix(): sha256_file(path) for path in paths}


def damage(run_dir: Path, files: dict[str, str]) -> str | None:
    """Why ``files`` (as recorded) cannot be trusted now, or ``None`` when every one is there and unchanged."""
    for name, expected in files.items():
        path = run_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != expected:
            return f"{name} has changed since it was written (sha256 mismatch: truncated or damaged)"
    return None


def load_manifest(run_dir: Path) -> RunManifest | None:
    """The folder's manifest, ``None`` if it has none; :class:`ManifestError` if it cannot be read."""
    path = run_dir / MANIFEST_FILE
    if not path.is_file():
        return None
    return RunManifest.from_json(path.read_text())


def save_manifest(run_dir: Path, manifest: RunManifest) -> None:
    write_text(run_dir / MANIFEST_FILE, manifest.to_json())


def config_hash(settings: dict[str, Any]) -> str:
    """sha256 of the settings that define a run (canonical JSON: key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _update(run_dir: Path, change: Any) -> None:
    """Apply ``change`` to the folder's manifest and write it back (a folder without one is left alone)."""
    manifest = load_manifest(run_dir)
    if manifest is not None:
        change(manifest)
        save_manifest(run_dir, manifest)


def record_checkpoint(run_dir: Path, steps: int, paths: Iterable[Path]) -> None:
    """A checkpoint at ``steps`` is completely written: list it (only now is it a resume point)."""
    records = file_records(run_dir, paths)
    _update(run_dir, lambda manifest: manifest.checkpoints.__setitem__(steps, records))


def record_final(run_dir: Path, paths: Iterable[Path], steps: int) -> None:
    """The final model of ``steps`` env steps is written (a run extended later needs a new one)."""
    records = file_records(run_dir, paths)

    def change(manifest: RunManifest) -> None:
        manifest.final, manifest.final_steps = records, steps

    _update(run_dir, change)


def record_export(run_dir: Path, folder: Path, steps: int) -> None:
    """The export of a model of ``steps`` env steps is written."""
    records = file_records(run_dir, sorted(p for p in folder.iterdir() if p.is_file()))

    def change(manifest: RunManifest) -> None:
        manifest.export, manifest.export_steps = records, steps

    _update(run_dir, change)


def missing_outputs(run_dir: Path, manifest: RunManifest, steps: int) -> list[str]:
    """What a run trained for ``steps`` still lacks: its final model and export must be intact *and* of those steps."""
    missing = []
    for what, files, done in (("final model", manifest.final, manifest.final_steps), ("export", manifest.export, manifest.export_steps)):
        if files is None or done != steps or damage(run_dir, files) is not None:
            missing.append(what)
    return missing

"""The exported-policy artifact: a folder that runs a sampling policy with torch or onnxruntime only.

Layout of the folder::

    metadata.json   format version, observation layout (with its version), action mapping, the
                    env config the policy was trained on, observation normalisation statistics,
                    the source (algorithm, run), file checksums
    policy.onnx     the deterministic policy network: normalised observation [N, D] -> action [N, M]
    policy.pt       the same network as TorchScript

Observation normalisation is kept out of the network and applied by :class:`PolicyArtifact`
(``clip((obs - mean) / sqrt(var + eps), -clip, clip)``, as Stable-Baselines3's ``VecNormalize``),
so the network's output can be compared with the training library's own prediction.

Loading runs no pickle: the metadata is JSON, the network is ONNX or TorchScript. Writing is
atomic (a temporary folder renamed into place), so an interrupted export leaves the previous
artifact intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .observation import LayoutVersionError, ObservationLayout
from .quantities import QuantityMapping
from .faults import fault_point

ARTIFACT_FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
ONNX_FILE = "policy.onnx"
TORCHSCRIPT_FILE = "policy.pt"
BACKENDS = ("onnx", "torchscript")


class ArtifactError(ValueError):
    """A policy artifact is missing, corrupt, or made for something else than what loads it."""


@dataclass(frozen=True)
class ObservationNormalization:
    """Running-mean/variance normalisation, as Stable-Baselines3's ``VecNormalize`` applies it."""

    mean: np.ndarray
    var: np.ndarray
    epsilon: float = 1e-8
    clip: float = 10.0

    def __post_init__(self) -> None:
        """Statistics that would silently change or break every decision are refused here."""
        if self.mean.ndim != 1 or self.var.shape != self.mean.shape:
            raise ValueError(f"mean and var must be two vectors of one length, got shapes {self.mean.shape} and {self.var.shape}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.var).all()):
            raise ValueError("mean and var must be finite numbers")
        if (self.var < 0).any():
            raise ValueError(f"var must be >= 0, got {float(self.var.min())}")
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0 and (self.var + self.epsilon > 0).all()):
            raise ValueError(f"epsilon={self.epsilon} is invalid: expected a finite number >= 0 with var + epsilon > 0")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip={self.clip} is invalid: expected a finite number > 0")

    def apply(self, observations: np.ndarray) -> np.ndarray:
        scaled = (observations - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "epsilon": self.epsilon, "clip": self.clip}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ObservationNormalization":
        for key in ("epsilon", "clip"):
            if isinstance(values[key], bool) or not isinstance(values[key], (int, float)):
                raise ValueError(f"{key}={values[key]!r} is invalid: expected a number")
        return cls(
            np.asarray(values["mean"], dtype=np.float64),
            np.asarray(values["var"], dtype=np.float64),
            float(values["epsilon"]),
            float(values["clip"]),
        )


def write_policy_artifact(
    actor: torch.nn.Module,
    out_dir: str | Path,
    *,
    layout: ObservationLayout,
    mapping: QuantityMapping,
    env_config: dict[str, Any],
    normalization: ObservationNormalization | None,
    source: dict[str, Any] | None = None,
) -> Path:
    """Export ``actor`` (normalised observations ``[N, D]`` -> actions ``[N, M]``) with its metadata.

    :param actor: deterministic policy network; put in eval mode and exported on CPU.
    :param out_dir: the artifact folder; replaced atomically if it exists.
    :param layout: observation layout the actor reads.
    :param mapping: how the environment turned its actions into quantities.
    :param env_config: ``EnvConfig.to_dict()`` of the training environment.
    :param normalization: observation statistics applied before the actor, or ``None``.
    :param source: free-form provenance (algorithm, run folder, timesteps, ...).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    actor = actor.cpu().eval()
    example = torch.zeros(2, layout.size)
    with torch.no_grad():
        probe = actor(example)
    if tuple(probe.shape) != (2, mapping.n_modalities):
        raise ArtifactError(
            f"the policy network maps [2, {layout.size}] observations to shape {tuple(probe.shape)}, "
            f"expected [2, {mapping.n_modalities}] actions"
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; an artifact is meant to be shared
    try:
        _export_networks(actor, example, staging)
        metadata = {
            "format_version": ARTIFACT_FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "observation_layout": layout.to_dict(),
            "action_mapping": dataclasses.asdict(mapping),
            "env_config": env_config,
            "observation_normalization": None if normalization is None else normalization.to_dict(),
            "source": source or {},
            "sha256": {name: sha256_file(staging / name) for name in (ONNX_FILE, TORCHSCRIPT_FILE)},
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=_json_default))
        fault_point("mid_export")
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


class _ObservationToAction(torch.nn.Module):
    """Names the input ``observation`` for the exporters whatever the actor's own argument name."""

    def __init__(self, actor: torch.nn.Module) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.actor(observation)


def _export_networks(actor: torch.nn.Module, example: torch.Tensor, folder: Path) -> None:
    wrapped = _ObservationToAction(actor).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript (still fully supported) and warns from its own internals
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(wrapped, example, check_trace=False), str(folder / TORCHSCRIPT_FILE))
        _export_onnx(wrapped, example, folder)


def _export_onnx(wrapped: torch.nn.Module, example: torch.Tensor, folder: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    # The exporter logs warnings about optional packages (torchvision) that do not concern us.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
            torch.onnx.export(
                wrapped,
                (example,),
                str(folder / ONNX_FILE),
                input_names=["observation"],
                output_names=["action"],
                dynamic_shapes={"observation": {0: batch}},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)


def _replace_dir(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; the old folder is removed only once the new one is in place."""
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def sha256_file(path: Path) -> str:
    """The file's sha256 (hex), read in blocks (run folders checksum model files with it too)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


class PolicyArtifact:
    """A loaded artifact: ``act(observations)`` normalises and runs the network.

    :param path: the artifact folder written by :func:`write_policy_artifact`.
    :param backend: ``onnx`` (onnxruntime) or ``torchscript`` (torch only).
    """

    def __init__(self, path: str | Path, backend: str = "onnx") -> None:
        self.path = Path(path)
        if backend not in BACKENDS:
            raise ArtifactError(f"backend={backend!r} is invalid: expected one of {BACKENDS}")
        self.backend = backend
        self.metadata = read_metadata(self.path)
        self.layout = ObservationLayout.from_dict(self.metadata["observation_layout"])
        self.mapping, self.normalization = self._parsed_metadata()
        self._run = self._load_network()
        self._probe()

    def _probe(self) -> None:
        """Run the network once on a zero observation: a network whose input or output size does not
        match the metadata (another modality count, say) fails here, at load, with its sizes named."""
        zero = np.zeros((1, self.layout.size), dtype=np.float32)
        try:
            actions = self._run(zero if self.normalization is None else self.normalization.apply(zero))
        except Exception as error:  # onnxruntime and torch.jit raise their own types for a shape mismatch
            raise ArtifactError(
                f"policy artifact {self.path}: the network does not take the layout's {self.layout.size}-value observations "
                f"({self.layout.n_modalities} modalities): {type(error).__name__}: {error}"
            ) from None
        if np.shape(actions) != (1, self.mapping.n_modalities) or not np.isfinite(actions).all():
            raise ArtifactError(
                f"policy artifact {self.path}: the network maps a [1, {self.layout.size}] observation to "
                f"{np.shape(actions)} values{'' if np.isfinite(actions).all() else ' (not finite)'}, expected "
                f"[1, {self.mapping.n_modalities}] finite actions, one per modality"
            )

    def _parsed_metadata(self) -> tuple[QuantityMapping, ObservationNormalization | None]:
        """Mapping and normalisation from the metadata, with every field checked against the layout."""
        part = "action_mapping"
        try:
            mapping = QuantityMapping(**self.metadata["action_mapping"])
            if mapping.n_modalities != self.layout.n_modalities:
                raise ValueError("action mapping and observation layout disagree on the modality count")
            part = "env_config"
            for key in ("iterations_per_step", "decision_steps", "base_batch_size"):
                value = self.metadata["env_config"][key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{key}={value!r}: expected an integer >= 1")
            part = "observation_normalization"
            values = self.metadata.get("observation_normalization")
            normalization = None if values is None else ObservationNormalization.from_dict(values)
            if normalization is not None and not normalization.mean.shape == normalization.var.shape == (self.layout.size,):
                raise ValueError(f"mean and var must have {self.layout.size} values, one per observation slot")
        except (KeyError, TypeError, ValueError) as error:
            raise ArtifactError(f"policy artifact {self.path}: {METADATA_FILE} has an invalid {part} ({error!r})") from None
        return mapping, normalization

    @property
    def env_config(self) -> dict[str, Any]:
        return self.metadata["env_config"]

    def act(self, observations: np.ndarray) -> np.ndarray:
        """Actions for one observation ``[D]`` or a batch ``[N, D]`` (float32, same leading shape)."""
        observations = np.asarray(observations, dtype=np.float32)
        single = observations.ndim == 1
        batch = observations.reshape(1, -1) if single else observations
        if batch.shape[-1] != self.layout.size:
            raise ArtifactError(
                f"observation has {batch.shape[-1]} values, the policy expects {self.layout.size} "
                f"(layout v{self.layout.version}, {self.layout.n_modalities} modalities)"
            )
        if self.normalization is not None:
            batch = self.normalization.apply(batch)
        actions = self._run(np.ascontiguousarray(batch, dtype=np.float32))
        return actions[0] if single else actions

    def _load_network(self) -> Callable[[np.ndarray], np.ndarray]:
        name = ONNX_FILE if self.backend == "onnx" else TORCHSCRIPT_FILE
        file = self.path / name
        checksums = self.metadata.get("sha256")
        expected = checksums.get(name) if isinstance(checksums, dict) else None
        if not file.is_file():
            raise ArtifactError(f"artifact {self.path} has no {name}")
        if not isinstance(expected, str):
            raise ArtifactError(
                f"artifact {self.path}: {METADATA_FILE} lists no sha256 for {name}, so the network cannot be verified; "
                "export the policy again"
            )
        if sha256_file(file) != expected:
            raise ArtifactError(f"artifact {self.path}: {name} is corrupt (checksum differs from metadata.json)")
        if self.backend == "onnx":
            import onnxruntime

            try:
                session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
            except Exception as error:  # onnxruntime raises its own untyped errors for bad models
                raise ArtifactError(f"artifact {self.path}: {name} cannot be loaded by onnxruntime ({error})") from None
            return lambda batch: session.run(["action"], {"observation": batch})[0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # see _export_networks
                module = torch.jit.load(str(file), map_location="cpu")
        except RuntimeError as error:
            raise ArtifactError(f"artifact {self.path}: {name} cannot be loaded by torch.jit ({error})") from None
        module.eval()

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(batch)).numpy()

        return run


def read_metadata(path: Path) -> dict[str, Any]:
    """Read and check ``metadata.json``: format and observation-layout versions, required keys."""
    file = path / METADATA_FILE
    if not path.is_dir():
        raise ArtifactError(f"policy artifact {path} does not exist or is not a folder")
    if not file.is_file():
        raise ArtifactError(f"policy artifact {path} has no {METADATA_FILE}: is it an exported policy folder?")
    try:
        metadata = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"policy artifact {path}: {METADATA_FILE} is corrupt ({error})") from None
    if not isinstance(metadata, dict):
        raise ArtifactError(f"policy artifact {path}: {METADATA_FILE} must hold a JSON object")
    if metadata.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"policy artifact {path} has format version {metadata.get('format_version')!r}, this dus_env reads "
            f"version {ARTIFACT_FORMAT_VERSION}"
        )
    missing = [k for k in ("observation_layout", "action_mapping", "env_config") if k not in metadata]
    if missing:
        raise ArtifactError(f"policy artifact {path}: {METADATA_FILE} lacks {missing}")
    layout = metadata["observation_layout"]
    if not isinstance(layout, dict) or layout.get("version") is None:
        raise LayoutVersionError(f"policy artifact {path}: no observation layout version in {METADATA_FILE}")
    n_modalities = layout.get("n_modalities")
    if isinstance(n_modalities, bool) or not isinstance(n_modalities, int) or n_modalities < 1:
        raise ArtifactError(f"policy artifact {path}: {METADATA_FILE} has an invalid observation_layout.n_modalities ({n_modalities!r})")
    return metadata

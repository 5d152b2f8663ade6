"""The exported-policy artifact: a folder that runs a sampling policy with torch or onnxruntime only.

Layout of the folder::

    metadata.json   format version, observation layout (with its version), action mapping, the
                    env config the policy was trained on, observation normalisation statistics,
                    the source (algorithm, run), file checksums
    policy.onnx     the deterministic policy network: normalised observation [N, D] -> action [N, M]
    policy.pt2      the same network as a ``torch.export`` program (``torch.export.save``)

Both files come from one ``torch.export`` capture with a dynamic batch dimension, so either runs
any number of observations at once. ``backend="onnx"`` (the primary format) runs ``policy.onnx``
with onnxruntime, ``backend="torch"`` runs ``policy.pt2`` with torch alone.

Observation normalisation is kept out of the network and applied by :class:`PolicyArtifact`
(``clip((obs - mean) / sqrt(var + eps), -clip, clip)``, as Stable-Baselines3's ``VecNormalize``),
so the network's output can be compared with the training library's own prediction.

Loading runs no pickle: the metadata is JSON, the network is ONNX (protobuf) or a ``torch.export``
archive whose graph is JSON and whose weights are raw tensor bytes. ``torch.export.load`` would
unpickle some kinds of entries (tensor subclasses, custom objects, sample inputs, legacy weight
files, archives in torch 2.7's format); the writer stores none of them, and the loader refuses,
before ``torch.export.load`` reads it, an archive holding any entry but those the writer makes.
Writing is atomic (a temporary folder renamed into place), so an interrupted export leaves the
previous artifact intact.

Format versions (``format_version`` in ``metadata.json``): 1 held ``policy.pt`` (TorchScript, which
torch deprecates); 2 holds ``policy.pt2``. Both hold the same ``policy.onnx``, so a version-1
artifact still loads with ``backend="onnx"`` (with the same checks) and is refused for
``backend="torch"`` with the way to run it. An artifact of another version is refused with the way
to export it again.
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
import re
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .faults import fault_point
from .observation import LayoutVersionError, ObservationLayout
from .quantities import QuantityMapping

ARTIFACT_FORMAT_VERSION = 2
METADATA_FILE = "metadata.json"
ONNX_FILE = "policy.onnx"
PT2_FILE = "policy.pt2"
#: Loader name -> the network file it runs.
BACKEND_FILES = {"onnx": ONNX_FILE, "torch": PT2_FILE}
BACKENDS = tuple(BACKEND_FILES)
#: What each artifact format version holds, for the message that refuses another version.
FORMAT_VERSIONS = {1: "policy.onnx + policy.pt (TorchScript)", 2: f"{ONNX_FILE} + {PT2_FILE} (torch.export)"}
#: The backends that run each readable format version: format 1's ``policy.onnx`` is the same
#: format as format 2's, its TorchScript ``policy.pt`` is no longer run.
FORMAT_BACKENDS = {1: ("onnx",), 2: BACKENDS}
#: How to make a current artifact from a training run.
REEXPORT_COMMAND = "python train_agent.py --export-only --run-dir RUN"


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
    def from_dict(cls, values: dict[str, Any]) -> ObservationNormalization:
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
            "sha256": {name: sha256_file(staging / name) for name in BACKEND_FILES.values()},
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
    """Capture the network once with ``torch.export`` and write it as ``policy.pt2`` and ``policy.onnx``.

    The batch dimension is dynamic (``torch.export.Dim``, at least 1), so both files run any number
    of observations; the example has two rows because an example dimension of size 1 would be
    specialised to the constant 1.
    """
    wrapped = _ObservationToAction(actor).eval()
    dynamic_shapes = {"observation": {0: torch.export.Dim("batch", min=1)}}
    with torch.no_grad():
        program = torch.export.export(wrapped, (example,), dynamic_shapes=dynamic_shapes, strict=False)
    # torch.export.save would pickle the example inputs into the archive; without them it holds JSON
    # and raw tensor bytes only, and loading unpickles nothing (see _check_pt2_archive).
    program.example_inputs = None
    torch.export.save(program, str(folder / PT2_FILE))
    _export_onnx(program, example, folder)


def _export_onnx(program: torch.export.ExportedProgram, example: torch.Tensor, folder: Path) -> None:
    """Translate the captured program to ONNX (input ``observation``, output ``action``, batch ``batch``)."""
    # The exporter logs warnings about optional packages (torchvision) that do not concern us.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporter prints progress lines
            # torch 2.13's ONNX exporter trips over a deprecation inside torch's own pytree code.
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
            torch.onnx.export(
                program,
                (example,),
                str(folder / ONNX_FILE),
                input_names=["observation"],
                output_names=["action"],
                dynamic_shapes={"observation": {0: torch.export.Dim("batch", min=1)}},
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

    Loading checks, in this order: ``metadata.json`` (format and layout versions, required keys),
    the sha256 of the backend's network file against the metadata, every metadata value, and one
    run of the network on a zero observation (its input and output sizes). A failure raises
    :class:`ArtifactError` naming the part at fault. Nothing is unpickled (see the module docstring).

    :param path: the artifact folder written by :func:`write_policy_artifact`.
    :param backend: ``onnx`` (``policy.onnx`` with onnxruntime) or ``torch`` (``policy.pt2`` with
        ``torch.export.load``, no onnxruntime needed).
    """

    def __init__(self, path: str | Path, backend: str = "onnx") -> None:
        self.path = Path(path)
        if backend not in BACKENDS:
            hint = " (TorchScript was replaced by torch.export in artifact format 2: use 'torch')" if backend == "torchscript" else ""
            raise ArtifactError(f"backend={backend!r} is invalid: expected one of {BACKENDS}{hint}")
        self.backend = backend
        self.metadata = read_metadata(self.path)
        if backend not in FORMAT_BACKENDS[self.metadata["format_version"]]:
            raise ArtifactError(_backend_message(self.path, self.metadata, backend))
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
        except Exception as error:  # onnxruntime and torch raise their own types for a shape mismatch
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
        name = BACKEND_FILES[self.backend]
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
        _check_pt2_archive(file, f"artifact {self.path}: {name}")
        try:
            module = torch.export.load(str(file)).module()
        except Exception as error:  # torch.export raises assorted types for a malformed archive
            raise ArtifactError(
                f"artifact {self.path}: {name} cannot be loaded by torch.export ({type(error).__name__}: {error})"
            ) from None

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(batch)).numpy()

        return run


def _check_pt2_archive(file: Path, owner: str) -> None:
    """Refuse a ``torch.export`` archive that holds anything :func:`write_policy_artifact` does not write.

    ``torch.export.load`` reads the graph from JSON and plain tensors from raw bytes, but unpickles
    (``torch.load(weights_only=False)``, ``pickle``) tensor subclasses, custom and opaque objects,
    sample inputs, legacy weight files, every further model of the archive, and the whole archive
    when it is in the format of torch 2.7 or older. A blocklist of those cases misses the next one,
    so this is an allowlist: the archive must be exactly what the writer makes (one root folder, the
    names of :data:`_PT2_ENTRIES`, empty sample inputs, payload configs that point at raw tensor
    files), or it is refused unread, before ``torch.export.load`` sees it. The entry list is read by
    both Python's ``zipfile`` and torch's own zip reader, and must agree, so a malformed zip cannot
    show one thing to this check and another to the loader.
    """
    try:
        with zipfile.ZipFile(file) as archive:
            sizes = _pt2_entry_sizes(archive.infolist(), owner)
        reader = torch._C.PyTorchFileReader(str(file))
        seen = {name: reader.get_record_size(name) for name in reader.get_all_records()}
    except (zipfile.BadZipFile, RuntimeError) as error:
        raise ArtifactError(f"{owner} is not a torch.export archive ({type(error).__name__}: {error})") from None
    if seen != sizes:
        raise ArtifactError(
            f"{owner}: torch's zip reader and zipfile disagree on the entries "
            f"{sorted(name for name in seen.keys() | sizes.keys() if seen.get(name) != sizes.get(name))}, so it is refused unread"
        )
    if reader.get_record(_PT2_FORMAT_ENTRY) != b"pt2":
        raise ArtifactError(f"{owner}: {_PT2_FORMAT_ENTRY} is not 'pt2', so it is not a torch.export archive")
    for config, folder, prefix in _PT2_PAYLOAD_CONFIGS:
        try:
            payloads = json.loads(reader.get_record(config))["config"]
            refused = [fqn for fqn, payload in payloads.items() if not _raw_tensor_payload(payload, folder, prefix, sizes)]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ArtifactError(f"{owner}: {config} is not a payload config ({type(error).__name__}: {error})") from None
        if refused:
            raise ArtifactError(
                f"{owner}: {config} lists entries that are not raw tensor files of the archive "
                f"({', '.join(f'{config}:{fqn}' for fqn in sorted(refused))}); torch.export.load would unpickle them, "
                "an artifact written by dus_env holds none, so it is refused; export the policy again"
            )


#: Every entry a ``policy.pt2`` written by :func:`write_policy_artifact` holds, below its root folder:
#: torch's zip header files, the one model's JSON graph, its payload configs, raw tensor files and
#: empty sample inputs (the writer stores none, see :func:`_export_networks`).
_PT2_ENTRIES = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|models/model\.json"
    r"|data/weights/model_weights_config\.json|data/weights/weight_[0-9]+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_[0-9]+|data/sample_inputs/model\.pt"
)
_PT2_FORMAT_ENTRY = "archive_format"
_PT2_SAMPLE_INPUTS = "data/sample_inputs/model.pt"
#: Entries without which ``torch.export.load`` would take another path through the archive.
_PT2_REQUIRED = (
    _PT2_FORMAT_ENTRY,
    "archive_version",
    "models/model.json",
    "data/weights/model_weights_config.json",
    "data/constants/model_constants_config.json",
    _PT2_SAMPLE_INPUTS,
)
#: Payload config, the folder its files are in, and the name every file it lists must have.
_PT2_PAYLOAD_CONFIGS = (
    ("data/weights/model_weights_config.json", "data/weights/", re.compile(r"weight_[0-9]+")),
    ("data/constants/model_constants_config.json", "data/constants/", re.compile(r"tensor_[0-9]+")),
)


def _pt2_entry_sizes(infos: list[zipfile.ZipInfo], owner: str) -> dict[str, int]:
    """The archive's entries below its one root folder, with their sizes; any other entry is refused."""
    first = infos[0].filename if infos else ""
    root = first.split("/", 1)[0] + "/"
    sizes: dict[str, int] = {}
    for info in infos:
        name = info.filename
        if root == "/" or not name.startswith(root):
            folder = "in a root folder" if root in ("/", f"{first}/") else f"in the archive's root folder {root!r}"
            raise ArtifactError(
                f"{owner}: entry {name!r} is not {folder}; a torch.export archive written by dus_env keeps every entry "
                "in one root folder, so it is refused unread"
            )
        entry = name[len(root) :]
        if entry in sizes:
            raise ArtifactError(f"{owner}: entry {name!r} appears twice in the archive, so it is refused unread")
        if not _PT2_ENTRIES.fullmatch(entry):
            raise ArtifactError(
                f"{owner}: entry {name!r} is not one that dus_env writes into a torch.export archive (torch.export.load "
                "could unpickle it), so the archive is refused unread; export the policy again"
            )
        if entry == _PT2_SAMPLE_INPUTS and info.file_size != 0:
            raise ArtifactError(
                f"{owner}: entry {name!r} holds {info.file_size} bytes of pickled sample inputs (dus_env writes none), "
                "so the archive is refused unread; export the policy again"
            )
        sizes[entry] = info.file_size
    missing = [entry for entry in _PT2_REQUIRED if entry not in sizes]
    if missing:
        raise ArtifactError(f"{owner}: the archive lacks {missing}, so it is not a torch.export archive written by dus_env")
    return sizes


def _raw_tensor_payload(payload: dict[str, Any], folder: str, prefix: re.Pattern[str], sizes: dict[str, int]) -> bool:
    """Whether a payload-config entry is a raw tensor file of the archive (which loads without pickle)."""
    path_name = payload["path_name"]
    return (
        payload.get("use_pickle") is False
        and payload.get("tensor_meta") is not None
        and isinstance(path_name, str)
        and prefix.fullmatch(path_name) is not None
        and folder + path_name in sizes
    )


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
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version not in FORMAT_BACKENDS:
        raise ArtifactError(_version_message(path, version, metadata.get("source")))
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


def _backend_message(path: Path, metadata: dict[str, Any], backend: str) -> str:
    """Why an artifact of an older format cannot run on ``backend``, and what runs it instead."""
    version = metadata["format_version"]
    readable = FORMAT_BACKENDS[version]
    message = (
        f"policy artifact {path} has format version {version} ({FORMAT_VERSIONS[version]}), which backend={backend!r} "
        f"does not run ({backend!r} runs {BACKEND_FILES[backend]}, format {ARTIFACT_FORMAT_VERSION}): load it with "
        f"backend={readable[0]!r}"
    )
    source = metadata.get("source")
    if isinstance(source, dict) and source.get("algorithm") == "REINFORCE":
        return f"{message} (it comes from a DUS-R run made before dus_env 0.5, which this dus_env cannot export again)"
    run_dir = source.get("run_dir") if isinstance(source, dict) else None
    where = f" (this artifact names its run: {run_dir})" if isinstance(run_dir, str) else ""
    return f"{message}, or export it again from its training run with `{REEXPORT_COMMAND}`{where}"


def _version_message(path: Path, version: Any, source: Any) -> str:
    """Why an artifact of another format version is refused and how to get a current one."""
    held = FORMAT_VERSIONS.get(version, "unknown") if isinstance(version, int) and not isinstance(version, bool) else "unknown"
    message = (
        f"policy artifact {path} has format version {version!r} ({held}); this dus_env reads version "
        f"{ARTIFACT_FORMAT_VERSION} ({FORMAT_VERSIONS[ARTIFACT_FORMAT_VERSION]})"
    )
    if isinstance(version, int) and not isinstance(version, bool) and version > ARTIFACT_FORMAT_VERSION:
        return f"{message}: it was written by a newer dus_env; upgrade dus_env to load it"
    run_dir = source.get("run_dir") if isinstance(source, dict) else None
    where = f" (this artifact names its run: {run_dir})" if isinstance(run_dir, str) else ""
    return f"{message}: export it again from its training run with `{REEXPORT_COMMAND}`{where}"

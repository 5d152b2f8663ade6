"""Policy artifacts are verified on load: checksums required, metadata validated, the network probed.

Each case edits a copy of the shipped artifact the way a damaged download or a hand edit would and
checks that loading raises :class:`ArtifactError` naming the part at fault, instead of changing
decisions silently or failing later inside onnxruntime.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dus_env import ObservationLayout
from dus_env.policies import pretrained_path
from dus_env.policy_artifact import ARTIFACT_FORMAT_VERSION, ArtifactError, PolicyArtifact


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    folder = tmp_path / "policy"
    shutil.copytree(pretrained_path(), folder)
    return folder


def edit_metadata(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = folder / "metadata.json"
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


def set_path(metadata: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        metadata = metadata[key]
    metadata[keys[-1]] = value


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_the_shipped_artifact_loads_and_acts(artifact: Path, backend: str) -> None:
    policy = PolicyArtifact(artifact, backend=backend)
    assert policy.act([0.0] * policy.layout.size).shape == (2,)


def test_the_shipped_networks_agree_on_random_observations(artifact: Path) -> None:
    observations = np.random.default_rng(0).normal(0, 2, size=(256, 15)).astype(np.float32)
    onnx, torch_backend = PolicyArtifact(artifact, "onnx"), PolicyArtifact(artifact, "torch")
    np.testing.assert_allclose(torch_backend.act(observations), onnx.act(observations), atol=1e-6)


BACKEND_FILES = [("onnx", "policy.onnx"), ("torch", "policy.pt2")]


@pytest.mark.parametrize(("backend", "file"), BACKEND_FILES)
@pytest.mark.parametrize("remove", ["the sha256 key", "one file's checksum"])
def test_a_missing_checksum_is_an_error_not_a_skipped_check(artifact: Path, remove: str, backend: str, file: str) -> None:
    edit_metadata(artifact, (lambda m: m.pop("sha256")) if remove == "the sha256 key" else (lambda m: m["sha256"].pop(file)))
    with pytest.raises(ArtifactError, match=f"lists no sha256 for {file}"):
        PolicyArtifact(artifact, backend)


@pytest.mark.parametrize(("backend", "file"), BACKEND_FILES)
@pytest.mark.parametrize("offset", [100, 1000, -50])
def test_a_flipped_byte_in_the_network_is_caught(artifact: Path, offset: int, backend: str, file: str) -> None:
    network = artifact / file
    data = bytearray(network.read_bytes())
    data[offset] ^= 0xFF
    network.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{file} is corrupt"):
        PolicyArtifact(artifact, backend)


def test_the_shipped_artifact_is_the_current_format_and_loads_without_pickle(artifact: Path) -> None:
    metadata = json.loads((artifact / "metadata.json").read_text())
    assert metadata["format_version"] == ARTIFACT_FORMAT_VERSION
    assert sorted(metadata["sha256"]) == ["policy.onnx", "policy.pt2"]
    assert not (artifact / "policy.pt").exists()
    with zipfile.ZipFile(artifact / "policy.pt2") as archive:
        sample_inputs = [info for info in archive.infolist() if "sample_inputs" in info.filename]
    assert sample_inputs and all(info.file_size == 0 for info in sample_inputs)  # nothing pickled in


@pytest.mark.parametrize(
    ("keys", "value", "part"),
    [
        (("observation_normalization", "clip"), -1.0, "observation_normalization"),
        (("observation_normalization", "clip"), None, "observation_normalization"),
        (("observation_normalization", "var"), [-1.0] * 15, "observation_normalization"),
        (("observation_normalization", "mean"), [float("nan")] * 15, "observation_normalization"),
        (("observation_normalization", "mean"), [0.0] * 14, "observation_normalization"),
        (("observation_normalization", "epsilon"), "small", "observation_normalization"),
        (("env_config", "iterations_per_step"), 0, "env_config"),
        (("env_config", "iterations_per_step"), 2.5, "env_config"),
        (("env_config", "decision_steps"), "20", "env_config"),
        (("env_config", "base_batch_size"), 2.5, "env_config"),
        (("action_mapping", "max_quantity"), 2.5, "action_mapping"),
        (("action_mapping", "max_quantity"), 1_000_000_000.0, "action_mapping"),
        (("action_mapping", "base_batch_size"), True, "action_mapping"),
        (("action_mapping", "min_quantity"), 0, "action_mapping"),
    ],
)
def test_bad_metadata_values_are_refused_naming_the_part(artifact: Path, keys: tuple[str, ...], value: Any, part: str) -> None:
    edit_metadata(artifact, lambda metadata: set_path(metadata, keys, value))
    with pytest.raises(ArtifactError, match=f"metadata.json has an invalid {part}"):
        PolicyArtifact(artifact)


def test_a_policy_for_another_modality_count_fails_at_load(artifact: Path) -> None:
    def three_modalities(metadata: dict[str, Any]) -> None:
        metadata["observation_layout"] = ObservationLayout(3).to_dict()
        metadata["action_mapping"]["n_modalities"] = 3
        metadata["observation_normalization"] = None

    edit_metadata(artifact, three_modalities)
    for backend in ("onnx", "torch"):
        with pytest.raises(ArtifactError, match="does not take the layout's 21-value observations \\(3 modalities\\)"):
            PolicyArtifact(artifact, backend)

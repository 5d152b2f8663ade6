"""Tasks: synthetic generation, the shipped mfeat data, and the user features file with its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dus_env import ConfigError, FeatureFileError, FeaturesTaskConfig, MFeatTaskConfig, SyntheticTaskConfig
from dus_env.tasks import build_task, task_config_from_dict

from .conftest import write_features_file


def test_synthetic_task_shapes_and_seeding() -> None:
    config = SyntheticTaskConfig(
        n_modalities=4,
        signal_strengths=(1, 0.5, 0.3, 0.2),
        corruption_rates=(0.3, 0, 0, 0),
        n_classes=5,
        feature_dim=7,
        n_train=50,
        n_val=20,
        n_test=30,
    )
    task = build_task(config, np.random.default_rng(0))
    assert task.n_modalities == 4 and task.feature_dims == (7, 7, 7, 7)
    assert (len(task.train), len(task.val), len(task.test)) == (50, 20, 30)
    assert all(x.dtype == torch.float32 for x in task.train.features)
    again = build_task(config, np.random.default_rng(0))
    other = build_task(config, np.random.default_rng(1))
    assert torch.equal(task.train.features[0], again.train.features[0])
    assert not torch.equal(task.train.features[0], other.train.features[0])


def test_synthetic_data_seed_fixes_data_across_episode_seeds() -> None:
    config = SyntheticTaskConfig(data_seed=5, n_train=40, n_val=20, n_test=20)
    a = build_task(config, np.random.default_rng(0))
    b = build_task(config, np.random.default_rng(99))
    assert torch.equal(a.train.features[1], b.train.features[1])


def test_synthetic_corruption_removes_signal() -> None:
    config = SyntheticTaskConfig(signal_strengths=(3.0, 3.0), corruption_rates=(1.0, 0.0), n_classes=2, n_train=400, n_val=20, n_test=20)
    task = build_task(config, np.random.default_rng(0))
    labels = task.train.labels
    # class means of a fully corrupted modality are indistinguishable; the clean one's are far apart
    spread = [float((x[labels == 0].mean(0) - x[labels == 1].mean(0)).norm()) for x in task.train.features]
    assert spread[0] < 1.0 < spread[1]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n_modalities": 3}, "signal_strengths.*expected 3 values"),
        ({"corruption_rates": (1.5, 0.0)}, r"corruption_rates.*\[0.0, 1.0\]"),
        ({"n_classes": 1}, "n_classes"),
        ({"n_train": 3}, "n_train"),
        ({"signal_strengths": (1.0, float("nan"))}, "finite"),
        ({"corruption_rates": (1.0, 1.0)}, "at least one modality"),
    ],
)
def test_synthetic_config_errors_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SyntheticTaskConfig(**fields)


def test_mfeat_views_split_and_standardization() -> None:
    config = MFeatTaskConfig(views=("pix", "mor", "zer"))
    task = build_task(config, np.random.default_rng(0))
    assert task.modality_names == ("pix", "mor", "zer") and task.feature_dims == (240, 6, 47)
    assert len(task.train) + len(task.val) + len(task.test) == 2000
    for split in (task.train, task.val, task.test):  # stratified: every class in every split, equally
        counts = torch.bincount(split.labels, minlength=10)
        assert counts.min() == counts.max()
    train_mean = task.train.features[0].mean(0)
    assert float(train_mean.abs().max()) < 1e-4  # z-scored with training statistics only
    other = build_task(config, np.random.default_rng(1))
    assert not torch.equal(task.val.labels, other.val.labels) or not torch.equal(task.val.features[0], other.val.features[0])


def test_mfeat_bad_view_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown view 'colour'"):
        MFeatTaskConfig(views=("fac", "colour"))
    with pytest.raises(ConfigError, match="once"):
        MFeatTaskConfig(views=("fac", "fac"))


def test_features_file_loads_with_named_modalities(features_file: Path) -> None:
    task = build_task(FeaturesTaskConfig(path=str(features_file)), np.random.default_rng(0))
    assert task.modality_names == ("audio", "video") and task.n_classes == 3
    only_video = build_task(FeaturesTaskConfig(path=str(features_file), modalities=("video",)), np.random.default_rng(0))
    assert only_video.feature_dims == (4,)


def test_features_file_predefined_split(tmp_path: Path) -> None:
    split = np.repeat([0, 1, 2], 40)
    path = write_features_file(tmp_path / "f.npz", split=split)
    task = build_task(FeaturesTaskConfig(path=str(path)), np.random.default_rng(0))
    assert (len(task.train), len(task.val), len(task.test)) == (40, 40, 40)


def _bad_file(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"modality_a": np.zeros((4, 2))}, "no 'labels' array"),
        ({"labels": np.arange(4) % 2}, "no modality arrays"),
        ({"labels": np.arange(4) % 2, "modality_a": np.zeros((5, 2))}, "mismatched lengths.*5 rows.*4"),
        ({"labels": np.arange(4) % 2, "modality_a": np.array([[0.0], [np.nan], [1.0], [2.0]])}, "NaN/inf.*row 1"),
        ({"labels": np.arange(4) % 2, "modality_a": np.array([[0.0], [np.inf], [1.0], [2.0]])}, "NaN/inf"),
        ({"labels": np.array([0, 1, -1, 0]), "modality_a": np.zeros((4, 2))}, "labels out of range.*-1"),
        (
            {"labels": np.array([0, 1, 5, 0]), "modality_a": np.zeros((4, 2)), "n_classes": np.array(3)},
            "labels out of range.*5 >= n_classes=3",
        ),
        ({"labels": np.array([0.5, 1, 1, 0]), "modality_a": np.zeros((4, 2))}, "integer class ids"),
        ({"labels": np.arange(4) % 2, "modality_a": np.zeros(4)}, "must be 2-D"),
        ({"labels": np.arange(4) % 2, "modality_a": np.zeros((4, 1)), "split": np.array([0, 0, 1, 1])}, "test split empty"),
        (
            {"labels": np.array([0, 1, 1, 0]), "modality_a": np.zeros((4, 1)), "n_classes": np.array([2, 3])},
            "'n_classes' must be one integer",
        ),
        ({"labels": np.array([0, 9, 9, 0]), "modality_a": np.zeros((4, 1))}, "10 classes for 4 samples"),
    ],
)
def test_features_file_errors_name_the_problem(tmp_path: Path, arrays: dict, message: str) -> None:
    path = _bad_file(tmp_path, **arrays)
    with pytest.raises(FeatureFileError, match=message):
        build_task(FeaturesTaskConfig(path=str(path)), np.random.default_rng(0))


def test_features_file_missing_corrupt_or_unknown_modality(tmp_path: Path, features_file: Path) -> None:
    with pytest.raises(FeatureFileError, match="cannot be opened"):
        build_task(FeaturesTaskConfig(path=str(tmp_path / "nope.npz")), np.random.default_rng(0))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(FeatureFileError, match="not a readable .npz"):
        build_task(FeaturesTaskConfig(path=str(corrupt)), np.random.default_rng(0))
    with pytest.raises(FeatureFileError, match="no modality 'depth'.*audio, video"):
        build_task(FeaturesTaskConfig(path=str(features_file), modalities=("depth",)), np.random.default_rng(0))


def test_features_template_needs_a_path() -> None:
    with pytest.raises(ConfigError, match="needs the features file"):
        FeaturesTaskConfig().n_modalities  # noqa: B018


def test_task_config_from_dict_switches_kind_and_rejects_unknown_fields() -> None:
    assert isinstance(task_config_from_dict({"kind": "mfeat", "views": ["kar", "mor"]}), MFeatTaskConfig)
    with pytest.raises(ConfigError, match="task kind='audio'"):
        task_config_from_dict({"kind": "audio"})
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['views'\] for task kind 'synthetic'"):
        task_config_from_dict({"views": ["fac"]})

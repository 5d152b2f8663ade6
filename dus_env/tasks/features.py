"""A user's own precomputed per-modality features, read from one ``.npz`` file.

This is how real audio-visual data (CREMA-D, Kinetics-Sounds, ...) enters the environment: embed
each modality once with a frozen backbone, save the embeddings, and let the learner train small
encoders on top. The file format:

========================  =====================================================================
key                       content
========================  =====================================================================
``labels``                integer class ids, shape ``[N]``, in ``[0, n_classes)``
``modality_<name>``       one float array ``[N, D_name]`` per modality (at least one); row ``i``
                          of every modality is sample ``i``. Order = order in the file, unless
                          the config names the modalities to use.
``split`` (optional)      integers ``[N]``: 0 = train, 1 = validation, 2 = test. Without it a
                          seeded stratified split is drawn.
``n_classes`` (optional)  scalar; without it ``max(labels) + 1``.
========================  =====================================================================
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..validation import as_tuple, check_bool, check_int, check_split_fractions, fail
from .base import Task, make_task, stratified_split

MODALITY_PREFIX = "modality_"


class FeatureFileError(ValueError):
    """The features file is missing, unreadable or does not follow the documented format."""


@dataclass(frozen=True)
class FeaturesTaskConfig:
    """Where the features are and how to split them.

    :param path: the ``.npz`` file (format in this module's docstring); required to build a task.
    :param modalities: names (without the ``modality_`` prefix) to use, in order; ``None`` = all.
    :param val_fraction: share of each class for validation, when the file has no ``split``.
    :param test_fraction: share of each class for test, when the file has no ``split``.
    :param standardize: z-score each modality with training statistics.
    :param data_seed: ``None`` draws a new split per episode seed; an integer fixes it.
    """

    kind: str = field(default="features", init=False)
    path: str | None = None
    modalities: tuple[str, ...] | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    standardize: bool = True
    data_seed: int | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if self.path is not None:
            if not isinstance(self.path, (str, os.PathLike)):
                fail(owner, "path", self.path, "expected the path of a .npz file (a string)")
            object.__setattr__(self, "path", os.fspath(self.path))
            if not str(self.path).endswith(".npz"):
                fail(owner, "path", self.path, "expected a .npz file (numpy.savez), the format in dus_env.tasks.features")
        check_bool(owner, "standardize", self.standardize)
        if self.modalities is not None:
            modalities = as_tuple(owner, "modalities", self.modalities)
            if not modalities:
                fail(owner, "modalities", modalities, "name at least one modality, or pass None for all")
            if len(set(modalities)) != len(modalities):
                fail(owner, "modalities", modalities, "each modality may appear once")
            object.__setattr__(self, "modalities", modalities)
        check_split_fractions(owner, self.val_fraction, self.test_fraction)
        if self.data_seed is not None:
            check_int(owner, "data_seed", self.data_seed, 0)

    def require_path(self) -> str:
        """The file path; a config without one is a template (the ``Features-v0`` preset)."""
        if self.path is None:
            fail(type(self).__name__, "path", None, "Features-v0 needs the features file: pass path='my_features.npz'")
        return self.path  # type: ignore[return-value]

    @property
    def n_modalities(self) -> int:
        return len(read_feature_file(self.require_path(), self.modalities).modality_names)


@dataclass(frozen=True)
class FeatureFile:
    modality_names: tuple[str, ...]
    features: tuple[np.ndarray, ...]
    labels: np.ndarray
    n_classes: int
    split: np.ndarray | None


def read_feature_file(path: str, modalities: tuple[str, ...] | None = None) -> FeatureFile:
    """Read and validate a features file; the result is cached per path and modification time."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as error:
        raise FeatureFileError(f"features file {path!r} cannot be opened: {error.strerror}") from None
    return _read_validated(path, mtime, modalities)


@lru_cache(maxsize=4)
def _read_validated(path: str, mtime: int, modalities: tuple[str, ...] | None) -> FeatureFile:
    del mtime  # part of the cache key only: an edited file is read again
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise FeatureFileError(f"features file {path!r} is not a readable .npz archive ({error})") from None
    if "labels" not in arrays:
        raise FeatureFileError(f"features file {path!r} has no 'labels' array (keys: {sorted(arrays)})")
    available = [key[len(MODALITY_PREFIX) :] for key in arrays if key.startswith(MODALITY_PREFIX)]
    if not available:
        raise FeatureFileError(
            f"features file {path!r} has no modality arrays: name them '{MODALITY_PREFIX}<name>' (keys: {sorted(arrays)})"
        )
    names = tuple(available) if modalities is None else modalities
    for name in names:
        if name not in available:
            raise FeatureFileError(f"features file {path!r} has no modality {name!r} (it has {', '.join(available)})")
    labels = _validated_labels(path, arrays)
    features = tuple(_validated_modality(path, name, arrays[MODALITY_PREFIX + name], len(labels)) for name in names)
    n_classes = _validated_n_classes(path, arrays.get("n_classes"), labels)
    if labels.max() >= n_classes:
        raise FeatureFileError(f"features file {path!r}: labels out of range, max label {int(labels.max())} >= n_classes={n_classes}")
    if n_classes < 2:
        raise FeatureFileError(f"features file {path!r}: needs at least 2 classes, found {n_classes}")
    split = _validated_split(path, arrays.get("split"), len(labels))
    return FeatureFile(names, features, labels, n_classes, split)


def _validated_labels(path: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
    labels = arrays["labels"]
    if labels.ndim != 1:
        raise FeatureFileError(f"features file {path!r}: 'labels' must be 1-D, got shape {labels.shape}")
    whole_floats = np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))
    if not (np.issubdtype(labels.dtype, np.integer) or whole_floats):
        raise FeatureFileError(f"features file {path!r}: 'labels' must hold integer class ids, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size == 0:
        raise FeatureFileError(f"features file {path!r}: 'labels' is empty")
    if labels.min() < 0:
        raise FeatureFileError(f"features file {path!r}: labels out of range, found {int(labels.min())} < 0")
    return labels


def _validated_n_classes(path: str, given: np.ndarray | None, labels: np.ndarray) -> int:
    if given is None:
        n_classes = int(labels.max()) + 1
    elif given.shape != () or not np.issubdtype(given.dtype, np.integer):
        raise FeatureFileError(f"features file {path!r}: 'n_classes' must be one integer, got {given!r}")
    else:
        n_classes = int(given)
    if n_classes > len(labels):
        raise FeatureFileError(
            f"features file {path!r}: {n_classes} classes for {len(labels)} samples: class ids must be 0..C-1 "
            "(sparse ids such as 0, 1000, 2000 would build a head with a class per id)"
        )
    return n_classes


def _validated_modality(path: str, name: str, x: np.ndarray, n_samples: int) -> np.ndarray:
    key = MODALITY_PREFIX + name
    if x.ndim != 2:
        raise FeatureFileError(f"features file {path!r}: {key!r} must be 2-D [samples, features], got shape {x.shape}")
    if x.shape[0] != n_samples:
        raise FeatureFileError(f"features file {path!r}: mismatched lengths, {key!r} has {x.shape[0]} rows but 'labels' has {n_samples}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise FeatureFileError(f"features file {path!r}: {key!r} must be numeric, got dtype {x.dtype}")
    if x.shape[1] == 0:
        raise FeatureFileError(
            f"features file {path!r}: {key!r} has no features (shape {x.shape}): every modality needs at least one column"
        )
    # The model trains in float32: a finite float64 value beyond about 3.4e38 would become inf there.
    with np.errstate(over="ignore"):
        bad = ~np.isfinite(x.astype(np.float32))
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise FeatureFileError(
            f"features file {path!r}: {key!r} holds NaN/inf values, or values too large for float32 (|x| > 3.4e38), "
            f"in {len(rows)} rows (first: row {int(rows[0])})"
        )
    return x


def _validated_split(path: str, split: np.ndarray | None, n_samples: int) -> np.ndarray | None:
    if split is None:
        return None
    if split.shape != (n_samples,) or not np.isin(split, (0, 1, 2)).all():
        raise FeatureFileError(f"features file {path!r}: 'split' must be shape [{n_samples}] with values 0 (train), 1 (val), 2 (test)")
    for code, part in enumerate(("train", "validation", "test")):
        if not np.any(split == code):
            raise FeatureFileError(f"features file {path!r}: 'split' leaves the {part} split empty")
    return split.astype(np.int64)


def build_features_task(config: FeaturesTaskConfig, rng: np.random.Generator) -> Task:
    data = read_feature_file(config.require_path(), config.modalities)
    if data.split is not None:
        rows = np.arange(len(data.labels))
        splits = tuple(rows[data.split == code] for code in range(3))
    else:
        if config.data_seed is not None:
            rng = np.random.default_rng(config.data_seed)
        try:
            splits = stratified_split(data.labels, config.val_fraction, config.test_fraction, rng)
        except ValueError as error:
            raise FeatureFileError(f"features file {config.path!r}: {error}") from None
    return make_task("features", data.modality_names, list(data.features), data.labels, data.n_classes, splits, config.standardize)

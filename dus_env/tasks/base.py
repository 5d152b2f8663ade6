"""The in-memory form every task takes: aligned per-modality tensors plus integer labels.

Why tensors and not a Dataset: one training iteration indexes a few dozen rows; going through a
DataLoader would cost more than the iteration itself. Everything here is created once per episode
and then only indexed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """One split of a task: ``features[j]`` is modality ``j``, row ``i`` of every modality is sample ``i``."""

    features: tuple[torch.Tensor, ...]
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Task:
    """Train / validation / test splits of one multimodal classification problem.

    ``parameters`` are the instance's drawn parameters (reported in the env's ``info`` as
    ``instance_<name>``): 1-D arrays hold one value per modality, in the task's modality order;
    0-D arrays describe the whole instance.
    """

    name: str
    modality_names: tuple[str, ...]
    n_classes: int
    train: Split
    val: Split
    test: Split
    parameters: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: Per modality, the leading feature columns that carry data; ``None`` = all (no padding).
    data_widths: tuple[int, ...] | None = None

    @property
    def input_widths(self) -> tuple[int, ...]:
        """Per modality, how many feature columns carry data (the rest is zero padding)."""
        return self.data_widths if self.data_widths is not None else self.feature_dims

    def with_parameters(self, parameters: Mapping[str, np.ndarray]) -> Task:
        """This task with its instance parameters recorded."""
        return replace(self, parameters=dict(parameters))

    def permuted(self, order: np.ndarray) -> Task:
        """The same task with its modalities presented in ``order``: modality ``j`` is ``self``'s ``order[j]``.

        Features, names and per-modality parameters move together, so everything built from the
        task (observation slots, action components, ``info``) follows the same order.
        """
        positions = [int(j) for j in order]

        def split(s: Split) -> Split:
            return Split(tuple(s.features[j] for j in positions), s.labels)

        parameters = {k: (v[positions] if v.ndim == 1 else v) for k, v in self.parameters.items()}
        return replace(
            self,
            modality_names=tuple(self.modality_names[j] for j in positions),
            train=split(self.train),
            val=split(self.val),
            test=split(self.test),
            parameters=parameters,
            data_widths=None if self.data_widths is None else tuple(self.data_widths[j] for j in positions),
        )

    @property
    def n_modalities(self) -> int:
        return len(self.modality_names)

    @property
    def feature_dims(self) -> tuple[int, ...]:
        return tuple(int(x.shape[1]) for x in self.train.features)


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of train / val / test with every class in the same proportion in each.

    Why stratified: the reward is a class-balanced accuracy on the validation split; a split
    missing a class would make that score jump for reasons that have nothing to do with sampling.
    """
    train, val, test = [], [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_val = max(1, round(val_fraction * len(rows)))
        n_test = max(1, round(test_fraction * len(rows)))
        if n_val + n_test >= len(rows):
            raise ValueError(
                f"class {int(label)} has only {len(rows)} samples: too few for val_fraction="
                f"{val_fraction} and test_fraction={test_fraction} with at least one training sample"
            )
        val.append(rows[:n_val])
        test.append(rows[n_val : n_val + n_test])
        train.append(rows[n_val + n_test :])
    return tuple(np.sort(np.concatenate(part)) for part in (train, val, test))  # type: ignore[return-value]


def make_task(
    name: str,
    modality_names: tuple[str, ...],
    features: list[np.ndarray],
    labels: np.ndarray,
    n_classes: int,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    standardize: bool,
) -> Task:
    """Cut aligned arrays into splits, optionally z-score each modality with training statistics only.

    Why train-only statistics: validation and test data must not leak into anything the learner
    or the agent sees before the episode's final report.
    """
    train_rows, val_rows, test_rows = splits
    per_split: list[list[torch.Tensor]] = [[], [], []]
    for x in features:
        x = x.astype(np.float32, copy=False)
        if standardize:
            mean = x[train_rows].mean(axis=0)
            std = x[train_rows].std(axis=0)
            x = (x - mean) / np.where(std > 1e-8, std, 1.0).astype(np.float32)
        for part, rows in zip(per_split, splits):
            part.append(torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32)))
    label_tensor = torch.from_numpy(labels.astype(np.int64))
    train, val, test = (
        Split(tuple(part), label_tensor[torch.from_numpy(rows)].contiguous())
        for part, rows in zip(per_split, (train_rows, val_rows, test_rows))
    )
    return Task(name, modality_names, n_classes, train, val, test)


def pad_features(task: Task, width: int) -> Task:
    """``task`` with every modality's features zero-padded on the right to ``width`` columns.

    Why: the envs of a batch share one model shape; zero columns carry no signal and leave the
    padded weights without gradient. The task records its data widths (``input_widths``), from
    which the model initialises its first layers as for the unpadded task
    (:meth:`dus_env.batched.model.StackedModel.reset_env`): padding then changes nothing but
    the shapes.
    """

    def pad(s: Split) -> Split:
        padded = tuple(torch.nn.functional.pad(x, (0, width - x.shape[1])) for x in s.features)
        return Split(padded, s.labels)

    return replace(task, train=pad(task.train), val=pad(task.val), test=pad(task.test), data_widths=task.input_widths)

"""The UCI Multiple Features digits: six real views of the same 2,000 handwritten digits.

The views differ a lot in how informative they are (a linear model reaches about 97% on ``fac``
and 74% on ``mor``), which makes this a small, real modality-imbalance benchmark. The data ships
inside the package (``dus_env/data/mfeat.npz``, CC BY 4.0, see ``dus_env/data/NOTICE.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from ..validation import as_tuple, check_int, check_split_fractions, fail
from .base import Task, make_task, stratified_split

MFEAT_VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")


@dataclass(frozen=True)
class MFeatTaskConfig:
    """Which views of the digits to use and how to split them.

    :param views: any subset of ``fou, fac, kar, pix, zer, mor``, one modality each, in order.
        The default pairs a strong view (``fac``, profile correlations) with a weak one
        (``fou``, Fourier coefficients).
    :param val_fraction: share of each class held out for validation (the reward).
    :param test_fraction: share of each class held out for the final test report.
    :param standardize: z-score each view with training statistics (the raw views differ in
        scale by four orders of magnitude).
    :param data_seed: ``None`` draws a new stratified split from every episode's seed; an
        integer fixes the split.
    """

    kind: str = field(default="mfeat", init=False)
    views: tuple[str, ...] = ("fac", "fou")
    val_fraction: float = 0.2
    test_fraction: float = 0.3
    standardize: bool = True
    data_seed: int | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        views = as_tuple(owner, "views", self.views)
        object.__setattr__(self, "views", views)
        if not views:
            fail(owner, "views", views, f"choose at least one of {', '.join(MFEAT_VIEWS)}")
        for view in views:
            if view not in MFEAT_VIEWS:
                fail(owner, "views", views, f"unknown view {view!r}; choose from {', '.join(MFEAT_VIEWS)}")
        if len(set(views)) != len(views):
            fail(owner, "views", views, "each view may appear once")
        check_split_fractions(owner, self.val_fraction, self.test_fraction)
        if self.data_seed is not None:
            check_int(owner, "data_seed", self.data_seed, 0)

    @property
    def n_modalities(self) -> int:
        return len(self.views)


@lru_cache(maxsize=1)
def load_mfeat_arrays() -> dict[str, np.ndarray]:
    """The packed views and labels, read once per process (about 2 MB)."""
    with resources.files("dus_env.data").joinpath("mfeat.npz").open("rb") as handle:
        with np.load(handle) as archive:
            return {key: archive[key] for key in archive.files}


def build_mfeat_task(config: MFeatTaskConfig, rng: np.random.Generator) -> Task:
    if config.data_seed is not None:
        rng = np.random.default_rng(config.data_seed)
    arrays = load_mfeat_arrays()
    labels = arrays["labels"].astype(np.int64)
    splits = stratified_split(labels, config.val_fraction, config.test_fraction, rng)
    features = [arrays[view] for view in config.views]
    return make_task("mfeat", config.views, features, labels, 10, splits, config.standardize)

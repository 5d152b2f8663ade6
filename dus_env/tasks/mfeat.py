"""The UCI Multiple Features digits: six real views of the same 2,000 handwritten digits.

The views differ a lot in how informative they are (a linear model reaches about 97% on ``fac``
and 74% on ``mor``), which makes this a small, real modality-imbalance benchmark. The data ships
inside the package (``dus_env/data/mfeat.npz``, CC BY 4.0, see ``dus_env/data/NOTICE.md``).

**View-set distributions.** ``views`` may also be a list of view sets of one size, e.g.
``[["fac", "fou"], ["kar", "pix"]]``: every episode then draws one set uniformly from its task seed,
so a sampling policy meets real modality pairs whose imbalance it has to read from the training
state. The views of a set differ in width (6 to 240 features), and the envs of a batch share one
model shape, so with view sets every view is zero-padded to the widest view of all the sets. The
padding changes nothing but shapes: padded inputs are always zero, their weights start at zero
and get no gradient, and the first layer is initialised as for the view's own width (the task
records it, ``Task.input_widths``), so a padded view trains exactly as the unpadded one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from ..validation import as_tuple, check_bool, check_int, check_split_fractions, fail
from .base import Task, make_task, pad_features, stratified_split

MFEAT_VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")


@dataclass(frozen=True)
class MFeatTaskConfig:
    """Which views of the digits to use and how to split them.

    :param views: any subset of ``fou, fac, kar, pix, zer, mor``, one modality each, in order.
        The default pairs a strong view (``fac``, profile correlations) with a weak one
        (``fou``, Fourier coefficients). Or a list of such sets, all of one size: one set is drawn
        per episode and the views are zero-padded to a common width (module docstring).
    :param val_fraction: share of each class held out for validation (the reward).
    :param test_fraction: share of each class held out for the final test report.
    :param standardize: z-score each view with training statistics (the raw views differ in
        scale by four orders of magnitude).
    :param data_seed: ``None`` draws a new stratified split from every episode's seed; an
        integer fixes the split.
    """

    kind: str = field(default="mfeat", init=False)
    views: tuple[str, ...] | tuple[tuple[str, ...], ...] = ("fac", "fou")
    val_fraction: float = 0.2
    test_fraction: float = 0.3
    standardize: bool = True
    data_seed: int | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        views = as_tuple(owner, "views", self.views)
        if views and all(isinstance(v, str) for v in views):
            _check_view_set(owner, views, views)
        else:
            views = tuple(as_tuple(owner, "views", view_set) for view_set in views)
            if not views:
                fail(owner, "views", views, f"choose at least one of {', '.join(MFEAT_VIEWS)}")
            for view_set in views:
                _check_view_set(owner, views, view_set)
            if len({len(view_set) for view_set in views}) != 1:
                fail(owner, "views", views, "every view set needs the same number of views (the action has one component per view)")
            if len({frozenset(view_set) for view_set in views}) != len(views):
                fail(owner, "views", views, "each view set may appear once (in any order: modality order is the env's shuffle_modalities)")
        object.__setattr__(self, "views", views)
        check_bool(owner, "standardize", self.standardize)
        check_split_fractions(owner, self.val_fraction, self.test_fraction)
        if self.data_seed is not None:
            check_int(owner, "data_seed", self.data_seed, 0)

    @property
    def view_sets(self) -> tuple[tuple[str, ...], ...]:
        """The view sets an episode draws from (one set for a plain ``views`` list)."""
        return self.views if self.has_view_sets else (self.views,)  # type: ignore[return-value]

    @property
    def has_view_sets(self) -> bool:
        """Whether ``views`` is given as a list of view sets (then every view is padded to one width)."""
        return not isinstance(self.views[0], str)

    @property
    def n_modalities(self) -> int:
        return len(self.view_sets[0])

    n_classes = 10

    def max_split_sizes(self) -> tuple[int, int, int]:
        """Train / val / test rows of every episode's split."""
        return mfeat_split_sizes(self)

    def max_feature_width(self) -> int:
        """The widest view of any of the view sets (what view sets are padded to)."""
        return max(max(mfeat_view_widths(view_set)) for view_set in self.view_sets)

    def empty_parameters(self) -> dict[str, np.ndarray]:
        """The instance parameters an mfeat task reports, with placeholder values (for mixtures)."""
        return {"views": np.array([""] * self.n_modalities, dtype=object)}


def _check_view_set(owner: str, views: tuple, view_set: tuple) -> None:
    if not view_set:
        fail(owner, "views", views, f"choose at least one of {', '.join(MFEAT_VIEWS)}")
    for view in view_set:
        if view not in MFEAT_VIEWS:
            fail(owner, "views", views, f"unknown view {view!r}; choose from {', '.join(MFEAT_VIEWS)}")
    if len(set(view_set)) != len(view_set):
        fail(owner, "views", views, "each view may appear once in a set")


@lru_cache(maxsize=1)
def load_mfeat_arrays() -> dict[str, np.ndarray]:
    """The packed views and labels, read once per process (about 2 MB)."""
    with resources.files("dus_env.data").joinpath("mfeat.npz").open("rb") as handle, np.load(handle) as archive:
        return {key: archive[key] for key in archive.files}


def build_mfeat_task(config: MFeatTaskConfig, rng: np.random.Generator) -> Task:
    """The split of one episode; with several view sets, the set is drawn first from ``rng``.

    The set is drawn from the episode's generator even when ``data_seed`` fixes the split, so
    a fixed split still meets every set.
    """
    sets = config.view_sets
    views = sets[int(rng.integers(len(sets)))] if len(sets) > 1 else sets[0]
    if config.data_seed is not None:
        rng = np.random.default_rng(config.data_seed)
    arrays = load_mfeat_arrays()
    labels = arrays["labels"].astype(np.int64)
    splits = stratified_split(labels, config.val_fraction, config.test_fraction, rng)
    features = [arrays[view] for view in views]
    task = make_task("mfeat", views, features, labels, 10, splits, config.standardize)
    if config.has_view_sets:
        task = pad_features(task, config.max_feature_width())
    return task.with_parameters({"views": np.array(views, dtype=object)})


def mfeat_split_sizes(config: MFeatTaskConfig) -> tuple[int, int, int]:
    """Train / val / test sizes of every split of ``config`` (stratified per class: they do not depend on the seed)."""
    labels = load_mfeat_arrays()["labels"].astype(np.int64)
    train, val, test = stratified_split(labels, config.val_fraction, config.test_fraction, np.random.default_rng(0))
    return len(train), len(val), len(test)


def mfeat_view_widths(views: tuple[str, ...]) -> tuple[int, ...]:
    """The feature width of each view."""
    arrays = load_mfeat_arrays()
    return tuple(int(arrays[view].shape[1]) for view in views)

"""Task distributions: ranged synthetic parameters, mfeat view sets, mixtures, shuffled modality order, and the mix ids.

What a user relies on: a config without ranges (and every id of version 0.1) draws exactly the instances it
drew before; a range is drawn per instance from the episode's task seed and reported in ``info``; shuffling
only changes the order the modalities are presented in, and the observation, the action and every
per-modality ``info`` entry follow that one order; bad configs are refused with an error naming the field.
"""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import dus_env
from dus_env import PRESETS, TINY_OVERRIDES, ConfigError, EnvConfig
from dus_env.core import TrainingCore
from dus_env.env import episode_seeds
from dus_env.presets import (
    MFEAT_HELD_OUT_PAIRS,
    MFEAT_HELD_OUT_TRIPLES,
    MFEAT_TRAIN_PAIRS,
    MFEAT_TRAIN_TRIPLES,
    SYNTHETIC_MIX,
)
from dus_env.tasks import FeaturesTaskConfig, MFeatTaskConfig, MixtureTaskConfig, SyntheticTaskConfig, Task
from dus_env.tasks.base import stratified_split
from dus_env.tasks.mfeat import MFEAT_VIEWS, build_mfeat_task, load_mfeat_arrays
from dus_env.tasks.mixture import build_mixture_task
from dus_env.tasks.synthetic import build_synthetic_task

T = int(TINY_OVERRIDES["decision_steps"])
MFEAT_WIDTHS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
MIX_IDS = [
    "dus_env/SyntheticMix-v0",
    "dus_env/MFeatMix-v0",
    "dus_env/MFeatMixHeldOut-v0",
    "dus_env/MFeatMix3-v0",
    "dus_env/MFeatMix3HeldOut-v0",
    "dus_env/SyntheticMFeatMix-v0",
]
#: A small synthetic task: builds in well under a millisecond, so hundreds of instances stay cheap.
SMALL = dict(n_classes=10, feature_dim=3, n_train=30, n_val=10, n_test=10)
#: A synthetic task whose modalities are easy to tell apart: a strong one (0) and one of pure noise (1).
STRONG_WEAK = {"signal_strengths": (4.0, 0.0), "corruption_rates": (0.3, 0.0), "n_train": 200, "n_val": 100, "n_test": 100, "n_classes": 4}


def make(env_id: str, **overrides: Any) -> gym.Env:
    return gym.make(env_id, **{**TINY_OVERRIDES, **overrides})


def features(task: Task, split: str = "train") -> list[np.ndarray]:
    return [x.numpy() for x in getattr(task, split).features]


def assert_same_data(a: Task, b: Task) -> None:
    for split in ("train", "val", "test"):
        left, right = getattr(a, split), getattr(b, split)
        assert torch.equal(left.labels, right.labels), split
        assert len(left.features) == len(right.features)
        for x, y in zip(left.features, right.features):
            assert torch.equal(x, y), split


def reference_synthetic(config: SyntheticTaskConfig, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """The documented generative model, written out: labels, then per modality prototypes, corruption mask, noise."""
    n_total = config.n_train + config.n_val + config.n_test
    labels = rng.permutation(np.arange(n_total) % config.n_classes)
    xs = []
    for strength, corruption in zip(config.signal_strengths, config.corruption_rates):
        prototypes = rng.standard_normal((config.n_classes, config.feature_dim))
        keep = rng.random(n_total) >= corruption
        noise = rng.standard_normal((n_total, config.feature_dim))
        xs.append((noise + strength * prototypes[labels] * keep[:, None]).astype(np.float32))
    return labels, xs


def order_of(env_id: str, seed: int, **overrides: Any) -> list[int]:
    return make(env_id, **overrides).reset(seed=seed)[1]["modality_order"]


def seed_with_order(config: EnvConfig, wanted: list[int], start: int = 0) -> int:
    """The first env seed from ``start`` whose shuffled order is ``wanted`` (cheap: draws seeds and orders only)."""
    core = TrainingCore(config, 1)
    for seed in range(start, start + 200):
        task = core._build_task(episode_seeds(np.random.default_rng(seed))[0])
        if task.parameters["modality_order"].tolist() == wanted:
            return seed
    raise AssertionError(f"no seed with order {wanted}")


# -- 1. synthetic: numbers or [low, high] ranges ------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 5])
def test_fixed_synthetic_config_draws_the_documented_instance(seed: int) -> None:
    """No ranges, no extra draws: the instance is the one the v0.1 generative model draws from the same stream."""
    config = SyntheticTaskConfig(n_train=60, n_val=30, n_test=40, feature_dim=4, n_classes=3)
    task = build_synthetic_task(config, np.random.default_rng(seed))
    labels, xs = reference_synthetic(config, np.random.default_rng(seed))
    bounds = [0, 60, 90, 130]
    for k, split in enumerate(("train", "val", "test")):
        rows = slice(bounds[k], bounds[k + 1])
        np.testing.assert_array_equal(getattr(task, split).labels.numpy(), labels[rows])
        for got, want in zip(features(task, split), xs):
            np.testing.assert_array_equal(got, want[rows])
    np.testing.assert_array_equal(task.parameters["signal_strengths"], [1.0, 0.35])
    np.testing.assert_array_equal(task.parameters["corruption_rates"], [0.4, 0.0])
    assert int(task.parameters["n_train"]) == 60


@pytest.mark.parametrize("seed", [5, 11])
def test_ranged_instance_is_the_fixed_instance_at_its_drawn_values(seed: int) -> None:
    """Ranges are drawn first, in field order (strengths, corruption rates, n_train), then the data as without ranges."""
    ranged = SyntheticTaskConfig(
        signal_strengths=((1.0, 2.0), 0.35), corruption_rates=(0.2, (0.0, 0.5)), n_train=(300, 400), n_val=50, n_test=50
    )
    rng = np.random.default_rng(seed)
    strength = float(rng.uniform(1.0, 2.0))
    corruption = float(rng.uniform(0.0, 0.5))
    n_train = int(rng.integers(300, 401))
    fixed = SyntheticTaskConfig(signal_strengths=(strength, 0.35), corruption_rates=(0.2, corruption), n_train=n_train, n_val=50, n_test=50)
    expected = build_synthetic_task(fixed, rng)
    task = build_synthetic_task(ranged, np.random.default_rng(seed))
    assert_same_data(task, expected)
    np.testing.assert_array_equal(task.parameters["signal_strengths"], [strength, 0.35])
    np.testing.assert_array_equal(task.parameters["corruption_rates"], [0.2, corruption])
    assert int(task.parameters["n_train"]) == n_train == len(task.train)


def test_drawn_values_stay_in_their_ranges_and_vary_with_the_seed() -> None:
    config = SyntheticTaskConfig(
        n_modalities=3,
        n_classes=2,
        feature_dim=2,
        n_val=10,
        n_test=10,
        signal_strengths=((1.0, 2.0), 0.5, (0.0, 0.1)),
        corruption_rates=((0.3, 0.6), 0.0, (0.9, 1.0)),
        n_train=(20, 21),
    )
    tasks = [build_synthetic_task(config, np.random.default_rng(seed)) for seed in range(40)]
    strengths = np.stack([t.parameters["signal_strengths"] for t in tasks])
    corruptions = np.stack([t.parameters["corruption_rates"] for t in tasks])
    n_train = np.array([int(t.parameters["n_train"]) for t in tasks])
    assert ((1.0 <= strengths[:, 0]) & (strengths[:, 0] <= 2.0)).all() and np.ptp(strengths[:, 0]) > 0.5
    assert (strengths[:, 1] == 0.5).all()
    assert ((0.0 <= strengths[:, 2]) & (strengths[:, 2] <= 0.1)).all()
    assert ((0.3 <= corruptions[:, 0]) & (corruptions[:, 0] <= 0.6)).all() and np.ptp(corruptions[:, 0]) > 0.15
    assert (corruptions[:, 1] == 0.0).all()
    assert ((0.9 <= corruptions[:, 2]) & (corruptions[:, 2] <= 1.0)).all()
    # An integer range includes both ends, and the training split has the drawn size.
    assert set(n_train.tolist()) == {20, 21}
    assert all(len(t.train) == n for t, n in zip(tasks, n_train))


def test_ranges_from_yaml_lists_are_the_same_config() -> None:
    from_lists = SyntheticTaskConfig(signal_strengths=[[1.0, 2.0], 0.3], corruption_rates=[[0.3, 0.6], 0], n_train=[500, 800])
    from_tuples = SyntheticTaskConfig(signal_strengths=((1.0, 2.0), 0.3), corruption_rates=((0.3, 0.6), 0), n_train=(500, 800))
    assert from_lists == from_tuples
    assert hash(from_lists) == hash(from_tuples)  # configs are cache keys (agents.constants)
    assert from_lists.n_train_bounds == (500, 800)
    assert from_lists.max_split_sizes() == (800, 500, 1000)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"signal_strengths": ((2.0, 1.0), 0.3)}, "signal_strengths"),
        ({"corruption_rates": ((0.5, 0.2), 0.0)}, "corruption_rates"),
        ({"signal_strengths": (("a", 1.0), 0.3)}, "signal_strengths"),
        ({"signal_strengths": ((None, 1.0), 0.3)}, "signal_strengths"),
        ({"signal_strengths": ((True, 1.0), 0.3)}, "signal_strengths"),
        ({"signal_strengths": ((0.1, 0.2, 0.3), 0.3)}, "signal_strengths"),
        ({"signal_strengths": ((-0.5, 1.0), 0.3)}, "signal_strengths"),
        ({"signal_strengths": ((0.5, float("nan")), 0.3)}, "signal_strengths"),
        ({"signal_strengths": "ab"}, "signal_strengths"),
        ({"corruption_rates": ((0.5, 1.5), 0.0)}, "corruption_rates"),
        ({"corruption_rates": ((-0.1, 0.5), 0.0)}, "corruption_rates"),
        ({"corruption_rates": ((1.0, 1.0), 1.0)}, "corruption_rates"),
        ({"n_train": (500.5, 800)}, "n_train"),
        ({"n_train": (500, 800.0)}, "n_train"),
        ({"n_train": 500.0}, "n_train"),
        ({"n_train": (5, 800)}, "n_train"),
        ({"n_train": (800, 500)}, "n_train"),
        ({"n_train": (500,)}, "n_train"),
        ({"n_train": (500, 600, 700)}, "n_train"),
        ({"n_train": "500"}, "n_train"),
        ({"signal_strengths": (1.0, 0.3, 0.2)}, "signal_strengths"),
        ({"corruption_rates": ((0.1, 0.2),)}, "corruption_rates"),
        ({"n_modalities": 3, "corruption_rates": (0.0, 0.0, 0.0)}, "signal_strengths"),
    ],
)
def test_bad_ranges_are_refused_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"SyntheticTaskConfig\.{field}="):
        SyntheticTaskConfig(**kwargs)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        SyntheticTaskConfig(n_train=(800, 500))


def test_max_quantity_is_checked_against_the_smallest_n_train_of_a_range() -> None:
    with pytest.raises(ConfigError, match=r"EnvConfig\.max_quantity=56 .*n_train=40"):
        EnvConfig(task=SyntheticTaskConfig(n_train=(40, 800)))
    assert EnvConfig(task=SyntheticTaskConfig(n_train=(56, 800))).max_quantity == 56
    with pytest.raises(ConfigError, match=r"max_quantity"):
        gym.make("dus_env/Synthetic-v0", n_train=(40, 800))


def test_env_reports_the_drawn_instance_within_the_ranges() -> None:
    """``instance_*`` holds the drawn values in presented order; position j's value lies in original modality order[j]'s range."""
    env = make("dus_env/SyntheticMix-v0")
    strength_ranges = [(1.0, 2.0), (0.2, 0.5)]
    corruption_ranges = [(0.3, 0.6), (0.0, 0.0)]
    n_trains = set()
    for seed in range(6):
        _, info = env.reset(seed=seed)
        order = info["modality_order"]
        for j, original in enumerate(order):
            low, high = strength_ranges[original]
            assert low <= info["instance_signal_strengths"][j] <= high
            low, high = corruption_ranges[original]
            assert low <= info["instance_corruption_rates"][j] <= high
        assert 500 <= info["instance_n_train"] <= 800
        assert len(env.unwrapped.task.train) == info["instance_n_train"]
        n_trains.add(info["instance_n_train"])
    assert len(n_trains) > 1


# -- 2. mfeat: view sets -------------------------------------------------------------------------------------


def standardized_view(view: str, splits: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    x = load_mfeat_arrays()[view].astype(np.float32)
    train = x[splits[0]]
    std = train.std(axis=0)
    x = (x - train.mean(axis=0)) / np.where(std > 1e-8, std, 1.0).astype(np.float32)
    return [x[rows] for rows in splits]


def test_plain_views_are_unchanged_no_padding_no_extra_draw() -> None:
    config = MFeatTaskConfig(views=("fac", "fou"))
    assert not config.has_view_sets and config.view_sets == (("fac", "fou"),) and config.n_modalities == 2
    task = build_mfeat_task(config, np.random.default_rng(3))
    assert task.feature_dims == (216, 76)
    labels = load_mfeat_arrays()["labels"].astype(np.int64)
    splits = stratified_split(labels, 0.2, 0.3, np.random.default_rng(3))
    for j, view in enumerate(("fac", "fou")):
        for split, want in zip(("train", "val", "test"), standardized_view(view, splits)):
            np.testing.assert_allclose(features(task, split)[j], want, rtol=0, atol=1e-6)
    assert list(task.parameters["views"]) == ["fac", "fou"]
    env = make("dus_env/MFeat-v0")
    env.reset(seed=0)
    assert env.unwrapped.task.feature_dims == (216, 76)


def test_view_set_is_drawn_from_the_task_seed() -> None:
    config = MFeatTaskConfig(views=[["fac", "fou"], ["zer", "mor"]])
    assert config.views == (("fac", "fou"), ("zer", "mor"))
    drawn = [tuple(build_mfeat_task(config, np.random.default_rng(seed)).parameters["views"]) for seed in range(12)]
    assert set(drawn) == {("fac", "fou"), ("zer", "mor")}
    again = build_mfeat_task(config, np.random.default_rng(4))
    assert tuple(again.parameters["views"]) == drawn[4]
    assert_same_data(again, build_mfeat_task(config, np.random.default_rng(4)))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_view_sets_are_zero_padded_to_the_widest_view_of_all_sets(seed: int) -> None:
    """Each view keeps its standardized values in its own columns and is exactly zero beyond, up to 216 (``fac``)."""
    config = MFeatTaskConfig(views=(("fac", "fou"), ("zer", "mor")))
    task = build_mfeat_task(config, np.random.default_rng(seed))
    assert task.feature_dims == (216, 216)
    # The set is the generator's first draw; the split is then the one of the plain set from the same stream.
    rng = np.random.default_rng(seed)
    views = config.views[int(rng.integers(2))]
    assert tuple(task.parameters["views"]) == views
    plain = build_mfeat_task(MFeatTaskConfig(views=views), rng)
    for split in ("train", "val", "test"):
        for j, view in enumerate(views):
            width = MFEAT_WIDTHS[view]
            padded = features(task, split)[j]
            np.testing.assert_array_equal(padded[:, :width], features(plain, split)[j])
            assert (padded[:, width:] == 0.0).all()


def test_a_single_view_set_in_list_form_is_padded_and_can_be_shuffled() -> None:
    """What the shuffle error message advises for mfeat: give views as a list of view sets."""
    env = make("dus_env/MFeat-v0", views=[["fac", "fou"]], shuffle_modalities=True)
    _, info = env.reset(seed=0)
    assert env.unwrapped.task.feature_dims == (216, 216)
    assert sorted(info["instance_views"]) == ["fac", "fou"]


@pytest.mark.parametrize(
    "views",
    [
        [["fac", "fou"], ["zer", "mor", "kar"]],
        [["fac", "fou"], ["zer", "nope"]],
        ["fac", "nope"],
        [["fac", "fac"], ["zer", "mor"]],
        ["fac", "fac"],
        [["fac", "fou"], ["fac", "fou"]],
        [["fac", "fou"], []],
        [],
    ],
    ids=["sizes", "unknown-in-set", "unknown", "duplicate-in-set", "duplicate", "duplicate-set", "empty-set", "empty"],
)
def test_bad_view_sets_are_refused_naming_the_field(views: list) -> None:
    with pytest.raises(ConfigError, match=r"MFeatTaskConfig\.views="):
        MFeatTaskConfig(views=views)


# -- 3. mixtures ---------------------------------------------------------------------------------------------


def small_mixture(weights: tuple[float, ...] | None = None) -> MixtureTaskConfig:
    return MixtureTaskConfig(components=(SyntheticTaskConfig(**SMALL), MFeatTaskConfig(views=("zer", "mor"))), weights=weights)


def test_mixture_draws_the_component_then_its_instance_from_one_generator() -> None:
    config = small_mixture()
    assert (config.width(), config.n_modalities, config.n_classes) == (47, 2, 10)
    seen = set()
    for seed in range(8):
        task = build_mixture_task(config, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        index = int(rng.choice(2, p=[0.5, 0.5]))
        component = config.components[index]
        plain = (build_synthetic_task if index == 0 else build_mfeat_task)(component, rng)
        seen.add(index)
        assert int(task.parameters["component"]) == index
        assert task.feature_dims == (47, 47)
        for split in ("train", "val", "test"):
            assert torch.equal(getattr(task, split).labels, getattr(plain, split).labels)
            for padded, x in zip(features(task, split), features(plain, split)):
                np.testing.assert_array_equal(padded[:, : x.shape[1]], x)
                assert (padded[:, x.shape[1] :] == 0.0).all()
    assert seen == {0, 1}


def test_mixture_parameters_are_the_union_with_placeholders() -> None:
    config = small_mixture()
    by_component: dict[int, dict[str, np.ndarray]] = {}
    for seed in range(8):
        task = build_mixture_task(config, np.random.default_rng(seed))
        by_component.setdefault(int(task.parameters["component"]), dict(task.parameters))
    synthetic, mfeat = by_component[0], by_component[1]
    keys = {"component", "signal_strengths", "corruption_rates", "n_train", "views"}
    assert set(synthetic) == set(mfeat) == keys
    np.testing.assert_array_equal(synthetic["signal_strengths"], [1.0, 0.35])
    assert int(synthetic["n_train"]) == 30
    assert list(synthetic["views"]) == ["", ""]
    assert np.isnan(mfeat["signal_strengths"]).all() and np.isnan(mfeat["corruption_rates"]).all()
    assert int(mfeat["n_train"]) == -1
    assert list(mfeat["views"]) == ["zer", "mor"]


def test_mixture_weights_are_normalised_and_followed() -> None:
    assert np.allclose(small_mixture().probabilities(), [0.5, 0.5])
    assert np.allclose(small_mixture((1.0, 3.0)).probabilities(), [0.25, 0.75])
    # Two tiny synthetic components (cheap to build): the draw frequency follows the weights.
    components = (SyntheticTaskConfig(**SMALL), SyntheticTaskConfig(**{**SMALL, "feature_dim": 2}))
    config = MixtureTaskConfig(components=components, weights=(1, 3))
    draws = [int(build_mixture_task(config, np.random.default_rng(seed)).parameters["component"]) for seed in range(400)]
    assert 0.68 <= np.mean(draws) <= 0.82  # binomial(400, 0.75): sd 0.022


@pytest.mark.parametrize("weights, component", [((1.0, 1e-9), 0), ((1e-9, 1.0), 1)])
def test_synthetic_mfeat_mix_follows_extreme_weights(weights: tuple[float, float], component: int) -> None:
    env = make("dus_env/SyntheticMFeatMix-v0", weights=weights)
    assert env.unwrapped.config.task.weights == weights
    for seed in range(6):
        assert env.reset(seed=seed)[1]["instance_component"] == component


def test_synthetic_mfeat_mix_reports_the_component_and_its_parameters() -> None:
    env = make("dus_env/SyntheticMFeatMix-v0")
    seen = set()
    for seed in range(10):
        _, info = env.reset(seed=seed)
        assert env.unwrapped.task.feature_dims == (240, 240)
        component = info["instance_component"]
        seen.add(component)
        original_order = np.argsort(info["modality_order"])
        if component == 0:
            assert all(np.isfinite(info["instance_signal_strengths"])) and 500 <= info["instance_n_train"] <= 800
            assert info["instance_views"] == ["", ""]
        else:
            assert np.isnan(info["instance_signal_strengths"]).all() and info["instance_n_train"] == -1
            # The views are reported in presented order: undoing the order gives a training pair.
            assert tuple(np.array(info["instance_views"])[original_order]) in MFEAT_TRAIN_PAIRS
    assert seen == {0, 1}


def test_mixture_from_plain_values_equals_the_objects() -> None:
    components = [{"kind": "synthetic", **SMALL}, {"kind": "mfeat", "views": ["zer", "mor"]}]
    from_dicts = EnvConfig(task={"kind": "mixture", "components": components}, base_batch_size=8, min_quantity=2, max_quantity=14)
    assert from_dicts.task == small_mixture()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"components": (SyntheticTaskConfig(),)}, "components"),
        ({"components": ()}, "components"),
        (
            {
                "components": (
                    SyntheticTaskConfig(n_modalities=3, signal_strengths=(1, 1, 1), corruption_rates=(0, 0, 0)),
                    MFeatTaskConfig(),
                )
            },
            "components",
        ),
        ({"components": (SyntheticTaskConfig(n_classes=5), MFeatTaskConfig())}, "components"),
        ({"components": (SyntheticTaskConfig(), MFeatTaskConfig()), "weights": (1.0,)}, "weights"),
        ({"components": (SyntheticTaskConfig(), MFeatTaskConfig()), "weights": (1.0, 1.0, 1.0)}, "weights"),
        ({"components": (SyntheticTaskConfig(), MFeatTaskConfig()), "weights": (1.0, 0.0)}, "weights"),
        ({"components": (SyntheticTaskConfig(), MFeatTaskConfig()), "weights": (1.0, -1.0)}, "weights"),
        ({"components": (SyntheticTaskConfig(), MFeatTaskConfig()), "weights": (1.0, float("nan"))}, "weights"),
        ({"components": (SyntheticTaskConfig(), {"kind": "features", "path": "f.npz"})}, "components"),
        ({"components": (SyntheticTaskConfig(), FeaturesTaskConfig(path="f.npz"))}, "components"),
        ({"components": (SyntheticTaskConfig(), {"kind": "synthetic", "nope": 1})}, "components"),
    ],
    ids=[
        "one",
        "none",
        "modalities",
        "classes",
        "weights-short",
        "weights-long",
        "weight-zero",
        "weight-negative",
        "weight-nan",
        "features-dict",
        "features-config",
        "unknown-field",
    ],
)
def test_bad_mixtures_are_refused_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"MixtureTaskConfig\.{field}"):
        MixtureTaskConfig(**kwargs)


def test_a_mixture_cannot_nest_a_mixture() -> None:
    with pytest.raises(ConfigError, match=r"MixtureTaskConfig\.components"):
        MixtureTaskConfig(components=(small_mixture(), SyntheticTaskConfig()))


# -- 4. shuffled modality order ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", 1, None, "true"])
def test_shuffle_modalities_must_be_a_bool(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"EnvConfig\.shuffle_modalities="):
        EnvConfig(shuffle_modalities=value)
    with pytest.raises(ConfigError, match=r"shuffle_modalities"):
        gym.make("dus_env/Synthetic-v0", shuffle_modalities=value)


def test_shuffling_modalities_of_different_widths_is_refused() -> None:
    """mfeat views of different widths: refused when the config is made (the widths are known then)."""
    with pytest.raises(ConfigError, match=r"shuffle_modalities.*\(216, 76\)"):
        make("dus_env/MFeat-v0", shuffle_modalities=True)


def test_shuffling_a_task_of_different_widths_is_refused_at_reset(tmp_path: Any) -> None:
    """A features file's widths are known only when it is read: the core refuses at reset."""
    path = tmp_path / "f.npz"
    labels = np.arange(60) % 3
    np.savez(
        path,
        labels=labels,
        modality_a=np.random.default_rng(0).normal(size=(60, 4)),
        modality_b=np.random.default_rng(1).normal(size=(60, 7)),
    )
    env = gym.make(
        "dus_env/Features-v0",
        path=str(path),
        shuffle_modalities=True,
        **{**TINY_OVERRIDES, "min_quantity": 2, "max_quantity": 10, "base_batch_size": 4},
    )
    with pytest.raises(ConfigError, match=r"shuffle_modalities.*\(4, 7\)"):
        env.reset(seed=0)


@pytest.mark.parametrize("env_id", ["dus_env/Synthetic-v0", "dus_env/Synthetic3-v0", "dus_env/MFeat-v0"])
def test_without_shuffling_the_order_is_the_identity(env_id: str) -> None:
    env = make(env_id)
    for seed in range(3):
        _, info = env.reset(seed=seed)
        assert info["modality_order"] == list(range(env.unwrapped.n_modalities))


def test_shuffling_presents_the_same_instance_in_another_order() -> None:
    """Presented modality j is the unshuffled modality order[j]: features, names and instance parameters alike."""
    base = make("dus_env/Synthetic-v0", task=STRONG_WEAK)
    shuffled = make("dus_env/Synthetic-v0", task=STRONG_WEAK, shuffle_modalities=True)
    orders = set()
    for seed in range(6):
        _, plain_info = base.reset(seed=seed)
        _, info = shuffled.reset(seed=seed)
        order = info["modality_order"]
        orders.add(tuple(order))
        plain_task, task = base.unwrapped.task, shuffled.unwrapped.task
        assert task.modality_names == tuple(f"m{j}" for j in order)
        for split in ("train", "val", "test"):
            assert torch.equal(getattr(task, split).labels, getattr(plain_task, split).labels)
            for j, original in enumerate(order):
                assert torch.equal(getattr(task, split).features[j], getattr(plain_task, split).features[original])
        for key in ("instance_signal_strengths", "instance_corruption_rates"):
            assert info[key] == [plain_info[key][original] for original in order]
    assert orders == {(0, 1), (1, 0)}


def test_identity_order_gives_the_unshuffled_episode_bit_for_bit() -> None:
    """The order comes from its own stream of the task seed: shuffling draws nothing the instance or model use."""
    config = dus_env.resolve_config(PRESETS["Synthetic"], {**TINY_OVERRIDES, "shuffle_modalities": True})
    seed = seed_with_order(config, [0, 1])
    actions = [np.array(a, dtype=np.float32) for a in ([0.7, -0.2], [-0.5, 0.9], [0.1, 0.1], [1.0, -1.0])]
    runs = []
    for shuffle in (False, True):
        env = make("dus_env/Synthetic-v0", shuffle_modalities=shuffle)
        observation, _ = env.reset(seed=seed)
        runs.append([observation, *[env.step(a)[0] for a in actions]])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_action_observation_and_info_follow_the_presented_order() -> None:
    """With order [1, 0] the strong modality is presented second: favouring position 1 gives *it* the samples."""
    overrides = {"task": STRONG_WEAK, "shuffle_modalities": True, "lr": 0.02, "iterations_per_step": 5}
    config = dus_env.resolve_config(PRESETS["Synthetic"], {**TINY_OVERRIDES, **overrides})
    seed = seed_with_order(config, [1, 0])
    env = make("dus_env/Synthetic-v0", **overrides)
    layout = env.unwrapped.layout
    scores = {}
    for favoured in (0, 1):
        action = np.where(np.arange(2) == favoured, 1.0, -1.0).astype(np.float32)
        _, info = env.reset(seed=seed)
        order = info["modality_order"]
        assert order == [1, 0]
        strong = order.index(0)  # presented position of the original strong modality
        assert info["instance_signal_strengths"] == [0.0, 4.0]
        for _ in range(T):
            observation, _, _, _, info = env.step(action)
        assert info["quantities"][favoured] == max(info["quantities"]) == 14
        by_original = {original: info["quantities"][j] for j, original in enumerate(order)}
        assert by_original[order[favoured]] == 14
        np.testing.assert_allclose(layout.read(observation, "val_modality_accuracy"), info["val_modality_accuracies"], atol=1e-6)
        np.testing.assert_allclose(layout.read(observation, "cumulative_score"), info["cumulative_scores"], atol=1e-6)
        np.testing.assert_allclose(layout.read(observation, "last_share"), np.array(info["quantities"]) / 16, atol=1e-6)
        assert info["quantity_totals"] == [q * T * 5 for q in info["quantities"]]
        # The presented strong modality is the one that learns.
        assert info["val_modality_accuracies"][strong] > info["val_modality_accuracies"][1 - strong] + 0.3
        scores[favoured] = info["cumulative_scores"][strong]
    # The samples reach the modality at the favoured position: the strong one scores higher when favoured.
    assert scores[1] > scores[0] + 0.1


def test_orders_vary_over_seeds() -> None:
    """Both orders of two modalities, about half each; all six orders of three. Computed from the seeds resets use."""
    two = EnvConfig(task=SyntheticTaskConfig(**SMALL), base_batch_size=8, min_quantity=2, max_quantity=14, shuffle_modalities=True)
    three = EnvConfig(
        task=SyntheticTaskConfig(**SMALL, n_modalities=3, signal_strengths=(1, 1, 1), corruption_rates=(0, 0, 0)),
        base_batch_size=8,
        min_quantity=2,
        max_quantity=14,
        shuffle_modalities=True,
    )
    for config, expected in ((two, 2), (three, 6)):
        core = TrainingCore(config, 1)
        task_seeds = [episode_seeds(np.random.default_rng(s))[0] for s in range(200)]
        orders = [tuple(core._build_task(seed).parameters["modality_order"].tolist()) for seed in task_seeds]
        counts = {order: orders.count(order) for order in set(orders)}
        assert len(counts) == expected
        assert min(counts.values()) >= 200 / expected * 0.6, counts


def test_orders_through_reset_match_the_seeds() -> None:
    orders = [tuple(order_of("dus_env/SyntheticMix-v0", seed)) for seed in range(10)]
    assert set(orders) == {(0, 1), (1, 0)}
    assert [tuple(order_of("dus_env/SyntheticMix-v0", seed)) for seed in range(3)] == orders[:3]


def test_same_seed_same_shuffled_episode() -> None:
    actions = [np.array(a, dtype=np.float32) for a in ([0.7, -0.2], [-0.5, 0.9], [0.1, 0.1], [1.0, -1.0])]
    runs = []
    for _ in range(2):
        env = make("dus_env/SyntheticMix-v0")
        observation, info = env.reset(seed=123)
        steps = [env.step(a) for a in actions]
        runs.append((observation, info, steps))
    (obs_a, info_a, steps_a), (obs_b, info_b, steps_b) = runs
    np.testing.assert_array_equal(obs_a, obs_b)
    assert info_a == info_b
    for a, b in zip(steps_a, steps_b):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4] and a[4] == b[4]


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_env_orders_match_single_envs_also_after_autoreset(mode: AutoresetMode) -> None:
    """Env i of a vector env reset with seed s plays DUSEnv seed s + i; its next episode is that DUSEnv's next reset."""
    n, seed = 4, 10
    venv = gym.make_vec("dus_env/SyntheticMix-v0", num_envs=n, autoreset_mode=mode, **TINY_OVERRIDES)
    _, infos = venv.reset(seed=seed)
    singles = [make("dus_env/SyntheticMix-v0") for _ in range(n)]
    first = [env.reset(seed=seed + i)[1] for i, env in enumerate(singles)]
    second = [env.reset()[1] for env in singles]
    for i in range(n):
        assert infos["modality_order"][i].tolist() == first[i]["modality_order"]
        assert infos["_modality_order"][i]
        np.testing.assert_array_equal(infos["instance_signal_strengths"][i], first[i]["instance_signal_strengths"])
    actions = np.tile(np.array([[0.5, -0.5]], dtype=np.float32), (n, 1))
    for _ in range(T):
        _, _, terminated, _, infos = venv.step(actions)
    assert terminated.all()
    if mode == AutoresetMode.NEXT_STEP:
        for i in range(n):  # the final step still reports the ended episode
            assert infos["modality_order"][i].tolist() == first[i]["modality_order"]
        _, _, _, _, infos = venv.step(actions)
    else:
        for i in range(n):
            assert infos["final_info"]["modality_order"][i].tolist() == first[i]["modality_order"]
    for i in range(n):
        assert infos["modality_order"][i].tolist() == second[i]["modality_order"]
        np.testing.assert_array_equal(infos["instance_signal_strengths"][i], second[i]["instance_signal_strengths"])
        assert infos["instance_n_train"][i] == second[i]["instance_n_train"]
    all_orders = {tuple(x["modality_order"]) for x in first + second}
    assert all_orders == {(0, 1), (1, 0)}  # the comparison covers both orders


# -- 5. the mix ids ------------------------------------------------------------------------------------------


def test_held_out_view_sets_are_disjoint_from_training_and_training_is_the_rest() -> None:
    as_sets = lambda sets: {frozenset(s) for s in sets}  # noqa: E731
    pairs, triples = as_sets(combinations(MFEAT_VIEWS, 2)), as_sets(combinations(MFEAT_VIEWS, 3))
    assert len(MFEAT_TRAIN_PAIRS) == 13 and len(MFEAT_TRAIN_TRIPLES) == 19
    assert not as_sets(MFEAT_TRAIN_PAIRS) & as_sets(MFEAT_HELD_OUT_PAIRS)
    assert not as_sets(MFEAT_TRAIN_TRIPLES) & as_sets(MFEAT_HELD_OUT_TRIPLES)
    assert as_sets(MFEAT_TRAIN_PAIRS) | as_sets(MFEAT_HELD_OUT_PAIRS) == pairs
    assert as_sets(MFEAT_TRAIN_TRIPLES) | as_sets(MFEAT_HELD_OUT_TRIPLES) == triples
    assert len(as_sets(MFEAT_TRAIN_PAIRS)) == 13 and len(as_sets(MFEAT_TRAIN_TRIPLES)) == 19  # no set twice
    assert as_sets(MFEAT_HELD_OUT_PAIRS) == {frozenset({"kar", "fou"}), frozenset({"zer", "mor"})}
    assert as_sets(MFEAT_HELD_OUT_TRIPLES) == {frozenset({"fou", "zer", "mor"})}


def test_mix_presets_use_the_documented_distributions() -> None:
    for name in ("SyntheticMix", "MFeatMix", "MFeatMixHeldOut", "MFeatMix3", "MFeatMix3HeldOut", "SyntheticMFeatMix"):
        assert PRESETS[name].shuffle_modalities, name
        assert f"dus_env/{name}-v0" in dus_env.ENV_IDS
    assert (
        PRESETS["SyntheticMix"].task
        == SYNTHETIC_MIX
        == SyntheticTaskConfig(signal_strengths=((1.0, 2.0), (0.2, 0.5)), corruption_rates=((0.3, 0.6), 0.0), n_train=(500, 800))
    )
    assert PRESETS["MFeatMix"].task.views == MFEAT_TRAIN_PAIRS
    assert PRESETS["MFeatMixHeldOut"].task.views == MFEAT_HELD_OUT_PAIRS
    assert PRESETS["MFeatMix3"].task.views == MFEAT_TRAIN_TRIPLES
    assert PRESETS["MFeatMix3HeldOut"].task.views == MFEAT_HELD_OUT_TRIPLES
    mix = PRESETS["SyntheticMFeatMix"].task
    assert mix.components == (SYNTHETIC_MIX, MFeatTaskConfig(views=MFEAT_TRAIN_PAIRS))
    assert np.allclose(mix.probabilities(), [0.5, 0.5])


def test_version_0_1_ids_are_unchanged() -> None:
    assert PRESETS["Synthetic"] == EnvConfig()
    assert PRESETS["Synthetic"].task == SyntheticTaskConfig()
    defaults = SyntheticTaskConfig()
    assert (defaults.n_modalities, defaults.n_classes, defaults.feature_dim) == (2, 10, 32)
    assert defaults.signal_strengths == (1.0, 0.35) and defaults.corruption_rates == (0.4, 0.0)
    assert (defaults.n_train, defaults.n_val, defaults.n_test, defaults.data_seed) == (1000, 500, 1000, None)
    assert PRESETS["Synthetic3"].task == SyntheticTaskConfig(
        n_modalities=3, signal_strengths=(1.0, 0.45, 0.35), corruption_rates=(0.4, 0.2, 0.0)
    )
    assert PRESETS["SyntheticHard"].task == SyntheticTaskConfig(signal_strengths=(1.5, 0.3), corruption_rates=(0.5, 0.0), n_train=600)
    assert PRESETS["MFeat"].task == MFeatTaskConfig() and MFeatTaskConfig().views == ("fac", "fou")
    for name in ("Synthetic", "Synthetic3", "SyntheticHard", "MFeat", "Features"):
        config = PRESETS[name]
        assert not config.shuffle_modalities, name
        assert (config.base_batch_size, config.min_quantity, config.max_quantity) == (32, 8, 56)
        assert (config.iterations_per_step, config.decision_steps, config.budget) == (10, 20, "fixed")


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_survives_a_json_round_trip(name: str) -> None:
    """``EnvConfig(**d)`` rebuilds the config from plain values (ranges, view sets and mixtures included)."""
    config = PRESETS[name]
    rebuilt = EnvConfig(**json.loads(json.dumps(config.to_dict())))
    assert rebuilt == config and hash(rebuilt) == hash(config)


@pytest.mark.parametrize("env_id", MIX_IDS)
def test_mix_ids_run_with_shuffled_padded_modalities(env_id: str) -> None:
    env = make(env_id)
    n = env.unwrapped.n_modalities
    observation, info = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    assert sorted(info["modality_order"]) == list(range(n))
    assert len(set(env.unwrapped.task.feature_dims)) == 1
    observation, reward, _, _, info = env.step(env.action_space.sample() * 0 + 0.5)
    assert env.observation_space.contains(observation) and np.isfinite(reward)
    if "instance_views" in info and info["instance_views"][0]:
        sets = {
            "dus_env/MFeatMix-v0": MFEAT_TRAIN_PAIRS,
            "dus_env/MFeatMixHeldOut-v0": MFEAT_HELD_OUT_PAIRS,
            "dus_env/MFeatMix3-v0": MFEAT_TRAIN_TRIPLES,
            "dus_env/MFeatMix3HeldOut-v0": MFEAT_HELD_OUT_TRIPLES,
            "dus_env/SyntheticMFeatMix-v0": MFEAT_TRAIN_PAIRS,
        }[env_id]
        assert tuple(np.array(info["instance_views"])[np.argsort(info["modality_order"])]) in sets
        width = max(MFEAT_WIDTHS[v] for s in sets for v in s)
        assert env.unwrapped.task.feature_dims == (width,) * n


def test_held_out_mfeat_ids_only_draw_held_out_sets() -> None:
    env = make("dus_env/MFeatMixHeldOut-v0")
    drawn = set()
    for seed in range(8):
        _, info = env.reset(seed=seed)
        drawn.add(frozenset(info["instance_views"]))
    assert drawn == {frozenset(s) for s in MFEAT_HELD_OUT_PAIRS}


def test_env_task_keeps_its_instance_parameters() -> None:
    env = make("dus_env/SyntheticMix-v0")
    _, info = env.reset(seed=0)
    parameters = env.unwrapped.task.parameters
    np.testing.assert_array_equal(parameters["signal_strengths"], info["instance_signal_strengths"])
    assert parameters["modality_order"].tolist() == info["modality_order"]


@pytest.mark.parametrize(
    "learner",
    [
        {"kind": "joint"},
        {"kind": "alternating"},
        {"kind": "mla"},
        {"kind": "ogm_ge"},
        {"kind": "mie"},
        {"kind": "joint", "row_order": "bss_curriculum"},
        {"kind": "mie", "row_order": "bss_adaptive"},
    ],
)
@pytest.mark.parametrize("kind", ["mfeat", "synthetic"])
def test_a_padded_task_trains_exactly_as_the_unpadded_one(kind: str, learner: dict) -> None:
    """Zero padding (mfeat view sets, mixtures) changes only shapes: same initial function, same
    episode, for every learner and row order (mfeat: views of different widths; synthetic: equal
    widths, so MIE's first layers exchange their modification)."""
    from dus_env.config import EnvConfig
    from dus_env.core import TrainingCore
    from dus_env.tasks import MFeatTaskConfig, SyntheticTaskConfig
    from dus_env.tasks.base import pad_features

    task = MFeatTaskConfig(views=("kar", "fou")) if kind == "mfeat" else SyntheticTaskConfig()
    accuracies, losses, observations = [], [], []
    for pad in (False, True):
        config = EnvConfig(task=task, torch_threads=None, decision_steps=3, iterations_per_step=3, learner=learner)
        core = TrainingCore(config, 1)
        if pad:
            build = core._build_task
            core._build_task = lambda seed, build=build: pad_features(build(seed), 240)
        core.reset(np.array([0]), [(11, 12)])
        if pad:
            widths = (64, 76) if kind == "mfeat" else (32, 32)
            assert core.model.encoders[0][0].weight.shape[1] == 240 and core._tasks[0].input_widths == widths
            assert not core.model.encoders[0][0].weight[0, widths[0] :].any()  # padded rows start at zero
        outcome = core.step(np.array([[20, 44]]))
        losses.append(outcome.train_loss[0])
        core.step(np.array([[44, 20]]))
        outcome = core.step(np.array([[20, 44]]))
        observations.append(outcome.observations[0])
        accuracies.append(outcome.final.test_fused_accuracy[0])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    np.testing.assert_allclose(observations[0], observations[1], atol=1e-5)
    assert accuracies[0] == pytest.approx(accuracies[1], abs=1e-9)

"""agents/seed_ranges.py: the ranges are disjoint, and the drivers, benches and docs take their seeds from it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from agents import seed_ranges
from agents.seed_ranges import ALL_RANGES, overlapping_ranges

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """A script of the repo (a driver or a bench) imported by path."""
    name = "script_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve the script's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_every_range_is_disjoint_from_every_other() -> None:
    assert overlapping_ranges() == []
    names = list(ALL_RANGES)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            first, second = ALL_RANGES[a], ALL_RANGES[b]
            assert first.stop <= second.start or second.stop <= first.start, (a, b)


def test_an_overlap_is_found() -> None:
    """The check itself can fail: two ranges that share a seed are named."""
    assert overlapping_ranges({"a": range(10), "b": range(20, 30), "c": range(5, 6)}) == [("a", "c")]


def test_documented_ranges_have_their_documented_seeds() -> None:
    assert (seed_ranges.MAIN_TABLE_SEEDS.start, len(seed_ranges.MAIN_TABLE_SEEDS)) == (20_000, 10)
    assert (seed_ranges.GENERALISATION_SEEDS.start, len(seed_ranges.GENERALISATION_SEEDS)) == (40_000, 20)
    assert (seed_ranges.HELD_OUT_SEEDS.start, len(seed_ranges.HELD_OUT_SEEDS)) == (50_100, 40)
    assert (seed_ranges.TUNING_SEEDS.start, len(seed_ranges.TUNING_SEEDS)) == (60_000, 20)
    assert (seed_ranges.SELECTION_SEEDS.start, len(seed_ranges.SELECTION_SEEDS)) == (65_000, 40)
    # SB3's global seeding takes seeds below 2**32; a resumed run adds its env index to its seed.
    assert seed_ranges.RESUME_SEEDS.stop + 1024 < 2**32


def test_drivers_benches_and_suites_take_their_defaults_from_the_module() -> None:
    from agents.benchmark import DEFAULT_SEED_OFFSET
    from agents.constants import TUNING_SEEDS
    from agents.training import RESUME_SEED_BASE, RESUME_SEED_SPAN

    assert DEFAULT_SEED_OFFSET == seed_ranges.EVALUATION_SEEDS.start
    assert load_script("evaluate.py").Args().seed_offset == seed_ranges.EVALUATION_SEEDS.start
    assert load_script("train_agent.py").Args().eval_seed == seed_ranges.TRAIN_EVAL_SEEDS.start
    assert TUNING_SEEDS == tuple(seed_ranges.TUNING_SEEDS)
    assert (RESUME_SEED_BASE, RESUME_SEED_SPAN) == (seed_ranges.RESUME_SEEDS.start, len(seed_ranges.RESUME_SEEDS))
    assert load_script("bench/plugin_table.py").DEFAULT_SEED_OFFSET == seed_ranges.PLUGIN_TABLE_SEEDS.start
    suites = yaml.safe_load((REPO / "agents" / "suites.yml").read_text())
    assert suites["main"]["seed_offset"] == seed_ranges.MAIN_TABLE_SEEDS.start
    assert suites["main"]["seeds"] <= len(seed_ranges.MAIN_TABLE_SEEDS)


def test_held_out_benches_default_to_the_held_out_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench/headroom.py`` and ``bench/mirror_probe.py`` score on the held-out range by default."""
    import numpy as np

    seen: dict[str, list[int]] = {}
    headroom = load_script("bench/headroom.py")
    monkeypatch.setattr(headroom, "headroom", lambda env_id, seeds, *rest: seen.setdefault("headroom", seeds))
    monkeypatch.setattr(headroom, "print_report", lambda report: None)
    headroom.main(["--envs", "Synthetic-v0"])
    mirror = load_script("bench/mirror_probe.py")
    result = mirror.MirrorResult(np.ones(1), np.ones(1), np.ones(1))
    monkeypatch.setattr(mirror, "mirror_probe", lambda spec, env_id, seeds: seen.setdefault("mirror", seeds) and result)
    mirror.main([])
    assert seen["headroom"] == list(seed_ranges.HELD_OUT_SEEDS)
    assert seen["mirror"] == list(seed_ranges.HELD_OUT_SEEDS)[:20]

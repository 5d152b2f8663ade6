"""Named benchmark configs: one entry per registered environment id.

A benchmark is a named config plus its instance distribution (the task seed); each real task has
a cheap variant beside it. ``tiny`` is a deliberately small config for tests and smoke runs.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from .config import EnvConfig
from .learners import LearnerConfig
from .tasks import MFEAT_VIEWS, FeaturesTaskConfig, MFeatTaskConfig, MixtureTaskConfig, SyntheticTaskConfig

#: A distribution over two-modality synthetic tasks: a strong modality (signal 1.0-2.0) corrupted
#: on 30-60% of the samples, and a weak clean one (signal 0.2-0.5), 500-800 training samples. How
#: much data the weak one should get depends on how strong and how corrupted the other is, and with
#: the order shuffled per episode no constant is right for every instance: a policy must read the
#: training state. (Instances where rebalancing hurts come from real views: ``MFeatMix``.)
SYNTHETIC_MIX = SyntheticTaskConfig(
    signal_strengths=((1.0, 2.0), (0.2, 0.5)),
    corruption_rates=((0.3, 0.6), 0.0),
    n_train=(500, 800),
)

_PAIRS = tuple(combinations(MFEAT_VIEWS, 2))
_TRIPLES = tuple(combinations(MFEAT_VIEWS, 3))
#: mfeat view sets held out of training, for evaluation only: the pairs and the triple where an
#: independent loop found that giving the weak view more data never helped.
MFEAT_HELD_OUT_PAIRS: tuple[tuple[str, ...], ...] = (("kar", "fou"), ("zer", "mor"))
MFEAT_HELD_OUT_TRIPLES: tuple[tuple[str, ...], ...] = (("fou", "zer", "mor"),)
#: The other 13 pairs and 19 triples (as sets: a held-out set in another order is held out too).
MFEAT_TRAIN_PAIRS = tuple(p for p in _PAIRS if set(p) not in [set(h) for h in MFEAT_HELD_OUT_PAIRS])
MFEAT_TRAIN_TRIPLES = tuple(t for t in _TRIPLES if set(t) not in [set(h) for h in MFEAT_HELD_OUT_TRIPLES])

PRESETS: dict[str, EnvConfig] = {
    # Two modalities: a strong one corrupted on 40% of samples, a weak clean one.
    "Synthetic": EnvConfig(),
    # Three modalities of decreasing strength.
    "Synthetic3": EnvConfig(
        task=SyntheticTaskConfig(
            n_modalities=3,
            signal_strengths=(1.0, 0.45, 0.35),
            corruption_rates=(0.4, 0.2, 0.0),
        )
    ),
    # Harder: a more dominant strong modality (it suppresses the weak one more), a weaker weak
    # one, a more often corrupted strong one, fewer training samples.
    "SyntheticHard": EnvConfig(
        task=SyntheticTaskConfig(
            signal_strengths=(1.5, 0.3),
            corruption_rates=(0.5, 0.0),
            n_train=600,
        )
    ),
    "MFeat": EnvConfig(task=MFeatTaskConfig()),
    # Benchmarks where the state matters (modalities shuffled per episode, instances drawn per
    # episode): the distributions above and the README's table of ids.
    "SyntheticMix": EnvConfig(task=SYNTHETIC_MIX, shuffle_modalities=True),
    "MFeatMix": EnvConfig(task=MFeatTaskConfig(views=MFEAT_TRAIN_PAIRS), shuffle_modalities=True),
    "MFeatMixHeldOut": EnvConfig(task=MFeatTaskConfig(views=MFEAT_HELD_OUT_PAIRS), shuffle_modalities=True),
    "MFeatMix3": EnvConfig(task=MFeatTaskConfig(views=MFEAT_TRAIN_TRIPLES), shuffle_modalities=True),
    "MFeatMix3HeldOut": EnvConfig(task=MFeatTaskConfig(views=MFEAT_HELD_OUT_TRIPLES), shuffle_modalities=True),
    # Both regimes in one env: the synthetic mix (rebalancing pays) and the training mfeat pairs
    # (it mostly does not), half of the episodes each. The shipped policy is trained here.
    "SyntheticMFeatMix": EnvConfig(
        task=MixtureTaskConfig(components=(SYNTHETIC_MIX, MFeatTaskConfig(views=MFEAT_TRAIN_PAIRS))),
        shuffle_modalities=True,
    ),
    # The methods DUS plugs into (the DUS paper's "DUS/X" combinations): Synthetic-v0's task with
    # another learner or row order. The sampling action composes with each.
    "Synthetic-OGMGE": EnvConfig(learner=LearnerConfig(kind="ogm_ge")),
    "Synthetic-MLA": EnvConfig(learner=LearnerConfig(kind="mla")),
    "Synthetic-MIE": EnvConfig(learner=LearnerConfig(kind="mie")),
    "Synthetic-BSS": EnvConfig(learner=LearnerConfig(row_order="bss_curriculum")),
    "Synthetic-BSSAdaptive": EnvConfig(learner=LearnerConfig(row_order="bss_adaptive")),
    # The path is required: gymnasium.make("dus_env/Features-v0", path="my_features.npz").
    "Features": EnvConfig(task=FeaturesTaskConfig()),
}


def preset(name: str) -> EnvConfig:
    """The base config of a registered id, e.g. ``preset("MFeat")``."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_for_id(env_id: str) -> EnvConfig:
    """The base config of a registered id, e.g. ``preset_for_id("dus_env/MFeatMix-v0")``."""
    name = env_id.split("/", 1)[-1]
    if not name.endswith("-v0"):
        raise KeyError(f"{env_id!r} is not a dus_env id (dus_env/<Preset>-v0)")
    return preset(name.removesuffix("-v0"))


TINY_OVERRIDES: dict[str, Any] = {  # Any: gymnasium.make keyword arguments of several types
    "base_batch_size": 8,
    "min_quantity": 2,
    "max_quantity": 14,
    "iterations_per_step": 2,
    "decision_steps": 4,
    "learner": {"hidden_sizes": (16,), "embedding_dim": 8},
}
"""Overrides that make any preset cheap (tests, smoke runs): tiny model, short episodes."""

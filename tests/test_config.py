"""Config validation and how gymnasium.make keyword overrides reach the right config."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest

import dus_env
from dus_env import ConfigError, EnvConfig, LearnerConfig, MFeatTaskConfig, preset, resolve_config


def test_overrides_route_to_env_task_and_learner_fields() -> None:
    config = resolve_config(preset("Synthetic"), {"decision_steps": 7, "n_train": 300, "lr": 3e-4, "learner": {"kind": "alternating"}})
    assert config.decision_steps == 7
    assert config.task.n_train == 300 and config.task.signal_strengths == preset("Synthetic").task.signal_strengths
    assert config.learner.lr == 3e-4 and config.learner.kind == "alternating" and config.learner.shared_head


def test_task_kind_switch_starts_from_that_kinds_defaults() -> None:
    config = resolve_config(preset("Synthetic"), {"task": {"kind": "mfeat", "views": ["pix", "mor"]}})
    assert isinstance(config.task, MFeatTaskConfig) and config.task.views == ("pix", "mor")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"decision_step": 3}, "unknown option 'decision_step'"),
        ({"budget": "elastic"}, "EnvConfig.budget='elastic'.*'fixed', 'free'"),
        ({"min_quantity": 0}, "EnvConfig.min_quantity=0"),
        ({"max_quantity": 20}, r"EnvConfig.max_quantity=20.*\[32"),
        ({"max_quantity": 5000}, "n_train=1000"),
        ({"iterations_per_step": 0}, "iterations_per_step"),
        ({"reward_scale": -1.0}, "reward_scale"),
        ({"lr": float("nan")}, "LearnerConfig.lr"),
        ({"kind": "early-fusion"}, "LearnerConfig.kind"),
        ({"learner": 3}, "learner=3 is invalid"),
        ({"learner": {"dropout": 0.1}}, r"unknown field\(s\) \['dropout'\] for LearnerConfig"),
        ({"hidden_sizes": "64"}, "LearnerConfig.hidden_sizes='64'"),
        ({"signal_strengths": 0.5}, "signal_strengths.*expected 2 values"),
    ],
)
def test_bad_values_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        gym.make("dus_env/Synthetic-v0", **overrides)


def test_numpy_integers_are_accepted_and_split_fractions_checked_together() -> None:
    import numpy as np

    assert gym.make("dus_env/Synthetic-v0", data_seed=np.int64(3)).unwrapped.config.task.data_seed == 3
    with pytest.raises(ConfigError, match=r"val_fraction \+ test_fraction must stay below 0.9"):
        gym.make("dus_env/MFeat-v0", val_fraction=0.5, test_fraction=0.5)


def test_features_id_without_path_says_what_to_pass() -> None:
    with pytest.raises(ConfigError, match="path='my_features.npz'"):
        gym.make("dus_env/Features-v0")


def test_config_round_trips_through_json() -> None:
    config = resolve_config(preset("Synthetic3"), {"lr": 0.01, "hidden_sizes": [32, 16]})
    rebuilt = EnvConfig(**json.loads(json.dumps(config.to_dict())))
    assert rebuilt == config


def test_learner_config_accepts_int_hidden_size() -> None:
    assert LearnerConfig(hidden_sizes=48).hidden_sizes == (48,)


def test_env_accepts_a_full_config_object() -> None:
    env = dus_env.DUSEnv(
        EnvConfig(task=MFeatTaskConfig(views=("kar",)), **{k: v for k, v in dus_env.TINY_OVERRIDES.items() if k != "learner"})
    )
    observation, _ = env.reset(seed=0)
    assert env.n_modalities == 1 and observation.shape == (env.layout.size,)


def test_an_unknown_option_is_a_type_error_as_python_reports_unexpected_keywords() -> None:
    """Libraries that probe optional make() keywords (torchrl's GymEnv tries frameskip) catch TypeError;
    a wrong value stays a plain ConfigError (a ValueError)."""
    import gymnasium as gym

    from dus_env import UnknownOptionError

    with pytest.raises(TypeError, match="unexpected keyword argument 'frameskip'") as caught:
        gym.make("dus_env/Synthetic-v0", frameskip=4)
    assert isinstance(caught.value, UnknownOptionError) and isinstance(caught.value, ConfigError)
    with pytest.raises(TypeError, match="unknown field"):
        gym.make("dus_env/Synthetic-v0", task={"kind": "synthetic", "nope": 1})
    with pytest.raises(ConfigError) as bad_value:
        gym.make("dus_env/Synthetic-v0", decision_steps=0)
    assert not isinstance(bad_value.value, TypeError)

"""The policy shipped with the package: it loads, verifies, acts, and refuses what it cannot do."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import dus_env
from agents.errors import UsageError
from agents.specs import make_agent
from dus_env.policies import PRETRAINED, pretrained_path


def test_the_shipped_policy_is_installed_with_its_files() -> None:
    folder = pretrained_path()
    assert folder.name == PRETRAINED
    assert {p.name for p in folder.iterdir()} == {"metadata.json", "policy.onnx", "policy.pt2"}


def test_an_unknown_shipped_policy_names_the_available_ones() -> None:
    with pytest.raises(ValueError, match=rf"'nope' is not shipped.*{PRETRAINED}"):
        pretrained_path("nope")


def test_pretrained_sampler_needs_the_run_length_and_then_decides() -> None:
    with pytest.raises(ValueError, match="iterations_per_decision and total_decisions must be given"):
        dus_env.DUSSampler.pretrained(10)
    sampler = dus_env.DUSSampler.pretrained(10, iterations_per_decision=5, total_decisions=4, missing_validation="stale")
    quantities = sampler.quantities()
    assert quantities.shape == (2,) and quantities.sum() == 64 and (quantities >= 8).all()
    assert sampler.artifact is not None and sampler.artifact.env_config["task"]["kind"] == "mixture"


def test_pretrained_agent_acts_in_a_two_modality_env_and_refuses_three() -> None:
    env = gym.make("dus_env/SyntheticMix-v0", **dus_env.TINY_OVERRIDES)
    agent = make_agent("pretrained", env)
    observation, _ = env.reset(seed=3)
    action = agent.act(observation)
    assert agent.name == "pretrained" and action.shape == (2,) and np.all(np.abs(action) <= 1)
    with pytest.raises(UsageError, match="pretrained"):
        make_agent("pretrained", gym.make("dus_env/Synthetic3-v0", **dus_env.TINY_OVERRIDES))

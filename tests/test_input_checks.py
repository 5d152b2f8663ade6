"""Bad input is a clear error naming the argument: config values, actions, sampler inputs.

Each case was a silent acceptance or a traceback from inside numpy or torch before (issue 9's sweep).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import dus_env
from dus_env import ConfigError, DUSSampler, EnvConfig, FeaturesTaskConfig, MFeatTaskConfig, SyntheticTaskConfig


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: SyntheticTaskConfig(signal_strengths=(1e308, 1e308)), "signal_strengths"),
        (lambda: SyntheticTaskConfig(signal_strengths=((0.5, 1e7), 0.3)), "signal_strengths"),
        (lambda: EnvConfig(reward_scale=1e308), "reward_scale"),
        (lambda: EnvConfig(gap_penalty=1e300), "gap_penalty"),
        (lambda: EnvConfig(divergence_penalty=float("inf")), "divergence_penalty"),
        (lambda: FeaturesTaskConfig(path="features.npy"), "path"),
        (lambda: FeaturesTaskConfig(path=123), "path"),
        (lambda: FeaturesTaskConfig(path="f.npz", standardize="no"), "standardize"),
        (lambda: MFeatTaskConfig(standardize="no"), "standardize"),
        (lambda: MFeatTaskConfig(standardize=1), "standardize"),
        (lambda: EnvConfig(shuffle_modalities="yes"), "shuffle_modalities"),
        (lambda: EnvConfig(max_task_bytes=0), "max_task_bytes"),
    ],
)
def test_bad_config_values_name_the_field(make: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make()


def test_a_task_too_large_for_memory_is_refused_before_allocating() -> None:
    with pytest.raises(ConfigError, match=r"max_task_bytes=4294967296 is invalid: the task needs about 47\.7 GiB per env"):
        EnvConfig(task=SyntheticTaskConfig(n_train=10**8))
    # The limit is the user's to raise, and a small task stays far below the default.
    assert EnvConfig(task=SyntheticTaskConfig(n_train=10**5), max_task_bytes=1 << 34).max_task_bytes == 1 << 34
    with pytest.raises(ConfigError, match="max_task_bytes"):
        gym.make("dus_env/Synthetic-v0", n_train=10**8, max_quantity=56)


@pytest.fixture(params=["single", "vector"])
def stepper(request: pytest.FixtureRequest) -> Any:
    """A function taking one action for one env (the vector env gets it as a batch of one)."""
    if request.param == "single":
        env = gym.make("dus_env/Synthetic-v0", **dus_env.TINY_OVERRIDES)
        env.reset(seed=0)
        return lambda action: env.step(action), "action", (2,)
    venv = gym.make_vec("dus_env/Synthetic-v0", num_envs=1, vectorization_mode="vector_entry_point", **dus_env.TINY_OVERRIDES)
    venv.reset(seed=0)
    return lambda action: venv.step(np.asarray(action)[None] if np.ndim(action) == 1 else action), "actions", (1, 2)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.zeros((1, 2, 1), np.float32), "has shape"),
        (np.zeros(3, np.float32), "has shape"),
        (np.array([True, False]), "must hold real numbers"),
        (np.array([1j, 0j]), "must hold real numbers"),
        (np.array(["a", "b"]), "must hold real numbers"),
    ],
)
def test_actions_of_another_shape_or_dtype_are_refused(stepper: Any, action: Any, message: str) -> None:
    step, name, shape = stepper
    with pytest.raises(ValueError, match=f"{name} (has shape|must hold real numbers)") as error:
        step(action)
    assert message in str(error.value) and str(shape) in str(error.value)


def test_a_single_env_refuses_a_batched_action() -> None:
    env = gym.make("dus_env/Synthetic-v0", **dus_env.TINY_OVERRIDES)
    env.reset(seed=0)
    for shape in [(1, 2), (2, 1)]:
        with pytest.raises(ValueError, match=r"action has shape \(\d, \d\), expected \(2,\)"):
            env.step(np.zeros(shape, np.float32))
    env.step(np.zeros(2, np.float32))  # the right shape still works, ints too
    env.step(np.array([1, -1]))


def sampler() -> DUSSampler:
    return DUSSampler.heuristic(10, n_modalities=2, base_batch_size=32, iterations_per_decision=10, total_decisions=5)


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        ([torch.zeros(4, 10)] * 2, [torch.zeros(4)] * 2, "labels for modality 0 must be an integer torch.Tensor"),
        ([torch.zeros(4, 10)] * 2, [torch.zeros(4, dtype=torch.bool)] * 2, "labels for modality 0 must be an integer torch.Tensor"),
        ([torch.zeros(4, 10)] * 2, torch.zeros(4, 10, dtype=torch.long), r"labels of shape \(4, 10\) are invalid: expected class ids"),
        ([torch.zeros(4, 10)] * 2, [np.zeros(4, dtype=np.int64)] * 2, "torch.as_tensor"),
        ([torch.zeros(4, 10)] * 2, [[0, 1, 2, 3]] * 2, "got a list"),
        ([torch.zeros(4, 10)] * 2, [torch.zeros(4, dtype=torch.long)] * 3, "labels: 3 tensors given"),
        (torch.zeros(2, 4, 10), torch.zeros(4, dtype=torch.long), "logits: one tensor given, expected a list of 2"),
        ([torch.zeros(4, 10, dtype=torch.long)] * 2, torch.zeros(4, dtype=torch.long), r"logits\[0\] must be a float torch.Tensor"),
    ],
)
def test_sampler_inputs_of_the_wrong_kind_are_clear_errors(logits: Any, labels: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sampler().observe(logits, labels)


def test_sampler_validation_accuracies_must_be_fractions() -> None:
    with pytest.raises(ValueError, match=r"modality_accuracies\[0\]=5.0 is invalid: expected a balanced accuracy in \[0, 1\]"):
        sampler().set_validation([5.0, -1.0], 3.0)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (np.full((40, 3), 1e300), "values too large for float32"),
        (np.zeros((40, 0)), r"has no features \(shape \(40, 0\)\)"),
    ],
)
def test_feature_files_that_cannot_train_in_float32_are_refused(tmp_path: Any, features: np.ndarray, message: str) -> None:
    path = tmp_path / "f.npz"
    labels = np.arange(40) % 2
    np.savez(path, labels=labels, modality_a=features, modality_b=np.random.default_rng(0).normal(size=(40, 2)))
    with pytest.raises(dus_env.FeatureFileError, match=message):
        gym.make("dus_env/Features-v0", path=str(path)).reset(seed=0)

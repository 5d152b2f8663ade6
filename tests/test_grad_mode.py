"""The env trains its model whatever the caller's autograd mode, and ARS (which steps envs in ``no_grad``) exports.

sb3-contrib's ARS evaluates its candidate policies inside ``torch.no_grad()``; a DUS step trains a
model by backpropagation, so the env runs its reset and step in autograd's normal mode
(``dus_env.core``). These tests hold it to the promise: same episode bit for bit in every mode,
the caller's mode back after every call, and ARS trains and exports to an artifact that acts like
``predict``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import ARS

import dus_env
from agents.export import SB3DeterministicActor, export_sb3_policy
from dus_env.policy_artifact import PolicyArtifact

TINY = dict(dus_env.TINY_OVERRIDES)
SYNTHETIC = "dus_env/Synthetic-v0"
T = int(TINY["decision_steps"])

#: The caller's modes: the env must give the same episode in each and hand the mode back unchanged.
MODES: dict[str, Callable[[], AbstractContextManager[Any]]] = {
    "grad": nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def caller_mode() -> tuple[bool, bool]:
    return torch.is_grad_enabled(), torch.is_inference_mode_enabled()


def flat(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` pairs of nested dicts, tuples and object arrays (vector infos), compared leaf by leaf."""
    if isinstance(value, dict):
        for key in sorted(value):
            yield from flat(value[key], f"{prefix}/{key}")
    elif isinstance(value, tuple) or (isinstance(value, np.ndarray) and value.dtype == object):
        for index, item in enumerate(value):
            yield from flat(item, f"{prefix}/{index}")
    else:
        yield prefix, value


def assert_same(a: list[Any], b: list[Any]) -> None:
    """Bit-for-bit equality of two recorded episodes (arrays, numbers and nested info dicts)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        fx, fy = list(flat(x)), list(flat(y))
        assert [k for k, _ in fx] == [k for k, _ in fy]
        for (key, u), (_, v) in zip(fx, fy):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v), err_msg=key, strict=True)


def actions(n_envs: int | None) -> list[np.ndarray]:
    """A fixed action sequence (one more step than an episode, so the vector env autoresets)."""
    rng = np.random.default_rng(7)
    shape = (2,) if n_envs is None else (n_envs, 2)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(T + 2)]


def play(env: gym.Env | gym.vector.VectorEnv, mode: str, n_envs: int | None) -> list[Any]:
    """One seeded episode (and an autoreset for the vector env) with every call under ``mode``."""
    record: list[Any] = []
    with MODES[mode]():
        expected = caller_mode()
        observation, info = env.reset(seed=3)
        assert caller_mode() == expected
        record.append({"observation": observation, "info": info})
        for action in actions(n_envs):
            observation, reward, terminated, truncated, info = env.step(action)
            assert caller_mode() == expected, f"step changed the caller's autograd mode under {mode}"
            record.append({"observation": observation, "reward": reward, "end": (terminated, truncated), "info": info})
            if n_envs is None and terminated:
                break
    return record


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_single_env_episode_is_the_same_in_every_grad_mode(mode: str) -> None:
    reference = play(gym.make(SYNTHETIC, **TINY), "grad", None)
    assert_same(play(gym.make(SYNTHETIC, **TINY), mode, None), reference)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_vector_env_episode_is_the_same_in_every_grad_mode(mode: str) -> None:
    reference = play(gym.make_vec(SYNTHETIC, num_envs=2, **TINY), "grad", 2)
    assert_same(play(gym.make_vec(SYNTHETIC, num_envs=2, **TINY), mode, 2), reference)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_an_env_reset_under_a_mode_trains_outside_it(mode: str) -> None:
    """The first reset allocates the model and the data: under ``inference_mode`` they must still be normal tensors."""
    env = gym.make(SYNTHETIC, **TINY)
    with MODES[mode]():
        env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    core = env.unwrapped.core
    assert not any(t.is_inference() for t in (core.model.flat, core.model.grad, *core.train.features, core.train.labels))
    assert caller_mode() == (True, False)


@pytest.mark.parametrize("policy", ["MlpPolicy", "LinearPolicy"])
def test_ars_trains_on_a_dus_env_and_its_artifact_acts_like_predict(policy: str, tmp_path: Path) -> None:
    """ARS steps its candidates under ``no_grad``; the artifact follows ``predict`` (``tanh`` or clipping)."""
    env = gym.make(SYNTHETIC, **TINY)
    model = ARS(policy, env, n_delta=1, zero_policy=False, seed=0, device="cpu")
    model.learn(2 * T)  # one update: two perturbed candidates, one episode each
    assert model.num_timesteps == 2 * T
    if policy == "LinearPolicy":  # large weights, so that predict's clipping to [-1, 1] is exercised
        with torch.no_grad():
            for parameter in model.policy.parameters():
                parameter.mul_(50.0)
    observations = np.stack([env.reset(seed=s)[0] for s in range(4)] + [env.step(np.zeros(2, np.float32))[0]])
    expected, _ = model.predict(observations, deterministic=True)
    assert np.ptp(expected) > 0.0  # a policy that says something
    if policy == "LinearPolicy":
        assert np.abs(expected).max() == 1.0
    path = export_sb3_policy(model, None, env.unwrapped.config, tmp_path / "ars")
    for backend in ("onnx", "torch"):
        np.testing.assert_allclose(PolicyArtifact(path, backend).act(observations), expected, atol=1e-5)


def test_an_unknown_policy_is_refused_with_the_kinds_the_exporter_takes() -> None:
    with pytest.raises(TypeError, match="an ARS policy"):
        SB3DeterministicActor(torch.nn.Linear(2, 2))

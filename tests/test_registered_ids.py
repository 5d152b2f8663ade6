"""Every id dus_env registers, checked the same way, as Minigrid and Gymnasium test theirs.

The ids come from Gymnasium's registry (the ``dus_env`` namespace), not from a list kept here, so a
new preset is checked without anyone remembering to: Gymnasium's env checker, seeding, pickling,
``gymnasium.make_vec`` in both vectorisation modes, the Python convention for an unknown keyword,
torchrl's ``GymEnv``, and ``DUSSampler`` running an exported policy exactly as the env does.

Every env is made with :data:`dus_env.TINY_OVERRIDES` (a tiny model, 4 decisions of 2 iterations)
and, for the ids that need one, a small features file; what is checked does not depend on size.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import dus_env
from dus_env import TINY_OVERRIDES, ConfigError, DUSSampler, FeaturesTaskConfig
from dus_env.policy_artifact import PolicyArtifact, write_policy_artifact
from dus_env.registration import NAMESPACE

REGISTERED_IDS = sorted(env_id for env_id, spec in gym.registry.items() if spec.namespace == NAMESPACE)
#: A few steps past one tiny episode (4 decisions), so that episode ends are crossed too.
N_STEPS = int(TINY_OVERRIDES["decision_steps"]) + 2

Kwargs = Callable[[str], dict[str, Any]]


def test_the_registry_holds_every_preset() -> None:
    """The list the tests below run over is the registry's, and it is complete."""
    assert REGISTERED_IDS == sorted(dus_env.ENV_IDS)
    assert len(REGISTERED_IDS) == len(dus_env.PRESETS)


@pytest.fixture
def tiny(features_file: Path) -> Kwargs:
    """``tiny(env_id)``: the ``gym.make`` keywords of a cheap env of that id."""

    def kwargs(env_id: str) -> dict[str, Any]:
        values: dict[str, Any] = dict(TINY_OVERRIDES)
        preset_name = gym.spec(env_id).kwargs["preset_name"]
        if isinstance(dus_env.preset(preset_name).task, FeaturesTaskConfig):  # the one preset that needs a file
            values["path"] = str(features_file)
        return values

    return kwargs


def actions_for(space: gym.spaces.Box, count: int, seed: int = 0) -> list[np.ndarray]:
    """Fixed, varied actions inside ``space`` (from a local generator)."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(space.low, space.high).astype(space.dtype) for _ in range(count)]


def play(env: gym.Env, actions: list[np.ndarray], seed: int | None) -> list[tuple[Any, ...]]:
    """Everything an episode shows (observations, rewards, flags, infos), resetting at an episode's end."""
    steps: list[tuple[Any, ...]] = [env.reset(seed=seed)] if seed is not None else []
    for action in actions:
        observation, reward, terminated, truncated, info = env.step(action)
        steps.append((observation, reward, terminated, truncated, info))
        if terminated or truncated:
            steps.append(env.reset())
    return steps


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Bit-for-bit equality of nested observations, rewards and infos."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{index}]")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"{where}: {a} != {b}"
    elif isinstance(a, float) and np.isnan(a):  # an info field that does not apply to this instance
        assert isinstance(b, float) and np.isnan(b), f"{where}: nan != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("env_id", REGISTERED_IDS)
def test_gymnasium_env_checker(env_id: str, tiny: Kwargs) -> None:
    check_env(gym.make(env_id, **tiny(env_id)).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", REGISTERED_IDS)
def test_same_seed_same_episode_and_other_seeds_differ(env_id: str, tiny: Kwargs) -> None:
    env = gym.make(env_id, **tiny(env_id))
    actions = actions_for(env.action_space, N_STEPS)
    first = play(env, actions, seed=5)
    assert_same(first, play(gym.make(env_id, **tiny(env_id)), actions, seed=5))
    assert_same(first, play(env, actions, seed=5))  # the same object reseeded
    other = play(gym.make(env_id, **tiny(env_id)), actions, seed=6)
    # every id draws its model initialisation (and most their task) from the seed
    assert not np.array_equal(np.stack([s[0] for s in first]), np.stack([s[0] for s in other]))


@pytest.mark.parametrize("env_id", REGISTERED_IDS)
def test_a_pickled_env_continues_identically(env_id: str, tiny: Kwargs) -> None:
    env = gym.make(env_id, **tiny(env_id))
    actions = actions_for(env.action_space, N_STEPS, seed=1)
    env.reset(seed=3)
    env.step(actions[0])
    clone = pickle.loads(pickle.dumps(env))
    assert_same(play(env, actions[1:], seed=None), play(clone, actions[1:], seed=None))


@pytest.mark.parametrize("env_id", REGISTERED_IDS)
def test_an_unknown_option_is_a_type_error_and_a_bad_value_is_not(env_id: str, tiny: Kwargs) -> None:
    """The Python convention libraries rely on: torchrl's ``GymEnv`` probes ``frameskip``."""
    with pytest.raises(TypeError, match="frameskip"):
        gym.make(env_id, frameskip=4, **tiny(env_id))
    with pytest.raises(ConfigError, match="decision_steps") as error:
        gym.make(env_id, **{**tiny(env_id), "decision_steps": 0})
    assert not isinstance(error.value, TypeError)


@pytest.mark.parametrize("env_id", REGISTERED_IDS)
def test_make_vec_sync_and_native_agree(env_id: str, tiny: Kwargs) -> None:
    """``make_vec`` in both modes: Gymnasium's ``SyncVectorEnv`` of ``DUSEnv`` and the registered
    ``vector_entry_point`` (the native ``DUSVectorEnv``) play the same episodes, autoreset included."""
    assert gym.spec(env_id).vector_entry_point == "dus_env.vector_env:DUSVectorEnv"
    envs = {mode: gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, **tiny(env_id)) for mode in ("sync", "vector_entry_point")}
    assert isinstance(envs["sync"], gym.vector.SyncVectorEnv) and isinstance(envs["vector_entry_point"], dus_env.DUSVectorEnv)
    assert envs["sync"].single_observation_space == envs["vector_entry_point"].single_observation_space
    actions = [
        np.stack(pair)
        for pair in zip(
            actions_for(envs["sync"].single_action_space, N_STEPS, 2), actions_for(envs["sync"].single_action_space, N_STEPS, 3)
        )
    ]
    results = {}
    for mode, vec in envs.items():
        observations, _ = vec.reset(seed=11)
        steps = [observations]
        for action in actions:
            observations, rewards, terminated, truncated, _ = vec.step(action)
            assert vec.observation_space.contains(observations), f"{mode}: observation outside the space"
            steps += [observations, rewards, terminated, truncated]
        results[mode] = steps
        vec.close()
    for sync, native in zip(results["sync"], results["vector_entry_point"]):
        # the same computation batched differently: float noise only
        np.testing.assert_allclose(native, sync, atol=1e-5)


@pytest.mark.parametrize("env_id", REGISTERED_IDS)
def test_torchrl_gym_env_makes_checks_and_rolls_out(env_id: str, tiny: Kwargs) -> None:
    from torchrl.envs import GymEnv
    from torchrl.envs.utils import check_env_specs

    env = GymEnv(env_id, **tiny(env_id))
    check_env_specs(env, seed=0)
    rollout = env.rollout(N_STEPS, break_when_any_done=False)
    n_modalities = gym.make(env_id, **tiny(env_id)).unwrapped.n_modalities
    assert rollout["action"].shape == (N_STEPS, n_modalities)
    assert rollout["next", "observation"].shape == (N_STEPS, dus_env.ObservationLayout(n_modalities).size)
    assert rollout["next", "done"].sum() >= 1  # an episode ended and the rollout went on after a reset
    env.close()


def test_torchrl_gym_env_with_the_readme_call() -> None:
    """``GymEnv("dus_env/Synthetic-v0")`` as the README writes it: no keywords, default size."""
    from torchrl.envs import GymEnv

    env = GymEnv("dus_env/Synthetic-v0")
    assert env.rollout(1)["next", "observation"].shape == (1, 15)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", REGISTERED_IDS)
def test_sampler_with_an_exported_policy_decides_as_the_env(env_id: str, tiny: Kwargs, tmp_path: Path) -> None:
    """An exported (untrained) policy run by ``DUSSampler`` in a user's loop sees the env's observations
    and returns the env's quantities, when the sampler is fed the same training iterations.

    The env plays the policy through the ``torch`` backend and the sampler runs ``policy.onnx``, so the
    two networks of one artifact are compared on this id's observations too.
    """
    env = gym.make(env_id, **tiny(env_id))
    core = env.unwrapped
    config = core.config
    generator = torch.Generator().manual_seed(0)
    actor = torch.nn.Sequential(torch.nn.Linear(core.layout.size, core.n_modalities), torch.nn.Tanh())
    with torch.no_grad():
        for parameter in actor.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    path = write_policy_artifact(
        actor, tmp_path / "artifact", layout=core.layout, mapping=core.mapping, env_config=config.to_dict(), normalization=None
    )
    policy = PolicyArtifact(path, "torch")
    observation, info = env.reset(seed=2)
    sampler = DUSSampler.from_artifact(
        path, core.core.n_classes, iterations_per_decision=config.iterations_per_step, total_decisions=config.decision_steps
    )
    records = []
    run = core.core.learner.run

    def recording(quantities: np.ndarray, repeats: int) -> Any:
        records.append(run(quantities, repeats))
        return records[-1]

    core.core.learner.run = recording
    terminated, decisions = False, 0
    while not terminated:
        sampler.set_validation(info["val_modality_accuracies"], info["val_fused_accuracy"])
        quantities = sampler.quantities()
        np.testing.assert_allclose(sampler.last_observation, observation, atol=1e-6)
        action = policy.act(observation)
        assert quantities.tolist() == core.mapping.quantities(action).tolist()
        observation, _, terminated, _, info = env.step(action)
        assert info["quantities"] == quantities.tolist()
        record = records.pop()
        for loss, scores in zip(record.losses[:, 0], record.scores[:, 0]):  # replayed one iteration at a time
            sampler.observe_scores(scores, loss)
        decisions += 1
    assert decisions == config.decision_steps and sampler.decision_pending

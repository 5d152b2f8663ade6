"""Exported policies and DUSSampler: same actions as training, same observations as the env."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

import dus_env
from agents.export import export_sb3_policy
from agents.exported import ExportedPolicyAgent
from agents.heuristic import HeuristicAgent
from agents.rollout import run_episode
from dus_env import LayoutVersionError, QuantityMapping, policy_artifact
from dus_env.policy_artifact import ArtifactError, PolicyArtifact
from dus_env.sampler import DUSSampler

TINY = dict(dus_env.TINY_OVERRIDES)


def recorded_observations(n_episodes: int = 3) -> np.ndarray:
    """Real observations from tiny episodes under random actions."""
    env = gym.make("dus_env/Synthetic-v0", **TINY)
    rng = np.random.default_rng(0)
    observations = []
    for seed in range(n_episodes):
        observation, _ = env.reset(seed=seed)
        observations.append(observation)
        terminated = False
        while not terminated:
            observation, _, terminated, _, _ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
            observations.append(observation)
    return np.stack(observations)


@pytest.fixture(scope="module")
def ppo_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[PPO, VecNormalize, Path]:
    vec = VecNormalize(make_vec_env("dus_env/Synthetic-v0", n_envs=1, seed=0, env_kwargs=TINY), norm_reward=False)
    model = PPO("MlpPolicy", vec, n_steps=16, batch_size=16, n_epochs=2, seed=0, device="cpu")
    model.learn(32)
    vec.training = False
    config = vec.get_attr("config")[0]
    path = export_sb3_policy(model, vec, config, tmp_path_factory.mktemp("export") / "exported", {"run": "test"})
    return model, vec, path


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_exported_actions_equal_sb3_predict(ppo_artifact, backend: str) -> None:
    model, vec, path = ppo_artifact
    observations = recorded_observations()
    expected, _ = model.predict(vec.normalize_obs(observations), deterministic=True)
    actions = PolicyArtifact(path, backend).act(observations)
    assert actions.shape == expected.shape
    np.testing.assert_allclose(actions, expected, atol=1e-5)
    single = PolicyArtifact(path, backend).act(observations[3])
    np.testing.assert_allclose(single, expected[3], atol=1e-5)


def test_exported_a2c_without_normalization(tmp_path: Path) -> None:
    env = gym.make("dus_env/Synthetic-v0", **TINY)
    model = A2C("MlpPolicy", env, n_steps=4, seed=1, device="cpu")
    model.learn(8)
    path = export_sb3_policy(model, None, env.unwrapped.config, tmp_path / "a2c")
    observations = recorded_observations(1)
    np.testing.assert_allclose(PolicyArtifact(path).act(observations), model.predict(observations, deterministic=True)[0], atol=1e-5)
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["observation_normalization"] is None and metadata["source"]["algorithm"] == "A2C"
    assert metadata["observation_layout"]["version"] == dus_env.LAYOUT_VERSION
    assert metadata["env_config"]["decision_steps"] == TINY["decision_steps"]


def test_export_replaces_atomically(ppo_artifact, tmp_path: Path) -> None:
    model, vec, _ = ppo_artifact
    target = tmp_path / "policy"
    export_sb3_policy(model, vec, vec.get_attr("config")[0], target)
    export_sb3_policy(model, vec, vec.get_attr("config")[0], target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]  # no staging or retired folders left
    assert sorted(p.name for p in target.iterdir()) == ["metadata.json", "policy.onnx", "policy.pt2"]


def copy_artifact(source: Path, target: Path) -> Path:
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def test_both_networks_take_any_batch_size_and_agree(ppo_artifact) -> None:
    """The batch dimension is dynamic in both files (torch.export.Dim), as the sampler runs one row
    and evaluation many."""
    observations = recorded_observations(2)
    onnx, torch_backend = PolicyArtifact(ppo_artifact[2], "onnx"), PolicyArtifact(ppo_artifact[2], "torch")
    for size in (1, 2, 3, len(observations)):
        np.testing.assert_allclose(torch_backend.act(observations[:size]), onnx.act(observations[:size]), atol=1e-6)


def test_the_torch_backend_loads_without_unpickling(ppo_artifact, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("the artifact was unpickled")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (torch._C, "_pickle_load_obj")):
        monkeypatch.setattr(module, name, refuse)
    assert PolicyArtifact(ppo_artifact[2], "torch").act(recorded_observations(1)).shape[1] == 2


def pt2_with_entry(source: Path, target: Path, edit) -> Path:
    """A copy of the artifact whose policy.pt2 archive is rewritten by ``edit(name, data) -> data``."""
    import zipfile

    path = copy_artifact(source, target)
    archive = path / "policy.pt2"
    with zipfile.ZipFile(archive) as original:
        entries = [(info.filename, original.read(info.filename)) for info in original.infolist()]
    with zipfile.ZipFile(archive, "w") as rewritten:
        for name, data in entries:
            rewritten.writestr(name, edit(name, data))
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["sha256"]["policy.pt2"] = policy_artifact.sha256_file(archive)  # as a forger would
    (path / "metadata.json").write_text(json.dumps(metadata))
    return path


@pytest.mark.parametrize(
    ("edit", "entry"),
    [
        (lambda name, data: b"pickled inputs" if "sample_inputs" in name else data, "data/sample_inputs/model.pt"),
        (
            lambda name, data: (
                data.replace(b'"use_pickle": false', b'"use_pickle": true', 1) if name.endswith("weights_config.json") else data
            ),
            "model_weights_config.json:actor",
        ),
    ],
)
def test_a_pt2_archive_that_would_unpickle_is_refused_unread(ppo_artifact, tmp_path: Path, edit, entry: str) -> None:
    path = pt2_with_entry(ppo_artifact[2], tmp_path / "forged", edit)
    with pytest.raises(ArtifactError, match=f"policy.pt2 holds entries that torch.export.load would unpickle \\(.*{entry}"):
        PolicyArtifact(path, "torch")


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            1,
            r"format version 1 \(policy.onnx \+ policy.pt \(TorchScript\)\); this dus_env reads version 2 \(policy.onnx \+ policy.pt2 "
            r"\(torch.export\)\): export it again from its training run with `python train_agent.py --export-only --run-dir RUN`",
        ),
        (3, "format version 3 \\(unknown\\).*written by a newer dus_env; upgrade dus_env"),
        (None, "format version None \\(unknown\\).*--export-only --run-dir RUN"),
    ],
)
def test_another_artifact_format_version_names_both_and_the_fix(ppo_artifact, tmp_path: Path, version, expected: str) -> None:
    path = copy_artifact(ppo_artifact[2], tmp_path / "old")
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["format_version"] = version
    metadata["source"]["run_dir"] = "runs/ppo_Synthetic-v0_0"
    (path / "metadata.json").write_text(json.dumps(metadata))
    for backend in ("onnx", "torch"):
        with pytest.raises(ArtifactError, match=expected):
            PolicyArtifact(path, backend)
    if version == 1:
        with pytest.raises(ArtifactError, match="names its run: runs/ppo_Synthetic-v0_0"):
            DUSSampler.from_artifact(path, n_classes=10, iterations_per_decision=2, total_decisions=4)


def test_wrong_layout_version_is_refused(ppo_artifact, tmp_path: Path) -> None:
    path = copy_artifact(ppo_artifact[2], tmp_path / "old")
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["observation_layout"]["version"] = dus_env.LAYOUT_VERSION + 1
    (path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(LayoutVersionError, match="layout version 2.*re-export"):
        PolicyArtifact(path)
    with pytest.raises(LayoutVersionError):
        DUSSampler.from_artifact(path, n_classes=10, iterations_per_decision=10, total_decisions=20)


def test_corrupt_or_missing_artifact_files_are_named(ppo_artifact, tmp_path: Path) -> None:
    path = copy_artifact(ppo_artifact[2], tmp_path / "corrupt")
    data = bytearray((path / "policy.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "policy.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="policy.onnx is corrupt"):
        PolicyArtifact(path, "onnx")
    PolicyArtifact(path, "torch")  # the other backend's file is intact
    (path / "metadata.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="metadata.json is corrupt"):
        PolicyArtifact(path)
    with pytest.raises(ArtifactError, match="does not exist"):
        PolicyArtifact(tmp_path / "nothing")
    with pytest.raises(ArtifactError, match=r"backend='tflite' is invalid: expected one of \('onnx', 'torch'\)"):
        PolicyArtifact(ppo_artifact[2], "tflite")
    with pytest.raises(ArtifactError, match="TorchScript was replaced by torch.export.*use 'torch'"):
        PolicyArtifact(ppo_artifact[2], "torchscript")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: m["action_mapping"].pop("max_quantity"), "invalid action_mapping"),
        (lambda m: m["action_mapping"].update(n_modalities=3), "invalid action_mapping.*disagree"),
        (lambda m: m["observation_layout"].pop("n_modalities"), "observation_layout.n_modalities"),
        (lambda m: m["env_config"].pop("iterations_per_step"), "invalid env_config"),
        (lambda m: m["observation_normalization"].update(var=[1.0, 2.0]), "invalid observation_normalization.*two vectors of one length"),
        (
            lambda m: m["observation_normalization"].update(var=[1.0, 2.0], mean=[0.0, 0.0]),
            "invalid observation_normalization.*one per observation slot",
        ),
        (lambda m: m["observation_normalization"].pop("mean"), "invalid observation_normalization"),
    ],
)
def test_damaged_metadata_fields_are_named(ppo_artifact, tmp_path: Path, damage, message: str) -> None:
    path = copy_artifact(ppo_artifact[2], tmp_path / "damaged")
    metadata = json.loads((path / "metadata.json").read_text())
    damage(metadata)
    (path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match=message):
        PolicyArtifact(path)


def test_exported_agent_plays_the_env_and_checks_modalities(ppo_artifact) -> None:
    env = gym.make("dus_env/Synthetic-v0", **TINY)
    agent = ExportedPolicyAgent.load(ppo_artifact[2], env)
    result = run_episode(env, agent, seed=0)
    assert len(result.trace) == TINY["decision_steps"] + 1
    with pytest.raises(ArtifactError, match="2 modalities, the env has 3"):
        ExportedPolicyAgent.load(ppo_artifact[2], gym.make("dus_env/Synthetic3-v0", **TINY))


def test_sampler_reproduces_env_observations_for_the_same_history() -> None:
    env = gym.make("dus_env/Synthetic3-v0", **TINY)
    core = env.unwrapped
    agent = HeuristicAgent(core.layout, core.mapping, temperature=0.05)
    config = core.config
    sampler = DUSSampler.heuristic(
        config.task.n_classes,
        mapping=core.mapping,
        iterations_per_decision=config.iterations_per_step,
        total_decisions=config.decision_steps,
        temperature=0.05,
        missing_validation="error",
    )
    observation, info = env.reset(seed=11)
    records = []
    original = core.core.learner.run

    def recording(quantities, repeats):
        record = original(quantities, repeats)
        records.append(record)
        return record

    core.core.learner.run = recording
    terminated = False
    decisions = 0
    while not terminated:
        assert sampler.decision_pending
        sampler.set_validation(info["val_modality_accuracies"], info["val_fused_accuracy"])
        quantities = sampler.quantities()
        np.testing.assert_allclose(sampler.last_observation, observation, atol=1e-6)
        assert quantities.tolist() == core.mapping.quantities(agent.act(observation)).tolist()
        observation, _, terminated, _, info = env.step(agent.act(observation))
        assert info["quantities"] == quantities.tolist()
        record = records.pop()
        for loss, scores in zip(record.losses[:, 0], record.scores[:, 0]):  # replayed one iteration at a time
            sampler.observe_scores(scores, loss)
        decisions += 1
    assert decisions == config.decision_steps


def test_sampler_observe_scores_logits_like_the_learner() -> None:
    sampler = DUSSampler.heuristic(3, n_modalities=2, base_batch_size=8, iterations_per_decision=2, total_decisions=5)
    assert sampler.mapping == QuantityMapping(2, 8, 2, 14)  # the env's range 8..56 around B=32, scaled to B=8
    assert sampler.quantities().tolist() == [8, 8]  # no scores yet: uniform
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0])
    confident = torch.nn.functional.one_hot(labels, 3).float() * 5
    for _ in range(2):
        sampler.observe([confident, torch.randn(4, 3, generator=generator)], labels, loss=0.7)
    assert sampler.decision_pending
    quantities = sampler.quantities()
    assert quantities[1] > quantities[0]  # the lagging modality gets more samples
    assert sampler.monitor.cumulative[0] == pytest.approx(float(dus_env.modality_score(confident, labels)), abs=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.observe([torch.zeros(4, 3)], torch.zeros(4, dtype=torch.long)), "logits: 1 tensors given, expected a list of 2"),
        (lambda s: s.observe([torch.zeros(4, 3), torch.zeros(5, 3)], torch.zeros(4, dtype=torch.long)), "modality 1: logits of shape"),
        (lambda s: s.observe([torch.zeros(4, 3), torch.zeros(4, 7)], torch.zeros(4, dtype=torch.long)), "7 classes, expected 3"),
        (lambda s: s.observe([torch.zeros(4, 3)] * 2, torch.zeros(4, dtype=torch.long), loss=float("nan")), "diverged"),
        (lambda s: s.set_validation([0.5], 0.5), "modality_accuracies has 1 values .* expected 2"),
        (
            lambda s: s.observe(
                [torch.zeros(0, 3), torch.zeros(4, 3)], [torch.zeros(0, dtype=torch.long), torch.zeros(4, dtype=torch.long)]
            ),
            "modality 0: no samples",
        ),
        (lambda s: s.observe([torch.zeros(4, 3)] * 2, torch.tensor([0, 1, 2, 3])), r"labels out of range \[0, 3\]"),
        (lambda s: s.observe([torch.full((4, 3), float("nan"))] * 2, torch.zeros(4, dtype=torch.long)), "NaN or inf"),
    ],
)
def test_sampler_input_errors_name_the_problem(call, message: str) -> None:
    sampler = DUSSampler.heuristic(3, mapping=QuantityMapping(2, 8, 2, 14), iterations_per_decision=2, total_decisions=5)
    with pytest.raises(ValueError, match=message):
        call(sampler)


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_sampler_runs_without_gymnasium_or_sb3(ppo_artifact, backend: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        for name in ("gymnasium", "stable_baselines3", "sb3_contrib"):
            sys.modules[name] = None  # any import of them now fails
        import torch
        from dus_env.sampler import DUSSampler
        sampler = DUSSampler.from_artifact({str(ppo_artifact[2])!r}, n_classes=10, backend={backend!r},
                                           iterations_per_decision=2, total_decisions=3)
        labels = torch.arange(8) % 10
        for _ in range(5):
            if sampler.decision_pending:
                sampler.set_validation([0.1, 0.1], 0.1)
            q = sampler.quantities()
            first = labels[: q[0]] if q[0] <= 8 else torch.arange(int(q[0])) % 10
            sampler.observe([torch.randn(int(q[0]), 10), torch.randn(int(q[1]), 10)], [first, torch.arange(int(q[1])) % 10])
        print(sampler.quantities().sum())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(2 * TINY["base_batch_size"])


@pytest.mark.parametrize("algorithm", ["SAC", "TD3"])
def test_off_policy_exports_equal_predict(tmp_path: Path, algorithm: str) -> None:
    import stable_baselines3

    env = gym.make("dus_env/Synthetic-v0", **TINY)
    model = getattr(stable_baselines3, algorithm)("MlpPolicy", env, learning_starts=4, buffer_size=64, seed=0, device="cpu")
    model.learn(8)
    path = export_sb3_policy(model, None, env.unwrapped.config, tmp_path / algorithm)
    observations = recorded_observations(1)
    np.testing.assert_allclose(PolicyArtifact(path).act(observations), model.predict(observations, deterministic=True)[0], atol=1e-5)


def test_recurrent_policy_export_is_refused(tmp_path: Path) -> None:
    from sb3_contrib import RecurrentPPO

    env = gym.make("dus_env/Synthetic-v0", **TINY)
    model = RecurrentPPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=0, device="cpu")
    with pytest.raises(TypeError, match="cannot export a recurrent policy"):
        export_sb3_policy(model, None, env.unwrapped.config, tmp_path / "rppo")
    assert not (tmp_path / "rppo").exists()

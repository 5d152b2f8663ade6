"""Exported policies and DUSSampler: same actions as training, same observations as the env."""

from __future__ import annotations

import contextlib
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


def forged_pt2(source: Path, target: Path, entries: list[tuple[str, bytes]]) -> Path:
    """A copy of the artifact whose policy.pt2 holds ``entries``, its checksum updated as a forger would."""
    import zipfile

    path = copy_artifact(source, target)
    archive = path / "policy.pt2"
    with zipfile.ZipFile(archive, "w") as rewritten:
        for name, data in entries:
            rewritten.writestr(name, data)
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["sha256"]["policy.pt2"] = policy_artifact.sha256_file(archive)
    (path / "metadata.json").write_text(json.dumps(metadata))
    return path


def pt2_entries(source: Path) -> list[tuple[str, bytes]]:
    import zipfile

    with zipfile.ZipFile(source / "policy.pt2") as original:
        return [(info.filename, original.read(info.filename)) for info in original.infolist()]


def pt2_with_entry(source: Path, target: Path, edit, extra: tuple[tuple[str, bytes], ...] = ()) -> Path:
    """A copy of the artifact whose policy.pt2 entries are rewritten by ``edit(name, data) -> data``, plus ``extra``."""
    return forged_pt2(source, target, [(name, edit(name, data)) for name, data in pt2_entries(source)] + list(extra))


class _CreatesFile:
    """A pickle that creates ``marker`` when it is unpickled: proof that loading ran code from the archive."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def refuse_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("the artifact was unpickled")

    for module, name in ((torch, "load"), (torch.export, "load"), (pickle, "load"), (pickle, "loads"), (torch._C, "_pickle_load_obj")):
        monkeypatch.setattr(module, name, refuse)


def test_a_pt2_archive_in_torch_2_7_format_is_refused_unread(ppo_artifact, tmp_path: Path) -> None:
    """torch.export.load reads an archive without a root folder as torch 2.7's format, whose state
    dict it unpickles with weights_only=False when weights_only=True fails."""
    from torch._export.serde.schema import SCHEMA_VERSION

    marker = tmp_path / "payload_ran"
    model_json = dict(pt2_entries(ppo_artifact[2]))["policy/models/model.json"]
    path = forged_pt2(
        ppo_artifact[2],
        tmp_path / "forged",
        [
            ("version", ".".join(map(str, SCHEMA_VERSION)).encode()),
            ("serialized_exported_program.json", model_json),
            ("serialized_state_dict.pt", __import__("pickle").dumps(_CreatesFile(marker), protocol=2)),
            ("serialized_constants.pt", b""),
            ("serialized_example_inputs.pt", b""),
        ],
    )
    with pytest.raises(ArtifactError, match="policy.pt2: entry 'version' is not in a root folder"):
        PolicyArtifact(path, "torch")
    assert not marker.exists()


def test_a_pt2_archive_with_a_second_model_is_refused_unread(ppo_artifact, tmp_path: Path) -> None:
    """torch.export.load deserialises every models/*.json, and a model's legacy weight file is unpickled."""
    import pickle

    marker = tmp_path / "payload_ran"
    entries = dict(pt2_entries(ppo_artifact[2]))
    extra = (
        ("policy/models/evil.json", entries["policy/models/model.json"]),
        ("policy/data/sample_inputs/evil.pt", b""),
        ("policy/data/weights/evil.pt", pickle.dumps(_CreatesFile(marker), protocol=2)),
        ("policy/data/constants/evil_constants_config.json", entries["policy/data/constants/model_constants_config.json"]),
    )
    path = pt2_with_entry(ppo_artifact[2], tmp_path / "forged", lambda name, data: data, extra)
    with pytest.raises(ArtifactError, match="policy.pt2: entry 'policy/models/evil.json' is not one that dus_env writes"):
        PolicyArtifact(path, "torch")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("policy/extra/notes.txt", "entry 'policy/extra/notes.txt' is not one that dus_env writes"),
        ("policy/data/weights/model.pt", "entry 'policy/data/weights/model.pt' is not one that dus_env writes"),
        ("policy/data/constants/opaque_obj_0", "entry 'policy/data/constants/opaque_obj_0' is not one that dus_env writes"),
        ("policy/data/aotinductor/model/model.so", "entry 'policy/data/aotinductor/model/model.so' is not one"),
        ("policy/Models/model.json", "entry 'policy/Models/model.json' is not one that dus_env writes"),
        ("other/archive_format", "entry 'other/archive_format' is not in the archive's root folder 'policy/'"),
        ("policy/data/weights/weight_0", "entry 'policy/data/weights/weight_0' appears twice"),
    ],
)
def test_a_pt2_archive_with_an_unknown_entry_is_refused_unread(
    ppo_artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, expected: str
) -> None:
    with pytest.warns(UserWarning, match="Duplicate name") if "weight_0" in extra else contextlib.nullcontext():
        path = pt2_with_entry(ppo_artifact[2], tmp_path / "forged", lambda name, data: data, ((extra, b"\x80\x02N."),))
    refuse_unpickling(monkeypatch)
    with pytest.raises(ArtifactError, match=f"policy.pt2: {expected}"):
        PolicyArtifact(path, "torch")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda name, data: b"pickled inputs" if "sample_inputs" in name else data,
            "entry 'policy/data/sample_inputs/model.pt' holds 14 bytes of pickled sample inputs",
        ),
        (
            lambda name, data: (
                data.replace(b'"use_pickle": false', b'"use_pickle": true', 1) if name.endswith("weights_config.json") else data
            ),
            r"data/weights/model_weights_config.json lists entries that are not raw tensor files of the archive "
            r"\(.*model_weights_config.json:actor",
        ),
        (
            lambda name, data: data.replace(b'"weight_0"', b'"custom_obj_0"') if name.endswith("weights_config.json") else data,
            r"data/weights/model_weights_config.json lists entries that are not raw tensor files.*model_weights_config.json:actor",
        ),
        (
            lambda name, data: data.replace(b'"weight_0"', b'"weight_99"') if name.endswith("weights_config.json") else data,
            r"data/weights/model_weights_config.json lists entries that are not raw tensor files.*model_weights_config.json:actor",
        ),
        (lambda name, data: b"zip" if name.endswith("archive_format") else data, "archive_format is not 'pt2'"),
        (
            lambda name, data: b"[]" if name.endswith("constants_config.json") else data,
            "data/constants/model_constants_config.json is not a payload config",
        ),
    ],
)
def test_a_pt2_archive_that_would_unpickle_is_refused_unread(
    ppo_artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit, expected: str
) -> None:
    path = pt2_with_entry(ppo_artifact[2], tmp_path / "forged", edit)
    refuse_unpickling(monkeypatch)
    with pytest.raises(ArtifactError, match=f"policy.pt2: {expected}"):
        PolicyArtifact(path, "torch")


def test_a_pt2_archive_missing_an_entry_is_refused(ppo_artifact, tmp_path: Path) -> None:
    entries = [(name, data) for name, data in pt2_entries(ppo_artifact[2]) if not name.endswith("sample_inputs/model.pt")]
    path = forged_pt2(ppo_artifact[2], tmp_path / "forged", entries)
    with pytest.raises(ArtifactError, match=r"policy.pt2: the archive lacks \['data/sample_inputs/model.pt'\]"):
        PolicyArtifact(path, "torch")


def format_1_artifact(source: Path, target: Path, algorithm: str) -> Path:
    """The artifact as dus_env before 0.5 wrote it: the same policy.onnx beside a TorchScript policy.pt."""
    path = copy_artifact(source, target)
    (path / "policy.pt2").unlink()
    (path / "policy.pt").write_bytes(b"TorchScript archive")
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["format_version"] = 1
    metadata["source"] = {"algorithm": algorithm, "run_dir": "runs/old_run"}
    metadata["sha256"] = {"policy.onnx": metadata["sha256"]["policy.onnx"], "policy.pt": policy_artifact.sha256_file(path / "policy.pt")}
    (path / "metadata.json").write_text(json.dumps(metadata))
    return path


def test_a_format_1_artifact_runs_its_onnx_file(ppo_artifact, tmp_path: Path) -> None:
    path = format_1_artifact(ppo_artifact[2], tmp_path / "v1", "PPO")
    observations = recorded_observations(1)
    np.testing.assert_array_equal(PolicyArtifact(path).act(observations), PolicyArtifact(ppo_artifact[2]).act(observations))
    sampler = DUSSampler.from_artifact(path, n_classes=10, iterations_per_decision=2, total_decisions=4)
    assert sampler is not None
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["sha256"]["policy.onnx"] = "0" * 64  # the checks are those of format 2
    (path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match="policy.onnx is corrupt"):
        PolicyArtifact(path)


@pytest.mark.parametrize(
    ("algorithm", "expected", "absent"),
    [
        (
            "PPO",
            r"format version 1 \(policy.onnx \+ policy.pt \(TorchScript\)\), which backend='torch' does not run \('torch' runs "
            r"policy.pt2, format 2\): load it with backend='onnx', or export it again from its training run with "
            r"`python train_agent.py --export-only --run-dir RUN` \(this artifact names its run: runs/old_run\)",
            None,
        ),
        (
            "REINFORCE",
            r"load it with backend='onnx' \(it comes from a DUS-R run made before dus_env 0.5, which this dus_env cannot export again\)",
            "--export-only",
        ),
    ],
)
def test_a_format_1_artifact_is_refused_for_the_torch_backend(
    ppo_artifact, tmp_path: Path, algorithm: str, expected: str, absent: str | None
) -> None:
    path = format_1_artifact(ppo_artifact[2], tmp_path / "v1", algorithm)
    with pytest.raises(ArtifactError, match=expected) as refused:
        PolicyArtifact(path, "torch")
    assert absent is None or absent not in str(refused.value)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (3, "format version 3 \\(unknown\\).*written by a newer dus_env; upgrade dus_env"),
        (None, "format version None \\(unknown\\).*--export-only --run-dir RUN"),
        (True, "format version True \\(unknown\\).*--export-only --run-dir RUN"),
        ("2", "format version '2' \\(unknown\\).*--export-only --run-dir RUN"),
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
    if version is None:
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

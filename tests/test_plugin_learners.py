"""The plug-in methods inside the env: OGM-GE, MLA, MIE learners and the BSS row orders.

Their behaviour through :class:`~dus_env.core.TrainingCore` (learner internals driven directly, as
``test_learners.py`` does), whole episodes of ``DUSEnv`` (seeding, equivalences between configs),
``DUSVectorEnv`` against ``DUSEnv``, and the config checks of the new learner options.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.nn import functional as F

import dus_env
from dus_env import TINY_OVERRIDES, ConfigError, EnvConfig, LearnerConfig, SyntheticTaskConfig
from dus_env.batched.learners import AlternatingLearner, JointLearner, MIELearner, ModalityBatches, OGMGELearner, masked_mean
from dus_env.batched.row_order import AdaptiveOrder, CurriculumOrder, EpochOrder
from dus_env.core import TrainingCore
from dus_env.methods import flat_modification, ogm_ge_coefficients, projection_alpha, sam_perturbation, update_projector

TASK = SyntheticTaskConfig(n_train=200, n_val=50, n_test=50, feature_dim=6, n_classes=4)
TASK3 = SyntheticTaskConfig(
    n_modalities=3,
    signal_strengths=(1.0, 0.5, 0.3),
    corruption_rates=(0.3, 0.0, 0.0),
    n_train=200,
    n_val=50,
    n_test=50,
    feature_dim=6,
    n_classes=4,
)
T = int(TINY_OVERRIDES["decision_steps"])
ATOL = 1e-5

#: Every new learner kind and row order, and a few combinations of the two.
NEW_LEARNERS: list[dict[str, Any]] = [
    {"kind": "ogm_ge"},
    {"kind": "ogm_ge", "gaussian_enhancement": False, "modulation_start": 2, "modulation_end": 5},
    {"kind": "mla"},
    {"kind": "mie"},
    {"row_order": "bss_curriculum"},
    {"row_order": "bss_curriculum", "bss_grow_unit": "epochs", "bss_grow": 2.0, "bss_measure_every": 2},
    {"row_order": "bss_adaptive"},
    {"kind": "mie", "row_order": "bss_adaptive"},
    {"kind": "mla", "row_order": "bss_curriculum"},
    {"kind": "ogm_ge", "row_order": "bss_adaptive"},
]
LEARNER_IDS = ["-".join(f"{k}={v}" for k, v in learner.items()) for learner in NEW_LEARNERS]
ENV_IDS = ["dus_env/Synthetic-v0", "dus_env/Synthetic3-v0"]


def make_core(
    n_envs: int = 1, seeds: list[int] | None = None, task: SyntheticTaskConfig = TASK, max_quantity: int = 31, **learner: Any
) -> TrainingCore:
    """A reset core with a tiny model; ``learner`` holds the ``LearnerConfig`` fields to set."""
    config = EnvConfig(
        task=task,
        learner=LearnerConfig(**{"hidden_sizes": (8,), "embedding_dim": 4, **learner}),
        base_batch_size=16,
        min_quantity=1,
        max_quantity=max_quantity,
        iterations_per_step=2,
        decision_steps=8,
    )
    core = TrainingCore(config, n_envs)
    seeds = seeds if seeds is not None else list(range(n_envs))
    core.reset(np.arange(n_envs), [(100 + s, 200 + s) for s in seeds])
    return core


def tiny(**learner: Any) -> dict[str, Any]:
    """``gym.make`` keyword arguments: the tiny overrides with learner fields merged in."""
    return {**TINY_OVERRIDES, "learner": {**TINY_OVERRIDES["learner"], **learner}}


def fixed_actions(num_envs: int, n_modalities: int, step: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + step)
    return rng.uniform(-0.9, 0.9, size=(num_envs, n_modalities)).astype(np.float32)


def episode(env_id: str, seed: int = 0, **kwargs: Any) -> list[tuple[Any, ...]]:
    """A whole tiny ``DUSEnv`` episode under fixed actions: the reset and every step's outputs."""
    env = gym.make(env_id, **kwargs)
    m = env.unwrapped.core.n_modalities
    observation, info = env.reset(seed=seed)
    outputs: list[tuple[Any, ...]] = [(observation, 0.0, False, info)]
    for step in range(T):
        observation, reward, terminated, _, info = env.step(fixed_actions(1, m, step)[0])
        outputs.append((observation, reward, terminated, info))
    assert outputs[-1][2]
    return outputs


def assert_same_episode(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> None:
    """Bit-identical observations, rewards and infos."""
    assert len(a) == len(b)
    for (obs_a, reward_a, term_a, info_a), (obs_b, reward_b, term_b, info_b) in zip(a, b):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert reward_a == reward_b and term_a == term_b
        assert info_a.keys() == info_b.keys()
        for key in info_a:
            np.testing.assert_array_equal(np.asarray(info_a[key]), np.asarray(info_b[key]), err_msg=key)


def same_episode(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    try:
        assert_same_episode(a, b)
    except AssertionError:
        return False
    return True


class TakeRecorder:
    """Wraps ``learner.streams.take``: the rows env ``env`` drew from every stream, in order."""

    def __init__(self, learner: Any, env: int = 0) -> None:
        self.rows: dict[int, list[int]] = defaultdict(list)
        self.calls: dict[int, list[torch.Tensor]] = defaultdict(list)
        self._original, self._depth, self._env = learner.streams.take, 0, env
        learner.streams.take = self

    def __call__(self, stream: int, counts: np.ndarray, width: int, repeats: int) -> torch.Tensor:
        self._depth += 1  # take() calls itself one draw at a time near epoch ends: record the outer call only
        try:
            rows = self._original(stream, counts, width, repeats)
        finally:
            self._depth -= 1
        if self._depth == 0:
            self.calls[stream].append(rows.clone())
            for k in range(repeats):
                self.rows[stream].extend(rows[self._env, k, : int(counts[self._env])].tolist())
        return rows


# -- env ids and wiring ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env_id, learner_type, order_type, projection",
    [
        ("dus_env/Synthetic-OGMGE-v0", OGMGELearner, EpochOrder, None),
        ("dus_env/Synthetic-MLA-v0", AlternatingLearner, EpochOrder, True),
        ("dus_env/Synthetic-MIE-v0", MIELearner, EpochOrder, None),
        ("dus_env/Synthetic-BSS-v0", JointLearner, CurriculumOrder, None),
        ("dus_env/Synthetic-BSSAdaptive-v0", JointLearner, AdaptiveOrder, None),
    ],
)
def test_method_ids_build_their_learner_and_row_order(env_id: str, learner_type: type, order_type: type, projection: bool | None) -> None:
    assert env_id in dus_env.ENV_IDS
    env = gym.make(env_id, **TINY_OVERRIDES)
    env.reset(seed=0)
    learner = env.unwrapped.core.learner
    assert type(learner) is learner_type and type(learner.streams.order) is order_type
    if projection is not None:
        assert learner.projectors is not None
    if learner_type in (AlternatingLearner, MIELearner):
        assert learner.streams.n_streams == 2  # one stream per modality
    shared = len(env.unwrapped.core.model.heads) == 1
    assert shared == (learner_type is AlternatingLearner)  # MIE keeps one head per modality


def test_learner_overrides_on_any_id_and_merged_into_tiny_overrides() -> None:
    env = gym.make("dus_env/Synthetic3-v0", **TINY_OVERRIDES, kind="mie", row_order="bss_adaptive")
    env.reset(seed=1)
    core = env.unwrapped.core
    assert type(core.learner) is MIELearner and type(core.learner.streams.order) is AdaptiveOrder
    assert core.n_modalities == 3 and core.config.learner.hidden_sizes == (16,)
    merged = gym.make("dus_env/Synthetic-v0", **tiny(kind="alternating", projection=True))
    merged.reset(seed=0)
    learner = merged.unwrapped.core.learner
    assert type(learner) is AlternatingLearner and learner.projectors is not None
    plain = gym.make("dus_env/Synthetic-v0", **tiny(kind="alternating"))
    plain.reset(seed=0)
    assert plain.unwrapped.core.learner.projectors is None


# -- OGM-GE --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"ogm_alpha": 0.0, "gaussian_enhancement": False},
        {"modulation_start": 1000},  # a window after the episode: enhancement on, but never active
    ],
    ids=["alpha0-no-noise", "window-after-episode"],
)
def test_ogm_ge_without_modulation_is_the_joint_learner(options: dict[str, Any]) -> None:
    joint = episode("dus_env/Synthetic-v0", seed=3, **TINY_OVERRIDES)
    assert_same_episode(episode("dus_env/Synthetic-OGMGE-v0", seed=3, **tiny(**options)), joint)
    assert not same_episode(episode("dus_env/Synthetic-OGMGE-v0", seed=3, **TINY_OVERRIDES), joint)


def _ogm_setup(**options: Any) -> tuple[TrainingCore, list[torch.Tensor], list[ModalityBatches], torch.Tensor, torch.Tensor]:
    """A 2-env OGM-GE core with random gradients, and logits where modality 0 dominates in env 0
    and modality 1 in env 1: ``(core, logits, batches, expected scores [N, M], gradient before)``."""
    core = make_core(2, kind="ogm_ge", **options)
    width, n_classes = 6, 4
    labels = torch.arange(width).remainder(n_classes).repeat(2, 1)  # [N, W]
    confident = F.one_hot(labels, n_classes).float() * 5.0
    uniform = torch.zeros(2, width, n_classes)
    logits = [torch.stack((confident[0], uniform[1])), torch.stack((uniform[0], confident[1]))]
    counts = torch.tensor([width, width])
    batches = [ModalityBatches(torch.empty(0), labels.unsqueeze(1), None, counts) for _ in range(2)]
    # s = mean softmax probability of the label: e^5 / (e^5 + 3) when confident, 1/4 when uniform.
    high = math.exp(5) / (math.exp(5) + 3)
    scores = torch.tensor([[high, 0.25], [0.25, high]])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        core.model.grad.copy_(torch.randn(core.model.grad.shape, generator=generator))
    return core, logits, batches, scores, core.model.grad.clone()


def test_ogm_ge_learner_scales_the_dominant_encoders_weight_gradients() -> None:
    core, logits, batches, scores, before = _ogm_setup(ogm_alpha=0.5, gaussian_enhancement=False)
    model = core.model
    weights = [[layer.weight.grad.clone() for layer in encoder] for encoder in model.encoders]
    core.learner._modify_gradients(0, logits, batches)
    k = ogm_ge_coefficients(scores, 0.5)  # [N, M]
    assert float(k[0, 0]) == pytest.approx(1 - math.tanh(0.5 * (scores[0, 0] / 0.25 - 1)), abs=1e-6) and k[0, 1] == 1.0
    touched = torch.zeros_like(model.grad, dtype=torch.bool)
    for j, encoder in enumerate(model.encoders):
        for layer, weight in zip(encoder, weights[j]):
            torch.testing.assert_close(layer.weight.grad, weight * k[:, j].view(-1, 1, 1))
            start = layer.weight.grad.storage_offset()  # a view of model.grad
            touched[start : start + layer.weight.numel()] = True
    # Biases and heads: untouched.
    assert torch.equal(model.grad[~touched], before[~touched])
    assert not torch.equal(model.grad[touched], before[touched])


def test_ogm_ge_noise_only_inside_the_modulation_window() -> None:
    core, logits, batches, scores, before = _ogm_setup(ogm_alpha=0.5, modulation_start=2, modulation_end=3)
    model, learner = core.model, core.learner
    learner.iterations[:] = [1, 2]  # env 0 before the window, env 1 in it
    weights = [[layer.weight.grad.clone() for layer in encoder] for encoder in model.encoders]
    learner._modify_gradients(0, logits, batches)
    k = ogm_ge_coefficients(scores, 0.5)
    normalised = []
    for j, encoder in enumerate(model.encoders):
        for layer, g in zip(encoder, weights[j]):
            assert torch.equal(layer.weight.grad[0], g[0])  # outside the window: nothing at all
            noise = (layer.weight.grad[1] - k[1, j] * g[1]) / (g[1].std() + 1e-8)
            normalised.append(noise.flatten())
    z = torch.cat(normalised)  # std(g) * N(0, 1) draws, divided by std(g)
    assert z.numel() == 2 * (6 * 8 + 8 * 4)
    assert abs(float(z.mean())) < 0.3 and 0.7 < float(z.std()) < 1.3
    # The window's ends are included: iterations 2 and 3 are modulated, 1 and 4 are not.
    for iterations, active in (([3, 4], [True, False]), ([1, 2], [False, True])):
        with torch.no_grad():
            model.grad.copy_(before)
        learner.iterations[:] = iterations
        learner._modify_gradients(0, logits, batches)
        for env in range(2):
            unchanged = torch.equal(model.encoders[1][0].weight.grad[env], weights[1][0][env])
            assert unchanged != active[env], (iterations, env)


def test_ogm_ge_training_is_reproducible_and_each_envs_noise_its_own() -> None:
    parameters = []
    for seeds, options in (([0, 1], {}), ([0, 1], {}), ([5, 1], {}), ([0, 1], {"gaussian_enhancement": False})):
        core = make_core(2, seeds, kind="ogm_ge", **options)
        core.step(np.array([[16, 16], [10, 22]]))
        parameters.append(core.model.flat.clone())
    env1 = core.model.element_env == 1
    assert torch.equal(parameters[0], parameters[1])
    assert torch.equal(parameters[0][env1], parameters[2][env1])  # env 1 does not depend on env 0's episode
    assert not torch.equal(parameters[0][env1], parameters[3][env1])  # the enhancement noise changes training


@pytest.mark.filterwarnings("ignore:std\\(\\). degrees of freedom")
def test_ogm_ge_with_a_one_by_one_layer_does_not_diverge() -> None:
    learner = {"hidden_sizes": (1,), "embedding_dim": 1}
    joint = gym.make("dus_env/Synthetic-v0", **{**TINY_OVERRIDES, "learner": learner})
    joint.reset(seed=0)
    assert not joint.step(np.zeros(2, dtype=np.float32))[4]["diverged"]
    env = gym.make("dus_env/Synthetic-OGMGE-v0", **{**TINY_OVERRIDES, "learner": learner})
    env.reset(seed=0)
    assert not env.step(np.zeros(2, dtype=np.float32))[4]["diverged"]


# -- MLA / alternating -----------------------------------------------------------------------------


def test_mla_is_alternating_with_projection_and_projection_changes_training() -> None:
    mla = episode("dus_env/Synthetic-MLA-v0", seed=4, **TINY_OVERRIDES)
    assert_same_episode(mla, episode("dus_env/Synthetic-v0", seed=4, **tiny(kind="alternating", projection=True)))
    assert_same_episode(mla, episode("dus_env/Synthetic-v0", seed=4, **tiny(kind="mla", projection=True)))
    off = episode("dus_env/Synthetic-v0", seed=4, **tiny(kind="alternating"))
    assert_same_episode(off, episode("dus_env/Synthetic-v0", seed=4, **tiny(kind="alternating", projection=False)))
    assert not same_episode(mla, off)


def test_project_applies_p_to_the_head_gradient_then_absorbs_the_batch_mean() -> None:
    core = make_core(2, kind="mla")
    learner, model = core.learner, core.model
    generator = torch.Generator().manual_seed(0)
    e = model.embedding_dim
    projectors = update_projector(torch.eye(e).repeat(2, 1, 1), torch.randn(2, e, generator=generator), 0.1)
    learner.projectors = projectors.clone()
    grad = model.heads[0].weight.grad
    with torch.no_grad():
        grad.copy_(torch.randn(grad.shape, generator=generator))
    head_grad = grad.clone()
    embeddings = torch.randn(2, 5, e, generator=generator)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])  # env 1: 3 rows of 5
    counts = torch.tensor([5, 3])
    batch = ModalityBatches(torch.empty(0), torch.empty(0), valid, counts)
    learner._project(embeddings, batch, np.array([0.0, 150 / 200]))
    torch.testing.assert_close(grad, projectors @ head_grad)  # W as [in, out]: P g
    means = torch.stack([embeddings[0].mean(dim=0), embeddings[1, :3].mean(dim=0)])
    alpha = torch.tensor([projection_alpha(0.0), projection_alpha(150 / 200)])
    torch.testing.assert_close(learner.projectors, update_projector(projectors, means, alpha))


def test_projectors_stay_symmetric_in_zero_one_and_reset_to_identity() -> None:
    core = make_core(2, task=TASK3, kind="mla")
    for _ in range(3):
        core.step(np.array([[16, 8, 24], [4, 30, 14]]))
    projectors = core.learner.projectors
    assert not torch.allclose(projectors, torch.eye(4).expand_as(projectors))
    torch.testing.assert_close(projectors, projectors.transpose(1, 2))
    eigenvalues = torch.linalg.eigvalsh(projectors.double())
    assert (eigenvalues > 0).all() and (eigenvalues <= 1 + 1e-5).all()
    before = projectors[0].clone()
    core.reset(np.array([1]), [(300, 400)])
    assert torch.equal(core.learner.projectors[1], torch.eye(4)) and torch.equal(core.learner.projectors[0], before)


def test_projected_head_update_barely_moves_the_output_on_the_previous_modalitys_direction() -> None:
    """With SGD (no momentum), ``r0^T dW_1 = alpha / (alpha + |r0|^2) * r0^T dW_1'``: ``dW_1`` the head's
    update by modality 1 after modality 0 with projection, ``dW_1'`` without (the runs agree until then)."""
    snapshots: dict[str, list[torch.Tensor]] = {}
    absorbed: list[torch.Tensor] = []
    for kind in ("mla", "alternating"):
        core = make_core(kind=kind, optimizer="sgd", momentum=0.0, lr=0.5)
        learner, model = core.learner, core.model
        snapshots[kind] = []
        step = learner.optimizer.step

        def recording_step(segments: list[int], step: Callable = step, model: Any = model, kind: str = kind) -> None:
            step(segments)
            if model.head_segment(0) in list(segments):
                snapshots[kind].append(model.heads[0].weight[0].detach().clone())

        learner.optimizer.step = recording_step
        if kind == "mla":
            project = learner._project

            def recording_project(
                embeddings: torch.Tensor, batch: ModalityBatches, positions: np.ndarray, project: Callable = project
            ) -> None:
                absorbed.append(masked_mean(embeddings, batch.valid, batch.counts)[0].clone())
                project(embeddings, batch, positions)

            learner._project = recording_project
        learner.run(np.array([[12, 20]]), 1)
    assert len(snapshots["mla"]) == len(snapshots["alternating"]) == 2
    assert torch.equal(snapshots["mla"][0], snapshots["alternating"][0])  # P = I for the first update
    r0 = absorbed[0]
    alpha = projection_alpha(0.0)
    projected = r0 @ (snapshots["mla"][1] - snapshots["mla"][0])
    unprojected = r0 @ (snapshots["alternating"][1] - snapshots["alternating"][0])
    assert float(unprojected.abs().max()) > 1e-4
    torch.testing.assert_close(projected, alpha / (alpha + r0 @ r0) * unprojected, atol=1e-6, rtol=1e-3)
    assert float(projected.abs().max()) < 0.5 * float(unprojected.abs().max())


def test_projection_alpha_follows_the_position_in_a_curriculum_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    import dus_env.batched.learners as learners_module

    core = make_core(kind="mla", row_order="bss_curriculum")
    pool = expected_pool(0, 200, 0.1, 7.0, 31)
    assert core.learner.streams.limits[0].tolist() == [[pool, pool], [pool, pool]]
    alphas: list[float] = []
    update = learners_module.update_projector

    def recording_update(projector: torch.Tensor, features: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        alphas.append(float(alpha[0]))
        return update(projector, features, alpha)

    monkeypatch.setattr(learners_module, "update_projector", recording_update)
    core.learner.run(np.array([[31, 31]]), 4)
    # Batch starts in the stream's epochs: 0, 31, 62 of epoch 0 (77 rows), then 93 - 77 = 16 of epoch 1.
    expected = [projection_alpha(position / pool) for position in (0, 0, 31, 31, 62, 62, 16, 16)]
    np.testing.assert_allclose(alphas, expected, rtol=1e-5)


# -- MIE -----------------------------------------------------------------------------------------


def test_sharpness_aware_restores_the_weights_and_mixes_the_gradients() -> None:
    rho, ratio = 0.5, 0.3
    core = make_core(2, kind="mie", rho=rho, flat_ratio=ratio)
    learner, model = core.learner, core.model
    batches = learner._own_batches(np.array([[8, 5], [8, 8]]), 1)
    j, batch = 1, batches[1]
    layers = model.modality_layers(j)
    tensors = [t for layer in layers for t in (layer.weight, layer.bias)]
    model.grad.zero_()
    learner._loss(model.modality_logits(j, batch.features[:, 0]), batch.labels[:, 0], batch).sum().backward()
    first = [t.grad.clone() for t in tensors]
    weights = model.flat.clone()
    learner._sharpness_aware(j, layers, batch, 0)
    assert torch.equal(model.flat, weights)  # every weight restored exactly
    mixed = [t.grad.clone() for t in tensors]
    # The gradient at w + rho g / ||g|| (each tensor and env its own norm), computed here.
    saved = [t.detach().clone() for t in tensors]
    with torch.no_grad():
        for t, g, w in zip(tensors, first, saved):
            t.add_(sam_perturbation(g, rho))
            torch.testing.assert_close((t - w).flatten(1).norm(dim=1), torch.full((2,), rho))  # per tensor and env
    model.grad.zero_()
    learner._loss(model.modality_logits(j, batch.features[:, 0]), batch.labels[:, 0], batch).sum().backward()
    perturbed = [t.grad.clone() for t in tensors]
    with torch.no_grad():
        model.flat.copy_(weights)
    for g, g_perturbed, result in zip(first, perturbed, mixed):
        torch.testing.assert_close(result, (1 - ratio) * g + ratio * g_perturbed)
    assert not all(torch.allclose(a, b) for a, b in zip(first, perturbed))  # the perturbation matters


def test_mie_without_sam_flat_ratio_zero_equals_rho_zero_and_sam_changes_training() -> None:
    no_ratio = episode("dus_env/Synthetic-MIE-v0", seed=2, **tiny(flat_ratio=0.0))
    no_rho = episode("dus_env/Synthetic-MIE-v0", seed=2, **tiny(rho=0.0))
    assert_same_episode(no_ratio, no_rho)
    assert not same_episode(no_rho, episode("dus_env/Synthetic-MIE-v0", seed=2, **TINY_OVERRIDES))


def test_mie_with_no_sam_and_zero_alpha_trains_as_alternating_with_own_heads() -> None:
    """``rho = 0``: no SAM; ``mie_alpha = 0``: ``T = V V^T = I`` (to rounding). What is left is the
    alternating learner on a model with one head per modality. (SGD: with Adam, the rounding of
    ``V V^T`` turns an exactly zero gradient, e.g. of a dead unit's head row, into ~1e-10, which Adam
    normalises into a ~0.1 lr step, so the two drift apart by ~1e-4 there.)"""
    mie = make_core(kind="mie", rho=0.0, mie_alpha=0.0, optimizer="sgd", lr=0.05)
    reference = make_core(kind="mie", rho=0.0, mie_alpha=0.0, optimizer="sgd", lr=0.05)
    assert torch.equal(mie.model.flat, reference.model.flat) and len(mie.model.heads) == 2
    alternating = AlternatingLearner(
        reference.model, reference.learner.optimizer, reference.train, EpochOrder(reference.train), projection=False
    )
    alternating.reset_envs(np.array([0]), reference.learner.streams.keys.copy())
    reference.learner = alternating
    initial = mie.model.flat.clone()
    for step in range(4):
        quantities = np.array([[4 + 6 * step, 28 - 6 * step]])
        a, b = mie.step(quantities), reference.step(quantities)
        assert np.isfinite(a.rewards).all()
        np.testing.assert_allclose(a.observations, b.observations, atol=1e-5)
    torch.testing.assert_close(mie.model.flat, reference.model.flat, atol=1e-6, rtol=1e-5)
    assert (mie.model.flat - initial).abs().max() > 1e-2  # it did train
    # Deterministic: the same config again gives the same parameters bit for bit.
    again = make_core(kind="mie", rho=0.0, mie_alpha=0.0, optimizer="sgd", lr=0.05)
    for step in range(4):
        again.step(np.array([[4 + 6 * step, 28 - 6 * step]]))
    assert torch.equal(again.model.flat, mie.model.flat)


def test_mie_accumulates_mean_layer_inputs_and_builds_t_from_the_other_modality() -> None:
    core = make_core(kind="mie", mie_alpha=0.7)
    learner, model = core.learner, core.model
    initial = model.flat.clone()
    recorder = TakeRecorder(learner)
    quantities = np.array([[9, 5]])
    assert all(torch.equal(t, torch.eye(t.shape[-1]).expand_as(t)) for row in learner._modifications() for t in row if t is not None)
    learner.run(quantities, 1)
    trained = model.flat.clone()
    with torch.no_grad():
        model.flat.copy_(initial)  # each modality's forward pass ran with its initial weights
        for j in range(2):
            rows = recorder.calls[j][0][:, 0, : quantities[0, j]]
            inputs: list[torch.Tensor] = []
            model.modality_logits(j, core.train.gather(j, rows), inputs=inputs)
            assert len(inputs) == len(learner.covariances[j]) == 3  # input, hidden, embedding
            for covariance, layer_input in zip(learner.covariances[j], inputs):
                z = layer_input[0].mean(dim=0)
                torch.testing.assert_close(covariance[0], torch.outer(z, z))
        model.flat.copy_(trained)
    modifications = learner._modifications()
    for j in range(2):
        for layer_index, t in enumerate(modifications[j]):
            torch.testing.assert_close(t, flat_modification(learner.covariances[1 - j][layer_index], 0.7))
    core.reset(np.array([0]), [(1, 2)])
    assert all(float(c.abs().sum()) == 0.0 for row in learner.covariances for c in row)


def test_mie_t_is_the_identity_until_something_is_accumulated() -> None:
    """The first decision step trains with ``T = I`` whatever ``mie_alpha``; from the second on it matters."""
    cores = [make_core(kind="mie", mie_alpha=alpha) for alpha in (0.0, 5.0)]
    quantities = np.array([[10, 20]])
    first = [core.step(quantities).observations for core in cores]
    np.testing.assert_array_equal(first[0], first[1])
    assert torch.equal(cores[0].model.flat, cores[1].model.flat)
    for core in cores:
        core.step(quantities)
    assert not torch.equal(cores[0].model.flat, cores[1].model.flat)


def test_mie_weight_update_is_t_times_the_gradient() -> None:
    """With SGD (no momentum) the step of every layer weight is ``-lr T g`` (``W`` as ``[in, out]``),
    ``T`` built from the other modality's ``Y`` at the decision's start; biases are not modified."""
    cores = [make_core(kind="mie", rho=0.0, mie_alpha=alpha, optimizer="sgd", momentum=0.0, lr=0.1) for alpha in (0.0, 3.0)]
    quantities = np.array([[10, 20]])
    for core in cores:
        core.step(quantities)  # identical (T = I for both) and accumulates Y
    assert torch.equal(cores[0].model.flat, cores[1].model.flat)
    modifications = cores[1].learner._modifications()
    steps = []
    for core in cores:
        before = [
            [(layer.weight[0].detach().clone(), layer.bias[0].detach().clone()) for layer in core.model.modality_layers(j)]
            for j in range(2)
        ]
        core.learner.run(quantities, 1)  # each modality's gradient depends on its own layers only: the same g in both
        steps.append(
            [
                [
                    (layer.weight[0].detach() - w, layer.bias[0].detach() - b)
                    for layer, (w, b) in zip(core.model.modality_layers(j), before[j])
                ]
                for j in range(2)
            ]
        )
    for j in range(2):
        for layer_index, t in enumerate(modifications[j]):
            assert t is not None and float((t[0] - torch.eye(t.shape[-1])).abs().max()) > 0.05
            (plain_weight, plain_bias), (weight, bias) = steps[0][j][layer_index], steps[1][j][layer_index]
            assert float(plain_weight.abs().max()) > 1e-4
            torch.testing.assert_close(weight, t[0] @ plain_weight, atol=1e-6, rtol=1e-4)
            torch.testing.assert_close(bias, plain_bias, atol=1e-7, rtol=1e-5)


def test_mie_leaves_layers_of_another_width_alone(make_tiny_env: Callable[..., gym.Env]) -> None:
    env = make_tiny_env("dus_env/Features-v0", kind="mie")  # modalities of widths 5 and 4
    env.reset(seed=0)
    learner = env.unwrapped.core.learner
    for step in range(T):
        _, reward, _, _, info = env.step(fixed_actions(1, 2, step)[0])
        assert np.isfinite(reward) and not info["diverged"]
    modifications = learner._modifications()
    for j in range(2):
        assert modifications[j][0] is None  # the first layers: inputs of 5 vs 4 features
        assert all(t is not None and torch.isfinite(t).all() for t in modifications[j][1:])


def test_mie_divergence_in_one_vector_env_ends_that_env_only() -> None:
    envs = gym.make_vec("dus_env/Synthetic-MIE-v0", num_envs=3, **TINY_OVERRIDES)
    envs.reset(seed=0)
    model = envs.unwrapped.core.model
    with torch.no_grad():
        model.flat[model.element_env == 1] = float("nan")
    _, _, terminated, _, infos = envs.step(fixed_actions(3, 2, 0))
    assert terminated.tolist() == [False, True, False] and infos["diverged"].tolist() == [False, True, False]
    observations, rewards, _, _, infos = envs.step(fixed_actions(3, 2, 1))  # env 1 resets here
    assert np.isfinite(observations).all() and np.isfinite(rewards).all() and infos["step"].tolist() == [2, 0, 2]


# -- BSS row orders ----------------------------------------------------------------------------------


def expected_pool(t: float, n: int, lambda0: float, grow: float, min_pool: int) -> int:
    """``min(max(floor(n * lambda_t), max_quantity), n)``, lambda_t written out."""
    fraction = min(1.0, math.sqrt((1 - lambda0**2) / grow * (t + 1) + lambda0**2))
    return min(max(math.floor(n * fraction), min_pool), n)


@pytest.mark.parametrize("lambda0, grow", [(0.1, 7.0), (0.01, 1000.0), (0.5, 2.0)])
def test_curriculum_pool_sizes_follow_the_schedule_and_never_go_below_max_quantity(lambda0: float, grow: float) -> None:
    core = make_core(row_order="bss_curriculum", bss_lambda0=lambda0, bss_grow=grow)
    order = core.learner.streams.order
    assert isinstance(order, CurriculumOrder) and order.min_pool == 31
    sizes = []
    for t in range(12):
        order.decisions[:] = t
        size = int(order.pool_sizes(np.array([0]), np.array([0]))[0])
        assert size == expected_pool(t, 200, lambda0, grow, 31), t
        sizes.append(size)
    assert all(31 <= s <= 200 for s in sizes) and sizes == sorted(sizes)
    if lambda0 == 0.01:
        assert sizes[0] == 31  # floor(200 * 0.033) = 6 rows, raised to max_quantity
    if grow == 2.0:
        assert sizes[1:] == [200] * 11


def test_curriculum_pools_through_an_episode_grow_with_the_decision_index() -> None:
    core = make_core(row_order="bss_curriculum")
    streams = core.learner.streams
    assert streams.limits[0, 0].tolist() == [expected_pool(0, 200, 0.1, 7.0, 31)] * 2  # 77 rows at reset
    for decision in range(8):
        core.step(np.array([[31, 1]]))  # the joint learner draws max(n) = 31 rows per iteration
        # The next epoch is drawn with the pool of the decision just run.
        assert streams.limits[0, 0, 1] == expected_pool(decision, 200, 0.1, 7.0, 31), decision
    assert streams.limits[0, 0, 1] == 200


def test_curriculum_pools_grow_per_epoch_with_epoch_units() -> None:
    core = make_core(kind="alternating", row_order="bss_curriculum", bss_grow_unit="epochs", bss_grow=3.0)
    streams = core.learner.streams
    for _ in range(6):
        core.step(np.array([[31, 7]]))
        for stream in range(2):
            epoch = int(streams.epochs[0, stream])
            assert streams.limits[0, stream].tolist() == [
                expected_pool(epoch, 200, 0.1, 3.0, 31),
                expected_pool(epoch + 1, 200, 0.1, 3.0, 31),
            ]
    assert streams.epochs[0, 0] >= 2 > streams.epochs[0, 1]  # stream 0 went through more epochs


def independent_balance_scores(core: TrainingCore, env: int = 0) -> np.ndarray:
    """BSS's curriculum score of every training row of ``env``, from the env's model as an ``nn.Module``."""
    module = core.model.to_module(env)
    rows = int(core.train.rows[env])
    labels = core.train.labels[env, :rows]
    with torch.no_grad():
        logits = [module.modality_logits(j, x[env, :rows]) for j, x in enumerate(core.train.features)]
    p = [torch.softmax(z, dim=-1) for z in logits]
    pairs = [(a, b) for i, a in enumerate(p) for b in p[i + 1 :]]
    similarity = torch.stack([(a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)) for a, b in pairs]).mean(0)
    loss = 0.9 * sum(F.cross_entropy(z, labels, reduction="none") for z in logits) + 0.1 * F.cross_entropy(
        sum(logits), labels, reduction="none"
    )

    def normalise(v: torch.Tensor) -> torch.Tensor:
        return (v - v.min()) / (v.max() - v.min())

    return ((1 - normalise(similarity)) + normalise(loss)).double().numpy()


@pytest.mark.parametrize("kind", ["joint", "mie"])
def test_curriculum_first_epoch_draws_exactly_the_most_balanced_rows(kind: str) -> None:
    core = make_core(kind=kind, row_order="bss_curriculum")
    scores = independent_balance_scores(core)  # the ranking is measured with the fresh model
    learner = core.learner
    pool = expected_pool(0, 200, 0.1, 7.0, 31)
    recorder = TakeRecorder(learner)
    learner.run(np.array([[16, 12]]), 8)  # >= 77 rows from every stream
    for stream in range(learner.streams.n_streams):
        first_epoch = recorder.rows[stream][:pool]
        assert len(first_epoch) == pool and len(set(first_epoch)) == pool  # every pool row once
        inside = np.zeros(200, dtype=bool)
        inside[first_epoch] = True
        assert scores[inside].max() <= scores[~inside].min() + 1e-5, stream  # the `pool` lowest scores
    if kind == "mie":  # the two streams visit the same pool in different orders
        assert set(recorder.rows[0][:pool]) == set(recorder.rows[1][:pool])
        assert recorder.rows[0][:pool] != recorder.rows[1][:pool]


def test_curriculum_rows_stay_in_a_pool_of_max_quantity_rows() -> None:
    """A pool raised to ``max_quantity`` (31 rows): full batches still work and never leave it."""
    core = make_core(row_order="bss_curriculum", bss_lambda0=0.01, bss_grow=1000.0)
    scores = independent_balance_scores(core)
    recorder = TakeRecorder(core.learner)
    for _ in range(5):
        outcome = core.step(np.array([[31, 31]]))
        assert np.isfinite(outcome.rewards).all()
    drawn = recorder.rows[0]
    assert len(drawn) == 5 * 2 * 31 and set(drawn) == set(np.argsort(scores, kind="stable")[:31].tolist())


def test_measurement_schedule_of_the_two_orders() -> None:
    def measurements(**options: Any) -> list[int]:
        core = make_core(**options)
        order = core.learner.streams.order
        calls: list[int] = []
        measure = order._measure
        order._measure = lambda model, envs: (calls.append(int(order.decisions[0])), measure(model, envs))
        for _ in range(5):
            core.step(np.array([[16, 16]]))
        return calls

    assert LearnerConfig(row_order="bss_curriculum").bss_measure_interval == 0
    assert LearnerConfig(row_order="bss_adaptive").bss_measure_interval == 1
    assert measurements(row_order="bss_curriculum") == []  # only at reset (before this count)
    assert measurements(row_order="bss_adaptive") == [1, 2, 3, 4]  # before every decision step after the first
    assert measurements(row_order="bss_curriculum", bss_measure_every=2) == [2, 4]


def test_curriculum_remeasure_reranks_with_the_trained_model() -> None:
    core = make_core(row_order="bss_curriculum", bss_measure_every=1)
    order = core.learner.streams.order
    ranks = order.ranks.clone()
    for _ in range(2):
        core.step(np.array([[16, 16]]))
    assert not torch.equal(order.ranks, ranks)
    assert sorted(order.ranks[0].tolist()) == list(range(200))
    order._measure(core.model, np.array([0]))  # once more with the model as it is now
    scores = independent_balance_scores(core)
    by_rank = scores[np.argsort(order.ranks[0].numpy())]
    assert (np.diff(by_rank) >= -1e-5).all()  # rank 0 = lowest score = most balanced


def test_adaptive_order_is_a_permutation_of_all_rows() -> None:
    task = SyntheticTaskConfig(n_train=(120, 200), n_val=50, n_test=50, feature_dim=6, n_classes=4)
    core = make_core(2, [0, 3], task=task, kind="mla", row_order="bss_adaptive")
    streams = core.learner.streams
    rows = core.train.rows
    assert rows[0] != rows[1] and core.train.capacity == 200

    def check() -> None:
        for env in range(2):
            n = int(rows[env])
            for stream in range(2):
                for slot in range(2):
                    assert sorted(streams.orders[env, stream, slot, :n].tolist()) == list(range(n))  # padding last
                    assert streams.limits[env, stream, slot] == n

    check()
    for _ in range(4):  # several epochs: 4 steps * 2 iterations * 31 rows > 200
        core.step(np.array([[31, 31], [31, 31]]))
        check()
    assert (streams.epochs >= 1).all()


def test_adaptive_order_draws_heavy_rows_first() -> None:
    core = make_core(kind="alternating", row_order="bss_adaptive")
    order, streams = core.learner.streams.order, core.learner.streams
    weights = order.weights
    assert (weights[0, :200] >= 0.01 - 1e-9).all() and (weights[0, :200] <= 2.01 + 1e-9).all()
    heavy = [3, 17, 40, 41, 99, 150, 151, 199]
    with torch.no_grad():
        weights[0] = 1e-3
        weights[0, heavy] = 1e3
    streams.redraw_next(np.array([0]))
    for stream in range(2):
        assert sorted(streams.orders[0, stream, 1, : len(heavy)].tolist()) == heavy


# -- determinism and the vector env -----------------------------------------------------------------


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("learner", NEW_LEARNERS, ids=LEARNER_IDS)
def test_same_seed_same_episode(env_id: str, learner: dict[str, Any]) -> None:
    first = episode(env_id, seed=9, **tiny(**learner))
    assert_same_episode(first, episode(env_id, seed=9, **tiny(**learner)))
    assert not same_episode(first, episode(env_id, seed=10, **tiny(**learner)))
    for observation, reward, _, info in first:
        assert np.isfinite(observation).all() and np.isfinite(reward) and not info.get("diverged", False)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("learner", NEW_LEARNERS, ids=LEARNER_IDS)
def test_vector_env_matches_dusenv(env_id: str, learner: dict[str, Any]) -> None:
    """Env ``i`` of a ``DUSVectorEnv`` is ``DUSEnv`` with seed ``seed + i`` (to float noise), over a tiny episode."""
    n = 2
    envs = gym.make_vec(env_id, num_envs=n, **tiny(**learner))
    m = envs.n_modalities
    envs.reset(seed=30)
    actions = [fixed_actions(n, m, step) for step in range(T)]
    for step in range(T):
        observations, rewards, terminated, _, infos = envs.step(actions[step])
        assert np.isfinite(rewards).all() and not infos["diverged"].any()
    assert terminated.all()
    for i in range(n):
        env = gym.make(env_id, **tiny(**learner))
        env.reset(seed=30 + i)
        for step in range(T):
            observation, reward, _, _, info = env.step(actions[step][i])
        np.testing.assert_allclose(observations[i], observation, atol=ATOL)
        assert rewards[i] == pytest.approx(reward, abs=ATOL)
        for key in ("test_fused_accuracy", "test_modality_accuracies", "val_modality_accuracies", "cumulative_scores", "train_loss"):
            np.testing.assert_allclose(
                np.asarray(infos[key][i], dtype=np.float64), np.asarray(info[key], dtype=np.float64), atol=ATOL, err_msg=key
            )


# -- config checks --------------------------------------------------------------------------------


BAD_CONFIGS = [
    ({"kind": "ogm_ge", "ogm_alpha": -0.1}, "ogm_alpha"),
    ({"kind": "ogm_ge", "ogm_alpha": float("nan")}, "ogm_alpha"),
    ({"kind": "ogm_ge", "modulation_start": 3, "modulation_end": 2}, "modulation_end"),
    ({"kind": "ogm_ge", "modulation_start": -1}, "modulation_start"),
    ({"kind": "ogm_ge", "gaussian_enhancement": 1}, "gaussian_enhancement"),
    ({"kind": "mie", "flat_ratio": 1.5}, "flat_ratio"),
    ({"kind": "mie", "flat_ratio": -0.1}, "flat_ratio"),
    ({"kind": "mie", "rho": -0.01}, "rho"),
    ({"kind": "mie", "rho": 0.5, "flat_ratio": 0.0}, "rho"),  # SAM off: rho would be unused
    ({"kind": "mie", "rho": 0.0, "flat_ratio": 0.7}, "flat_ratio"),
    ({"kind": "mie", "mie_alpha": -1.0}, "mie_alpha"),
    ({"kind": "ogm"}, "kind"),
    ({"row_order": "random"}, "row_order"),
    ({"row_order": "bss"}, "row_order"),
    ({"bss_lambda0": 0.2}, "bss_lambda0"),  # row_order epoch reads no BSS option
    ({"bss_grow": 10.0}, "bss_grow"),
    ({"bss_grow_unit": "epochs"}, "bss_grow_unit"),
    ({"bss_measure_every": 2}, "bss_measure_every"),
    ({"kind": "mie", "bss_measure_every": 0}, "bss_measure_every"),
    ({"row_order": "bss_curriculum", "bss_lambda0": 0.0}, "bss_lambda0"),
    ({"row_order": "bss_curriculum", "bss_lambda0": 1.5}, "bss_lambda0"),
    ({"row_order": "bss_curriculum", "bss_grow": 0.0}, "bss_grow"),
    ({"row_order": "bss_curriculum", "bss_grow_unit": "steps"}, "bss_grow_unit"),
    ({"row_order": "bss_adaptive", "bss_measure_every": -1}, "bss_measure_every"),
    ({"projection": True}, "projection"),  # joint
    ({"kind": "ogm_ge", "projection": False}, "projection"),
    ({"kind": "mie", "projection": True}, "projection"),
    ({"kind": "mla", "projection": False}, "projection"),
    ({"kind": "alternating", "projection": "yes"}, "projection"),
    ({"ogm_alpha": 0.5}, "ogm_alpha"),  # joint
    ({"kind": "mla", "modulation_start": 2}, "modulation_start"),
    ({"kind": "mie", "modulation_end": 5}, "modulation_end"),
    ({"kind": "alternating", "gaussian_enhancement": False}, "gaussian_enhancement"),
    ({"kind": "ogm_ge", "rho": 0.1}, "rho"),
    ({"kind": "mla", "flat_ratio": 0.5}, "flat_ratio"),
    ({"mie_alpha": 1.0}, "mie_alpha"),
]


@pytest.mark.parametrize("options, field", BAD_CONFIGS, ids=[f"{f}:{o}" for o, f in BAD_CONFIGS])
def test_bad_learner_option_names_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"LearnerConfig\.{field}="):
        LearnerConfig(**options)
    with pytest.raises(ConfigError, match=rf"\b{field}\b"):
        gym.make("dus_env/Synthetic-v0", **TINY_OVERRIDES, **options)


@pytest.mark.parametrize(
    "env_id, options, field",
    [
        ("dus_env/Synthetic-MLA-v0", {"projection": False}, "projection"),
        ("dus_env/Synthetic-OGMGE-v0", {"ogm_alpha": -1.0}, "ogm_alpha"),
        ("dus_env/Synthetic-MIE-v0", {"flat_ratio": 2.0}, "flat_ratio"),
        ("dus_env/Synthetic-BSS-v0", {"bss_grow_unit": "weeks"}, "bss_grow_unit"),
        ("dus_env/Synthetic-BSS-v0", {"row_order": "epoch", "bss_lambda0": 0.3}, "bss_lambda0"),
        ("dus_env/Synthetic-OGMGE-v0", {"kind": "joint", "ogm_alpha": 0.3}, "ogm_alpha"),
    ],
)
def test_bad_overrides_of_the_method_ids(env_id: str, options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"LearnerConfig\.{field}="):
        gym.make(env_id, **TINY_OVERRIDES, **options)


def test_misspelled_method_option_is_an_unknown_option() -> None:
    with pytest.raises(dus_env.UnknownOptionError, match="ogm_alpah"):
        gym.make("dus_env/Synthetic-OGMGE-v0", **TINY_OVERRIDES, ogm_alpah=0.5)


@pytest.mark.parametrize(
    "options",
    [
        {"kind": "mla", "projection": True},
        {"kind": "alternating", "projection": True},
        {"kind": "alternating", "projection": False},
        {"kind": "ogm_ge", "ogm_alpha": 0.0, "modulation_start": 4, "modulation_end": 4, "gaussian_enhancement": False},
        {"kind": "mie", "rho": 0.0, "mie_alpha": 0.0},  # SAM off: flat_ratio keeps its default
        {"kind": "mie", "flat_ratio": 0.0},
        {"gaussian_enhancement": True, "ogm_alpha": 0.8},  # defaults spelled out are fine for any kind
        {"row_order": "bss_curriculum", "bss_lambda0": 1.0, "bss_grow": 0.5, "bss_grow_unit": "epochs", "bss_measure_every": 0},
        {"row_order": "bss_adaptive", "bss_measure_every": 3},
    ],
)
def test_valid_method_options_are_accepted(options: dict[str, Any]) -> None:
    config = LearnerConfig(**options)
    assert config.uses_projection == (config.kind == "mla" or options.get("projection") is True)
    env = gym.make("dus_env/Synthetic-v0", **tiny(**options))
    env.reset(seed=0)
    assert np.isfinite(env.step(np.zeros(2, dtype=np.float32))[1])


@pytest.mark.parametrize(
    "options", [{"bss_lambda0": 0.5}, {"bss_grow": 20.0}, {"bss_grow_unit": "epochs"}], ids=["bss_lambda0", "bss_grow", "bss_grow_unit"]
)
def test_curriculum_options_with_the_adaptive_order_are_rejected(options: dict[str, Any]) -> None:
    (field,) = options
    with pytest.raises(ConfigError, match=rf"LearnerConfig\.{field}="):
        LearnerConfig(row_order="bss_adaptive", **options)


@pytest.mark.parametrize("order", [{"row_order": "bss_curriculum", "bss_measure_every": 1}, {"row_order": "bss_adaptive"}])
def test_a_diverged_model_never_puts_padding_rows_in_an_epoch(order: dict) -> None:
    """A NaN model's measurement (scores NaN) still orders only real rows: padding rows stay last and out of the pool."""
    from dus_env.presets import SYNTHETIC_MIX

    config = EnvConfig(
        task=SYNTHETIC_MIX,
        learner=LearnerConfig(hidden_sizes=(8,), embedding_dim=4, **order),
        base_batch_size=16,
        min_quantity=1,
        max_quantity=56,
        iterations_per_step=3,
        decision_steps=1000,
        shuffle_modalities=True,
        torch_threads=None,
    )
    core = TrainingCore(config, 2)
    core.reset(np.arange(2), [(100, 200), (101, 201)])
    small = int(np.argmin(core.train.rows))
    assert core.train.rows[small] < core.train.capacity  # the smaller instance has padding rows
    with torch.no_grad():
        core.model.encoders[0][0].weight[small].fill_(float("nan"))
    core.step(np.full((2, 2), 16))
    core.step(np.full((2, 2), 16))
    streams = core.learner.streams
    for slot in (0, 1):
        rows = streams.orders[small, 0, slot, : streams.limits[small, 0, slot]]
        assert (rows < core.train.rows[small]).all()

"""Batched learners: participation masks, alternating updates, epoch order, optimizer, seeded init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dus_env import EnvConfig, LearnerConfig, SyntheticTaskConfig
from dus_env.batched.data import RowStreams, StackedSplit
from dus_env.batched.model import StackedModel
from dus_env.batched.optim import StackedOptimizer
from dus_env.batched.random import ROW_ORDER, random_values, seed_key
from dus_env.core import TrainingCore
from dus_env.monitor import modality_score
from dus_env.tasks import build_task

TASK = SyntheticTaskConfig(n_train=200, n_val=50, n_test=50, feature_dim=6, n_classes=4)


def make_core(kind: str, n_envs: int, seeds: list[int] | None = None, optimizer: str = "adam") -> TrainingCore:
    config = EnvConfig(
        task=TASK,
        learner=LearnerConfig(kind=kind, hidden_sizes=(8,), embedding_dim=4, optimizer=optimizer),
        base_batch_size=16,
        min_quantity=1,
        max_quantity=31,
    )
    core = TrainingCore(config, n_envs)
    seeds = seeds if seeds is not None else list(range(n_envs))
    core.reset(np.arange(n_envs), [(100 + s, 200 + s) for s in seeds])
    return core


@pytest.mark.parametrize("kind", ["joint", "alternating"])
def test_each_modality_trains_on_exactly_its_quantity(kind: str) -> None:
    core = make_core(kind, 2)
    learner = core.learner
    quantities = np.array([[5, 27], [12, 3]])
    seen: list[list[int]] = [[], []]
    if kind == "joint":
        rows = learner.streams.take(0, quantities.max(axis=1), 27, 1)
        batches = learner._modality_batches(
            quantities, rows, core.train.gather_labels(rows), learner._valid(quantities.max(axis=1), 27), 27, 1
        )
        for j, batch in enumerate(batches):
            valid = torch.ones(batch.labels.shape[0], batch.labels.shape[2], dtype=torch.bool) if batch.valid is None else batch.valid
            seen[j] = valid.sum(dim=1).tolist()
            if batch.target is not None:  # members are distinct rows of the env's own batch
                for env in range(2):
                    rows = batch.target[env, 0][valid[env]] - env * 28
                    assert len(set(rows.tolist())) == quantities[env, j] and int(rows.max()) < quantities[env].max()
        assert seen == [[5, 12], [27, 3]]
    record = learner.run(quantities, 3)
    assert record.losses.shape == (3, 2) and bool(torch.isfinite(record.losses).all())
    assert record.scores.shape == (3, 2, 2) and bool(((record.scores >= 0) & (record.scores <= 1)).all())


def test_env_in_a_batch_equals_the_env_alone() -> None:
    """Env 1 of a batch (its own quantities, padded to the batch's widths) trains as it would alone."""
    batch = make_core("joint", 3, seeds=[0, 1, 2])
    alone = make_core("joint", 1, seeds=[1])
    quantities = np.array([[30, 2], [7, 25], [16, 16]])
    for _ in range(3):
        together = batch.step(quantities)
        single = alone.step(quantities[1:2])
        np.testing.assert_allclose(together.observations[1], single.observations[0], atol=1e-5)
        assert together.rewards[1] == pytest.approx(single.rewards[0], abs=1e-5)


def test_batched_scores_equal_the_sampler_formula() -> None:
    core = make_core("joint", 1)
    captured = []
    original = core.model.modality_logits
    core.model.modality_logits = lambda j, x, envs=None: captured.append((j, original(j, x, envs))) or captured[-1][1]
    quantities = np.array([[16, 16]])  # full participation: logits row r is batch row r
    labels_seen = []
    take = core.learner.streams.take

    def recording_take(*args):
        rows = take(*args)
        labels_seen.append(core.train.gather_labels(rows))
        return rows

    core.learner.streams.take = recording_take
    record = core.learner.run(quantities, 2)
    labels = labels_seen[0][0]
    for k in range(2):
        for j in range(2):
            logits = captured[2 * k + j][1][0]
            assert record.scores[k, 0, j].item() == pytest.approx(modality_score(logits, labels[k]).item(), abs=1e-6)


def test_alternating_updates_its_encoder_and_the_shared_head() -> None:
    core = make_core("alternating", 1)
    assert len(core.model.heads) == 1 and len(make_core("joint", 1).model.heads) == 2
    core.learner.run(np.array([[4, 9]]), 5)
    head = len(core.model.segments) - 1
    assert core.learner.optimizer.steps[0, :head].tolist() == [5, 5] and core.learner.optimizer.steps[0, head] == 10


def test_same_seeds_same_training_other_seeds_other_model() -> None:
    a, b, c = make_core("joint", 1, [1]), make_core("joint", 1, [1]), make_core("joint", 1, [2])
    quantities = np.array([[10, 22]])
    assert torch.equal(a.learner.run(quantities, 2).losses, b.learner.run(quantities, 2).losses)
    assert not torch.equal(a.model.flat, c.model.flat)


def test_stacked_optimizer_matches_torch_optim() -> None:
    """Adam and SGD on the flat buffer update exactly as torch.optim does on the same model."""
    for kind in ("adam", "sgd"):
        model = StackedModel(1, (3, 2), 4, (5,), 3, False, torch.device("cpu"))
        model.reset_env(0, torch.Generator().manual_seed(0))
        module = model.to_module(0)
        stacked = StackedOptimizer(model, kind, 1e-2, 0.9, 1e-3)
        reference = (
            torch.optim.Adam(module.parameters(), lr=1e-2, weight_decay=1e-3)
            if kind == "adam"
            else torch.optim.SGD(module.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-3)
        )
        generator = torch.Generator().manual_seed(1)
        for _ in range(4):
            x = (torch.randn(1, 7, 3, generator=generator), torch.randn(1, 7, 2, generator=generator))
            model.grad.zero_()
            sum(model.modality_logits(j, x[j]).square().sum() for j in range(2)).backward()
            stacked.step(range(len(model.segments)))
            reference.zero_grad()
            module((x[0][0], x[1][0])).square().sum().backward()
            reference.step()
        for linear_weight, layer in zip([m.weight for m in module.modules() if isinstance(m, torch.nn.Linear)], model.layers()):
            torch.testing.assert_close(layer.weight[0].T, linear_weight.detach(), atol=1e-6, rtol=1e-5)


def test_optimizer_after_a_reset_equals_a_fresh_one() -> None:
    """Envs at different step counts (after an autoreset) get their own bias corrections."""
    batch, fresh = make_core("joint", 2, seeds=[0, 1]), make_core("joint", 1, seeds=[1])
    quantities = np.array([[16, 16], [16, 16]])
    batch.step(quantities)
    batch.reset(np.array([1]), [(101, 201)])
    for _ in range(2):
        together, single = batch.step(quantities), fresh.step(quantities[:1])
        np.testing.assert_allclose(together.observations[1], single.observations[0], atol=1e-5)


def test_row_streams_visit_every_row_once_per_epoch() -> None:
    split = StackedSplit(2, 12, (1,), 2, torch.device("cpu"))
    task = build_task(SyntheticTaskConfig(n_train=10, n_val=2, n_test=2, n_classes=2, feature_dim=1), np.random.default_rng(0))
    split.fill(0, task.train)
    split.fill(1, task.train)
    streams = RowStreams(split, 1)
    streams.reset_envs(np.array([0, 1]), np.array([seed_key(3), seed_key(4)], dtype=np.uint64))
    first = (
        streams.take(0, np.array([3, 3]), 3, 3)[0].reshape(-1).tolist() + streams.take(0, np.array([1, 1]), 1, 1)[0].reshape(-1).tolist()
    )
    assert sorted(first) == list(range(10))  # padding rows 10, 11 are never drawn
    second, crossing = streams.take(0, np.array([8, 8]), 8, 2)[0].tolist()  # the second draw crosses into epoch 3
    assert sorted(second + crossing[:2]) == list(range(10)) and len(set(crossing[2:])) == 6
    with pytest.raises(ValueError, match="cannot draw 11 samples"):
        streams.take(0, np.array([11, 1]), 11, 1)


def test_random_values_do_not_depend_on_width_or_other_envs() -> None:
    keys = np.array([seed_key(5), seed_key(6)], dtype=np.uint64)
    wide = random_values(keys, ROW_ORDER, np.array([0, 3]), 9, torch.device("cpu"))
    narrow = random_values(keys[1:], ROW_ORDER, np.array([3]), 4, torch.device("cpu"))
    assert torch.equal(wide[1, :4], narrow[0])
    assert not torch.equal(wide[0], wide[1])

"""Learners: participation masks, alternating updates, epoch order, and seeded init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dus_env import LearnerConfig, SyntheticTaskConfig
from dus_env.learners import IndexStream, build_learner
from dus_env.monitor import modality_score
from dus_env.tasks import build_task

TASK = SyntheticTaskConfig(n_train=200, n_val=50, n_test=50, feature_dim=6, n_classes=4)


def make(kind: str, seed: int = 0):
    task = build_task(TASK, np.random.default_rng(0))
    return build_learner(LearnerConfig(kind=kind, hidden_sizes=(8,), embedding_dim=4), task, torch.Generator().manual_seed(seed))


def rows_seen_per_modality(learner, quantities: np.ndarray) -> list[int]:
    seen = [0] * len(quantities)
    handles = [
        encoder.register_forward_hook(lambda module, inputs, output, j=j: seen.__setitem__(j, seen[j] + inputs[0].shape[0]))
        for j, encoder in enumerate(learner.model.encoders)
    ]
    learner.train_iteration(quantities)
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize("kind", ["joint", "alternating"])
def test_each_modality_trains_on_exactly_its_quantity(kind: str) -> None:
    learner = make(kind)
    assert rows_seen_per_modality(learner, np.array([5, 27])) == [5, 27]
    learner.train_iteration(np.array([12, 3]))
    record = learner.collect()
    assert record.losses.shape == (2,) and bool(np.isfinite(record.losses).all())
    assert record.scores.shape == (2, 2) and bool(((record.scores >= 0) & (record.scores <= 1)).all())
    with pytest.raises(RuntimeError, match="no training iteration"):
        learner.collect()


def test_batched_scores_equal_per_iteration_scores() -> None:
    learner = make("joint")  # unequal quantities: two runs of different sizes in one softmax
    captured: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    keep = learner.keeper.keep
    learner.keeper.keep = lambda j, logits, labels: (captured.append((j, logits.detach(), labels)), keep(j, logits, labels))
    for _ in range(3):
        learner.train_iteration(np.array([20, 6]))
    scores = learner.collect().scores
    for k in range(3):
        for j in range(2):
            _, logits, labels = [c for c in captured if c[0] == j][k]
            assert scores[k, j].item() == pytest.approx(modality_score(logits, labels).item(), abs=1e-6)


def test_joint_modality_with_one_sample_still_trains() -> None:
    learner = make("joint")
    before = [p.detach().clone() for p in learner.model.encoders[0].parameters()]
    learner.train_iteration(np.array([1, 20]))
    after = list(learner.model.encoders[0].parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))


def test_alternating_uses_one_shared_head() -> None:
    assert len(make("alternating").model.heads) == 1
    assert len(make("joint").model.heads) == 2


def test_same_generator_seed_same_model_and_training() -> None:
    a, b, c = make("joint", 1), make("joint", 1), make("joint", 2)
    quantities = np.array([10, 22])
    a.train_iteration(quantities)
    b.train_iteration(quantities)
    assert np.array_equal(a.collect().losses, b.collect().losses)
    assert not torch.equal(next(a.model.parameters()), next(c.model.parameters()))


def test_index_stream_visits_every_row_once_per_epoch() -> None:
    stream = IndexStream(10, torch.Generator().manual_seed(0))
    first_epoch = torch.cat([stream.take(3) for _ in range(3)] + [stream.take(1)])
    assert sorted(first_epoch.tolist()) == list(range(10))
    crossing = stream.take(8)  # the second epoch is a new permutation, taken in order
    assert len(crossing) == 8 and len(set(crossing.tolist())) == 8
    with pytest.raises(ValueError, match="cannot draw 11 samples"):
        stream.take(11)

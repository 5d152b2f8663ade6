import math

import pytest
import torch

from dus_env.monitor import DiscrepancyMonitor, modality_score


def test_modality_score_is_mean_true_class_probability() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    p0 = math.exp(2) / (math.exp(2) + 2)
    p1 = 1 / (2 + math.e)
    assert modality_score(logits, labels).item() == pytest.approx((p0 + p1) / 2, abs=1e-6)


def test_cumulative_score_matches_hand_computation() -> None:
    monitor = DiscrepancyMonitor(2)
    history = [(0.2, 0.1), (0.5, 0.1), (0.8, 0.4)]
    for scores in history:
        monitor.update(torch.tensor(scores))
    # ŝ_1 = s_1; ŝ_t = (t-1)/t ŝ_{t-1} + s_t/t
    s_hat = list(history[0])
    for t, scores in enumerate(history[1:], start=2):
        s_hat = [(t - 1) / t * h + s / t for h, s in zip(s_hat, scores)]
    assert monitor.cumulative.tolist() == pytest.approx(s_hat, abs=1e-7)
    assert monitor.cumulative.tolist() == pytest.approx([0.5, 0.2], abs=1e-7)  # the running mean
    assert monitor.last.tolist() == pytest.approx([0.8, 0.4], abs=1e-7)
    assert monitor.relative_gap() == pytest.approx([0.15, -0.15], abs=1e-7)
    assert monitor.ratio_to_best() == pytest.approx([1.0, 0.4], abs=1e-7)


def test_update_many_equals_one_at_a_time() -> None:
    scores = torch.rand(7, 3, generator=torch.Generator().manual_seed(0))
    one, many = DiscrepancyMonitor(3), DiscrepancyMonitor(3)
    for row in scores:
        one.update(row)
    many.update_many(scores[:4])
    many.update_many(scores[4:])
    assert one.cumulative == pytest.approx(many.cumulative, abs=1e-12) and (one.last == many.last).all()
    assert many.iterations == 7


def test_reset_clears_and_shape_is_checked() -> None:
    monitor = DiscrepancyMonitor(3)
    monitor.update(torch.tensor([0.3, 0.2, 0.1]))
    monitor.reset()
    assert monitor.iterations == 0 and monitor.cumulative.sum() == 0
    assert monitor.ratio_to_best().tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="one score per modality"):
        monitor.update(torch.tensor([0.1, 0.2]))

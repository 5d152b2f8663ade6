"""The balancing methods' formulas (:mod:`dus_env.methods`) on hand-computed cases.

Every expected number below is worked out by hand in a comment next to it, not taken from the
implementation; the plain-``nn.Module`` helpers (``modulate_encoders``, ``HeadProjector``) are
checked in ordinary PyTorch training steps.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dus_env.methods import (
    HeadProjector,
    adaptive_weights,
    balance_measures,
    curriculum_fraction,
    curriculum_scores,
    enhanced_gradient,
    flat_modification,
    modulate_encoders,
    ogm_ge_coefficients,
    projection_alpha,
    sam_perturbation,
    update_projector,
)
from dus_env.methods.bss import min_max


def rotation(d: int, seed: int = 0) -> torch.Tensor:
    """A random orthogonal ``[d, d]`` matrix (float64)."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


# -- OGM-GE --------------------------------------------------------------------------------------


def test_ogm_ge_two_modalities_damps_only_the_dominant_one() -> None:
    # rho^0 = 0.8 / 0.4 = 2 -> k^0 = 1 - tanh(0.5 * relu(2 - 1)) = 1 - tanh(0.5);
    # rho^1 = 0.4 / 0.8 = 0.5 -> relu(-0.5) = 0 -> k^1 = 1.
    k = ogm_ge_coefficients(torch.tensor([0.8, 0.4]), 0.5)
    torch.testing.assert_close(k, torch.tensor([1.0 - math.tanh(0.5), 1.0]))
    assert k[0] < 1.0 and k[1] == 1.0  # modality 0 (the stronger) is the one modulated
    # Swapped scores: the other modality is damped, by the same factor.
    torch.testing.assert_close(ogm_ge_coefficients(torch.tensor([0.4, 0.8]), 0.5), torch.tensor([1.0, 1.0 - math.tanh(0.5)]))


def test_ogm_ge_balanced_scores_and_zero_alpha_modulate_nothing() -> None:
    assert torch.equal(ogm_ge_coefficients(torch.tensor([0.3, 0.3]), 0.8), torch.ones(2))  # rho = 1: relu(0) = 0
    assert torch.equal(ogm_ge_coefficients(torch.tensor([0.9, 0.1]), 0.0), torch.ones(2))
    # Continuous at balance (the paper's relu(rho - 1), not the official code's relu(rho)).
    near = ogm_ge_coefficients(torch.tensor([0.3 + 1e-6, 0.3]), 0.8)
    assert float(near[0]) == pytest.approx(1.0, abs=1e-5)


def test_ogm_ge_three_modalities_compare_each_with_the_mean_of_the_others() -> None:
    # (0.5, 0.4, 0.1), alpha = 0.6:
    #   u=0: others' mean (0.4 + 0.1) / 2 = 0.25, rho = 2   -> k = 1 - tanh(0.6 * 1)
    #   u=1: others' mean (0.5 + 0.1) / 2 = 0.3,  rho = 4/3 -> k = 1 - tanh(0.6 / 3)
    #   u=2: others' mean 0.45, rho = 2/9 < 1                -> k = 1
    k = ogm_ge_coefficients(torch.tensor([0.5, 0.4, 0.1], dtype=torch.float64), 0.6)
    expected = torch.tensor([1 - math.tanh(0.6), 1 - math.tanh(0.2), 1.0], dtype=torch.float64)
    torch.testing.assert_close(k, expected)
    # Two equal leaders above a weak third: both are damped, equally.
    k = ogm_ge_coefficients(torch.tensor([0.6, 0.6, 0.3]), 1.0)  # rho = 0.6 / 0.45 = 4/3 for both
    torch.testing.assert_close(k, torch.tensor([1 - math.tanh(1 / 3), 1 - math.tanh(1 / 3), 1.0]))


def test_ogm_ge_coefficients_are_batched_over_leading_dimensions() -> None:
    scores = torch.tensor([[0.8, 0.4], [0.4, 0.8], [0.5, 0.5]])
    k = ogm_ge_coefficients(scores, 0.5)
    assert k.shape == (3, 2)
    for row, expected in zip(k, ([1 - math.tanh(0.5), 1.0], [1.0, 1 - math.tanh(0.5)], [1.0, 1.0])):
        torch.testing.assert_close(row, torch.tensor(expected))


def test_enhanced_gradient_without_noise_is_k_times_g_in_place() -> None:
    grad = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    original = grad.clone()
    coefficient = torch.tensor([0.25, 1.0])
    result = enhanced_gradient(grad, coefficient, None)
    assert result.data_ptr() == grad.data_ptr()  # in place
    assert torch.equal(grad[0], original[0] * 0.25) and torch.equal(grad[1], original[1])
    # Zero noise: the same (plus 1e-8 * 0).
    grad = original.clone()
    enhanced_gradient(grad, coefficient, torch.zeros_like(grad))
    torch.testing.assert_close(grad, original * coefficient.view(-1, 1, 1), rtol=0, atol=0)


def test_enhanced_gradient_adds_the_unmodulated_std_times_the_noise() -> None:
    # g = (1, 3): unbiased std = sqrt(((1 - 2)^2 + (3 - 2)^2) / 1) = sqrt(2); k = 0.5; z = (1, -1):
    # (0.5 + sqrt(2) + 1e-8, 1.5 - sqrt(2) - 1e-8).
    grad = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    enhanced_gradient(grad, torch.tensor([0.5], dtype=torch.float64), torch.tensor([[1.0, -1.0]], dtype=torch.float64))
    s = math.sqrt(2) + 1e-8
    torch.testing.assert_close(grad, torch.tensor([[0.5 + s, 1.5 - s]], dtype=torch.float64))
    # Per leading index: each tensor's own std.
    generator = torch.Generator().manual_seed(1)
    grad = torch.randn(3, 5, 2, generator=generator) * torch.tensor([1.0, 10.0, 0.1]).view(-1, 1, 1)
    noise = torch.randn(3, 5, 2, generator=generator)
    original = grad.clone()
    coefficient = torch.tensor([0.3, 0.7, 1.0])
    enhanced_gradient(grad, coefficient, noise)
    for b in range(3):
        std = float(original[b].std()) + 1e-8  # torch's default std is the unbiased one
        torch.testing.assert_close(grad[b], coefficient[b] * original[b] + std * noise[b])


def test_enhanced_gradient_perturbs_a_zero_gradient_only_tinily() -> None:
    grad = torch.zeros(1, 4)
    enhanced_gradient(grad, torch.tensor([0.5]), torch.ones(1, 4))
    torch.testing.assert_close(grad, torch.full((1, 4), 1e-8))


@pytest.mark.filterwarnings("ignore:std\\(\\). degrees of freedom")
def test_enhanced_gradient_of_a_single_element_tensor_is_finite() -> None:
    grad = torch.tensor([[0.5]])
    enhanced_gradient(grad, torch.tensor([1.0]), torch.tensor([[0.3]]))
    assert torch.isfinite(grad).all()


def test_ogm_ge_coefficients_stay_finite_for_zero_scores() -> None:
    assert torch.isfinite(ogm_ge_coefficients(torch.tensor([0.0, 0.0]), 0.5)).all()  # balanced: expected (1, 1)
    assert torch.equal(ogm_ge_coefficients(torch.tensor([1.0, 0.0]), 0.0), torch.ones(2))  # alpha = 0: no modulation


def _encoders() -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), nn.Linear(5, 2)]


def _fill_grads(encoders: list[nn.Module], seed: int = 7) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    grads = {}
    for j, encoder in enumerate(encoders):
        for name, parameter in encoder.named_parameters():
            parameter.grad = torch.randn(parameter.shape, generator=generator)
            grads[f"{j}.{name}"] = parameter.grad.clone()
    return grads


def test_modulate_encoders_scales_the_dominant_encoders_weights_only() -> None:
    encoders = _encoders()
    before = _fill_grads(encoders)
    k = modulate_encoders(encoders, torch.tensor([0.8, 0.4]), 0.5, gaussian_enhancement=False)
    torch.testing.assert_close(k, torch.tensor([1 - math.tanh(0.5), 1.0]))
    for j, encoder in enumerate(encoders):
        for name, parameter in encoder.named_parameters():
            expected = before[f"{j}.{name}"]
            if parameter.ndim >= 2 and j == 0:
                expected = expected * k[0]
            assert torch.equal(parameter.grad, expected), f"{j}.{name}"  # biases and encoder 1 untouched


def test_modulate_encoders_noise_is_std_times_the_generators_draws_and_leaves_biases_alone() -> None:
    encoders = _encoders()
    before = _fill_grads(encoders)
    encoders[1].bias.grad = None  # a parameter without a gradient is skipped
    k = modulate_encoders(encoders, torch.tensor([0.8, 0.4]), 0.5, generator=torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)  # the draws, in parameter order, weights only
    for j, encoder in enumerate(encoders):
        for name, parameter in encoder.named_parameters():
            g = before[f"{j}.{name}"]
            if parameter.ndim < 2:
                assert parameter.grad is None or torch.equal(parameter.grad, g), f"{j}.{name}"
                continue
            z = torch.randn(g.shape, generator=replay)
            torch.testing.assert_close(parameter.grad, k[j] * g + (float(g.std()) + 1e-8) * z)


def test_modulate_encoders_is_reproducible_with_a_seeded_generator() -> None:
    def run(seed: int) -> list[torch.Tensor]:
        encoders = _encoders()
        _fill_grads(encoders)
        modulate_encoders(encoders, torch.tensor([0.2, 0.6]), 0.8, generator=torch.Generator().manual_seed(seed))
        return [p.grad.clone() for e in encoders for p in e.parameters()]

    first, again, other = run(11), run(11), run(12)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


# -- MLA -----------------------------------------------------------------------------------------


def test_projection_alpha_follows_the_official_schedule() -> None:
    assert projection_alpha(0.0) == pytest.approx(0.1)
    assert projection_alpha(1.0) == pytest.approx(0.01)
    assert projection_alpha(0.5) == pytest.approx(0.1**1.5)
    torch.testing.assert_close(projection_alpha(torch.tensor([0.0, 1.0])), torch.tensor([0.1, 0.01]))


def test_update_projector_shrinks_the_absorbed_direction_only() -> None:
    # P_0 = I, r = (3, 4, 0): k = r, r^T k = 25, P = I - r r^T / (alpha + 25):
    # P r = r (1 - 25 / (alpha + 25)) = alpha / (alpha + 25) r; directions orthogonal to r keep 1.
    alpha = 0.01
    r = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    p = update_projector(torch.eye(3, dtype=torch.float64), r, alpha)
    torch.testing.assert_close(p, torch.eye(3, dtype=torch.float64) - torch.outer(r, r) / (alpha + 25.0))
    torch.testing.assert_close(p @ r, alpha / (alpha + 25.0) * r)
    for v in (torch.tensor([4.0, -3.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])):
        torch.testing.assert_close(p @ v.double(), v.double())


def test_projector_stays_symmetric_with_eigenvalues_in_zero_one() -> None:
    generator = torch.Generator().manual_seed(0)
    e = 5
    p = torch.eye(e, dtype=torch.float64).repeat(2, 1, 1)  # batched over 2 independent projectors
    for step in range(12):  # more directions than dimensions
        r = torch.randn(2, e, generator=generator, dtype=torch.float64) * (1 + step % 3)
        p = update_projector(p, r, torch.tensor([projection_alpha(step / 12), 0.5], dtype=torch.float64))
        assert torch.equal(p, p.transpose(-1, -2))
        eigenvalues = torch.linalg.eigvalsh(p)
        assert (eigenvalues > 0).all() and (eigenvalues <= 1 + 1e-12).all()


def test_projected_sgd_step_keeps_the_heads_output_on_learned_directions() -> None:
    """``r^T (W - lr P g) = r^T W - lr (P r)^T g``: with ``P`` from ``r`` and a small alpha the output on
    ``r`` barely moves, while an unprojected step moves it."""
    torch.manual_seed(0)
    e, c, lr = 6, 3, 0.5
    r = torch.randn(e)
    x, y = torch.randn(16, e), torch.randint(0, c, (16,))
    changes = {}
    for projected in (True, False):
        head = nn.Linear(e, c, bias=False)
        with torch.no_grad():
            head.weight.copy_(torch.ones(c, e) * 0.1)
        projector = HeadProjector(head)
        projector.absorb(r.unsqueeze(0), epoch_fraction=1.0)  # alpha = 0.01
        torch.testing.assert_close(projector.projector @ r, 0.01 / (0.01 + r @ r) * r, atol=1e-5, rtol=1e-4)
        before = head(r).detach()
        F.cross_entropy(head(x), y).backward()
        if projected:
            projector.project()
        torch.optim.SGD(head.parameters(), lr=lr).step()
        changes[projected] = (head(r).detach() - before).norm()
    assert changes[False] > 1e-2
    assert changes[True] < 1e-3 * changes[False] + 1e-6


def test_head_projector_end_to_end_protects_the_first_modality() -> None:
    """Two modalities through one head, trained in turn: with the projection, training modality 1
    leaves the head's output on modality 0's features (nearly) as modality 0's update left it."""

    def run(projected: bool) -> float:
        torch.manual_seed(1)
        encoders = [nn.Linear(4, 5), nn.Linear(3, 5)]
        head = nn.Linear(5, 2, bias=False)
        projector = HeadProjector(head)
        parameters = [p for m in (*encoders, head) for p in m.parameters()]
        optimizer = torch.optim.SGD(parameters, lr=0.3)
        x = [torch.randn(8, 4), torch.randn(8, 3)]
        y = torch.randint(0, 2, (8,))
        features = encoders[0](x[0])
        F.cross_entropy(head(features), y).backward()
        if projected:
            projector.project()  # P = I: nothing absorbed yet
        optimizer.step()
        optimizer.zero_grad()
        projector.absorb(features, epoch_fraction=1.0)
        mean = features.detach().mean(dim=0)
        reference = head(mean).detach()
        for _ in range(3):  # modality 1 only; encoder 0 gets no gradient
            F.cross_entropy(head(encoders[1](x[1])), 1 - y).backward()
            if projected:
                projector.project()
            optimizer.step()
            optimizer.zero_grad()
        return float((head(mean).detach() - reference).norm())

    with_projection, without = run(True), run(False)
    assert without > 1e-2
    assert with_projection < 0.05 * without


def test_head_projector_project_without_gradient_is_a_no_op() -> None:
    head = nn.Linear(3, 2)
    projector = HeadProjector(head)
    projector.project()
    assert head.weight.grad is None
    assert torch.equal(projector.projector, torch.eye(3))


def test_head_projector_follows_the_heads_dtype() -> None:
    head = nn.Linear(3, 2, dtype=torch.float64)
    projector = HeadProjector(head)
    features = torch.randn(4, 3, dtype=torch.float64)
    head(features).sum().backward()
    projector.project()
    projector.absorb(features)
    assert projector.projector.dtype == torch.float64


# -- MIE -----------------------------------------------------------------------------------------


def test_sam_perturbation_has_norm_rho_per_tensor() -> None:
    grad = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor([0.01, 1.0, 100.0]).view(-1, 1, 1)
    eps = sam_perturbation(grad, 0.05)
    assert eps.shape == grad.shape
    torch.testing.assert_close(eps.flatten(1).norm(dim=1), torch.full((3,), 0.05))
    for b in range(3):  # the gradient's own direction
        torch.testing.assert_close(eps[b], grad[b] / grad[b].norm() * 0.05)
    # (3, 4) / 5 * 0.1 by hand; a zero gradient is not moved (no NaN).
    torch.testing.assert_close(sam_perturbation(torch.tensor([[3.0, 4.0]]), 0.1), torch.tensor([[0.06, 0.08]]))
    assert torch.equal(sam_perturbation(torch.zeros(2, 3), 0.05), torch.zeros(2, 3))


def test_flat_modification_of_a_diagonal_covariance() -> None:
    # Singular values (4, 1, 0): s_min = 0, s_max = 4, spread = (1, 0.25, 0):
    # Lambda = (exp(-a), exp(-a / 4), 1), T = diag(Lambda).
    a = 0.4
    t = flat_modification(torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64)), a)
    torch.testing.assert_close(t, torch.diag(torch.tensor([math.exp(-a), math.exp(-a * 0.25), 1.0], dtype=torch.float64)))


def test_flat_modification_of_a_rotated_covariance_and_batches() -> None:
    q = rotation(4)
    values = torch.tensor([9.0, 5.0, 1.0, 1.0], dtype=torch.float64)  # spread (1, 0.5, 0, 0)
    y = q @ torch.diag(values) @ q.T
    a = 2.0
    expected = q @ torch.diag(torch.tensor([math.exp(-2.0), math.exp(-1.0), 1.0, 1.0], dtype=torch.float64)) @ q.T
    torch.testing.assert_close(flat_modification(y, a), expected)
    # The direction the other modality's inputs occupy most gets the smallest step.
    torch.testing.assert_close(flat_modification(y, a) @ q[:, 0], math.exp(-a) * q[:, 0])
    # Batched [..., d, d], each its own decomposition; alpha = 0 gives the identity.
    batch = torch.stack([y, torch.zeros(4, 4, dtype=torch.float64), 3.0 * torch.eye(4, dtype=torch.float64)])
    t = flat_modification(batch, a)
    torch.testing.assert_close(t[0], expected)
    torch.testing.assert_close(t[1], torch.eye(4, dtype=torch.float64))  # nothing accumulated: T = I
    torch.testing.assert_close(t[2], torch.eye(4, dtype=torch.float64))  # one distinct singular value: T = I
    torch.testing.assert_close(flat_modification(y, 0.0), torch.eye(4, dtype=torch.float64))


def test_flat_modification_of_an_accumulated_rank_one_covariance() -> None:
    # Y = z z^T with |z| = 5: singular values (25, 0, 0), T = I - (1 - exp(-a)) z z^T / 25.
    z = torch.tensor([0.0, 3.0, 4.0])
    t = flat_modification(torch.outer(z, z), 1.0)
    torch.testing.assert_close(t, torch.eye(3) - (1 - math.exp(-1.0)) * torch.outer(z, z) / 25.0, atol=1e-5, rtol=1e-5)
    assert torch.equal(flat_modification(torch.zeros(3, 3), 0.4), torch.eye(3))


# -- BSS -----------------------------------------------------------------------------------------


def test_balance_measures_identical_modalities() -> None:
    # Two modalities with logits (0, 0), label 0: softmaxes equal -> sim = 1;
    # loss = 0.9 * (ln 2 + ln 2) + 0.1 * CE((0, 0), 0) = 1.9 ln 2.
    logits = torch.zeros(1, 2)
    similarity, loss = balance_measures([logits, logits.clone()], torch.tensor([0]))
    torch.testing.assert_close(similarity, torch.tensor([1.0]))
    torch.testing.assert_close(loss, torch.tensor([1.9 * math.log(2)]))


def test_balance_measures_disagreeing_modalities_by_hand() -> None:
    # a = (ln 3, 0) -> p = (3/4, 1/4); b = (0, ln 3) -> q = (1/4, 3/4);
    # cos = (3/16 + 3/16) / (10/16) = 0.6; label 0: CE(a) = ln(4/3), CE(b) = ln 4, fused (ln 3, ln 3) -> ln 2.
    a = torch.tensor([[math.log(3), 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, math.log(3)]], dtype=torch.float64)
    labels = torch.tensor([0])
    similarity, loss = balance_measures([a, b], labels)
    torch.testing.assert_close(similarity, torch.tensor([0.6], dtype=torch.float64))
    torch.testing.assert_close(loss, torch.tensor([0.9 * (math.log(4 / 3) + math.log(4)) + 0.1 * math.log(2)], dtype=torch.float64))
    # Three modalities: the mean over the pairs (a, a) = 1, (a, b) = (a, b) = 0.6.
    similarity, loss = balance_measures([a, a, b], labels)
    torch.testing.assert_close(similarity, torch.tensor([2.2 / 3], dtype=torch.float64))
    fused = a + a + b  # (2 ln 3, ln 3): p_0 = 3/4
    expected = 0.9 * (2 * math.log(4 / 3) + math.log(4)) + 0.1 * float(F.cross_entropy(fused, labels))
    torch.testing.assert_close(loss, torch.tensor([expected], dtype=torch.float64))
    # One stacked [M, ..., C] tensor is the same as the list; leading dimensions are kept.
    stacked = torch.stack([a, b]).unsqueeze(1)  # [M=2, 1, 1, C]
    similarity, loss = balance_measures(stacked, labels.view(1, 1))
    assert similarity.shape == loss.shape == (1, 1)
    torch.testing.assert_close(similarity.view(1), torch.tensor([0.6], dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2 modalities"):
        balance_measures([a], labels)


def test_min_max_normalises_the_valid_entries() -> None:
    torch.testing.assert_close(min_max(torch.tensor([1.0, 3.0, 5.0])), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(min_max(torch.full((4,), 2.0)), torch.zeros(4))  # all equal: 0, no NaN
    # Padding (invalid) entries do not move min and max.
    valid = torch.tensor([True, True, False])
    torch.testing.assert_close(min_max(torch.tensor([1.0, 3.0, 100.0]), valid)[:2], torch.tensor([0.0, 1.0]))
    # Along the last axis, row by row.
    torch.testing.assert_close(min_max(torch.tensor([[0.0, 2.0], [5.0, 1.0]])), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_curriculum_scores_rank_the_most_balanced_first() -> None:
    # sim (1, 0.6, 0.2) -> (1, 0.5, 0); loss (0.1, 0.5, 0.9) -> (0, 0.5, 1); score = (1 - sim) + loss = (0, 1, 2).
    similarity = torch.tensor([0.6, 1.0, 0.2])
    loss = torch.tensor([0.5, 0.1, 0.9])
    scores = curriculum_scores(similarity, loss)
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, 2.0]))
    assert scores.argsort().tolist() == [1, 0, 2]  # agree most and lose least first
    # adaptive weights 1 - (loss - sim) + 0.01 = (1.01, 2.01, 0.01): positive, highest for the most balanced.
    weights = adaptive_weights(similarity, loss)
    torch.testing.assert_close(weights, torch.tensor([1.01, 2.01, 0.01]))
    generator = torch.Generator().manual_seed(0)
    random = adaptive_weights(torch.rand(50, generator=generator), torch.rand(50, generator=generator) * 7)
    assert (random >= 0.01 - 1e-7).all() and (random <= 2.01 + 1e-7).all()
    # With a validity mask, padding does not count in the normalisation.
    valid = torch.tensor([True, True, True, False])
    masked = curriculum_scores(torch.cat((similarity, torch.tensor([-50.0]))), torch.cat((loss, torch.tensor([50.0]))), valid)
    torch.testing.assert_close(masked[:3], scores)


def test_curriculum_fraction_schedule() -> None:
    # t = 0, lambda0 = 0.1, T_grow = 40: sqrt(0.99 / 40 + 0.01) = sqrt(0.03475).
    assert curriculum_fraction(0, 0.1, 40) == pytest.approx(math.sqrt(0.03475))
    assert curriculum_fraction(9, 0.1, 40) == pytest.approx(math.sqrt(0.99 / 4 + 0.01))
    values = [curriculum_fraction(t, 0.1, 40) for t in range(60)]
    assert all(a < b for a, b in itertools.pairwise(values[:40]))  # strictly growing until whole
    assert values[38] < 1.0 and values[39] == 1.0  # (t + 1) = T_grow: sqrt(0.99 + 0.01)
    assert all(v == 1.0 for v in values[39:])
    assert curriculum_fraction(0, 1.0, 7) == 1.0  # lambda0 = 1: the whole set from the start
    assert curriculum_fraction(2.5, 0.1, 7) == pytest.approx(math.sqrt(0.99 / 7 * 3.5 + 0.01))


# -- bad input to the public formulas -----------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ogm_ge_coefficients(torch.tensor([0.5]), 0.5), "need a last dimension of at least 2 modalities"),
        (lambda: ogm_ge_coefficients(torch.tensor([0.5, 0.2]), -0.1), "alpha=-0.1 is invalid"),
        (
            lambda: modulate_encoders([nn.Linear(2, 2), nn.Linear(2, 2)], torch.tensor([0.5, 0.2, 0.1]), 0.5),
            "expected one score per encoder (2)",
        ),
        (lambda: curriculum_fraction(0, 0.1, 0), "grow=0 is invalid"),
        (lambda: curriculum_fraction(-1, 0.1, 5), "t=-1 is invalid"),
        (lambda: curriculum_fraction(0, 0.0, 5), "lambda0=0.0 is invalid"),
        (lambda: sam_perturbation(torch.ones(1, 3), -0.1), "rho=-0.1 is invalid"),
        (lambda: flat_modification(torch.eye(3), -1.0), "alpha=-1.0 is invalid"),
        (
            lambda: balance_measures([torch.zeros(4, 3), torch.zeros(5, 3)], torch.zeros(4, dtype=torch.long)),
            "modality_logits[1] has shape (5, 3)",
        ),
    ],
)
def test_public_formulas_reject_bad_input_naming_the_argument(call, message: str) -> None:
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


def test_flat_modification_of_a_non_finite_covariance_is_the_identity() -> None:
    covariance = torch.stack([torch.diag(torch.tensor([4.0, 1.0])), torch.full((2, 2), float("nan"))])
    modification = flat_modification(covariance, 0.4)
    torch.testing.assert_close(modification[1], torch.eye(2))
    assert torch.isfinite(modification).all()

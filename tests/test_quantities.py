import numpy as np
import pytest

from dus_env.quantities import QuantityMapping


@pytest.mark.parametrize("n_modalities", [2, 3, 4])
def test_fixed_budget_sums_to_uniform_compute_and_respects_range(n_modalities: int) -> None:
    mapping = QuantityMapping(n_modalities, 32, 8, 56, "fixed")
    rng = np.random.default_rng(0)
    for action in rng.uniform(-1.5, 1.5, size=(500, n_modalities)):
        quantities = mapping.quantities(action)
        assert quantities.sum() == n_modalities * 32
        assert quantities.min() >= 8 and quantities.max() <= 56
        assert quantities.dtype == np.int64


def test_zero_action_is_uniform_in_both_modes() -> None:
    for budget in ("fixed", "free"):
        mapping = QuantityMapping(3, 32, 8, 56, budget)
        assert mapping.quantities(np.zeros(3)).tolist() == [32, 32, 32]


def test_fixed_budget_keeps_proportions_and_order() -> None:
    mapping = QuantityMapping(2, 32, 8, 56, "fixed")
    assert mapping.quantities(np.array([1.0, -1.0])).tolist() == [56, 8]
    assert mapping.quantities(np.array([-1.0, 1.0])).tolist() == [8, 56]
    low, high = mapping.quantities(np.array([-0.5, 0.5]))
    assert low < 32 < high


def test_free_budget_is_linear_and_clipped() -> None:
    mapping = QuantityMapping(2, 32, 8, 56, "free")
    assert mapping.quantities(np.array([1.0, -1.0])).tolist() == [56, 8]
    assert mapping.quantities(np.array([5.0, -7.0])).tolist() == [56, 8]  # out of range: clipped
    assert mapping.quantities(np.array([1.0, 1.0])).sum() == 112  # free: no budget rescaling


def test_action_inverts_quantities() -> None:
    for budget in ("fixed", "free"):
        mapping = QuantityMapping(2, 32, 8, 56, budget)
        for wanted in ([16, 48], [40, 24], [32, 32], [8, 56]):
            assert mapping.quantities(mapping.action(np.array(wanted))).tolist() == wanted


@pytest.mark.parametrize("bad", [[np.nan, 0.0], [0.0, np.inf], [-np.inf, 1.0]])
def test_non_finite_action_names_the_problem(bad: list[float]) -> None:
    mapping = QuantityMapping(2, 32, 8, 56)
    with pytest.raises(ValueError, match="NaN or inf"):
        mapping.quantities(np.array(bad))


def test_wrong_action_size_and_bad_range() -> None:
    mapping = QuantityMapping(2, 32, 8, 56)
    with pytest.raises(ValueError, match="expected 2"):
        mapping.quantities(np.zeros(3))
    with pytest.raises(ValueError, match="min_quantity <= base_batch_size"):
        QuantityMapping(2, 32, 40, 56)
    with pytest.raises(ValueError, match="budget"):
        QuantityMapping(2, 32, 8, 56, "elastic")

"""DUSSampler in a user's own loop: validation inputs, run length, heuristic ranges, masks, logits.

Every test is fast: the artifact is a tiny network exported with torch.export only (the ONNX exporter
takes seconds and is covered by tests/test_export_sampler.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import dus_env.policy_artifact as policy_artifact
from dus_env import EnvConfig, ObservationLayout, QuantityMapping
from dus_env.metrics import balanced_accuracy
from dus_env.sampler import DUSSampler, MissingValidationError, participation_masks

TRAINED_K, TRAINED_T = 7, 9
RUN = dict(iterations_per_decision=2, total_decisions=3)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported policy trained (nominally) with K=7, T=9; loadable with the torch (torch.export) backend."""
    layout = ObservationLayout(2)
    actor = torch.nn.Sequential(torch.nn.Linear(layout.size, 2), torch.nn.Tanh())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            policy_artifact, "_export_onnx", lambda wrapped, example, folder: (folder / policy_artifact.ONNX_FILE).write_bytes(b"")
        )
        return policy_artifact.write_policy_artifact(
            actor,
            tmp_path_factory.mktemp("artifact") / "exported",
            layout=layout,
            mapping=QuantityMapping(2, 32, 8, 56),
            env_config=EnvConfig(iterations_per_step=TRAINED_K, decision_steps=TRAINED_T).to_dict(),
            normalization=None,
        )


def exported(artifact: Path, **kwargs: Any) -> DUSSampler:
    return DUSSampler.from_artifact(artifact, 3, backend="torch", **{**RUN, **kwargs})


def heuristic(**kwargs: Any) -> DUSSampler:
    return DUSSampler.heuristic(3, **{"n_modalities": 2, "base_batch_size": 8, **RUN, **kwargs})


def observe_iterations(sampler: DUSSampler, count: int) -> None:
    labels = torch.tensor([0, 1, 2, 0])
    for _ in range(count):
        sampler.observe([torch.zeros(4, 3), torch.zeros(4, 3)], labels, loss=1.0)


def validation_slots(sampler: DUSSampler) -> tuple[list[float], float]:
    layout, observation = sampler.layout, sampler.last_observation
    return layout.read(observation, "val_modality_accuracy").tolist(), float(layout.read(observation, "val_fused_accuracy")[0])


# -- 1. missing validation --------------------------------------------------------------------------


def test_first_decision_without_validation_is_an_error_that_says_what_to_do(artifact: Path) -> None:
    sampler = exported(artifact)
    with pytest.raises(MissingValidationError) as error:
        sampler.quantities()
    message = str(error.value)
    for fragment in ("set_validation(", "set_validation_logits(", "decision_pending", "missing_validation='stale'"):
        assert fragment in message
    assert sampler.decision_pending and sampler.last_observation is None  # nothing half-done: the user can recover
    sampler.set_validation([0.5, 0.25], 0.75)
    assert sampler.quantities().sum() == 64
    assert validation_slots(sampler) == ([0.5, 0.25], 0.75)


def test_masks_without_validation_raise_the_same_error(artifact: Path) -> None:
    with pytest.raises(MissingValidationError):
        exported(artifact).participation_masks()


def test_later_decisions_reuse_the_last_numbers_and_reset_forgets_them(artifact: Path) -> None:
    sampler = exported(artifact)
    sampler.set_validation([0.5, 0.25], 0.75)
    sampler.quantities()
    observe_iterations(sampler, RUN["iterations_per_decision"])
    assert sampler.decision_pending
    sampler.quantities()  # no fresh numbers: the last ones, documented
    assert validation_slots(sampler) == ([0.5, 0.25], 0.75)
    sampler.reset()
    with pytest.raises(MissingValidationError):
        sampler.quantities()


def test_stale_fallback_uses_chance_level_before_the_first_numbers(artifact: Path) -> None:
    sampler = exported(artifact, missing_validation="stale")
    sampler.quantities()
    chance = pytest.approx(1 / 3, abs=1e-6)
    assert validation_slots(sampler) == ([chance, chance], chance)
    observe_iterations(sampler, RUN["iterations_per_decision"])
    sampler.set_validation([0.5, 0.25], 0.75)
    sampler.quantities()
    assert validation_slots(sampler) == ([0.5, 0.25], 0.75)
    observe_iterations(sampler, RUN["iterations_per_decision"])
    sampler.quantities()
    assert validation_slots(sampler) == ([0.5, 0.25], 0.75)


def test_defaults_error_for_policies_and_stale_for_the_heuristic(artifact: Path) -> None:
    assert exported(artifact).missing_validation == "error"
    assert DUSSampler(lambda observation: np.zeros(2), QuantityMapping(2, 8, 2, 14), 3, 2, 3).missing_validation == "error"
    sampler = heuristic()  # DUS-H reads only the score gaps: validation cannot change its decisions
    assert sampler.missing_validation == "stale" and sampler.quantities().tolist() == [8, 8]
    with pytest.raises(MissingValidationError):
        heuristic(missing_validation="error").quantities()


@pytest.mark.parametrize("value", ["carry", "Error", None, 1])
@pytest.mark.parametrize("make", ["artifact", "heuristic", "constructor"])
def test_missing_validation_value_is_checked(artifact: Path, make: str, value: Any) -> None:
    build: dict[str, Callable[[], DUSSampler]] = {
        "artifact": lambda: exported(artifact, missing_validation=value),
        "heuristic": lambda: heuristic(missing_validation=value),
        "constructor": lambda: DUSSampler(lambda o: np.zeros(2), QuantityMapping(2, 8, 2, 14), 3, 2, 3, missing_validation=value),
    }
    with pytest.raises(ValueError, match=r"missing_validation=.* is invalid: expected one of 'error', 'stale'"):
        build[make]()


@pytest.mark.parametrize(
    ("accuracies", "fused", "message"),
    [
        ([0.5], 0.5, r"modality_accuracies has 1 values .* expected 2"),
        ([85.0, 0.5], 0.5, r"modality_accuracies\[0\]=85.0 is invalid: .*\[0, 1\] \(a fraction, not percent\)"),
        ([0.5, float("nan")], 0.5, r"modality_accuracies\[1\]=nan is invalid"),
        ([0.5, 0.5], 1.5, r"fused_accuracy=1.5 is invalid"),
        ([0.5, 0.5], "high", r"fused_accuracy='high' is invalid"),
        (["a", "b"], 0.5, r"modality_accuracies=\['a', 'b'\] is invalid"),
    ],
)
def test_set_validation_errors_name_the_argument(accuracies: Any, fused: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        heuristic().set_validation(accuracies, fused)


# -- 2. explicit run length -------------------------------------------------------------------------


def test_from_artifact_requires_the_run_length_and_names_what_the_policy_was_trained_with(artifact: Path) -> None:
    with pytest.raises(ValueError) as error:
        DUSSampler.from_artifact(artifact, 3, backend="torch")
    message = str(error.value)
    assert message.startswith("iterations_per_decision and total_decisions must be given")
    for fragment in (
        "training iterations between two decisions",
        "decisions over your whole run",
        "K*T iterations",
        f"trained with iterations_per_decision={TRAINED_K}, total_decisions={TRAINED_T}",
    ):
        assert fragment in message


@pytest.mark.parametrize("missing", ["iterations_per_decision", "total_decisions"])
def test_one_missing_run_length_argument_is_named(artifact: Path, missing: str) -> None:
    kwargs = {**RUN, missing: None}
    with pytest.raises(ValueError, match=f"^{missing} must be given"):
        DUSSampler.from_artifact(artifact, 3, backend="torch", **kwargs)
    with pytest.raises(ValueError, match=f"^{missing} must be given: .*K\\*T iterations"):
        heuristic(**kwargs)


@pytest.mark.parametrize("name", ["iterations_per_decision", "total_decisions"])
@pytest.mark.parametrize("value", [0, -3, True, 2.5, "10"])
def test_run_length_must_be_a_positive_integer(artifact: Path, name: str, value: Any) -> None:
    message = f"{name}={value!r} is invalid: expected an integer >= 1"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        exported(artifact, **{name: value})
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        heuristic(**{name: value})


def test_run_length_sets_decision_spacing_and_progress(artifact: Path) -> None:
    sampler = exported(artifact, iterations_per_decision=3, total_decisions=4)
    sampler.set_validation([0.5, 0.5], 0.5)
    progress = []
    for _ in range(6):
        sampler.quantities()
        progress.append(float(sampler.layout.read(sampler.last_observation, "progress")[0]))
        observe_iterations(sampler, 2)
        assert not sampler.decision_pending  # K=3: a decision every third iteration, not the trained K=7
        observe_iterations(sampler, 1)
    assert progress == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 1.0])


# -- 3. heuristic without a hand-built mapping ------------------------------------------------------


@pytest.mark.parametrize(("base_batch_size", "low", "high"), [(32, 8, 56), (8, 2, 14), (64, 16, 112), (100, 25, 175), (4, 1, 7), (1, 1, 2)])
def test_heuristic_range_follows_the_env_defaults(base_batch_size: int, low: int, high: int) -> None:
    mapping = heuristic(base_batch_size=base_batch_size).mapping
    assert mapping == QuantityMapping(2, base_batch_size, low, high, "fixed")
    assert 1 <= mapping.min_quantity <= mapping.base_batch_size <= mapping.max_quantity


def test_heuristic_at_the_env_batch_size_equals_the_env_mapping() -> None:
    config = EnvConfig()
    assert heuristic(n_modalities=config.task.n_modalities, base_batch_size=config.base_batch_size).mapping == config.quantity_mapping()


def test_heuristic_accepts_an_explicit_range_or_a_mapping() -> None:
    assert heuristic(min_quantity=4, max_quantity=12, budget="free").mapping == QuantityMapping(2, 8, 4, 12, "free")
    mapping = QuantityMapping(3, 16, 1, 40)
    assert DUSSampler.heuristic(3, mapping=mapping, **RUN).mapping is mapping


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_modalities=None), "n_modalities and base_batch_size are required .*mapping="),
        (dict(base_batch_size=None), "n_modalities and base_batch_size are required"),
        (dict(mapping=QuantityMapping(2, 8, 2, 14)), r"either mapping= or n_modalities=.*\['base_batch_size', 'n_modalities'\]"),
        (dict(n_modalities=0), r"n_modalities=0 is invalid: expected an integer >= 1"),
        (dict(n_modalities=True), r"n_modalities=True is invalid"),
        (dict(base_batch_size=8.0), r"base_batch_size=8.0 is invalid"),
        (dict(min_quantity=0), r"min_quantity=0 is invalid"),
        (dict(min_quantity=9), r"min_quantity=9, base_batch_size=8"),
        (dict(max_quantity=7), r"max_quantity=7"),
        (dict(budget="half"), r"budget='half' is invalid: expected one of \('fixed', 'free'\)"),
        (dict(temperature=0), r"heuristic temperature=0 is invalid"),
    ],
)
def test_heuristic_argument_errors_name_the_argument(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        heuristic(**kwargs)


def test_heuristic_mapping_of_the_wrong_type_or_in_place_of_n_classes() -> None:
    with pytest.raises(ValueError, match="mapping=.* is invalid: expected a dus_env.QuantityMapping"):
        DUSSampler.heuristic(3, mapping=(2, 8, 2, 14), **RUN)
    with pytest.raises(ValueError, match="n_classes is a QuantityMapping: pass the mapping as mapping="):
        DUSSampler.heuristic(QuantityMapping(2, 8, 2, 14), **RUN)
    with pytest.raises(ValueError, match="n_classes=1 is invalid: expected an integer >= 2"):
        DUSSampler.heuristic(1, n_modalities=2, base_batch_size=8, **RUN)


# -- 4. participation masks -------------------------------------------------------------------------


@pytest.mark.parametrize("quantities", [[3, 5], [8, 8], [1, 14, 2], np.array([4, 2]), torch.tensor([6, 1])])
def test_mask_rows_hold_exactly_n_j_rows_of_a_batch_of_max_n(quantities: Any) -> None:
    masks = participation_masks(quantities, torch.Generator().manual_seed(0))
    counts = [int(q) for q in quantities]
    assert masks.dtype == torch.bool and tuple(masks.shape) == (len(counts), max(counts))
    assert masks.sum(dim=1).tolist() == counts
    assert bool(masks.any(dim=0).all())  # every row has a participant: the largest n_j covers the batch


def test_masks_are_deterministic_for_a_seeded_generator_and_vary_with_the_seed() -> None:
    def draw(seed: int) -> torch.Tensor:
        return participation_masks([5, 9, 2], torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    assert not all(torch.equal(draw(3), draw(seed)) for seed in range(4, 8))


def test_mask_subsets_are_uniform() -> None:
    generator = torch.Generator().manual_seed(0)
    frequency = torch.stack([participation_masks([2, 6], generator)[0] for _ in range(3000)]).double().mean(dim=0)
    assert frequency.tolist() == pytest.approx([2 / 6] * 6, abs=0.04)


def test_sampler_masks_default_to_its_quantities_and_check_the_modality_count() -> None:
    sampler = DUSSampler.heuristic(3, n_modalities=2, base_batch_size=8, **RUN)
    masks = sampler.participation_masks(generator=torch.Generator().manual_seed(1))
    assert not sampler.decision_pending  # the pending decision was made first
    assert masks.sum(dim=1).tolist() == sampler.quantities().tolist()
    assert sampler.participation_masks([2, 5]).sum(dim=1).tolist() == [2, 5]
    with pytest.raises(ValueError, match=r"quantities=\[2, 5, 1\] has 3 values, expected 2: one per modality"):
        sampler.participation_masks([2, 5, 1])


@pytest.mark.parametrize(
    ("quantities", "generator", "message"),
    [
        ([[2, 3]], None, r"quantities of shape \(1, 2\) are invalid: expected a 1-D array"),
        ([], None, r"quantities of shape \(0,\) are invalid"),
        ([2.0, 3.0], None, "quantities=.* are invalid: expected integer counts, got dtype float64"),
        ([True, True], None, "expected integer counts, got dtype bool"),
        ([2, 0], None, r"quantities=\[2, 0\] are invalid: every modality needs at least 1 sample"),
        ([2, -1], None, "every modality needs at least 1 sample"),
        ([2, 3], 7, "generator=7 is invalid: expected a torch.Generator or None"),
        ([2, 3], np.random.default_rng(0), "generator=.* is invalid: expected a torch.Generator"),
    ],
)
def test_mask_argument_errors_name_the_argument(quantities: Any, generator: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        participation_masks(quantities, generator)


# -- 5. validation from logits ----------------------------------------------------------------------


def validation_batch(seed: int = 0, n: int = 40) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Random logits on imbalanced labels with one class absent (where balanced and plain accuracy differ)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.zeros(n - 8, dtype=torch.long), torch.ones(8, dtype=torch.long)])  # class 2 absent
    modality = [torch.randn(n, 3, generator=generator) for _ in range(2)]
    return modality, modality[0] + modality[1], labels


def test_validation_logits_give_the_metrics_balanced_accuracies() -> None:
    modality, fused, labels = validation_batch()
    sampler = heuristic()
    returned = sampler.set_validation_logits(modality, fused, labels)
    expected = ([balanced_accuracy(x.argmax(1), labels, 3) for x in modality], balanced_accuracy(fused.argmax(1), labels, 3))
    assert returned == (pytest.approx(expected[0], abs=1e-12), pytest.approx(expected[1], abs=1e-12))
    sampler.quantities()
    assert validation_slots(sampler) == (pytest.approx(expected[0], abs=1e-6), pytest.approx(expected[1], abs=1e-6))


def test_validation_logits_hand_checked_and_as_one_stacked_tensor() -> None:
    labels = torch.tensor([0, 0, 0, 1])  # recall of class 0 and of class 1, averaged
    right = torch.nn.functional.one_hot(labels, 3).float()
    always_zero = torch.nn.functional.one_hot(torch.zeros(4, dtype=torch.long), 3).float()
    modality, fused = heuristic().set_validation_logits(torch.stack([right, always_zero]), always_zero, labels)
    assert modality == [1.0, 0.5] and fused == 0.5


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m, f, y: ([m[0]], f, y), "modality_logits has 1 entries, expected 2"),
        (lambda m, f, y: ([m[0], m[1][:-1]], f, y), r"modality_logits\[1\] of shape \(39, 3\) is invalid: expected \[40, 3\]"),
        (lambda m, f, y: (m, f[:, :2], y), r"fused_logits of shape \(40, 2\) is invalid: expected \[40, 3\]"),
        (lambda m, f, y: (m, f.numpy(), y), r"fused_logits of shape ndarray is invalid"),
        (lambda m, f, y: ([m[0].long(), m[1]], f, y), r"modality_logits\[0\] has dtype torch.int64: expected floating-point"),
        (lambda m, f, y: (m, f.fill_(float("nan")), y), "fused_logits holds NaN or inf"),
        (lambda m, f, y: (m, f, y[None]), r"labels of shape \(1, 40\) are invalid: expected a non-empty 1-D tensor"),
        (lambda m, f, y: (m, f, y.float()), "labels have dtype torch.float32: expected integer class ids"),
        (lambda m, f, y: (m, f, y + 2), r"labels out of range \[2, 3\], expected class ids in \[0, 3\)"),
        (lambda m, f, y: (m, f, y.tolist()), "labels of shape list are invalid"),
    ],
)
def test_validation_logits_errors_name_the_argument(damage: Callable, message: str) -> None:
    sampler = heuristic()
    with pytest.raises(ValueError, match=message):
        sampler.set_validation_logits(*damage(*validation_batch()))
    sampler.quantities()
    chance = pytest.approx(1 / 3, abs=1e-6)
    assert validation_slots(sampler) == ([chance, chance], chance)  # a refused call sets nothing


# -- all of it in one loop --------------------------------------------------------------------------


def test_a_user_loop_with_masks_and_validation_logits_runs_k_times_t_iterations(artifact: Path) -> None:
    """The loop the docs describe, with a linear model per modality and summed logits."""
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(64, 4, generator=generator), torch.randn(64, 5, generator=generator)]
    labels = torch.arange(64) % 3
    heads = [torch.nn.Linear(4, 3), torch.nn.Linear(5, 3)]
    sampler = exported(artifact, iterations_per_decision=2, total_decisions=3)
    decisions = 0
    for _ in range(2 * 3):
        if sampler.decision_pending:
            with torch.no_grad():
                modality = [head(x) for head, x in zip(heads, features)]
            sampler.set_validation_logits(modality, modality[0] + modality[1], labels)
            decisions += 1
        masks = sampler.participation_masks(generator=generator)
        rows = torch.randint(64, (masks.shape[1],), generator=generator)
        fused = torch.zeros(masks.shape[1], 3)
        logits, seen = [], []
        for j, mask in enumerate(masks):
            members = mask.nonzero().squeeze(1)
            modality_logits = heads[j](features[j][rows[members]])
            fused = fused.index_add(0, members, modality_logits)
            logits.append(modality_logits)
            seen.append(labels[rows[members]])
        loss = torch.nn.functional.cross_entropy(fused, labels[rows])
        sampler.observe(logits, seen, loss=loss)
    assert decisions == 3 and sampler.decision_pending

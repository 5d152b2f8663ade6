"""DUSSampler combined with OGM-GE and a BSS row order in an ordinary PyTorch training loop.

DUS decides *how many* samples of each modality an iteration uses; the methods it plugs into act
elsewhere: OGM-GE on the gradients (between ``backward`` and ``step``), BSS on *which* samples
come next (the order of the training rows). So the three compose in one loop:

1. BSS: rank the training rows with the current model (``dus_env.methods.balance_measures``),
   then visit, each epoch, the curriculum's pool of most balanced rows (``curriculum_fraction``)
   or a weighted order drawn without replacement (``adaptive_weights``);
2. DUS: the sampler's quantities say how many of the next rows each modality takes part in
   (``participation_masks``), exactly as in ``plug_into_training_loop.py``;
3. OGM-GE: ``modulate_encoders`` damps the dominant modality's encoder gradients and adds the
   Gaussian enhancement, from the batch's modality scores.

    python examples/plugin_methods_with_sampler.py                       # DUS-H + OGM-GE + BSS curriculum
    python examples/plugin_methods_with_sampler.py --order bss_adaptive --no-ogm-ge
    python examples/plugin_methods_with_sampler.py --seeds 1 --iterations 40   # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dus_env.methods import adaptive_weights, balance_measures, curriculum_fraction, curriculum_scores, modulate_encoders
from dus_env.metrics import balanced_accuracy
from dus_env.monitor import modality_score
from dus_env.sampler import DUSSampler, participation_masks
from dus_env.tasks import SyntheticTaskConfig, Task, build_task
from plug_into_training_loop import (
    VALIDATE_EVERY,
    LateFusionNet,
    forward_batch,
    make_sampler,
    parse_run_options,
    split_logits,
)

OGM_ALPHA = 0.8
LAMBDA0, GROW_EPOCHS = 0.1, 5.0


def row_order(model: LateFusionNet, task: Task, order: str, generator: torch.Generator, min_rows: int) -> Iterator[int]:
    """Training rows, epoch after epoch, in the order ``order`` names (re-measured every epoch for BSS)."""
    n = len(task.train.labels)
    epoch = 0
    while True:
        if order == "random":
            rows = torch.randperm(n, generator=generator)
        else:
            logits, _ = split_logits(model, task.train)
            similarity, loss = balance_measures(logits, task.train.labels)
            if order == "bss_curriculum":
                pool = max(int(n * curriculum_fraction(epoch, LAMBDA0, GROW_EPOCHS)), min_rows)
                ranked = curriculum_scores(similarity, loss).argsort()[:pool]
                rows = ranked[torch.randperm(pool, generator=generator)]
            else:
                rows = torch.multinomial(adaptive_weights(similarity, loss), n, replacement=False, generator=generator)
        yield from rows.tolist()
        epoch += 1


def train(task: Task, sampler: DUSSampler, seed: int, iterations: int, order: str, ogm_ge: bool) -> float:
    """Train from scratch with the sampler's quantities, the row order and (optionally) OGM-GE."""
    torch.manual_seed(seed)  # the example's own model init; the library itself never seeds globally
    generator = torch.Generator().manual_seed(seed)
    model = LateFusionNet(task.feature_dims, task.n_classes)
    encoders = [nn.Sequential(*list(branch.children())[:-1]) for branch in model.branches]  # everything but each modality's head
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    y = task.train.labels
    rows_iter = row_order(model, task, order, generator, min_rows=sampler.mapping.max_quantity)
    for _ in range(iterations):
        if sampler.decision_pending:
            sampler.set_validation_logits(*split_logits(model, task.val), task.val.labels)
        masks = participation_masks(sampler.quantities(), generator)
        rows = torch.tensor([next(rows_iter) for _ in range(masks.shape[1])])
        fused, logits, labels = forward_batch(model, task, rows, masks)
        loss = F.cross_entropy(fused, y[rows])
        optimizer.zero_grad()
        loss.backward()
        if ogm_ge:
            scores = torch.stack([modality_score(z.detach(), t) for z, t in zip(logits, labels)])
            modulate_encoders(encoders, scores, OGM_ALPHA, generator=generator)
        optimizer.step()
        sampler.observe(logits, labels, loss=loss)
    _, fused_test = split_logits(model, task.test)
    return balanced_accuracy(fused_test.argmax(1), task.test.labels, task.n_classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--order", choices=("random", "bss_curriculum", "bss_adaptive"), default="bss_curriculum")
    parser.add_argument("--no-ogm-ge", dest="ogm_ge", action="store_false", help="leave the gradients alone")
    args = parse_run_options(parser, "training runs")
    results = []
    for seed in range(args.seeds):
        task = build_task(SyntheticTaskConfig(), np.random.default_rng(seed))
        sampler = make_sampler(None, task, args.iterations)
        results.append(train(task, sampler, seed, args.iterations, args.order, args.ogm_ge))
    spread = statistics.stdev(results) if len(results) > 1 else 0.0
    method = " + ".join(["DUS-H"] + (["OGM-GE"] if args.ogm_ge else []) + ([args.order] if args.order != "random" else []))
    print(
        f"{method}: fused test balanced accuracy {100 * statistics.mean(results):6.2f} ± {100 * spread:.2f} % "
        f"over {len(results)} seeds ({args.iterations} iterations, a decision every {VALIDATE_EVERY})"
    )


if __name__ == "__main__":
    main()

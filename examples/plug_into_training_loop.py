"""DUSSampler inside an ordinary PyTorch multimodal training loop (no DUSEnv, no gymnasium).

The loop below is what a researcher already has: two modality encoders with their own heads,
late fusion by summing logits, Adam, cross-entropy. The only change DUS asks for is where the
batch is drawn: modality ``j`` takes part in ``n_j`` samples of the batch, with ``n_j`` from the
sampler (``participation_masks`` says which), the sampler is given the model's validation logits
before each decision, and it is shown each modality's logits after the step. The script trains
the same model with the sampler and with uniform sampling over a few seeds and prints both results.

    python examples/plug_into_training_loop.py                          # DUS-H, synthetic data
    python examples/plug_into_training_loop.py --policy runs/ppo_Synthetic-v0_0/exported
    python examples/plug_into_training_loop.py --data mfeat --seeds 5
    python examples/plug_into_training_loop.py --seeds 1 --iterations 40   # a quick check
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dus_env.metrics import balanced_accuracy
from dus_env.sampler import DUSSampler, participation_masks
from dus_env.tasks import MFeatTaskConfig, Split, SyntheticTaskConfig, Task, build_task

BATCH = 32
VALIDATE_EVERY = 10  # K: training iterations between two sampling decisions


class LateFusionNet(nn.Module):
    """One MLP encoder + linear head per modality; the fused prediction is the sum of logits."""

    def __init__(self, dims: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, n_classes)) for d in dims
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [branch(x) for branch, x in zip(self.branches, features)]


@torch.no_grad()
def split_logits(model: LateFusionNet, split: Split) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each modality's logits on a whole split, and the fused (summed) logits."""
    logits = model(list(split.features))
    return logits, torch.stack(logits).sum(0)


def forward_batch(
    model: LateFusionNet, task: Task, rows: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The fused logits of training ``rows`` where modality ``j`` takes part in ``masks[j]`` only,
    and each modality's own logits and labels (what ``sampler.observe`` is shown)."""
    x, y = task.train.features, task.train.labels
    fused = torch.zeros(len(rows), task.n_classes)
    logits, labels = [], []
    for j, mask in enumerate(masks):
        members = mask.nonzero().squeeze(1)
        modality_logits = model.branches[j](x[j][rows[members]])
        fused = fused.index_add(0, members, modality_logits)  # fuse only the modalities taking part
        logits.append(modality_logits)
        labels.append(y[rows[members]])
    return fused, logits, labels


def train(task: Task, sampler: DUSSampler | None, seed: int, iterations: int) -> float:
    """Train from scratch; ``sampler=None`` is uniform sampling. Returns fused test accuracy."""
    torch.manual_seed(seed)  # the example's own model init; the library itself never seeds globally
    generator = torch.Generator().manual_seed(seed)
    model = LateFusionNet(task.feature_dims, task.n_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    y = task.train.labels
    uniform = np.full(task.n_modalities, BATCH)
    for _ in range(iterations):
        if sampler is not None and sampler.decision_pending:
            sampler.set_validation_logits(*split_logits(model, task.val), task.val.labels)
        quantities = sampler.quantities() if sampler is not None else uniform
        masks = participation_masks(quantities, generator)  # [M, b]: the rows each modality takes part in
        rows = torch.randint(len(y), (masks.shape[1],), generator=generator)
        fused, logits, labels = forward_batch(model, task, rows, masks)
        loss = F.cross_entropy(fused, y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if sampler is not None:
            sampler.observe(logits, labels, loss=loss)
    _, fused_test = split_logits(model, task.test)
    return balanced_accuracy(fused_test.argmax(1), task.test.labels, task.n_classes)


def make_sampler(policy: str | None, task: Task, iterations: int) -> DUSSampler:
    """The run length is explicit: K = VALIDATE_EVERY iterations per decision, T decisions in the run."""
    decisions = math.ceil(iterations / VALIDATE_EVERY)
    if policy:
        return DUSSampler.from_artifact(
            policy, n_classes=task.n_classes, base_batch_size=BATCH, iterations_per_decision=VALIDATE_EVERY, total_decisions=decisions
        )
    return DUSSampler.heuristic(
        task.n_classes,
        n_modalities=task.n_modalities,
        base_batch_size=BATCH,
        iterations_per_decision=VALIDATE_EVERY,
        total_decisions=decisions,
    )


def parse_run_options(parser: argparse.ArgumentParser, seeds_help: str) -> argparse.Namespace:
    """``--seeds`` and ``--iterations`` (both examples take them), parsed and checked; one torch thread."""
    parser.add_argument("--seeds", type=int, default=3, help=f"{seeds_help} (default: 3)")
    parser.add_argument("--iterations", type=int, default=200, help="training iterations per run (default: 200)")
    args = parser.parse_args()
    for name in ("seeds", "iterations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)} is invalid: expected an integer >= 1")
    torch.set_num_threads(1)
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", help="exported policy folder; default: the DUS-H heuristic")
    parser.add_argument("--data", choices=("synthetic", "mfeat"), default="synthetic")
    args = parse_run_options(parser, "training runs per sampler")
    results: dict[str, list[float]] = {"DUSSampler": [], "uniform": []}
    for seed in range(args.seeds):
        config = SyntheticTaskConfig() if args.data == "synthetic" else MFeatTaskConfig()
        task = build_task(config, np.random.default_rng(seed))
        sampler = make_sampler(args.policy, task, args.iterations)
        results["DUSSampler"].append(train(task, sampler, seed, args.iterations))
        results["uniform"].append(train(task, None, seed, args.iterations))
    for name, values in results.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(
            f"{name:<11} fused test balanced accuracy {100 * statistics.mean(values):6.2f} ± {100 * spread:.2f} % over {len(values)} seeds"
        )


if __name__ == "__main__":
    main()

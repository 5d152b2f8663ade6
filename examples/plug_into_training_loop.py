"""DUSSampler inside an ordinary PyTorch multimodal training loop (no DUSEnv, no gymnasium).

The loop below is what a researcher already has: two modality encoders with their own heads,
late fusion by summing logits, Adam, cross-entropy. The only change DUS asks for is where the
batch is drawn: modality ``j`` takes part in ``n_j`` samples of the batch, with ``n_j`` from the
sampler, and the sampler is shown each modality's logits after the step. The script trains the
same model with the sampler and with uniform sampling over a few seeds and prints both results.

    python examples/plug_into_training_loop.py                          # DUS-H, synthetic data
    python examples/plug_into_training_loop.py --policy runs/ppo_Synthetic-v0_0/exported
    python examples/plug_into_training_loop.py --data mfeat --seeds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dus_env.metrics import balanced_accuracy  # noqa: E402
from dus_env.quantities import QuantityMapping  # noqa: E402
from dus_env.sampler import DUSSampler  # noqa: E402
from dus_env.tasks import MFeatTaskConfig, SyntheticTaskConfig, Task, build_task  # noqa: E402

BATCH = 32
ITERATIONS = 200
VALIDATE_EVERY = 10


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
def accuracies(model: LateFusionNet, features: tuple[torch.Tensor, ...], labels: torch.Tensor, n_classes: int) -> tuple[list[float], float]:
    logits = model(list(features))
    per_modality = [balanced_accuracy(x.argmax(1), labels, n_classes) for x in logits]
    return per_modality, balanced_accuracy(torch.stack(logits).sum(0).argmax(1), labels, n_classes)


def train(task: Task, sampler: DUSSampler | None, seed: int) -> float:
    """Train from scratch; ``sampler=None`` is uniform sampling. Returns fused test accuracy."""
    torch.manual_seed(seed)  # the example's own model init; the library itself never seeds globally
    generator = torch.Generator().manual_seed(seed)
    model = LateFusionNet(task.feature_dims, task.n_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = task.train.features, task.train.labels
    for iteration in range(ITERATIONS):
        if sampler is not None and sampler.decision_pending:
            sampler.set_validation(*accuracies(model, task.val.features, task.val.labels, task.n_classes))
        quantities = sampler.quantities() if sampler is not None else np.full(task.n_modalities, BATCH)
        rows = torch.randint(len(y), (int(quantities.max()),), generator=generator)
        fused = torch.zeros(len(rows), task.n_classes)
        logits, labels = [], []
        for j, count in enumerate(quantities.tolist()):
            members = torch.randperm(len(rows), generator=generator)[:count]
            modality_logits = model.branches[j](x[j][rows[members]])
            fused = fused.index_add(0, members, modality_logits)
            logits.append(modality_logits)
            labels.append(y[rows[members]])
        loss = F.cross_entropy(fused, y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if sampler is not None:
            sampler.observe(logits, labels, loss=loss)
    _, fused_test = accuracies(model, task.test.features, task.test.labels, task.n_classes)
    return fused_test


def make_sampler(policy: str | None, task: Task) -> DUSSampler:
    if policy:
        return DUSSampler.from_artifact(policy, n_classes=task.n_classes, base_batch_size=BATCH,
                                        iterations_per_decision=VALIDATE_EVERY, total_decisions=ITERATIONS // VALIDATE_EVERY)
    mapping = QuantityMapping(task.n_modalities, BATCH, BATCH // 4, 2 * BATCH - BATCH // 4)
    return DUSSampler.heuristic(mapping, task.n_classes, VALIDATE_EVERY, ITERATIONS // VALIDATE_EVERY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", help="exported policy folder; default: the DUS-H heuristic")
    parser.add_argument("--data", choices=("synthetic", "mfeat"), default="synthetic")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, list[float]] = {"DUSSampler": [], "uniform": []}
    for seed in range(args.seeds):
        config = SyntheticTaskConfig() if args.data == "synthetic" else MFeatTaskConfig()
        task = build_task(config, np.random.default_rng(seed))
        sampler = make_sampler(args.policy, task)
        results["DUSSampler"].append(train(task, sampler, seed))
        results["uniform"].append(train(task, None, seed))
    for name, values in results.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name:<11} fused test balanced accuracy {100 * statistics.mean(values):6.2f} ± {100 * spread:.2f} % "
              f"over {len(values)} seeds")


if __name__ == "__main__":
    main()

"""``TrainingCore``: ``N`` DUS episodes of one config, stepped together; ``DUSEnv`` is its ``N = 1`` case.

One decision step of every env: map nothing (the caller gives integer quantities ``n_ij``), run
``K`` batched training iterations, fold the modality scores into the monitor, evaluate every model
on its validation split, build the observations and the rewards, and, for the envs whose episode
ended, evaluate on the test split. All of it is done once for the whole batch: the single env and
the vector env share this code, so they cannot drift apart.

Randomness: env ``i``'s episode is drawn from the two seeds the caller gives at its reset (task
seed, model seed), never from global state. The task instance comes from a numpy generator, the
model initialisation from a ``torch.Generator``, and the row orders and participation masks from a
counter-based generator keyed by the model seed (:mod:`dus_env.batched.random`), so env ``i``'s
draws do not depend on how many other envs share the batch. Its floating-point results may differ
in the last bits with the batch's composition (batches are padded to the largest row count of any
env, which changes the shapes of the matrix products); over an episode such differences stay at
float-noise level (tests compare full episodes statistically).

Everything on the training path runs on ``config.device``; one step moves to the host only the
numbers the caller returns (scores, losses and accuracies of every env, one transfer).

Grad mode: ``reset`` and ``step`` run in autograd's normal mode whatever the caller's mode is
(:func:`_own_grad_mode`). A step trains a model, so it needs autograd even when the caller steps the
env inside ``torch.no_grad()`` (sb3-contrib's ARS evaluates its candidate policies so) or
``torch.inference_mode()``; the evaluation inside a step keeps its own ``no_grad``. The caller's
mode is untouched on return, and the episode is the same bit for bit in every mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from .batched.data import StackedSplit
from .batched.evaluation import evaluate_split
from .batched.learners import make_learner
from .batched.model import StackedModel
from .batched.optim import StackedOptimizer
from .batched.random import seed_key
from .config import EnvConfig
from .monitor import DiscrepancyMonitor
from .observation import TrainingStatus
from .tasks import Split, Task, build_task
from .validation import ConfigError, check_one_width

#: Spawn key of the task seed's child stream that draws the shuffled modality order (a child stream,
#: not a tuple seed: ``default_rng((t, 1))`` is the same generator as ``default_rng(t + 2**32)``).
_SHUFFLE_STREAM = 1

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _own_grad_mode(method: _Method) -> _Method:
    """Run ``method`` with autograd on and outside inference mode, then give the caller its mode back.

    ``enable_grad`` alone is not enough inside ``torch.inference_mode()``: tensors made there are
    inference tensors, and the first reset allocates the model, the optimizer state and the data
    splits, so training on them would fail later ("Inference tensors cannot be saved for
    backward"), even outside inference mode. ``inference_mode(False)`` makes every tensor the
    env creates a normal one. The env takes no tensors from the caller (quantities and seeds are
    numpy and ints) and returns none, so nothing crosses between the modes.
    """
    return torch.inference_mode(False)(torch.enable_grad()(method))


@dataclass
class FinalMetrics:
    """Test-split results of the envs whose episode just ended (``envs``), row ``r`` for ``envs[r]``."""

    envs: np.ndarray
    test_fused_accuracy: np.ndarray
    test_fused_balanced_accuracy: np.ndarray
    test_modality_accuracies: np.ndarray
    test_modality_gap: np.ndarray
    quantity_totals: np.ndarray
    quantity_history: list[np.ndarray]

    def row(self, env: int) -> dict[str, Any]:
        """Env ``env``'s final info entries, as ``DUSEnv`` reports them."""
        r = int(np.flatnonzero(self.envs == env)[0])
        return {
            "test_fused_accuracy": float(self.test_fused_accuracy[r]),
            "test_fused_balanced_accuracy": float(self.test_fused_balanced_accuracy[r]),
            "test_modality_accuracies": self.test_modality_accuracies[r].tolist(),
            "test_modality_gap": float(self.test_modality_gap[r]),
            "quantity_totals": self.quantity_totals[r].tolist(),
            "quantity_history": self.quantity_history[r].tolist(),
        }


@dataclass
class StepOutcome:
    """What one call of :meth:`TrainingCore.step` (or ``reset``) returns, every array over all ``N`` envs."""

    observations: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    step: np.ndarray
    quantities: np.ndarray
    val_fused_accuracy: np.ndarray
    val_modality_accuracies: np.ndarray
    cumulative_scores: np.ndarray
    train_loss: np.ndarray
    reward_accuracy_gain: np.ndarray
    reward_gap_penalty: np.ndarray
    diverged: np.ndarray
    #: Original index of the modality at each position ``[N, M]`` (the identity without shuffling).
    modality_order: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    #: The task instances' drawn parameters, ``instance_<name>`` in ``info`` (per-modality ones in presented order).
    instance: dict[str, np.ndarray] = field(default_factory=dict)
    final: FinalMetrics | None = None
    #: Envs this outcome speaks for (a reset speaks for the envs it reset only).
    envs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def info(self, env: int) -> dict[str, Any]:
        """Env ``env``'s ``info`` dict, with Python values (the single env's format)."""
        info: dict[str, Any] = {
            "step": int(self.step[env]),
            "quantities": self.quantities[env].tolist(),
            "val_fused_accuracy": float(self.val_fused_accuracy[env]),
            "val_modality_accuracies": self.val_modality_accuracies[env].tolist(),
            "cumulative_scores": self.cumulative_scores[env].tolist(),
            "train_loss": float(self.train_loss[env]),
            "reward_accuracy_gain": float(self.reward_accuracy_gain[env]),
            "reward_gap_penalty": float(self.reward_gap_penalty[env]),
            "diverged": bool(self.diverged[env]),
        }
        info["modality_order"] = self.modality_order[env].tolist()
        for key, values in self.instance.items():
            info[f"instance_{key}"] = values[env].tolist()
        if self.diverged[env]:
            info["reward_divergence_penalty"] = float(self.rewards[env])
        if self.final is not None and env in self.final.envs:
            info.update(self.final.row(env))
        return info


class TrainingCore:
    """The training, monitoring, observation and reward of ``n_envs`` episodes (see the module docstring).

    :param config: the env config every episode uses.
    :param n_envs: ``N``.
    """

    def __init__(self, config: EnvConfig, n_envs: int) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs={n_envs} is invalid: need at least one env")
        self.config = config
        self.n_envs = n_envs
        self.device = torch.device(config.device)
        self.n_modalities = config.task.n_modalities
        self.layout = config.observation_layout()
        self.mapping = config.quantity_mapping()
        self.monitor = DiscrepancyMonitor(self.n_modalities, n_envs)
        self._tasks: list[Task | None] = [None] * n_envs
        self._allocated = False
        m = self.n_modalities
        self.step_index = np.zeros(n_envs, dtype=np.int64)
        self.quantities = np.tile(self.mapping.uniform(), (n_envs, 1))
        self.train_loss = np.zeros(n_envs)
        self.val_fused = np.zeros(n_envs)
        self.val_modality = np.zeros((n_envs, m))
        self.observations = np.zeros((n_envs, self.layout.size), dtype=np.float32)
        self.done = np.ones(n_envs, dtype=bool)
        self._history: list[np.ndarray] = []
        self._history_start = np.zeros(n_envs, dtype=np.int64)

    # -- episodes ---------------------------------------------------------------------------------

    @_own_grad_mode
    def reset(self, envs: np.ndarray, seeds: list[tuple[int, int]]) -> StepOutcome:
        """Start new episodes for ``envs``, env ``envs[r]`` from ``seeds[r] = (task seed, model seed)``."""
        envs = np.asarray(envs, dtype=np.int64)
        tasks = [self._build_task(task_seed) for task_seed, _ in seeds]
        for task in tasks:
            if self.config.max_quantity > len(task.train):
                raise ConfigError(
                    f"EnvConfig.max_quantity={self.config.max_quantity} is invalid: the task has only {len(task.train)} training samples"
                )
        if not self._allocated:
            self._allocate(tasks)
        index = torch.as_tensor(envs, device=self.device)
        for env, task, (_, model_seed) in zip(envs.tolist(), tasks, seeds):
            self._check_shape(task)
            self._tasks[env] = task
            self.modality_order[env] = task.parameters["modality_order"]
            for key, value in task.parameters.items():
                if key != "modality_order":
                    self.instance[key][env] = value
            for stacked, split in zip(self.splits, (task.train, task.val, task.test)):
                stacked.fill(env, split)
            self.model.reset_env(env, torch.Generator().manual_seed(model_seed), task.input_widths)
        self.learner.reset_envs(envs, np.array([seed_key(model_seed) for _, model_seed in seeds], dtype=np.uint64))
        self.monitor.reset(envs)
        self.step_index[envs] = 0
        self.quantities[envs] = self.mapping.uniform()
        self.train_loss[envs] = [math.log(task.n_classes) for task in tasks]
        evaluation = evaluate_split(self.model, self.val, index)
        self.val_fused[envs], self.val_modality[envs] = _host_arrays(
            evaluation.fused_balanced_accuracy, evaluation.modality_balanced_accuracies
        )
        self.done[envs] = False
        self._history_start[envs] = len(self._history)
        self.observations[envs] = self._observe()[envs]
        zeros = np.zeros(self.n_envs)
        return self._outcome(zeros, np.zeros(self.n_envs, dtype=bool), zeros, zeros, np.zeros(self.n_envs, dtype=bool), None, envs)

    @_own_grad_mode
    def step(self, quantities: np.ndarray) -> StepOutcome:
        """One decision step of every env with integer quantities ``[N, M]``.

        Every env is trained; an env whose episode had already ended is stepped for nothing and
        reports no new end (the vector env resets it right after, which overwrites all its state).
        """
        config = self.config
        running = ~self.done
        quantities = np.asarray(quantities, dtype=np.int64).reshape(self.n_envs, self.n_modalities)
        record = self.learner.run(quantities, config.iterations_per_step)
        evaluation = evaluate_split(self.model, self.val)
        losses, scores, fused, modality = _host_arrays(
            record.losses, record.scores, evaluation.fused_balanced_accuracy, evaluation.modality_balanced_accuracies
        )
        self.step_index += 1
        self.quantities = quantities.copy()
        self._history.append(quantities.copy())
        self.train_loss = losses.mean(axis=0)
        diverged = ~np.isfinite(self.train_loss) | ~np.isfinite(scores).all(axis=(0, 2))
        healthy = ~diverged
        # A diverged env keeps its monitor, validation numbers and observation of the previous step.
        self.monitor.update_many(scores, envs=healthy)
        accuracy_gain, gap_penalty = self._reward_parts(fused, modality)
        accuracy_gain[diverged] = 0.0
        gap_penalty[diverged] = 0.0
        self.val_fused[healthy] = fused[healthy]
        self.val_modality[healthy] = modality[healthy]
        rewards = np.where(diverged, -config.divergence_penalty, accuracy_gain + gap_penalty)
        self.observations[healthy] = self._observe()[healthy]
        # Only a running episode can end; an env stepped after its end (until its reset) reports nothing.
        terminated = running & (diverged | (self.step_index >= config.decision_steps))
        self.done |= terminated
        ended = np.flatnonzero(terminated)
        final = self._final_metrics(ended) if ended.size else None
        self._trim_history()
        return self._outcome(rewards, terminated, accuracy_gain, gap_penalty, diverged, final, np.arange(self.n_envs))

    # -- accessors --------------------------------------------------------------------------------

    def task(self, env: int) -> Task:
        """A copy (on the CPU) of env ``env``'s current task: the stacked data is overwritten at its next reset."""
        task = self._tasks[env]
        if task is None:
            raise RuntimeError(f"env {env} has not been reset yet")
        train, val, test = (
            Split(tuple(x.cpu().clone() for x in s.features), s.labels.cpu().clone())
            for s in (split.env_split(env) for split in self.splits)
        )
        return Task(
            task.name, task.modality_names, task.n_classes, train, val, test, parameters=dict(task.parameters), data_widths=task.data_widths
        )

    # -- internals --------------------------------------------------------------------------------

    def _build_task(self, task_seed: int) -> Task:
        """The episode's task instance, its modalities shuffled when the config asks for it.

        The order is drawn from its own stream of the task seed, so shuffling does not change
        which instance is drawn; it is recorded as the task's ``modality_order`` parameter.
        """
        task = build_task(self.config.task, np.random.default_rng(task_seed))
        m = task.n_modalities
        if not self.config.shuffle_modalities:
            return task.with_parameters({**task.parameters, "modality_order": np.arange(m)})
        check_one_width(
            task.feature_dims,
            "synthetic tasks have one; for mfeat give views as a list of view sets, which pads every view to a common width",
        )
        # A child stream (the instance's draws are unchanged); argsort of uniform draws is a uniform
        # permutation whatever M is.
        stream = np.random.SeedSequence(task_seed, spawn_key=(_SHUFFLE_STREAM,))
        order = np.argsort(np.random.default_rng(stream).random(m), kind="stable")
        permuted = task.permuted(order)
        return permuted.with_parameters({**permuted.parameters, "modality_order": order})

    def _allocate(self, tasks: list[Task]) -> None:
        first = tasks[0]
        learner = self.config.learner
        self.feature_dims, self.n_classes = first.feature_dims, first.n_classes
        capacities = [max(len(getattr(task, name)) for task in tasks) for name in ("train", "val", "test")]
        bound = getattr(self.config.task, "max_split_sizes", None)
        if bound is not None:
            capacities = [max(c, b) for c, b in zip(capacities, bound())]
        self.modality_order = np.tile(np.arange(self.n_modalities), (self.n_envs, 1))
        self.instance = {
            # object for strings: a fixed-width unicode dtype would cut a later instance's longer names
            key: np.zeros((self.n_envs, *value.shape), dtype=object if value.dtype.kind == "U" else value.dtype)
            for key, value in first.parameters.items()
            if key != "modality_order"
        }
        self.splits = tuple(
            StackedSplit(self.n_envs, capacity, first.feature_dims, first.n_classes, self.device) for capacity in capacities
        )
        self.train, self.val, self.test = self.splits
        self.model = StackedModel(
            self.n_envs,
            first.feature_dims,
            first.n_classes,
            learner.hidden_sizes,
            learner.embedding_dim,
            learner.shared_head,
            self.device,
        )
        optimizer = StackedOptimizer(self.model, learner.optimizer, learner.lr, learner.momentum, learner.weight_decay)
        self.learner = make_learner(self.config, self.model, optimizer, self.train)
        self._allocated = True

    def _check_shape(self, task: Task) -> None:
        if task.feature_dims != self.feature_dims or task.n_classes != self.n_classes:
            raise ValueError(
                f"task instance has feature dims {task.feature_dims} and {task.n_classes} classes; the envs of one "
                f"batch share a model shape ({self.feature_dims}, {self.n_classes} classes)"
            )
        for stacked, split in zip(self.splits, (task.train, task.val, task.test)):
            if len(split) > stacked.capacity:
                raise ValueError(f"task instance has a split of {len(split)} rows, the batch reserved {stacked.capacity}")

    def _reward_parts(self, fused: np.ndarray, modality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scale * (V_t - V_{t-1}), -scale * gap_penalty * (G_t - G_{t-1}))``; they sum to the reward."""
        scale = self.config.reward_scale
        gap_after = modality.max(axis=1) - modality.min(axis=1)
        gap_before = self.val_modality.max(axis=1) - self.val_modality.min(axis=1)
        return scale * (fused - self.val_fused), -scale * self.config.gap_penalty * (gap_after - gap_before)

    def _observe(self) -> np.ndarray:
        status = TrainingStatus(
            monitor=self.monitor,
            val_modality_accuracy=self.val_modality,
            val_fused_accuracy=self.val_fused,
            quantities=self.quantities,
            progress=self.step_index / self.config.decision_steps,
            train_loss=self.train_loss,
            n_classes=self.n_classes,
        )
        return self.layout.build(status)

    def _final_metrics(self, envs: np.ndarray) -> FinalMetrics:
        evaluation = evaluate_split(self.model, self.test, torch.as_tensor(envs, device=self.device))
        fused, fused_balanced, modality = _host_arrays(
            evaluation.fused_accuracy, evaluation.fused_balanced_accuracy, evaluation.modality_accuracies
        )
        histories = [np.stack(self._history[self._history_start[env] :])[:, env] for env in envs.tolist()]
        totals = np.stack([history.sum(axis=0) for history in histories]) * self.config.iterations_per_step
        return FinalMetrics(
            envs,
            fused,
            fused_balanced,
            modality,
            modality.max(axis=1) - modality.min(axis=1),
            totals,
            histories,
        )

    def _trim_history(self) -> None:
        """Drop decisions that no running episode needs any more (memory stays bounded by one episode)."""
        start = int(self._history_start[~self.done].min()) if (~self.done).any() else len(self._history)
        if start > 0:
            del self._history[:start]
            self._history_start = np.maximum(self._history_start - start, 0)

    def _outcome(
        self,
        rewards: np.ndarray,
        terminated: np.ndarray,
        accuracy_gain: np.ndarray,
        gap_penalty: np.ndarray,
        diverged: np.ndarray,
        final: FinalMetrics | None,
        envs: np.ndarray,
    ) -> StepOutcome:
        return StepOutcome(
            observations=self.observations.copy(),
            rewards=rewards.astype(np.float64),
            terminated=terminated,
            step=self.step_index.copy(),
            quantities=self.quantities.copy(),
            val_fused_accuracy=self.val_fused.copy(),
            val_modality_accuracies=self.val_modality.copy(),
            cumulative_scores=self.monitor.cumulative,
            train_loss=self.train_loss.copy(),
            reward_accuracy_gain=accuracy_gain,
            reward_gap_penalty=gap_penalty,
            diverged=diverged,
            modality_order=self.modality_order.copy(),
            instance={key: values.copy() for key, values in self.instance.items()},
            final=final,
            envs=envs,
        )


def _host_arrays(*tensors: torch.Tensor) -> list[np.ndarray]:
    """The tensors as float64 numpy arrays, through one device-to-host transfer."""
    flat = torch.cat([t.reshape(-1).double() for t in tensors]).cpu().numpy()
    arrays, start = [], 0
    for t in tensors:
        arrays.append(flat[start : start + t.numel()].reshape(t.shape))
        start += t.numel()
    return arrays

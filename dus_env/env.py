"""``DUSEnv``: multimodal training as a sequential decision problem over sample quantities."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from .config import EnvConfig, resolve_config
from .learners import Learner, build_learner
from .metrics import Evaluation, SplitEvaluator, evaluate
from .models import MultimodalModel
from .monitor import DiscrepancyMonitor
from .observation import TrainingStatus
from .presets import preset
from .tasks import Task, build_task
from .validation import ConfigError


class DUSEnv(gym.Env[np.ndarray, np.ndarray]):
    """Decide, every ``K`` training iterations, how many samples of each modality the model sees.

    **Episode.** ``reset`` draws a task instance (or a split of a fixed data set), initialises the
    multimodal model and optimizer, and evaluates it once on the validation split. Each ``step``
    maps the action to per-modality quantities ``n_j``, runs ``K = iterations_per_step`` training
    iterations with them, and evaluates on the validation split. After ``T = decision_steps``
    steps the training budget is spent and the episode ends with ``terminated=True``; there is no
    truncation. A non-finite training loss also ends it (see *Reward*).

    **Observation.** ``Box`` of float32, layout in :mod:`dus_env.observation` and on
    ``env.layout`` (named, versioned; ``env.layout.read(obs, "cumulative_score")``). It holds the
    cumulative modality scores ``ŝ^j``, last scores ``s^j``, two discrepancy forms, balanced
    validation accuracy per modality and fused, the last decision's shares, progress ``t/T`` and
    the normalised training loss.

    **Action.** ``Box(-1, 1, shape=(M,))``; component ``j`` asks for modality ``j``'s quantity, mapped
    by :class:`dus_env.quantities.QuantityMapping` (``budget="fixed"``: rescaled so that
    ``sum_j n_j = M * B``, the compute of uniform sampling; ``"free"``: taken as is). Out-of-range
    actions are clipped; NaN/inf actions raise ``ValueError``. Action 0 is uniform sampling.

    **Reward.** ``r_t = reward_scale * (U_t - U_{t-1})`` with ``U_t = V_t - gap_penalty * G_t``,
    ``V_t`` the balanced accuracy (macro recall) of the fused prediction on the validation split
    and ``G_t`` the gap between the best and worst unimodal balanced validation accuracy. The
    return is therefore ``reward_scale * (U_T - U_0)``. ``info`` reports both parts. A step whose
    training loss or modality scores are not finite gets ``-divergence_penalty`` (reported as
    ``info["reward_divergence_penalty"]``, the two other parts are 0), ends the episode and sets
    ``info["diverged"] = True``; its observation is the previous one.

    **Info.** Every step: ``quantities``, ``val_fused_accuracy``, ``val_modality_accuracies``,
    ``cumulative_scores``, ``train_loss``, ``reward_accuracy_gain``, ``reward_gap_penalty``,
    ``diverged``. At episode end, also the test split's ``test_fused_accuracy``,
    ``test_fused_balanced_accuracy``, ``test_modality_accuracies``, ``test_modality_gap``,
    ``quantity_totals`` (samples per modality over the episode) and ``quantity_history``. Test data
    never enters the reward.

    **Seeding.** All randomness (task instance, data order, participation masks, model init) is
    drawn from ``self.np_random``, seeded by ``reset(seed=...)``: the same seed gives the same
    episode bit for bit on CPU.

    :param config: a full config; default: the ``preset``'s.
    :param preset: name of a preset in :mod:`dus_env.presets` (what the registered ids use).
    :param render_mode: ``None`` or ``"ansi"`` (a one-line status string).
    :param overrides: changes to the config, see :func:`dus_env.config.resolve_config`.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        config: EnvConfig | None = None,
        *,
        preset_name: str = "Synthetic",
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        base = config if config is not None else preset(preset_name)
        self.config = resolve_config(base, overrides) if overrides else base
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            # TypeError, not ValueError: Stable-Baselines3's make_vec_env asks for "rgb_array" and
            # retries without a render mode on TypeError, so DUSEnv works with it as it is.
            raise TypeError(f"render_mode={render_mode!r} is not supported: DUSEnv renders None or 'ansi' only")
        self.render_mode = render_mode
        if self.config.torch_threads is not None:
            torch.set_num_threads(self.config.torch_threads)
        self.n_modalities = self.config.task.n_modalities
        self.layout = self.config.observation_layout()
        self.mapping = self.config.quantity_mapping()
        low, high = self.layout.bounds()
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.n_modalities,), dtype=np.float32)
        self.monitor = DiscrepancyMonitor(self.n_modalities)
        self._model: MultimodalModel | None = None
        self._task: Task | None = None
        self._learner: Learner | None = None
        self._done = True

    # -- gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if options:
            raise ValueError(f"reset options {sorted(options)} are not supported: DUSEnv.reset takes no options")
        task_seed, torch_seed = (int(x) for x in self.np_random.integers(0, 2**63 - 1, size=2))
        self._task = build_task(self.config.task, np.random.default_rng(task_seed))
        if self.config.max_quantity > len(self._task.train):
            raise ConfigError(
                f"EnvConfig.max_quantity={self.config.max_quantity} is invalid: the task has only "
                f"{len(self._task.train)} training samples"
            )
        generator = torch.Generator().manual_seed(torch_seed)
        self._learner = build_learner(self.config.learner, self._task, generator, self._model)
        self._model = self._learner.model
        self.monitor.reset()
        self._step_index = 0
        self._quantities = self.mapping.uniform()
        self._history: list[list[int]] = []
        self._loss = math.log(self._task.n_classes)
        self._validate = SplitEvaluator(self._task.val, self._task.n_classes)
        self._val = self._validate(self._model)
        self._done = False
        self._observation = self._observe()
        return self._observation.copy(), self._step_info(0.0, 0.0, diverged=False)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._done or self._learner is None or self._task is None:
            raise gym.error.ResetNeeded("DUSEnv.step called before reset() or after the episode ended: call reset()")
        quantities = self.mapping.quantities(action)
        for _ in range(self.config.iterations_per_step):
            self._learner.train_iteration(quantities)
        record = self._learner.collect()
        self._step_index += 1
        self._quantities = quantities
        self._history.append(quantities.tolist())
        self._loss = math.fsum(record.losses.tolist()) / len(record.losses)
        if not math.isfinite(self._loss) or not np.isfinite(record.scores).all():
            # Diverged: the monitor keeps its last finite state, the observation stays the previous one.
            self._done = True
            info = self._step_info(0.0, 0.0, diverged=True)
            info["reward_divergence_penalty"] = -self.config.divergence_penalty
            info.update(self._final_info())
            return self._observation.copy(), -self.config.divergence_penalty, True, False, info
        self.monitor.update_many(record.scores)
        previous = self._val
        self._val = self._validate(self._model)
        accuracy_gain, gap_penalty = self._reward_parts(previous, self._val)
        reward = accuracy_gain + gap_penalty
        self._observation = self._observe()
        terminated = self._step_index >= self.config.decision_steps
        self._done = terminated
        info = self._step_info(accuracy_gain, gap_penalty, diverged=False)
        if terminated:
            info.update(self._final_info())
        return self._observation.copy(), float(reward), terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._task is None:
            return "DUSEnv: not reset yet"
        fmt = lambda values: "[" + ", ".join(f"{v:.3f}" for v in values) + "]"  # noqa: E731
        return (
            f"step {self._step_index}/{self.config.decision_steps} | n={self._quantities.tolist()} | "
            f"ŝ={fmt(self.monitor.cumulative_values)} | val fused {self._val.fused_balanced_accuracy:.3f} "
            f"per-modality {fmt(self._val.modality_balanced_accuracies)} | loss {self._loss:.3f}"
        )

    # -- helpers -------------------------------------------------------------------------------

    @property
    def task(self) -> Task:
        """The current episode's task (after ``reset``)."""
        if self._task is None:
            raise gym.error.ResetNeeded("no task before the first reset()")
        return self._task

    @property
    def model(self) -> MultimodalModel:
        """The model being trained in the current episode (after ``reset``)."""
        if self._model is None:
            raise gym.error.ResetNeeded("no model before the first reset()")
        return self._model

    def _reward_parts(self, before: Evaluation, after: Evaluation) -> tuple[float, float]:
        """``(scale * (V_t - V_{t-1}), -scale * gap_penalty * (G_t - G_{t-1}))``; they sum to the reward."""
        scale = self.config.reward_scale
        accuracy_gain = scale * (after.fused_balanced_accuracy - before.fused_balanced_accuracy)
        return accuracy_gain, -scale * self.config.gap_penalty * (after.balanced_modality_gap - before.balanced_modality_gap)

    def _observe(self) -> np.ndarray:
        assert self._task is not None
        status = TrainingStatus(
            monitor=self.monitor,
            val_modality_accuracy=self._val.modality_balanced_accuracies,
            val_fused_accuracy=self._val.fused_balanced_accuracy,
            quantities=self._quantities,
            progress=self._step_index / self.config.decision_steps,
            train_loss=self._loss,
            n_classes=self._task.n_classes,
        )
        return self.layout.build(status)

    def _step_info(self, accuracy_gain: float, gap_penalty: float, *, diverged: bool) -> dict[str, Any]:
        return {
            "step": self._step_index,
            "quantities": self._quantities.tolist(),
            "val_fused_accuracy": self._val.fused_balanced_accuracy,
            "val_modality_accuracies": list(self._val.modality_balanced_accuracies),
            "cumulative_scores": list(self.monitor.cumulative_values),
            "train_loss": self._loss,
            "reward_accuracy_gain": accuracy_gain,
            "reward_gap_penalty": gap_penalty,
            "diverged": diverged,
        }

    def _final_info(self) -> dict[str, Any]:
        assert self._task is not None and self._model is not None
        test = evaluate(self._model, self._task.test, self._task.n_classes)
        totals = np.sum(self._history, axis=0) * self.config.iterations_per_step
        return {
            "test_fused_accuracy": test.fused_accuracy,
            "test_fused_balanced_accuracy": test.fused_balanced_accuracy,
            "test_modality_accuracies": list(test.modality_accuracies),
            "test_modality_gap": test.modality_gap,
            "quantity_totals": totals.tolist(),
            "quantity_history": [list(q) for q in self._history],
        }

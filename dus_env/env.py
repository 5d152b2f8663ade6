"""``DUSEnv``: multimodal training as a sequential decision problem over sample quantities."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from .config import EnvConfig, resolve_config
from .core import StepOutcome, TrainingCore
from .models import MultimodalModel
from .monitor import DiscrepancyMonitor
from .presets import preset
from .quantities import as_action_array
from .tasks import Task


def episode_seeds(np_random: np.random.Generator) -> tuple[int, int]:
    """The task seed and the model seed of one episode, drawn from the env's generator.

    One function for ``DUSEnv`` and ``DUSVectorEnv``: env ``i`` of a vector env reset with seed
    ``s + i`` draws the same two numbers as a ``DUSEnv`` reset with ``s``, hence the same episode.
    """
    task_seed, model_seed = (int(x) for x in np_random.integers(0, 2**63 - 1, size=2))
    return task_seed, model_seed


def check_render_mode(render_mode: str | None, modes: list[str], owner: str) -> None:
    if render_mode is not None and render_mode not in modes:
        # TypeError, not ValueError: Stable-Baselines3's make_vec_env asks for "rgb_array" and
        # retries without a render mode on TypeError, so the envs work with it as they are.
        raise TypeError(f"render_mode={render_mode!r} is not supported: {owner} renders None or 'ansi' only")


def build_core(config: EnvConfig | None, preset_name: str, overrides: dict[str, Any], n_envs: int) -> TrainingCore:
    """The resolved config's core for ``n_envs`` envs (what ``DUSEnv`` and ``DUSVectorEnv`` both build).

    Applies the config's ``torch_threads`` first: it is a process-wide torch setting.
    """
    base = config if config is not None else preset(preset_name)
    resolved = resolve_config(base, overrides) if overrides else base
    if resolved.torch_threads is not None:
        torch.set_num_threads(resolved.torch_threads)
    return TrainingCore(resolved, n_envs)


def single_spaces(core: TrainingCore) -> tuple[spaces.Box, spaces.Box]:
    """One env's observation space (the layout's bounds) and action space (``[-1, 1]^M``)."""
    low, high = core.layout.bounds()
    return spaces.Box(low, high, dtype=np.float32), spaces.Box(-1.0, 1.0, shape=(core.n_modalities,), dtype=np.float32)


def render_status(core: TrainingCore, env: int) -> str:
    """One line of env ``env``'s state (``render_mode="ansi"``)."""
    fmt = lambda values: "[" + ", ".join(f"{v:.3f}" for v in values) + "]"  # noqa: E731
    return (
        f"step {core.step_index[env]}/{core.config.decision_steps} | n={core.quantities[env].tolist()} | "
        f"ŝ={fmt(core.monitor.cumulative[env])} | val fused {core.val_fused[env]:.3f} "
        f"per-modality {fmt(core.val_modality[env])} | loss {core.train_loss[env]:.3f}"
    )


def config_of(env: gym.Env) -> EnvConfig:
    """The :class:`EnvConfig` of a (possibly wrapped) DUS env, e.g. of ``gymnasium.make("dus_env/...")``.

    :raises TypeError: ``env`` does not wrap a :class:`DUSEnv`.
    """
    base = env.unwrapped
    if not isinstance(base, DUSEnv):
        raise TypeError(f"{env!r} is not a dus_env environment (it unwraps to {type(base).__name__}, not DUSEnv)")
    return base.config


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

    **Implementation.** The env is the ``N = 1`` case of :class:`dus_env.core.TrainingCore`, the
    batched core that :class:`dus_env.vector_env.DUSVectorEnv` steps for many envs at once: the
    same seed gives the same task, model initialisation, row order and masks in both.

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
        check_render_mode(render_mode, self.metadata["render_modes"], "DUSEnv")
        self.core = build_core(config, preset_name, overrides, n_envs=1)
        self.config = self.core.config
        self.render_mode = render_mode
        self.n_modalities = self.core.n_modalities
        self.layout = self.core.layout
        self.mapping = self.core.mapping
        self.observation_space, self.action_space = single_spaces(self.core)
        self._reset_once = False

    # -- gymnasium API -------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if options:
            raise ValueError(f"reset options {sorted(options)} are not supported: DUSEnv.reset takes no options")
        outcome = self.core.reset(np.zeros(1, dtype=np.int64), [episode_seeds(self.np_random)])
        self._reset_once = True
        return self._result(outcome)[0], outcome.info(0)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self._reset_once or self.core.done[0]:
            raise gym.error.ResetNeeded("DUSEnv.step called before reset() or after the episode ended: call reset()")
        quantities = self.mapping.quantities(as_action_array(action, (self.mapping.n_modalities,)))
        outcome = self.core.step(quantities[None])
        observation, reward, terminated = self._result(outcome)
        return observation, reward, terminated, False, outcome.info(0)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if not self._reset_once:
            return "DUSEnv: not reset yet"
        return render_status(self.core, 0)

    # -- helpers -------------------------------------------------------------------------------

    @property
    def monitor(self) -> DiscrepancyMonitor:
        """The discrepancy monitor (state ``[1, M]``: the core's, for its one env)."""
        return self.core.monitor

    @property
    def task(self) -> Task:
        """The current episode's task (after ``reset``)."""
        if not self._reset_once:
            raise gym.error.ResetNeeded("no task before the first reset()")
        return self.core.task(0)

    @property
    def model(self) -> MultimodalModel:
        """A copy of the model being trained in the current episode, as an ``nn.Module`` (after ``reset``)."""
        if not self._reset_once:
            raise gym.error.ResetNeeded("no model before the first reset()")
        return self.core.model.to_module(0)

    @staticmethod
    def _result(outcome: StepOutcome) -> tuple[np.ndarray, float, bool]:
        return outcome.observations[0], float(outcome.rewards[0]), bool(outcome.terminated[0])

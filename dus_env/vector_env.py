"""``DUSVectorEnv``: ``num_envs`` DUS episodes stepped in one batched computation.

EnvPool-style native vectorisation: instead of ``N`` processes each training one tiny model, one
process trains the ``N`` models as one stacked model (:mod:`dus_env.batched`), which removes the
per-operation framework overhead ``N`` times over. ``gymnasium.make_vec("dus_env/Synthetic-v0",
num_envs=64)`` returns it; ``vectorization_mode="sync"`` still gives the process-free reference
(``SyncVectorEnv`` over ``DUSEnv``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .config import EnvConfig
from .core import StepOutcome
from .env import build_core, check_render_mode, episode_seeds, render_status, single_spaces
from .quantities import as_action_array

#: Per-env ``info`` entries of every step (and reset), with their row in a :class:`StepOutcome`.
STEP_INFO_KEYS = (
    "step",
    "quantities",
    "val_fused_accuracy",
    "val_modality_accuracies",
    "cumulative_scores",
    "train_loss",
    "reward_accuracy_gain",
    "reward_gap_penalty",
    "diverged",
)
#: Entries that describe the state after the step (a reset overwrites them for the envs it resets).
STATE_INFO_KEYS = ("step", "quantities", "val_fused_accuracy", "val_modality_accuracies", "cumulative_scores", "train_loss")
FINAL_INFO_KEYS = (
    "test_fused_accuracy",
    "test_fused_balanced_accuracy",
    "test_modality_accuracies",
    "test_modality_gap",
    "quantity_totals",
    "quantity_history",
)
AUTORESET_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)
#: Infos that are not per-env step entries (same-step autoreset's copies of the ended envs' last step).
_VECTOR_ONLY_KEYS = ("final_obs", "final_info")


class DUSVectorEnv(VectorEnv):
    """``num_envs`` independent episodes of one DUS config, stepped together.

    Each env behaves as a :class:`dus_env.env.DUSEnv` with the same config (see its docstring for the
    observation, action, reward and episode): env ``i`` reset with seed ``s + i`` draws the same
    task instance (or split), model initialisation, row order and participation masks as a
    ``DUSEnv`` reset with seed ``s + i``; its numbers agree up to float noise (batched kernels on
    padded batches can change the last bits). Both are views of one :class:`dus_env.core.TrainingCore`.

    **Threads.** Like ``DUSEnv``, creating the env applies the config's ``torch_threads`` (1 by
    default, which suits one env per process); a large vector env is faster with every core: pass
    ``torch_threads=None`` (leave torch's setting alone) or the number of cores.

    **Spaces.** ``single_observation_space`` / ``single_action_space`` are ``DUSEnv``'s;
    ``observation_space`` is ``[num_envs, D]``, ``action_space`` ``[num_envs, M]``.

    **Step.** ``actions [num_envs, M]`` -> observations ``[num_envs, D]`` (float32), rewards
    ``[num_envs]`` (float64), ``terminated``, ``truncated`` (bool ``[num_envs]``; never truncated),
    ``infos``. A NaN/inf action raises ``ValueError`` naming the env. Divergence in one env ends
    that env's episode only (its penalty and ``diverged`` flag); the models never interact.

    **Infos** follow Gymnasium's vector convention: each key maps to an array over envs, and
    ``"_<key>"`` to a bool mask of the envs that have it. Every step: ``DUSEnv``'s per-step keys
    (per-modality values as ``[num_envs, M]`` arrays); for the envs that just ended, the final test
    metrics (``test_*``, ``quantity_totals`` ``[num_envs, M]``, ``quantity_history`` as an object array
    of ``[T, M]`` arrays).

    **Autoreset** (``metadata["autoreset_mode"]``): ``next_step`` (Gymnasium's default: the step after
    an episode ended resets that env, ignores its action and returns reward 0) or ``same_step``
    (the ended env is reset in the same call; its last observation and info are in
    ``infos["final_obs"]`` / ``infos["final_info"]``, as ``SyncVectorEnv`` reports them).

    **Seeding.** ``reset(seed=s)`` seeds env ``i`` with ``s + i``; ``reset(seed=[s_0, ..., s_{N-1}])``
    seeds each env; ``reset()`` continues each env's generator. Later (auto)resets continue them too.

    :param num_envs: number of envs ``N``.
    :param config: a full config; default: the ``preset``'s.
    :param preset_name: name of a preset in :mod:`dus_env.presets` (what the registered ids use).
    :param autoreset_mode: ``"next_step"`` or ``"same_step"`` (or an ``AutoresetMode``).
    :param render_mode: ``None`` or ``"ansi"`` (one status line per env).
    :param overrides: changes to the config, see :func:`dus_env.config.resolve_config`.
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        config: EnvConfig | None = None,
        *,
        preset_name: str = "Synthetic",
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} is invalid: expected an integer >= 1")
        mode = _autoreset_mode(autoreset_mode)
        check_render_mode(render_mode, self.metadata["render_modes"], "DUSVectorEnv")
        self.num_envs = int(num_envs)
        self.core = build_core(config, preset_name, overrides, self.num_envs)
        self.config = self.core.config
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.n_modalities = self.core.n_modalities
        self.layout = self.core.layout
        self.mapping = self.core.mapping
        self.single_observation_space, self.single_action_space = single_spaces(self.core)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._generators: list[np.random.Generator | None] = [None] * self.num_envs
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._reset_once = False

    @property
    def autoreset_mode(self) -> AutoresetMode:
        return self.metadata["autoreset_mode"]

    # -- gymnasium API -----------------------------------------------------------------------------

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env (see *Seeding* in the class docstring); ``options`` are not supported."""
        if options:
            raise ValueError(f"reset options {sorted(options)} are not supported: DUSVectorEnv.reset takes no options")
        for env, env_seed in enumerate(self._env_seeds(seed)):
            if env_seed is not None or self._generators[env] is None:
                self._generators[env], _ = seeding.np_random(env_seed)
        envs = np.arange(self.num_envs)
        outcome = self.core.reset(envs, self._draw_seeds(envs))
        self._autoreset[:] = False
        self._reset_once = True
        return outcome.observations, self._infos(outcome, ended=np.zeros(self.num_envs, dtype=bool))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._reset_once:
            raise gym.error.ResetNeeded("DUSVectorEnv.step called before reset(): call reset()")
        resetting = self._autoreset.copy() if self.autoreset_mode == AutoresetMode.NEXT_STEP else np.zeros(self.num_envs, dtype=bool)
        outcome = self.core.step(self._quantities(actions, resetting))
        observations, rewards, terminated = outcome.observations.copy(), outcome.rewards.copy(), outcome.terminated.copy()
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            infos = self._infos(outcome, ended=terminated)
            if resetting.any():
                envs = np.flatnonzero(resetting)
                after = self.core.reset(envs, self._draw_seeds(envs))
                observations[envs] = after.observations[envs]
                rewards[envs] = 0.0
                terminated[envs] = False
                self._overwrite_with_reset(infos, after, resetting)
            self._autoreset = terminated.copy()
        else:
            infos = self._infos(outcome, ended=np.zeros(self.num_envs, dtype=bool))
            if terminated.any():
                envs = np.flatnonzero(terminated)
                final_infos = self._infos(outcome, ended=terminated, only=terminated)
                final_observations = np.full(self.num_envs, None, dtype=object)
                for env in envs.tolist():
                    final_observations[env] = outcome.observations[env].copy()
                after = self.core.reset(envs, self._draw_seeds(envs))
                observations[envs] = after.observations[envs]
                self._overwrite_with_reset(infos, after, terminated)
                infos.update(
                    final_obs=final_observations, _final_obs=terminated.copy(), final_info=final_infos, _final_info=terminated.copy()
                )
        return observations, rewards, terminated, np.zeros(self.num_envs, dtype=bool), infos

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode != "ansi":
            return None
        if not self._reset_once:
            return ("DUSVectorEnv: not reset yet",)
        return tuple(render_status(self.core, env) for env in range(self.num_envs))

    # -- helpers -----------------------------------------------------------------------------------

    def _env_seeds(self, seed: int | list[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            first = _checked_seed(seed, "seed")
            return [first + env for env in range(self.num_envs)]
        if isinstance(seed, (list, tuple)):
            if len(seed) != self.num_envs:
                raise ValueError(f"seed has {len(seed)} values, expected {self.num_envs}: one per env (or one int for all)")
            # All entries are checked before any generator is re-seeded: a rejected list changes nothing.
            return [None if value is None else _checked_seed(value, f"seed[{env}]") for env, value in enumerate(seed)]
        raise ValueError(f"seed={seed!r} is invalid: expected None, an int or a list of {self.num_envs} ints")

    def _draw_seeds(self, envs: np.ndarray) -> list[tuple[int, int]]:
        seeds = []
        for env in envs.tolist():
            generator = self._generators[env]
            assert generator is not None
            seeds.append(episode_seeds(generator))
        return seeds

    def _quantities(self, actions: np.ndarray, ignored: np.ndarray) -> np.ndarray:
        """Integer quantities ``[N, M]`` from ``actions``; envs in ``ignored`` (being reset) get uniform ones."""
        expected = (self.num_envs, self.n_modalities)
        values = as_action_array(actions, expected, "actions")
        quantities = np.empty(expected, dtype=np.int64)
        for env in range(self.num_envs):
            if ignored[env]:
                quantities[env] = self.mapping.uniform()
                continue
            try:
                quantities[env] = self.mapping.quantities(values[env])
            except ValueError as error:
                raise ValueError(f"env {env}: {error}") from None
        return quantities

    def _infos(self, outcome: StepOutcome, ended: np.ndarray, only: np.ndarray | None = None) -> dict[str, Any]:
        """Gymnasium vector infos of ``outcome``; the final test metrics for the envs in ``ended``.

        :param only: restrict every mask to these envs (for ``final_info``).
        """
        present = np.ones(self.num_envs, dtype=bool) if only is None else only.copy()
        infos: dict[str, Any] = {}
        for key in STEP_INFO_KEYS:
            infos[key] = getattr(outcome, key).copy()
            infos[f"_{key}"] = present.copy()
        infos["modality_order"] = outcome.modality_order.copy()
        infos["_modality_order"] = present.copy()
        for key, values in outcome.instance.items():
            infos[f"instance_{key}"] = values.copy()
            infos[f"_instance_{key}"] = present.copy()
        diverged = outcome.diverged & present
        if diverged.any():
            infos["reward_divergence_penalty"] = np.where(diverged, outcome.rewards, 0.0)
            infos["_reward_divergence_penalty"] = diverged
        final = outcome.final
        reported = ended & present
        if final is not None and reported.any():
            rows = {int(env): r for r, env in enumerate(final.envs.tolist())}
            m = self.n_modalities
            arrays: dict[str, np.ndarray] = {
                "test_fused_accuracy": np.zeros(self.num_envs),
                "test_fused_balanced_accuracy": np.zeros(self.num_envs),
                "test_modality_accuracies": np.zeros((self.num_envs, m)),
                "test_modality_gap": np.zeros(self.num_envs),
                "quantity_totals": np.zeros((self.num_envs, m), dtype=np.int64),
                "quantity_history": np.full(self.num_envs, None, dtype=object),
            }
            for env in np.flatnonzero(reported).tolist():
                r = rows[env]
                for key in FINAL_INFO_KEYS:
                    value = getattr(final, key)[r]
                    arrays[key][env] = value
            for key in FINAL_INFO_KEYS:
                infos[key] = arrays[key]
                infos[f"_{key}"] = reported.copy()
        return infos

    @staticmethod
    def _overwrite_with_reset(infos: dict[str, Any], after: StepOutcome, envs: np.ndarray) -> None:
        """The reset envs report their new episode's first info, as a reset ``DUSEnv`` would."""
        for key in STATE_INFO_KEYS:
            infos[key][envs] = getattr(after, key)[envs]
        infos["modality_order"][envs] = after.modality_order[envs]
        for key, values in after.instance.items():
            infos[f"instance_{key}"][envs] = values[envs]
        for key in ("reward_accuracy_gain", "reward_gap_penalty"):
            infos[key][envs] = 0.0
        infos["diverged"][envs] = False
        for key in ("reward_divergence_penalty", *FINAL_INFO_KEYS):
            if key in infos:
                infos[f"_{key}"] = infos[f"_{key}"] & ~envs


def row_infos(infos: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Gymnasium vector infos as one dict per env, values as Python numbers and lists (``DUSEnv``'s format).

    Why: consumers written for one env (SB3's per-env info list, the benchmark's episode traces)
    then read a vector env's infos exactly as they read a ``DUSEnv``'s.
    """
    rows: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, values in infos.items():
        if key.startswith("_") or key in _VECTOR_ONLY_KEYS:
            continue
        mask = infos[f"_{key}"]
        for env in np.flatnonzero(mask).tolist():
            value = values[env]
            rows[env][key] = value.tolist() if isinstance(value, np.ndarray | np.generic) else value
    return rows


def _checked_seed(value: Any, name: str) -> int:
    """``value`` as a seed: a non-negative integer (``bool`` and ``2.5`` are not seeds)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}={value!r} is invalid: expected a non-negative integer")
    return int(value)


def _autoreset_mode(value: AutoresetMode | str) -> AutoresetMode:
    try:
        mode = AutoresetMode(value) if not isinstance(value, AutoresetMode) else value
    except ValueError:
        mode = None
    if mode is None and isinstance(value, str):
        mode = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP}.get(value.lower())
    if mode not in AUTORESET_MODES:
        raise ValueError(
            f"autoreset_mode={value!r} is invalid: expected 'next_step' or 'same_step' "
            "(Gymnasium's DISABLED mode needs partial resets, which DUSVectorEnv does not offer)"
        )
    return mode

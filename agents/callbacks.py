"""Stable-Baselines3 callbacks of ``train_agent.py``, and the files they write.

* :func:`record_info_scalars` / :class:`InfoScalarsCallback`: the env's own quantities as ``dus/*``
  TensorBoard scalars.
* :class:`DumpLogsAtEndCallback`: the last scalars of a run reach TensorBoard.
* :class:`EvaluationLog`: ``eval/evaluations.npz``, SB3's evaluation history plus test accuracies.
* :class:`DUSEvalCallback`: ``EvalCallback`` on fixed seeds that fills that log and saves the best
  policy through :class:`SaveBestCallback`, and evaluates once more at the end of training.
* :class:`UpdateCheckpointCallback`: checkpoints taken between policy updates, so a resumed run
  repeats no update and skips no data.

Every file is written atomically (:func:`agents.results.write_bytes`): an interrupt leaves the
previous complete file, never half of one.
"""

from __future__ import annotations

import io
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv

from dus_env.faults import fault_point

from .manifest import record_checkpoint
from .results import write_bytes
from .run_files import CHECKPOINT_DIR, SB3_CHECKPOINT_PREFIX, VECNORMALIZE_FILE

# -- TensorBoard: the environment's own quantities -------------------------------------------------------


def info_scalars(info: dict[str, Any]) -> dict[str, float]:
    """The ``dus/*`` scalars of one env step's info (empty for an info without them), for any logger.

    Every step: quantities, cumulative scores and validation accuracies per modality. At episode
    end: final test accuracy (fused, balanced, per modality), the modality gap and the share of the
    episode's samples each modality got. SB3 runs average them until the next dump
    (:func:`record_info_scalars`), RLlib runs on the env runners (:mod:`agents.rllib_training`).
    """
    if "quantities" not in info:
        return {}
    scalars = {f"dus/quantity_m{j}": float(quantity) for j, quantity in enumerate(info["quantities"])}
    scalars.update({f"dus/cumulative_score_m{j}": float(score) for j, score in enumerate(info["cumulative_scores"])})
    scalars.update({f"dus/val_accuracy_m{j}": float(accuracy) for j, accuracy in enumerate(info["val_modality_accuracies"])})
    scalars["dus/val_fused_accuracy"] = float(info["val_fused_accuracy"])
    scalars["dus/train_loss"] = float(info["train_loss"])
    if "test_fused_accuracy" in info:
        scalars["dus/episode_test_accuracy"] = float(info["test_fused_accuracy"])
        scalars["dus/episode_test_balanced_accuracy"] = float(info["test_fused_balanced_accuracy"])
        scalars.update({f"dus/episode_test_accuracy_m{j}": float(accuracy) for j, accuracy in enumerate(info["test_modality_accuracies"])})
        scalars["dus/episode_modality_gap"] = float(info["test_modality_gap"])
        totals = np.asarray(info["quantity_totals"], dtype=np.float64)
        scalars.update({f"dus/episode_share_m{j}": float(share) for j, share in enumerate(totals / max(totals.sum(), 1.0))})
    return scalars


def record_info_scalars(logger: Logger, infos: Sequence[dict[str, Any]]) -> None:
    """``dus/*`` scalars (:func:`info_scalars`) from env infos, averaged until the next dump."""
    for info in infos:
        for name, value in info_scalars(info).items():
            logger.record_mean(name, value)


class InfoScalarsCallback(BaseCallback):
    """Feeds every training step's infos to :func:`record_info_scalars`."""

    def _on_step(self) -> bool:
        record_info_scalars(self.logger, self.locals.get("infos", ()))
        return True


class DumpLogsAtEndCallback(BaseCallback):
    """At the end of training, dump what was recorded since the algorithm's last dump (with its
    ``rollout/`` and ``time/`` scalars): on-policy algorithms record an update's ``train/`` scalars
    after their dump, and a run may end between two ``log_interval`` dumps."""

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.logger.name_to_value:
            self.model.dump_logs()


# -- evaluation ---------------------------------------------------------------------------------------


class EvaluationLog:
    """Evaluation history in ``eval/evaluations.npz`` (SB3's keys plus ``test_accuracies``); reloaded on resume.

    :param keep_until: on resume, the steps of the checkpoint the run continues from: evaluations
        logged after it belong to training that is being redone, and are dropped (so a kill between
        an evaluation and the next checkpoint does not leave that evaluation twice).
    """

    def __init__(self, path: Path, keep_until: int | None = None) -> None:
        self.path = path
        self.timesteps: list[int] = []
        self.results: list[list[float]] = []
        self.ep_lengths: list[list[int]] = []
        self.test_accuracies: list[list[float]] = []
        if path.is_file():
            with np.load(path) as saved:
                self.timesteps = saved["timesteps"].tolist()
                self.results = saved["results"].tolist()
                self.ep_lengths = saved["ep_lengths"].tolist()
                self.test_accuracies = saved["test_accuracies"].tolist()
        if keep_until is not None:
            keep = [i for i, steps in enumerate(self.timesteps) if steps <= keep_until]
            self.timesteps = [self.timesteps[i] for i in keep]
            self.results = [self.results[i] for i in keep]
            self.ep_lengths = [self.ep_lengths[i] for i in keep]
            self.test_accuracies = [self.test_accuracies[i] for i in keep]

    @property
    def best_mean_return(self) -> float:
        return max((float(np.mean(r)) for r in self.results), default=-np.inf)

    def add(self, timesteps: int, returns: list[float], lengths: list[int], test_accuracies: list[float]) -> bool:
        """Append one evaluation, save the file, and tell whether it is the best mean return so far.

        An evaluation at steps already logged replaces that entry: the history has one row per step count.
        """
        if timesteps in self.timesteps:
            index = self.timesteps.index(timesteps)
            for column in (self.timesteps, self.results, self.ep_lengths, self.test_accuracies):
                del column[index]
        is_best = float(np.mean(returns)) > self.best_mean_return
        self.timesteps.append(timesteps)
        self.results.append(returns)
        self.ep_lengths.append(lengths)
        self.test_accuracies.append(test_accuracies)
        buffer = io.BytesIO()
        np.savez(buffer, timesteps=self.timesteps, results=self.results, ep_lengths=self.ep_lengths, test_accuracies=self.test_accuracies)
        write_bytes(self.path, buffer.getvalue())
        fault_point("after_eval")
        print(
            f"eval at {timesteps:,} steps: return {np.mean(returns):.4f}, test accuracy {np.mean(test_accuracies):.4f}"
            + (" (new best)" if is_best else "")
        )
        return is_best


class SaveBestCallback(BaseCallback):
    """Called by the eval callback on a new best: writes ``best_model/best_model.zip`` (+ statistics)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def _on_step(self) -> bool:
        save_sb3(self.model, self.folder, "best_model.zip", VECNORMALIZE_FILE)
        return True


class DUSEvalCallback(EvalCallback):
    """SB3's ``EvalCallback`` on fixed seeds, recording test accuracy and writing files atomically.

    The eval env has one env per episode, reseeded with ``eval_seed`` before every evaluation, so
    episode ``i`` always runs on seed ``eval_seed + i``: evaluations compare policies on the same
    training instances. ``EvalCallback`` syncs the ``VecNormalize`` statistics itself.

    Evaluations run between policy updates, as checkpoints are taken (:class:`UpdateCheckpointCallback`):
    at the start of the first rollout at or after every ``eval_freq`` env steps, so the row logged at
    ``N`` steps is the policy that has learned from exactly ``N`` steps. (SB3's ``EvalCallback``
    evaluates inside a rollout, with the weights of before that rollout's update.) At the end of
    training the final policy is evaluated too, so every run has ``eval/evaluations.npz`` and
    ``best_model/`` (``eval_freq`` 0: that evaluation only).

    :param eval_freq: env steps between evaluations (0: only at the end).
    :param on_evaluation: called after every evaluation is logged, with the env steps and the mean return of
        its episodes (``tune_agent.py`` reports it to Ray Tune); ``None``: nothing is called.
    """

    def __init__(
        self,
        eval_env: VecEnv,
        log: EvaluationLog,
        eval_seed: int,
        eval_freq: int,
        best_dir: Path,
        on_evaluation: Callable[[int, float], None] | None = None,
    ) -> None:
        super().__init__(
            eval_env,
            callback_on_new_best=SaveBestCallback(best_dir),
            n_eval_episodes=eval_env.num_envs,
            eval_freq=1,  # EvalCallback evaluates when called; this class decides when to call it
            log_path=None,
            best_model_save_path=None,
            deterministic=True,
            verbose=0,
        )
        self.log = log
        self.eval_seed = eval_seed
        self.every = eval_freq
        self.on_evaluation = on_evaluation
        self.best_mean_reward = log.best_mean_return
        self._episodes: list[tuple[float, int, float]] = []
        self._next: int | None = None

    def _init_callback(self) -> None:
        super()._init_callback()
        # After a resume, keep evaluating at multiples of eval_freq env steps, as an unbroken run would.
        self._next = next_multiple(self.model.num_timesteps, self.every)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self._next is not None and self.num_timesteps >= self._next:
            self._evaluate()
            self._next = next_multiple(self.num_timesteps, self.every)

    def _on_training_end(self) -> None:
        if not (self.log.timesteps and self.log.timesteps[-1] == self.num_timesteps):
            self._evaluate()

    def _evaluate(self) -> None:
        """One evaluation of the current policy (``EvalCallback._on_step`` with ``eval_freq`` 1), logged at ``num_timesteps``."""
        self.eval_env.seed(self.eval_seed)
        self._episodes = []
        super()._on_step()
        returns, lengths, accuracies = (list(column) for column in zip(*self._episodes))
        self.log.add(self.num_timesteps, returns, lengths, accuracies)
        if self.on_evaluation is not None:
            self.on_evaluation(self.num_timesteps, float(np.mean(returns)))

    def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        super()._log_success_callback(locals_, globals_)
        info = locals_["info"]
        if locals_["done"] and "episode" in info:
            accuracy = float(info["test_fused_accuracy"])
            self._episodes.append((float(info["episode"]["r"]), int(info["episode"]["l"]), accuracy))
            self.logger.record_mean("eval/test_fused_accuracy", accuracy)


# -- checkpoints --------------------------------------------------------------------------------------


class UpdateCheckpointCallback(CheckpointCallback):
    """``CheckpointCallback`` that saves between policy updates, atomically, with the statistics.

    A checkpoint is taken at the start of the first rollout at or after every ``save_freq`` env
    steps, when the weights have learned from exactly ``num_timesteps`` steps; so resuming from it
    repeats no update and skips no data. ``trained_timesteps`` is that count for the current weights
    (what a Ctrl-C checkpoint records).
    """

    def __init__(self, save_freq: int, run_dir: Path, start_timesteps: int) -> None:
        super().__init__(save_freq, str(run_dir / CHECKPOINT_DIR), name_prefix=SB3_CHECKPOINT_PREFIX)
        self.run_dir = run_dir
        self.trained_timesteps = start_timesteps
        self._next = next_multiple(start_timesteps, save_freq)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        self.trained_timesteps = self.num_timesteps
        if self._next is not None and self.num_timesteps >= self._next:
            fault_point("before_checkpoint")
            with deferred_interrupts():
                save_sb3_checkpoint(self.model, self.run_dir, self.num_timesteps)
            self._next = next_multiple(self.num_timesteps, self.save_freq)


def next_multiple(done: int, every: int) -> int | None:
    """The first multiple of ``every`` above ``done`` steps: when the next checkpoint or evaluation is due (``None``: off)."""
    return (done // every + 1) * every if every > 0 else None


def save_sb3(model: BaseAlgorithm, folder: Path, model_name: str, vecnormalize_name: str, fault: str | None = None) -> list[Path]:
    """Model ``.zip`` (and its ``VecNormalize`` statistics, written first) into ``folder``, atomically;
    returns the files written (``fault``: see :func:`agents.results.atomic_output`)."""
    written = []
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        # VecNormalize pickles without its envs (__getstate__ drops them).
        written.append(write_bytes(folder / vecnormalize_name, pickle.dumps(vec_normalize)))
    buffer = io.BytesIO()
    model.save(buffer)
    written.append(write_bytes(folder / model_name, buffer.getvalue(), fault=fault))
    return written


def sb3_checkpoint_names(timesteps: int) -> tuple[str, str]:
    """File names of the model and of its statistics in a checkpoint (SB3's ``CheckpointCallback`` names)."""
    return f"{SB3_CHECKPOINT_PREFIX}_{timesteps}_steps.zip", f"{SB3_CHECKPOINT_PREFIX}_vecnormalize_{timesteps}_steps.pkl"


def save_sb3_checkpoint(model: BaseAlgorithm, run_dir: Path, timesteps: int, extra: Sequence[Path] = ()) -> None:
    """A checkpoint at ``timesteps`` in the run's checkpoint folder, then its manifest entry (with
    ``extra`` files written for it, e.g. a replay buffer): until that entry exists it is no resume point."""
    written = save_sb3(model, run_dir / CHECKPOINT_DIR, *sb3_checkpoint_names(timesteps), fault="mid_checkpoint")
    record_checkpoint(run_dir, timesteps, [*written, *extra])


_holding = threading.local()


@contextmanager
def deferred_interrupts(reraise: bool = True) -> Iterator[list[int]]:
    """Hold Ctrl-C until the block (a save) is done: a second Ctrl-C must not leave a half-saved run.

    Yields the list of signals held. After the block, a held Ctrl-C goes where it would have gone:
    ``KeyboardInterrupt`` under Python's default handler (only with ``reraise``; ``False`` when the
    caller is already stopping and reads the list), the previous handler if one was installed,
    nowhere if SIGINT was ignored. Nested blocks defer to the outermost one; off the main thread
    (where signal handlers cannot be set) nothing is held.
    """
    if threading.current_thread() is not threading.main_thread() or getattr(_holding, "active", False):
        yield []
        return
    received: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if not received:
            print("\nsaving: Ctrl-C will take effect once the files are written", file=sys.stderr)
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    _holding.active = True
    try:
        yield received
    finally:
        _holding.active = False
        signal.signal(signal.SIGINT, previous)
    if not received or previous is signal.SIG_IGN:
        return
    if previous is signal.default_int_handler or previous in (None, signal.SIG_DFL):
        if reraise:
            raise KeyboardInterrupt
    elif callable(previous):
        previous(signal.SIGINT, None)

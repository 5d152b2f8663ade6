"""The training loop of ``train_agent.py``: every algorithm (SB3, sb3-contrib, DUS-R) on one path.

:func:`train_model` takes a resolved :class:`agents.runs.Run` (and the checkpoint steps to resume
from) and leaves the run folder: checkpoints between policy updates, ``eval/evaluations.npz`` and the
best policy (an evaluation at least at the end of training), the final policy, and TensorBoard
scalars (the algorithm's and ``dus/*``) at least every :data:`LOG_EVERY_STEPS` env steps. On Ctrl-C
it saves a checkpoint of the weights as of the last completed update and returns
``interrupted=True`` instead of raising, so the driver can say how to resume.
"""

from __future__ import annotations

import io
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, ProgressBarCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor, VecNormalize

from .base import Agent
from .callbacks import (
    DumpLogsAtEndCallback,
    DUSEvalCallback,
    EvaluationLog,
    InfoScalarsCallback,
    UpdateCheckpointCallback,
    deferred_interrupts,
    save_sb3,
    save_sb3_checkpoint,
    sb3_checkpoint_names,
)
from .export import export_sb3_policy
from .manifest import RunManifest, damage, record_export, record_final
from .native_vec_env import NativeVecEnv, make_native_vec_env
from .reinforce import Reinforce
from .results import write_bytes
from .rollout import EpisodeResult, run_episode
from .run_files import SB3_FINAL_FILE, VECNORMALIZE_FILE
from .runs import Run, RunStart, UsageError
from .sb3_agent import SB3Agent, get_algorithm_class, sb3_constructor_kwargs, vec_normalize_kwargs
from .seed_ranges import RESUME_SEED_BASE, RESUME_SEED_SPAN
from .trust import UntrustedLoadError, allow_pickle_load

T = TypeVar("T")

#: What training returns: the model (DUS-R's :class:`agents.reinforce.Reinforce` is one too).
Trained = BaseAlgorithm

#: TensorBoard scalars are dumped at least this often (env steps), and at the end of training.
LOG_EVERY_STEPS = 1_000


def replay_buffer_path(run: Run, timesteps: int) -> Path:
    """An off-policy algorithm's replay buffer as of the checkpoint at ``timesteps`` (saved with the
    checkpoints taken at a run's end or on Ctrl-C, not with the periodic ones: it is large)."""
    return run.checkpoint_dir / f"replay_buffer_{timesteps}_steps.pkl"


# -- environments -------------------------------------------------------------------------------------


def env_factory(env_id: str, env_kwargs: dict[str, Any], in_subprocess: bool) -> Callable[[], gym.Env]:
    """A function that builds one Monitor-wrapped env; picklable for ``SubprocVecEnv`` workers.

    Each env sets its process's torch threads itself (``EnvConfig.torch_threads``, 1 by default):
    one thread per worker is fastest for these small models and does not oversubscribe the cores.
    """

    def make() -> gym.Env:
        if in_subprocess:
            # Ctrl-C is the main process's to handle (it saves a checkpoint); a worker that died on
            # it would take the envs down mid-save.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        import dus_env  # noqa: F401  (registers the ids in a fresh worker process)

        return Monitor(gym.make(env_id, **env_kwargs))

    return make


def make_vec_env(run: Run, n_envs: int | None = None) -> VecEnv:
    """``n_envs`` (default: the run's) envs as ``--vec`` says: the native batched vector env, a
    ``SubprocVecEnv`` (forkserver; a ``DummyVecEnv`` for a single env) or a ``DummyVecEnv``.

    Native envs are not wrapped in ``Monitor``s: training wraps the whole vector env in a
    ``VecMonitor`` (:func:`monitored`).
    """
    n_envs = run.n_envs if n_envs is None else n_envs
    if run.vec == "native":
        # Every core for the batched computation, unless the run's env kwargs say otherwise.
        return make_native_vec_env(run.env_id, n_envs, {"torch_threads": None, **run.env_kwargs})
    if run.vec == "subproc" and n_envs > 1:
        return SubprocVecEnv([env_factory(run.env_id, run.env_kwargs, True) for _ in range(n_envs)], start_method="forkserver")
    return DummyVecEnv([env_factory(run.env_id, run.env_kwargs, False) for _ in range(n_envs)])


def monitored(venv: VecEnv) -> VecEnv:
    """Episode returns and lengths for SB3's logs: per env (``Monitor``) or, for the native env, a ``VecMonitor``."""
    return VecMonitor(venv) if isinstance(venv, NativeVecEnv) else venv


def shutdown(venv: VecEnv, interrupted: bool) -> None:
    """Close the envs; after an interrupt, stop subprocess workers outright (a pipe may be mid-message)."""
    base = venv.unwrapped
    if interrupted and isinstance(base, SubprocVecEnv):
        for process in base.processes:
            process.terminate()
        return
    venv.close()


def evaluate_agent(agent: Agent, run: Run) -> list[EpisodeResult]:
    """The agent on the evaluation seeds, one episode each, in a fresh env in this process."""
    env = run.make_env()
    try:
        return [run_episode(env, agent, seed, run.env_id) for seed in run.eval_seeds]
    finally:
        env.close()


# -- training -----------------------------------------------------------------------------------------


def load_first(start: RunStart, load: Callable[[int], T]) -> T:
    """The first of the start's checkpoints (newest first) that loads; one line names each that does not.

    Then :meth:`RunStart.loaded` records the resumption in ``config.yml``: never before a checkpoint loaded.
    """
    for steps in start.checkpoints:
        try:
            loaded = load(steps)
        except UntrustedLoadError as error:
            raise UsageError(str(error)) from None
        except Exception as error:  # SB3 and pickle raise many types for a damaged file
            print(
                f"warning: the checkpoint at {steps:,} steps does not load ({type(error).__name__}: {error}); trying the previous one",
                file=sys.stderr,
            )
            continue
        start.loaded(steps)
        return loaded
    raise UsageError(f"no checkpoint of {start.run.run_dir} loads (see above): start a new run with another --run-dir")


def train_model(start: RunStart, progress: bool, on_evaluation: Callable[[int, float], None] | None = None) -> tuple[BaseAlgorithm, bool]:
    """Train an algorithm (SB3, sb3-contrib or DUS-R) from the beginning, or continue it from the newest checkpoint that loads.

    :param on_evaluation: called after every evaluation during training with the env steps and the mean
        return of the evaluation episodes (:class:`agents.callbacks.DUSEvalCallback`; ``tune_agent.py``
        reports it to Ray Tune).
    :return: the model and whether Ctrl-C stopped training.
    """
    run = start.run
    algorithm = get_algorithm_class(run.algo)
    norm_kwargs = vec_normalize_kwargs(run.hyperparams)
    venv = monitored(make_vec_env(run))
    if start.checkpoints:

        def load(steps: int) -> tuple[BaseAlgorithm, VecEnv]:
            model_name, stats_name = sb3_checkpoint_names(steps)
            allow_pickle_load(run.checkpoint_dir / model_name, "SB3 checkpoint")
            if norm_kwargs is not None:
                allow_pickle_load(run.checkpoint_dir / stats_name, "VecNormalize statistics")
            env = VecNormalize.load(str(run.checkpoint_dir / stats_name), venv) if norm_kwargs is not None else venv
            return algorithm.load(run.checkpoint_dir / model_name, env=env, device="cpu", tensorboard_log=str(run.tensorboard_dir)), env

        model, venv = load_first(start, load)
        model.set_random_seed(resume_seed(run.seed, model.num_timesteps))
        replay_buffer = replay_buffer_path(run, model.num_timesteps)
        if isinstance(model, OffPolicyAlgorithm):
            if replay_buffer.is_file():  # listed with its checkpoint, so checked with it
                allow_pickle_load(replay_buffer, "replay buffer")
                model.load_replay_buffer(replay_buffer)
            else:
                print(
                    f"note: the checkpoint at {model.num_timesteps:,} steps has no replay buffer (periodic checkpoints "
                    "do not keep one): training continues with an empty buffer",
                    file=sys.stderr,
                )
    else:
        if norm_kwargs is not None:
            venv = VecNormalize(venv, **norm_kwargs)
        kwargs = sb3_constructor_kwargs(algorithm, run.hyperparams)
        kwargs.setdefault("device", "cpu")
        try:
            model = algorithm(env=venv, seed=run.seed, tensorboard_log=str(run.tensorboard_dir), verbose=0, **kwargs)
        except (AssertionError, TypeError, ValueError) as error:
            venv.close()
            raise UsageError(f"cannot build {algorithm.__name__} on {run.env_id} with these hyperparameters: {error}") from error

    checkpoints = UpdateCheckpointCallback(run.checkpoint_freq, run.run_dir, model.num_timesteps)
    # SB3's own progress bar (tqdm + rich), created here so that an interrupt can close it.
    progress_bar = ProgressBarCallback() if progress else None
    # One env per episode (see DUSEvalCallback); statistics are synced from training, frozen here.
    eval_venv = monitored(
        make_vec_env(run, len(run.eval_seeds))
        if run.vec == "native"
        else DummyVecEnv([env_factory(run.env_id, run.env_kwargs, False) for _ in run.eval_seeds])
    )
    if norm_kwargs is not None:
        eval_venv = VecNormalize(eval_venv, training=False, **{**norm_kwargs, "norm_reward": False})
    log = EvaluationLog(run.run_dir / "eval" / "evaluations.npz", keep_until=model.num_timesteps)
    # Every eval_freq steps, and always at the end (eval_freq 0: only then); the final log dump comes first.
    evaluations = DUSEvalCallback(eval_venv, log, run.eval_seed, run.eval_freq, run.best_dir, on_evaluation)
    callbacks: list[BaseCallback] = [
        InfoScalarsCallback(),
        checkpoints,
        *([progress_bar] if progress_bar else []),
        DumpLogsAtEndCallback(),
        evaluations,
    ]
    interrupted = False
    remaining = run.total_timesteps - model.num_timesteps
    try:
        if remaining > 0:  # a resumed run whose training had finished only writes its final files
            model.learn(
                total_timesteps=remaining,
                callback=callbacks,
                reset_num_timesteps=False,
                tb_log_name=algorithm.__name__,
                **log_interval(model, run),
            )
    except KeyboardInterrupt:
        interrupted = True
        model.num_timesteps = checkpoints.trained_timesteps
        if progress_bar is not None and hasattr(progress_bar, "pbar"):
            progress_bar.pbar.close()
    with deferred_interrupts(reraise=False) as held:
        if remaining > 0:
            extra = []
            if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
                buffer = io.BytesIO()
                model.save_replay_buffer(buffer)
                extra.append(write_bytes(replay_buffer_path(run, model.num_timesteps), buffer.getvalue()))
            save_sb3_checkpoint(model, run.run_dir, model.num_timesteps, extra)
        if not interrupted:
            record_final(
                run.run_dir, save_sb3(model, run.run_dir, SB3_FINAL_FILE, VECNORMALIZE_FILE, fault="mid_final"), model.num_timesteps
            )
    interrupted = interrupted or bool(held)  # a Ctrl-C during the final save stops before the evaluation and export
    shutdown(venv, interrupted)
    eval_venv.close()
    return model, interrupted


def log_interval(model: BaseAlgorithm, run: Run) -> dict[str, Any]:
    """``learn``'s ``log_interval`` for a dump at least every :data:`LOG_EVERY_STEPS` env steps (``{}``:
    the algorithm's own default, for algorithms that count it otherwise).

    Why: SB3's defaults count iterations or episodes (A2C: every 100 updates of ``n_steps * n_envs``
    steps, 32,000 steps with this project's settings), so a short run would write no scalars.
    On-policy algorithms and DUS-R count updates, off-policy ones episodes (of every env).
    """
    episode = run.env_config.decision_steps
    if isinstance(model, OnPolicyAlgorithm):
        per_interval = model.n_steps * model.n_envs
    elif isinstance(model, Reinforce):
        per_interval = model.episodes_per_batch * episode
    elif isinstance(model, OffPolicyAlgorithm):
        per_interval = episode
    else:
        return {}
    return {"log_interval": max(LOG_EVERY_STEPS // per_interval, 1)}


def resume_seed(run_seed: int, num_timesteps: int) -> int:
    """The seed of the training envs of run ``run_seed`` resumed from its checkpoint at ``num_timesteps``.

    Fresh episodes after every resume, the same ones for the same run and checkpoint, and never an
    evaluation episode: the seed is in ``[RESUME_SEED_BASE, RESUME_SEED_BASE + RESUME_SEED_SPAN)``.
    Why not ``run_seed + num_timesteps``: checkpoints land on round step counts (A2C's 40-step
    rollouts reach 10000 and 20000 exactly), which are where the held-out evaluation seeds start.
    """
    state = np.random.SeedSequence([run_seed, num_timesteps]).generate_state(1)[0]
    return RESUME_SEED_BASE + int(state) % RESUME_SEED_SPAN


# -- after training -----------------------------------------------------------------------------------


def export_policy(run: Run, trained: Trained, vec_normalize: VecNormalize | None = None) -> Path:
    """Write ``<run_dir>/exported/``: the deterministic policy for ``dus_env``'s ``DUSSampler``, and
    list it in the run's manifest.

    :param vec_normalize: an SB3 model's normalisation statistics when they are not attached to it
        (a model loaded without its env); by default the model's own.
    """
    metadata = {
        "algo": run.algo,
        "env_id": run.env_id,
        "env_kwargs": run.env_kwargs,
        "hyperparams": run.hyperparams,
        "seed": run.seed,
        "num_timesteps": trained.num_timesteps,
        "run_dir": str(run.run_dir),
    }
    out_dir = run.run_dir / "exported"
    with deferred_interrupts():
        statistics = vec_normalize if vec_normalize is not None else trained.get_vec_normalize_env()
        export_sb3_policy(trained, statistics, run.env_config, out_dir, metadata)
        record_export(run.run_dir, out_dir, trained.num_timesteps)
    return out_dir


def as_agent(run: Run, trained: Trained) -> Agent:
    """The trained policy as an :class:`~agents.base.Agent`, with its normalisation statistics."""
    return SB3Agent(run.env_config.observation_layout(), run.env_config.quantity_mapping(), trained, trained.get_vec_normalize_env())


def export_only(run: Run, manifest: RunManifest, checkpoint: int | None) -> Path:
    """Export a run's policy again (``train_agent.py --export-only``): its final model, or the
    checkpoint at ``checkpoint`` steps, checked against the manifest first.

    :raises UsageError: no such checkpoint, or its files do not match the manifest.
    """
    if checkpoint is None:
        if manifest.final is None:
            raise UsageError(
                f"{run.run_dir} has no final model yet: pass --checkpoint STEPS (one of "
                f"{sorted(manifest.checkpoints) or 'none'}) or resume the run"
            )
        files, source = manifest.final, run.run_dir
    else:
        if checkpoint not in manifest.checkpoints:
            raise UsageError(
                f"--checkpoint {checkpoint} is not a checkpoint of {run.run_dir}: choose one of {sorted(manifest.checkpoints)}"
            )
        files = manifest.checkpoints[checkpoint]
        source = run.run_dir / next(name for name in files if name.endswith(".zip"))
    problem = damage(run.run_dir, files)
    if problem is not None:
        raise UsageError(f"cannot export from {source}: {problem}")
    env = run.make_env()
    try:
        agent = SB3Agent.load(source, env, algo=run.algo)
        return export_policy(run, agent.model, agent.vec_normalize)
    finally:
        env.close()

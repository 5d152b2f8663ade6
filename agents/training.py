"""Training loops of ``train_agent.py``: SB3 algorithms and DUS-R, with the same files and the same Ctrl-C.

Both loops take a resolved :class:`agents.runs.Run` (and the checkpoint steps to resume from) and
leave the same run folder: checkpoints between policy updates, ``eval/evaluations.npz``, the best
policy, the final policy and ``dus/*`` TensorBoard scalars. On Ctrl-C they save a checkpoint of the
weights as of the last completed update and return ``interrupted=True`` instead of raising, so the
driver can say how to resume.
"""

from __future__ import annotations

import io
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, ProgressBarCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor, VecNormalize


from dus_env.faults import fault_point

from .base import Agent
from .callbacks import (
    DUSEvalCallback,
    EvaluationLog,
    InfoScalarsCallback,
    UpdateCheckpointCallback,
    deferred_interrupts,
    next_multiple,
    record_info_scalars,
    save_sb3,
    save_sb3_checkpoint,
    sb3_checkpoint_names,
)
from .export import export_reinforce_policy, export_sb3_policy
from .manifest import RunManifest, damage, record_checkpoint, record_export, record_final
from .native_vec_env import NativeVecEnv, make_native_vec_env
from .reinforce import ReinforceAgent, ReinforceUpdate
from .results import write_bytes
from .rollout import EpisodeResult, run_episode
from .run_files import REINFORCE_CHECKPOINT_PREFIX, REINFORCE_FINAL_FILE, SB3_FINAL_FILE, VECNORMALIZE_FILE
from .runs import Run, RunStart, UsageError, reinforce_config
from .sb3_agent import SB3Agent, get_algorithm_class, sb3_constructor_kwargs, vec_normalize_kwargs
from .trust import UntrustedLoadError, allow_pickle_load

T = TypeVar("T")

#: What a training loop returns: an SB3 model or a DUS-R agent.
Trained = BaseAlgorithm | ReinforceAgent

def replay_buffer_path(run: Run, timesteps: int) -> Path:
    """An off-policy algorithm's replay buffer as of the checkpoint at ``timesteps`` (saved with the
    checkpoints taken at a run's end or on Ctrl-C, not with the periodic ones: it is large)."""
    return run.checkpoint_dir / f"replay_buffer_{timesteps}_steps.pkl"

#: A resumed SB3 run reseeds its training envs with a seed in ``[RESUME_SEED_BASE, RESUME_SEED_BASE +
#: RESUME_SEED_SPAN)`` (see :func:`resume_seed`): above every seed that evaluation uses (``evaluate.py``
#: from 10000, the documented tables from 20000, ``train_agent.py --eval-seed`` from 1000000), and with
#: room below ``2**32``, the largest seed SB3's global seeding (``numpy.random.seed``) accepts, for the
#: ``+ i`` that env ``i`` adds.
RESUME_SEED_BASE = 2**31
RESUME_SEED_SPAN = 2**30


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

    Native envs are not wrapped in ``Monitor``s: SB3 runs wrap the whole vector env in a
    ``VecMonitor`` (:func:`monitored`), DUS-R keeps its own episode records.
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


# -- training: Stable-Baselines3 ----------------------------------------------------------------------


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
            print(f"warning: the checkpoint at {steps:,} steps does not load ({type(error).__name__}: {error}); "
                  "trying the previous one", file=sys.stderr)
            continue
        start.loaded(steps)
        return loaded
    raise UsageError(f"no checkpoint of {start.run.run_dir} loads (see above): start a new run with another --run-dir")


def train_sb3(start: RunStart, progress: bool) -> tuple[BaseAlgorithm, bool]:
    """Train an SB3 algorithm from the beginning, or continue it from the newest checkpoint that loads.

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
        if hasattr(model, "replay_buffer"):
            if replay_buffer.is_file():  # listed with its checkpoint, so checked with it
                allow_pickle_load(replay_buffer, "replay buffer")
                model.load_replay_buffer(replay_buffer)
            else:
                print(f"note: the checkpoint at {model.num_timesteps:,} steps has no replay buffer (periodic checkpoints "
                      "do not keep one): training continues with an empty buffer", file=sys.stderr)
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
    callbacks: list[BaseCallback] = [InfoScalarsCallback(), checkpoints, *([progress_bar] if progress_bar else [])]
    eval_venv: VecEnv | None = None
    if run.eval_freq > 0:
        # One env per episode (see DUSEvalCallback); statistics are synced from training, frozen here.
        eval_venv = monitored(make_vec_env(run, len(run.eval_seeds)) if run.vec == "native" else
                              DummyVecEnv([env_factory(run.env_id, run.env_kwargs, False) for _ in run.eval_seeds]))
        if norm_kwargs is not None:
            eval_venv = VecNormalize(eval_venv, training=False, **{**norm_kwargs, "norm_reward": False})
        log = EvaluationLog(run.run_dir / "eval" / "evaluations.npz", keep_until=model.num_timesteps)
        callbacks.append(DUSEvalCallback(eval_venv, log, run.eval_seed, max(run.eval_freq // run.n_envs, 1), run.best_dir))
    interrupted = False
    remaining = run.total_timesteps - model.num_timesteps
    try:
        if remaining > 0:  # a resumed run whose training had finished only writes its final files
            model.learn(total_timesteps=remaining, callback=callbacks, reset_num_timesteps=False, tb_log_name=algorithm.__name__)
    except KeyboardInterrupt:
        interrupted = True
        model.num_timesteps = checkpoints.trained_timesteps
        if progress_bar is not None and hasattr(progress_bar, "pbar"):
            progress_bar.pbar.close()
    with deferred_interrupts(reraise=False) as held:
        if remaining > 0:
            extra = []
            if getattr(model, "replay_buffer", None) is not None:
                buffer = io.BytesIO()
                model.save_replay_buffer(buffer)
                extra.append(write_bytes(replay_buffer_path(run, model.num_timesteps), buffer.getvalue()))
            save_sb3_checkpoint(model, run.run_dir, model.num_timesteps, extra)
        if not interrupted:
            record_final(run.run_dir, save_sb3(model, run.run_dir, SB3_FINAL_FILE, VECNORMALIZE_FILE, fault="mid_final"), model.num_timesteps)
    interrupted = interrupted or bool(held)  # a Ctrl-C during the final save stops before the evaluation and export
    shutdown(venv, interrupted)
    if eval_venv is not None:
        eval_venv.close()
    return model, interrupted


def resume_seed(run_seed: int, num_timesteps: int) -> int:
    """The seed of the training envs of run ``run_seed`` resumed from its checkpoint at ``num_timesteps``.

    Fresh episodes after every resume, the same ones for the same run and checkpoint, and never an
    evaluation episode: the seed is in ``[RESUME_SEED_BASE, RESUME_SEED_BASE + RESUME_SEED_SPAN)``.
    Why not ``run_seed + num_timesteps``: checkpoints land on round step counts (A2C's 40-step
    rollouts reach 10000 and 20000 exactly), which are where the held-out evaluation seeds start.
    """
    state = np.random.SeedSequence([run_seed, num_timesteps]).generate_state(1)[0]
    return RESUME_SEED_BASE + int(state) % RESUME_SEED_SPAN


# -- training: DUS-R (REINFORCE) ----------------------------------------------------------------------


def reinforce_checkpoint(run: Run, timesteps: int) -> Path:
    return run.checkpoint_dir / f"{REINFORCE_CHECKPOINT_PREFIX}_{timesteps}_steps.pt"


def save_reinforce_checkpoint(agent: ReinforceAgent, run: Run) -> None:
    """A DUS-R checkpoint at the agent's steps, then its manifest entry."""
    path = reinforce_checkpoint(run, agent.num_timesteps)
    agent.save(path, fault="mid_checkpoint")
    record_checkpoint(run.run_dir, agent.num_timesteps, [path])


def train_reinforce(start: RunStart, progress: bool) -> tuple[ReinforceAgent, bool]:
    """Train DUS-R from the beginning, or continue it from the newest checkpoint that loads; the same
    outputs as the SB3 path.

    :return: the agent and whether Ctrl-C stopped training.
    """
    run = start.run
    probe = run.make_env()
    if start.checkpoints:
        agent = load_first(start, lambda steps: ReinforceAgent.load(reinforce_checkpoint(run, steps), probe))
    else:
        unwrapped = probe.unwrapped
        agent = ReinforceAgent(unwrapped.layout, unwrapped.mapping, reinforce_config(run.hyperparams), seed=run.seed)  # type: ignore[attr-defined]
    probe.close()
    logger = configure(str(run.tensorboard_dir / "REINFORCE_0"), ["tensorboard"])
    log = EvaluationLog(run.run_dir / "eval" / "evaluations.npz", keep_until=agent.num_timesteps)
    next_eval = next_multiple(agent.num_timesteps, run.eval_freq)
    next_checkpoint = next_multiple(agent.num_timesteps, run.checkpoint_freq)
    remaining = run.total_timesteps - agent.num_timesteps
    bar = _progress_bar(remaining) if progress else None

    def on_update(agent: ReinforceAgent, update: ReinforceUpdate) -> bool:
        nonlocal next_eval, next_checkpoint
        record_info_scalars(logger, update.infos)
        if bar is not None:
            bar.update(sum(update.episode_lengths))
        if next_checkpoint is not None and agent.num_timesteps >= next_checkpoint:
            fault_point("before_checkpoint")
            with deferred_interrupts():
                save_reinforce_checkpoint(agent, run)
            next_checkpoint = next_multiple(agent.num_timesteps, run.checkpoint_freq)
        if next_eval is not None and agent.num_timesteps >= next_eval:
            results = evaluate_agent(agent, run)
            accuracies = [r.test_accuracy for r in results]
            logger.record("eval/mean_reward", float(np.mean([r.episode_return for r in results])))
            logger.record("eval/test_fused_accuracy", float(np.mean(accuracies)))
            lengths = [len(r.trace) - 1 for r in results]
            if log.add(agent.num_timesteps, [r.episode_return for r in results], lengths, accuracies):
                agent.save(run.best_dir / "best_model.pt")
            next_eval = next_multiple(agent.num_timesteps, run.eval_freq)
        return True

    venv = make_vec_env(run)
    interrupted = False
    try:
        if remaining > 0:  # a resumed run whose training had finished only writes its final files
            agent.train(venv, remaining, callback=on_update, logger=logger)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    with deferred_interrupts(reraise=False) as held:
        if remaining > 0:
            save_reinforce_checkpoint(agent, run)
        if not interrupted:
            final = run.run_dir / REINFORCE_FINAL_FILE
            agent.save(final, fault="mid_final")
            record_final(run.run_dir, [final], agent.num_timesteps)
    interrupted = interrupted or bool(held)  # a Ctrl-C during the final save stops before the evaluation and export
    logger.close()
    shutdown(venv, interrupted)
    return agent, interrupted


def _progress_bar(total: int) -> Any:
    """The same rich progress bar SB3 shows."""
    from tqdm import TqdmExperimentalWarning
    from tqdm.rich import tqdm

    warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
    return tqdm(total=total)


# -- after training -----------------------------------------------------------------------------------


def export_policy(run: Run, trained: Trained, vec_normalize: VecNormalize | None = None) -> Path:
    """Write ``<run_dir>/exported/``: the deterministic policy for ``dus_env``'s ``DUSSampler``, and
    list it in the run's manifest.

    :param vec_normalize: an SB3 model's normalisation statistics when they are not attached to it
        (a model loaded without its env); by default the model's own.
    """
    metadata = {"algo": run.algo, "env_id": run.env_id, "env_kwargs": run.env_kwargs, "hyperparams": run.hyperparams,
                "seed": run.seed, "num_timesteps": trained.num_timesteps, "run_dir": str(run.run_dir)}
    out_dir = run.run_dir / "exported"
    with deferred_interrupts():
        if isinstance(trained, ReinforceAgent):
            export_reinforce_policy(trained, run.env_config, out_dir, metadata)
        else:
            export_sb3_policy(trained, vec_normalize if vec_normalize is not None else trained.get_vec_normalize_env(), run.env_config, out_dir, metadata)
        record_export(run.run_dir, out_dir, trained.num_timesteps)
    return out_dir


def as_agent(run: Run, trained: Trained) -> Agent:
    """The trained policy as an :class:`~agents.base.Agent` (SB3 models with their normalisation statistics)."""
    if isinstance(trained, ReinforceAgent):
        return trained
    return SB3Agent(run.env_config.observation_layout(), run.env_config.quantity_mapping(), trained, trained.get_vec_normalize_env())


def export_only(run: Run, manifest: RunManifest, checkpoint: int | None) -> Path:
    """Export a run's policy again (``train_agent.py --export-only``): its final model, or the
    checkpoint at ``checkpoint`` steps, checked against the manifest first.

    :raises UsageError: no such checkpoint, or its files do not match the manifest.
    """
    if checkpoint is None:
        if manifest.final is None:
            raise UsageError(f"{run.run_dir} has no final model yet: pass --checkpoint STEPS (one of "
                             f"{sorted(manifest.checkpoints) or 'none'}) or resume the run")
        files, source = manifest.final, run.run_dir
    else:
        if checkpoint not in manifest.checkpoints:
            raise UsageError(f"--checkpoint {checkpoint} is not a checkpoint of {run.run_dir}: choose one of {sorted(manifest.checkpoints)}")
        files = manifest.checkpoints[checkpoint]
        source = run.run_dir / next(name for name in files if name.endswith((".zip", ".pt")))
    problem = damage(run.run_dir, files)
    if problem is not None:
        raise UsageError(f"cannot export from {source}: {problem}")
    env = run.make_env()
    try:
        if run.is_reinforce:
            return export_policy(run, ReinforceAgent.load(source, env))
        agent = SB3Agent.load(source, env, algo=run.algo)
        return export_policy(run, agent.model, agent.vec_normalize)
    finally:
        env.close()

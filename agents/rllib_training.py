"""``train_agent.py --backend rllib``: PPO trained by RLlib on Ray, in the same run folder as an SB3 run.

The folder holds what an SB3 run's does (``agents/training.py``), in RLlib's form where it must:

    config.yml, run.json        the same (``backend: rllib``, ``num_env_runners``), every file with its sha256
    tb/RLlib_PPO_1/             TensorBoard: rollout/*, train/* (RLlib's learner results), time/fps, dus/*
    checkpoints/rllib_<N>_steps/  RLlib checkpoints (``Algorithm.save_to_path``), between iterations
    best_model/                 the artifact (``policy.onnx`` + ``policy.pt2``) of the best evaluation
    eval/evaluations.npz        evaluation history, the same file as SB3 runs write
    final_model/                the final RLlib checkpoint
    exported/                   the final policy, the same artifact as SB3 policies export

One iteration is one SB3 rollout (every env steps ``n_steps`` times; :mod:`agents.rllib_config`);
checkpoints, evaluations and the Ctrl-C stop happen between iterations, so the checkpoint at ``N``
steps holds the weights trained on ``N`` steps. Ctrl-C is held while an iteration runs (a few
seconds) and then saves a checkpoint.

The policy is the RLlib module's deterministic action (the mean of its Gaussian, clipped to
``[-1, 1]`` as RLlib's env runners clip it) after RLlib's ``MeanStdFilter`` when observations are
normalised: :class:`RLlibActor` holds both, and is what is evaluated and exported.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dus_env.faults import fault_point
from dus_env.policy_artifact import write_policy_artifact

from .base import Agent
from .callbacks import EvaluationLog, deferred_interrupts, info_scalars, next_multiple
from .manifest import RunManifest, damage, record_checkpoint, record_export, record_final
from .ray_cluster import connect
from .rllib_config import rllib_ppo_settings
from .run_files import CHECKPOINT_DIR
from .runs import Run, RunStart, UsageError
from .training import evaluate_agent, resume_seed

#: RLlib checkpoints inside a run folder.
FINAL_DIR = "final_model"
TB_NAME = "RLlib_PPO_1"
FEATURE = "train_agent.py --backend rllib"


def checkpoint_name(steps: int) -> str:
    return f"rllib_{steps}_steps"


# -- the policy ------------------------------------------------------------------------------------


class RLlibActor(torch.nn.Module):
    """An RLlib PPO module's deterministic action as a plain module (what is evaluated and exported).

    ``(observation - mean) / (std + epsilon)`` clipped to ``[-clip, clip]`` (RLlib's ``MeanStdFilter``, whose epsilon is
    ``ray.rllib.utils.numpy.SMALL_NUMBER``,
    when the run normalises observations), the module's actor encoder and ``pi`` head, the mean half
    of the Gaussian's inputs, clipped to ``[-1, 1]``.
    """

    def __init__(
        self,
        module: Any,
        action_size: int,
        mean: np.ndarray | None,
        std: np.ndarray | None,
        clip: float | None,
        epsilon: float = 1e-6,
    ) -> None:
        super().__init__()
        self.encoder: Any = copy.deepcopy(module.encoder).cpu().eval()
        self.pi: Any = copy.deepcopy(module.pi).cpu().eval()
        self.normalise = mean is not None
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.as_tensor(np.zeros(0) if mean is None else mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.zeros(0) if std is None else std, dtype=torch.float32))
        self.clip = float(clip) if clip else None
        self.epsilon = float(epsilon)
        self.action_size = int(action_size)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            observation = (observation - self.mean) / (self.std + self.epsilon)
            if self.clip is not None:
                observation = torch.clamp(observation, -self.clip, self.clip)
        features = self.encoder.actor_encoder({"obs": observation})["encoder_out"]
        # The head's network gives the means first (then the log stds, unless they are a free parameter).
        means = self.pi.net(features)[..., : self.action_size]
        return torch.clamp(means, -1.0, 1.0)


class ActorAgent(Agent):
    """A torch actor (observation -> action) as an :class:`~agents.base.Agent`, for evaluation."""

    name = "rllib-ppo"

    def __init__(self, run: Run, actor: torch.nn.Module) -> None:
        super().__init__(run.env_config.observation_layout(), run.env_config.quantity_mapping())
        self.actor = actor

    def episode_copy(self) -> Agent:
        return self  # stateless

    def act(self, observation: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            action = self.actor(torch.as_tensor(observation, dtype=torch.float32).unsqueeze(0))
        return action.squeeze(0).numpy().astype(np.float32)


@dataclass
class RLlibTrained:
    """What an RLlib run leaves for evaluation and export: its policy and its step count."""

    actor: RLlibActor
    num_timesteps: int


def current_actor(algo: Any) -> RLlibActor:
    """The algorithm's policy now, with the observation statistics the env runners have synced."""
    mean = std = clip = None
    pipeline = algo.env_runner_group.local_env_runner._env_to_module
    for connector in pipeline.connectors:
        if type(connector).__name__ == "MeanStdFilter":
            connector.get_state()  # builds the filters if the local runner never sampled
            (filt,) = connector._filters.values()
            mean, std, clip = np.asarray(filt.running_stats.mean), np.asarray(filt.running_stats.std), filt.clip
    from ray.rllib.utils.numpy import SMALL_NUMBER

    return RLlibActor(algo.get_module(), int(np.prod(algo.get_module().action_space.shape)), mean, std, clip, SMALL_NUMBER)


# -- the algorithm -----------------------------------------------------------------------------------


def build_algorithm(run: Run, seed: int, num_env_runners: int | None = None) -> Any:
    """RLlib's PPO for the run (new API stack), its env runners on the native vector env when ``--vec native``.

    :param num_env_runners: instead of the run's (``--export-only`` restores into the driver's runner alone).
    """
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.connectors.env_to_module import MeanStdFilter
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    import dus_env.rllib

    runners = run.num_env_runners if num_env_runners is None else num_env_runners
    settings, _ = rllib_ppo_settings(run.hyperparams, runners)
    mode = {"native": dus_env.rllib.ENV_RUNNER_SETTINGS["gym_env_vectorize_mode"], "dummy": "sync", "subproc": "async"}[run.vec]
    # The native vector env of a remote runner gets one thread (one runner per core); sampling in the
    # driver (0 runners) gets every core, as train_agent.py's SB3 runs do.
    threads = None if runners == 0 else 1
    env_config = {"torch_threads": threads, **run.env_kwargs} if run.vec == "native" else dict(run.env_kwargs)
    runner_settings: dict[str, Any] = {**settings["env_runners"], "gym_env_vectorize_mode": mode}
    if settings["mean_std_filter"]:
        runner_settings["env_to_module_connector"] = lambda env, spaces, device: MeanStdFilter()
    config = (
        PPOConfig()
        .environment(run.env_id, env_config=env_config)
        .env_runners(**runner_settings)
        .training(**settings["training"])
        .rl_module(model_config=DefaultModelConfig(**settings["model"]))
        .callbacks(_info_callback_class())
        .reporting(metrics_num_episodes_for_smoothing=max(run.n_envs, 1))
        .debugging(seed=seed, log_level="ERROR")
    )
    return config.build_algo()


def _info_callback_class() -> type:
    """An RLlib callback that logs the env's ``dus/*`` scalars (:func:`agents.callbacks.info_scalars`) on the env runners
    and gives each runner its block of seeds."""
    from dus_env.rllib import SeedBlocks

    class DUSInfoScalars(SeedBlocks):
        """Also each runner's seed block (:class:`dus_env.rllib.SeedBlocks`)."""

        def on_episode_step(self, *, episode: Any, metrics_logger: Any, **kwargs: Any) -> None:
            # A mean over the iteration (the logger clears it when it reduces), as SB3 averages until a dump.
            for name, value in info_scalars(episode.get_infos(-1)).items():
                metrics_logger.log_value(name, value, reduce="mean", window=1_000_000)

    return DUSInfoScalars


# -- TensorBoard -------------------------------------------------------------------------------------


def tensorboard_scalars(result: dict[str, Any], elapsed: float, steps_this_iteration: int) -> dict[str, float]:
    """The scalars of one RLlib iteration under SB3's names (``rollout/``, ``train/``, ``time/``) and ``dus/*``."""
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get("default_policy", {})
    scalars = {
        "rollout/ep_rew_mean": runners.get("episode_return_mean"),
        "rollout/ep_len_mean": runners.get("episode_len_mean"),
        "time/fps": steps_this_iteration / elapsed if elapsed > 0 else None,
        "train/loss": learner.get("total_loss"),
        "train/policy_gradient_loss": learner.get("policy_loss"),
        "train/value_loss": learner.get("vf_loss"),
        "train/entropy": learner.get("entropy"),
        "train/approx_kl": learner.get("mean_kl_loss"),
        "train/explained_variance": learner.get("vf_explained_var"),
        "train/learning_rate": learner.get("default_optimizer_learning_rate"),
    }
    scalars.update({name: value for name, value in runners.items() if name.startswith("dus/")})
    return {name: float(value) for name, value in scalars.items() if isinstance(value, (int, float, np.number)) and np.isfinite(value)}


# -- saving --------------------------------------------------------------------------------------------


def save_checkpoint(algo: Any, run_dir: Path, relative: str, fault: str | None = None) -> list[Path]:
    """``algo.save_to_path`` into ``run_dir/relative``, atomically: written to a hidden sibling, then
    renamed (a kill leaves the hidden folder, which the next start removes). Returns its files."""
    target = run_dir / relative
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    algo.save_to_path(str(staging.resolve()))
    if fault:
        fault_point(fault)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return sorted(path for path in target.rglob("*") if path.is_file())


def save_run_checkpoint(algo: Any, run_dir: Path, steps: int) -> None:
    with deferred_interrupts():
        record_checkpoint(run_dir, steps, save_checkpoint(algo, run_dir, f"{CHECKPOINT_DIR}/{checkpoint_name(steps)}", "mid_checkpoint"))


# -- training --------------------------------------------------------------------------------------------


def train_rllib(start: RunStart, progress: bool, address: str | None) -> tuple[RLlibTrained, bool]:
    """Train (or resume) the run with RLlib; the RLlib counterpart of :func:`agents.training.train_model`.

    :return: the trained policy and whether Ctrl-C stopped training.
    """
    run = start.run
    _, notes = rllib_ppo_settings(run.hyperparams, run.num_env_runners)
    for note in notes:
        print(f"note: {note}")
    ray = connect(address, FEATURE)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if run.num_env_runners > cpus:
        raise UsageError(
            f"--num-env-runners {run.num_env_runners} needs as many CPUs, the Ray cluster has {cpus}: RLlib would wait "
            f"for them forever; pass --num-env-runners {cpus} or fewer (0 samples in the driver), or join a larger cluster with --address"
        )
    algo: Any = None
    steps = 0  # env steps trained
    if start.checkpoints:
        for candidate in start.checkpoints:
            try:
                # Fresh training episodes after a resume (as SB3 runs do): another seed for the env runners.
                algo = build_algorithm(run, resume_seed(run.seed, candidate))
                algo.restore_from_path(str((run.checkpoint_dir / checkpoint_name(candidate)).resolve()))
            except Exception as error:  # RLlib raises many types for a damaged checkpoint
                print(
                    f"warning: the checkpoint at {candidate:,} steps does not load ({type(error).__name__}: {error}); "
                    "trying the previous one"
                )
                if algo is not None:
                    algo.stop()
                algo = None
                continue
            start.loaded(candidate)
            steps = candidate
            break
        if algo is None:
            raise UsageError(f"no checkpoint of {run.run_dir} loads (see above): start a new run with another --run-dir")
    else:
        try:
            algo = build_algorithm(run, run.seed)
        except (ValueError, TypeError) as error:
            raise UsageError(f"cannot build RLlib PPO on {run.env_id} with these hyperparameters: {error}") from error
    saved = steps  # the steps of the newest checkpoint (the one loaded, or one written below)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run.tensorboard_dir / TB_NAME))
    log = EvaluationLog(run.run_dir / "eval" / "evaluations.npz", keep_until=steps)
    bar = tqdm(total=run.total_timesteps, initial=steps, unit="step", desc="rllib ppo", disable=not progress, dynamic_ncols=True)
    interrupted = False
    next_checkpoint = next_multiple(steps, run.checkpoint_freq)
    next_eval = next_multiple(steps, run.eval_freq)
    try:
        while steps < run.total_timesteps:
            began = time.perf_counter()
            with deferred_interrupts(reraise=False) as held:
                result = algo.train()
            done = int(result["env_runners"]["num_env_steps_sampled"])
            steps += done
            bar.update(done)
            for name, value in tensorboard_scalars(result, time.perf_counter() - began, done).items():
                writer.add_scalar(name, value, steps)
            if held:
                interrupted = True
                break
            if next_eval is not None and steps >= next_eval and steps < run.total_timesteps:
                evaluate_now(run, algo, log, writer, steps)
                next_eval = next_multiple(steps, run.eval_freq)
            if next_checkpoint is not None and steps >= next_checkpoint and steps < run.total_timesteps:
                saved = steps  # first: a Ctrl-C held during the save is raised after it is recorded
                save_run_checkpoint(algo, run.run_dir, steps)
                next_checkpoint = next_multiple(steps, run.checkpoint_freq)
    except KeyboardInterrupt:  # between iterations, while evaluating or logging
        interrupted = True
    finally:
        bar.close()
    with deferred_interrupts(reraise=False) as held_at_end:
        if steps > saved:  # a checkpoint of what this process trained last (a resumed run may only finish)
            save_run_checkpoint(algo, run.run_dir, steps)
        if not interrupted:
            record_final(run.run_dir, save_checkpoint(algo, run.run_dir, FINAL_DIR, "mid_final"), steps)
    interrupted = interrupted or bool(held_at_end)
    trained = RLlibTrained(current_actor(algo), steps)
    try:
        if not interrupted and (not log.timesteps or log.timesteps[-1] != steps):
            evaluate_now(run, algo, log, writer, steps, actor=trained.actor)
    except KeyboardInterrupt:  # the final model and a checkpoint are saved: --resume finishes the rest
        interrupted = True
    finally:
        writer.close()
        algo.stop()
    return trained, interrupted


def evaluate_now(run: Run, algo: Any, log: EvaluationLog, writer: Any, steps: int, actor: RLlibActor | None = None) -> None:
    """Evaluate the policy on the run's evaluation seeds (as SB3 runs do); export it to ``best_model/`` when best."""
    actor = actor or current_actor(algo)
    results = evaluate_agent(ActorAgent(run, actor), run)
    returns = [r.episode_return for r in results]
    is_best = log.add(steps, returns, [len(r.trace) - 1 for r in results], [r.test_accuracy for r in results])
    writer.add_scalar("eval/mean_reward", float(np.mean(returns)), steps)
    writer.add_scalar("eval/mean_ep_length", float(np.mean([len(r.trace) - 1 for r in results])), steps)
    if is_best:
        with deferred_interrupts():
            write_artifact(run, actor, run.best_dir, steps)


# -- export ------------------------------------------------------------------------------------------------


def write_artifact(run: Run, actor: torch.nn.Module, out_dir: Path, steps: int) -> Path:
    """The policy as dus_env's artifact (normalisation inside the network: the artifact has none of its own)."""
    return write_policy_artifact(
        actor,
        out_dir,
        layout=run.env_config.observation_layout(),
        mapping=run.env_config.quantity_mapping(),
        env_config=run.env_config.to_dict(),
        normalization=None,
        source={
            "algorithm": "RLlib PPO",
            "algo": run.algo,
            "backend": "rllib",
            "env_id": run.env_id,
            "env_kwargs": run.env_kwargs,
            "hyperparams": run.hyperparams,
            "seed": run.seed,
            "num_timesteps": steps,
            "run_dir": str(run.run_dir),
            "observation_normalization": "RLlib MeanStdFilter, inside the network" if getattr(actor, "normalise", False) else None,
        },
    )


def export_rllib_policy(run: Run, trained: RLlibTrained) -> Path:
    """``<run_dir>/exported/``, listed in the manifest (the RLlib counterpart of :func:`agents.training.export_policy`)."""
    out_dir = run.run_dir / "exported"
    with deferred_interrupts():
        write_artifact(run, trained.actor, out_dir, trained.num_timesteps)
        record_export(run.run_dir, out_dir, trained.num_timesteps)
    return out_dir


def export_rllib_only(run: Run, manifest: RunManifest, checkpoint: int | None, address: str | None = None) -> Path:
    """``--export-only`` of an RLlib run: its final checkpoint (or the one at ``checkpoint`` steps), checked first."""
    if checkpoint is None:
        if manifest.final is None or manifest.final_steps is None:
            raise UsageError(
                f"{run.run_dir} has no final model yet: pass --checkpoint STEPS (one of "
                f"{sorted(manifest.checkpoints) or 'none'}) or resume the run"
            )
        files, folder, steps = manifest.final, run.run_dir / FINAL_DIR, manifest.final_steps
    else:
        if checkpoint not in manifest.checkpoints:
            raise UsageError(
                f"--checkpoint {checkpoint} is not a checkpoint of {run.run_dir}: choose one of {sorted(manifest.checkpoints)}"
            )
        files, folder, steps = manifest.checkpoints[checkpoint], run.checkpoint_dir / checkpoint_name(checkpoint), checkpoint
    problem = damage(run.run_dir, files)
    if problem is not None:
        raise UsageError(f"cannot export from {folder}: {problem}")
    connect(address, "train_agent.py --export-only of an RLlib run")
    algo = build_algorithm(run, run.seed, num_env_runners=0)  # the policy and the filter restore into the driver's runner
    try:
        algo.restore_from_path(str(folder.resolve()))
        return export_rllib_policy(run, RLlibTrained(current_actor(algo), steps))
    finally:
        algo.stop()


def rllib_agent(run: Run, trained: RLlibTrained) -> Agent:
    return ActorAgent(run, trained.actor)

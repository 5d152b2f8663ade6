"""DUS-R: the DUS paper's own learner, REINFORCE with a baseline, in plain torch.

**Policy.** A Gaussian over actions in ``[-1, 1]^M``: an MLP (tanh hidden layers) gives the mean,
squashed by a final ``tanh`` into ``[-1, 1]``; the log standard deviation is a learned vector,
independent of the state. Samples may leave ``[-1, 1]``; the environment clips them (its
documented behaviour), and the log-probability is that of the unclipped sample, which keeps the
gradient estimate exact. The output layer starts near zero, so an untrained policy is uniform
sampling (action 0) plus exploration noise. Acting (:meth:`ReinforceAgent.act`) uses the mean.

**Observations** are normalised with running statistics gathered during training, exactly like
SB3's ``VecNormalize`` (``(obs - mean) / sqrt(var + 1e-8)``, clipped to ``±clip_obs``); the
statistics are frozen outside training and exported with the policy.

**Baseline: same instance, same step.** A batch holds ``episodes_per_batch`` episodes in groups of
``group_size`` that share a reset seed, i.e. the same task instance, data order and model
initialisation. Episode ``i``'s return-to-go at step ``t`` is compared with the mean return-to-go at
step ``t`` of the *other* episodes of its group (leave-one-out). Why this and not a learned value
function: in this environment the return-to-go is dominated by *which* training run it is (the
spread of the return over task instances is as large as the effect of the allocation) and by *when*
(early steps gain most accuracy). The group mean at step ``t`` removes both exactly, with no critic
to fit from a few hundred noisy episodes and no lag behind the changing policy, and it stays
unbiased because an episode's baseline never depends on its own actions. Advantages are then
divided by their batch standard deviation.

**Seeding.** Network initialisation, episode seeds and exploration noise come from a local
``torch.Generator`` and ``numpy.random.Generator`` seeded by the constructor (or ``train``'s
``seed``); global random state is never touched. Same seed, same settings: same policy, bit for
bit on CPU. A resumed agent continues the generators saved with it, so it draws exactly the episode
seeds the unbroken run would have drawn; nothing is reseeded from the step count (the SB3 resume
path reseeds, see :func:`agents.training.resume_seed`).

**Files.** :meth:`ReinforceAgent.save` writes one torch file atomically (temporary file, then
``os.replace``), holding the weights, the optimiser, the normalisation statistics, the random
generators and the step count, so training resumes where it stopped. Only tensors and plain
values are stored and :meth:`ReinforceAgent.load` reads with ``weights_only=True``: loading a file
cannot execute code.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from torch import nn

from dus_env.observation import ObservationLayout
from dus_env.policy_artifact import ObservationNormalization
from dus_env.quantities import QuantityMapping
from dus_env.validation import check_float, check_int

from .base import Agent, check_modalities
from .results import write_bytes
from .run_files import REINFORCE_FINAL_FILE, SB3_FINAL_FILE

FILE_FORMAT = "dus_env.reinforce"
FILE_FORMAT_VERSION = 1
OBS_EPSILON = 1e-8


@dataclass(frozen=True)
class ReinforceConfig:
    """Hyperparameters of DUS-R (the keys of ``agents/hyperparams/reinforce.yml``).

    :param hidden_sizes: widths of the policy's tanh hidden layers.
    :param learning_rate: Adam step size.
    :param episodes_per_batch: episodes per policy update; a multiple of ``group_size`` and of the
        number of parallel environments.
    :param group_size: episodes per shared reset seed; the baseline compares within a group (>= 2).
    :param gamma: discount of the return-to-go; 1 makes the return the whole accuracy gain.
    :param log_std_init: initial log standard deviation of the actions (-0.5: std 0.61).
    :param normalize_obs: normalise observations with running statistics.
    :param clip_obs: normalised observations are clipped to ``[-clip_obs, clip_obs]``.
    :param normalize_advantage: divide advantages by their batch standard deviation.
    :param ent_coef: weight of the entropy bonus (0: exploration only through the learned std).
    :param max_grad_norm: gradient norm clip.
    """

    hidden_sizes: tuple[int, ...] = (64, 64)
    learning_rate: float = 1e-3
    episodes_per_batch: int = 8
    group_size: int = 4
    gamma: float = 1.0
    log_std_init: float = -0.5
    normalize_obs: bool = True
    clip_obs: float = 10.0
    normalize_advantage: bool = True
    ent_coef: float = 0.0
    max_grad_norm: float = 0.5

    def __post_init__(self) -> None:
        owner = type(self).__name__
        hidden = (self.hidden_sizes,) if isinstance(self.hidden_sizes, int) else tuple(self.hidden_sizes)
        object.__setattr__(self, "hidden_sizes", hidden)
        for width in hidden:
            check_int(owner, "hidden_sizes", width, 1, 65_536)
        check_float(owner, "learning_rate", self.learning_rate, 0.0, low_open=True)
        check_int(owner, "group_size", self.group_size, 2, 1_000_000)
        check_int(owner, "episodes_per_batch", self.episodes_per_batch, self.group_size, 1_000_000)
        if self.episodes_per_batch % self.group_size:
            raise ValueError(
                f"{owner}.episodes_per_batch={self.episodes_per_batch} is invalid: it must be a multiple of "
                f"group_size={self.group_size}"
            )
        check_float(owner, "gamma", self.gamma, 0.0, 1.0)
        check_float(owner, "log_std_init", self.log_std_init, -10.0, 2.0)
        check_float(owner, "clip_obs", self.clip_obs, 0.0, low_open=True)
        check_float(owner, "ent_coef", self.ent_coef, 0.0)
        check_float(owner, "max_grad_norm", self.max_grad_norm, 0.0, low_open=True)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


class ScalarLogger(Protocol):
    """What :meth:`ReinforceAgent.train` logs to; SB3's ``Logger`` (TensorBoard, stdout) fits."""

    def record(self, key: str, value: Any, exclude: Any = None) -> None: ...

    def dump(self, step: int = 0) -> None: ...


@dataclass
class ReinforceUpdate:
    """One policy update: what the batch saw and what the update did, for callbacks.

    :param num_timesteps: environment steps trained on so far, this batch included.
    :param episode_returns: undiscounted return of each episode of the batch.
    :param episode_lengths: steps of each episode.
    :param infos: the env's ``info`` of every step of the batch, episode by episode (the last one
        of each episode holds the final test metrics).
    :param loss: policy-gradient loss of the update.
    :param grad_norm: gradient norm before clipping.
    :param action_std: the policy's action standard deviation after the update, per modality.
    """

    num_timesteps: int
    episode_returns: list[float]
    episode_lengths: list[int]
    infos: list[dict[str, Any]] = field(repr=False)
    loss: float
    grad_norm: float
    action_std: list[float]


#: Called after every update; returning ``False`` stops training.
ReinforceCallback = Callable[["ReinforceAgent", ReinforceUpdate], "bool | None"]


class GaussianPolicy(nn.Module):
    """``N(tanh(mlp(obs)), exp(log_std)^2)`` over actions; ``mean_net`` alone is the deterministic actor."""

    def __init__(self, obs_dim: int, n_actions: int, config: ReinforceConfig, generator: torch.Generator) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim
        for hidden in config.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        layers += [nn.Linear(width, n_actions), nn.Tanh()]
        self.mean_net = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.full((n_actions,), float(config.log_std_init)))
        linears = [m for m in self.mean_net if isinstance(m, nn.Linear)]
        for index, linear in enumerate(linears):
            # Orthogonal init as in SB3; a tiny output layer makes the untrained mean ~0 (uniform sampling).
            gain = 0.01 if index == len(linears) - 1 else math.sqrt(2.0)
            nn.init.orthogonal_(linear.weight, gain=gain, generator=generator)
            nn.init.zeros_(linear.bias)

    def distribution(self, observations: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.mean_net(observations), self.log_std.exp().expand(observations.shape[0], -1))


class ReinforceAgent(Agent):
    """DUS-R (see the module docstring): a Gaussian policy trained by REINFORCE with a group baseline.

    :param layout: the env's observation layout (its size is the policy's input width).
    :param mapping: the env's action-to-quantity map (``M`` outputs).
    :param config: hyperparameters.
    :param seed: seeds the initial weights, and the episode seeds and exploration noise of training.
    """

    name = "reinforce"

    def __init__(
        self,
        layout: ObservationLayout,
        mapping: QuantityMapping,
        config: ReinforceConfig | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(layout, mapping)
        self.config = config or ReinforceConfig()
        self.seed = seed
        self._torch_rng = torch.Generator().manual_seed(seed)
        self._np_rng = np.random.default_rng(seed)
        self.policy = GaussianPolicy(layout.size, mapping.n_modalities, self.config, self._torch_rng)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.learning_rate)
        self.obs_rms = RunningMeanStd(shape=(layout.size,))
        self.num_timesteps = 0

    # -- acting ------------------------------------------------------------------------------

    def normalize(self, observations: np.ndarray) -> np.ndarray:
        """Observations as the policy sees them (float32), with the current (frozen) statistics."""
        observations = np.asarray(observations, dtype=np.float64)
        if not self.config.normalize_obs:
            return observations.astype(np.float32)
        statistics = ObservationNormalization(self.obs_rms.mean, self.obs_rms.var, OBS_EPSILON, float(self.config.clip_obs))
        return statistics.apply(observations)

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The mean action for one observation: float32 ``[M]`` in ``[-1, 1]``."""
        batch = torch.from_numpy(self.normalize(np.asarray(observation).reshape(1, -1)))
        with torch.no_grad():
            return self.policy.mean_net(batch)[0].numpy().astype(np.float32)

    def actor_module(self) -> nn.Module:
        """A copy of the deterministic actor: float32 ``[N, D]`` normalised observations -> ``[N, M]`` actions in ``[-1, 1]``.

        Apply :meth:`observation_normalization` to raw observations first.
        """
        return copy.deepcopy(self.policy.mean_net).eval()

    def observation_normalization(self) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """``(mean, var, epsilon, clip)`` with ``x = clip((obs - mean) / sqrt(var + epsilon), -clip, clip)``; ``None`` if off."""
        if not self.config.normalize_obs:
            return None
        return (
            self.obs_rms.mean.astype(np.float32),
            self.obs_rms.var.astype(np.float32),
            OBS_EPSILON,
            float(self.config.clip_obs),
        )

    # -- training ----------------------------------------------------------------------------

    def train(
        self,
        env: gym.Env | VecEnv | Callable[[], gym.Env],
        total_timesteps: int,
        seed: int | None = None,
        callback: ReinforceCallback | None = None,
        logger: ScalarLogger | None = None,
    ) -> "ReinforceAgent":
        """Train for ``total_timesteps`` more environment steps (whole batches: it may overshoot by less than one).

        :param env: a Gymnasium env, a function making one, or an SB3 ``VecEnv`` (e.g. a
            ``SubprocVecEnv`` to run episodes in parallel); ``episodes_per_batch`` must be a
            multiple of its number of envs.
        :param total_timesteps: environment steps to add to :attr:`num_timesteps`.
        :param seed: reseed the episode seeds and exploration noise; ``None`` continues the
            agent's generators (from the constructor, or from the file on resume).
        :param callback: called after every update with a :class:`ReinforceUpdate`; ``False`` stops.
        :param logger: receives ``rollout/``, ``train/`` and ``time/`` scalars, dumped after each
            update (after ``callback``, so the callback's records land in the same step).
        """
        venv = self._as_vec_env(env)
        if seed is not None:
            self._torch_rng.manual_seed(seed)
            self._np_rng = np.random.default_rng(seed)
        target = self.num_timesteps + int(total_timesteps)
        start_time, start_steps = time.perf_counter(), self.num_timesteps
        while self.num_timesteps < target:
            episodes = self._collect_batch(venv)
            update = self._update(episodes)
            if logger is not None:
                logger.record("rollout/ep_rew_mean", float(np.mean(update.episode_returns)))
                logger.record("rollout/ep_len_mean", float(np.mean(update.episode_lengths)))
                logger.record("train/loss", update.loss)
                logger.record("train/grad_norm", update.grad_norm)
                logger.record("train/std", float(np.mean(update.action_std)))
                elapsed = max(time.perf_counter() - start_time, 1e-9)
                logger.record("time/fps", int((self.num_timesteps - start_steps) / elapsed))
            keep_going = callback(self, update) if callback is not None else True
            if logger is not None:
                logger.dump(self.num_timesteps)
            if keep_going is False:
                break
        return self

    def _as_vec_env(self, env: gym.Env | VecEnv | Callable[[], gym.Env]) -> VecEnv:
        if isinstance(env, VecEnv):
            venv = env
        elif isinstance(env, gym.Env):
            venv = DummyVecEnv([lambda: env])
        else:
            venv = DummyVecEnv([env])
        if venv.observation_space.shape != (self.layout.size,) or venv.action_space.shape != (self.mapping.n_modalities,):
            raise ValueError(
                f"env has observations {venv.observation_space.shape} and actions {venv.action_space.shape}, this agent "
                f"was built for {(self.layout.size,)} and {(self.mapping.n_modalities,)}"
            )
        if self.config.episodes_per_batch % venv.num_envs:
            raise ValueError(
                f"episodes_per_batch={self.config.episodes_per_batch} is not a multiple of the {venv.num_envs} "
                "parallel envs: change one of them so that every env runs whole rounds"
            )
        return venv

    def _collect_batch(self, venv: VecEnv) -> list[dict[str, Any]]:
        """``episodes_per_batch`` episodes, ``group_size`` per reset seed, run ``num_envs`` at a time."""
        n_groups = self.config.episodes_per_batch // self.config.group_size
        group_seeds = self._np_rng.integers(0, 2**31 - 1, size=n_groups)
        seeds = np.repeat(group_seeds, self.config.group_size)
        episodes: list[dict[str, Any]] = []
        for start in range(0, len(seeds), venv.num_envs):
            episodes += self._run_round(venv, [int(s) for s in seeds[start : start + venv.num_envs]])
        for index, episode in enumerate(episodes):
            episode["group"] = index // self.config.group_size
        return episodes

    def _run_round(self, venv: VecEnv, seeds: list[int]) -> list[dict[str, Any]]:
        """One episode per env, reset with ``seeds``, in lockstep until every one has ended."""
        # VecEnvs reset finished episodes without a seed, so each round's episodes are reset explicitly:
        # in one batched reset on the native vector env, env by env on others.
        if hasattr(venv, "reset_with_seeds"):
            observations = venv.reset_with_seeds(seeds)
        else:
            observations = np.stack([venv.env_method("reset", seed=s, indices=[i])[0][0] for i, s in enumerate(seeds)])
        episodes = [{"raw_obs": [], "obs": [], "actions": [], "rewards": [], "infos": []} for _ in seeds]
        active = np.ones(len(seeds), dtype=bool)
        std = self.policy.log_std.detach().exp()
        while active.any():
            normalized = self.normalize(observations)
            with torch.no_grad():
                mean = self.policy.mean_net(torch.from_numpy(normalized))
            actions = mean + std * torch.randn(mean.shape, generator=self._torch_rng)
            next_observations, rewards, dones, infos = venv.step(actions.numpy())
            for i in np.flatnonzero(active):
                episode = episodes[i]
                episode["raw_obs"].append(observations[i])
                episode["obs"].append(normalized[i])
                episode["actions"].append(actions[i])
                episode["rewards"].append(float(rewards[i]))
                episode["infos"].append(infos[i])
                active[i] = not dones[i]
            observations = next_observations
        return episodes

    def _advantages(self, episodes: list[dict[str, Any]]) -> list[np.ndarray]:
        """Return-to-go minus the leave-one-out mean return-to-go of the group at the same step."""
        returns = []
        for episode in episodes:
            to_go, running = np.zeros(len(episode["rewards"])), 0.0
            for t in reversed(range(len(to_go))):
                running = episode["rewards"][t] + self.config.gamma * running
                to_go[t] = running
            returns.append(to_go)
        longest = max(len(r) for r in returns)
        # A finished episode has return-to-go 0 after its end (it can stop early when training diverges).
        padded = np.zeros((len(returns), longest))
        for i, to_go in enumerate(returns):
            padded[i, : len(to_go)] = to_go
        advantages = []
        groups = np.array([episode["group"] for episode in episodes])
        for i, to_go in enumerate(returns):
            mates = (groups == groups[i]) & (np.arange(len(episodes)) != i)
            advantages.append(to_go - padded[mates, : len(to_go)].mean(axis=0))
        return advantages

    def _update(self, episodes: list[dict[str, Any]]) -> ReinforceUpdate:
        advantage = torch.from_numpy(np.concatenate(self._advantages(episodes))).float()
        if self.config.normalize_advantage and advantage.numel() > 1:
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        observations = torch.from_numpy(np.concatenate([np.stack(e["obs"]) for e in episodes]))
        actions = torch.cat([torch.stack(e["actions"]) for e in episodes])
        distribution = self.policy.distribution(observations)
        log_prob = distribution.log_prob(actions).sum(-1)
        loss = -(log_prob * advantage).mean() - self.config.ent_coef * distribution.entropy().sum(-1).mean()
        self.optimizer.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        # Statistics move after the update: the batch was sampled, and is trained on, with the old ones.
        if self.config.normalize_obs:
            self.obs_rms.update(np.concatenate([np.stack(e["raw_obs"]) for e in episodes]).astype(np.float64))
        lengths = [len(e["rewards"]) for e in episodes]
        self.num_timesteps += sum(lengths)
        return ReinforceUpdate(
            num_timesteps=self.num_timesteps,
            episode_returns=[float(sum(e["rewards"])) for e in episodes],
            episode_lengths=lengths,
            infos=[info for e in episodes for info in e["infos"]],
            loss=float(loss.detach()),
            grad_norm=float(grad_norm),
            action_std=self.policy.log_std.detach().exp().tolist(),
        )

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | Path, fault: str | None = None) -> Path:
        """Write everything needed to act and to resume training to ``path``, atomically (``fault``:
        see :func:`agents.results.atomic_output`)."""
        state = {
            "format": FILE_FORMAT,
            "format_version": FILE_FORMAT_VERSION,
            "config": {**dataclasses.asdict(self.config), "hidden_sizes": list(self.config.hidden_sizes)},
            "layout": self.layout.to_dict(),
            "n_modalities": self.mapping.n_modalities,
            "seed": self.seed,
            "num_timesteps": self.num_timesteps,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_rms": {
                "mean": torch.from_numpy(self.obs_rms.mean),
                "var": torch.from_numpy(self.obs_rms.var),
                "count": float(self.obs_rms.count),
            },
            "rng": {"torch": self._torch_rng.get_state(), "numpy": self._np_rng.bit_generator.state},
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return write_bytes(path, buffer.getvalue(), fault=fault)

    @classmethod
    def load(cls, path: str | Path, env: gym.Env) -> "ReinforceAgent":
        """Load an agent saved by :meth:`save` (a file, or a run directory's ``final_model.pt``) to act in ``env``.

        :raises FileNotFoundError: nothing at ``path``.
        :raises ValueError: not a DUS-R file, a damaged one, or one made for another number of
            modalities or observation layout than ``env``'s.
        """
        path = Path(path)
        if path.is_dir():
            if not (path / REINFORCE_FINAL_FILE).is_file() and (path / SB3_FINAL_FILE).is_file():
                raise ValueError(f"{path} is a Stable-Baselines3 run, not a DUS-R one: load it with SB3Agent.load (spec ALGO:PATH)")
            path = path / REINFORCE_FINAL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no DUS-R policy at {path}: expected a file written by ReinforceAgent.save or a run directory")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for damaged or foreign files
            raise ValueError(f"cannot read {path} as a DUS-R policy (damaged, or not written by ReinforceAgent.save): {error}") from error
        if not isinstance(state, dict) or state.get("format") != FILE_FORMAT:
            raise ValueError(f"{path} is not a DUS-R policy file (no {FILE_FORMAT!r} marker)")
        if state.get("format_version") != FILE_FORMAT_VERSION:
            raise ValueError(
                f"{path} uses DUS-R file format {state.get('format_version')!r}, this version reads {FILE_FORMAT_VERSION}: "
                "retrain, or load it with the dus_env version that wrote it"
            )
        unwrapped = env.unwrapped
        layout: ObservationLayout = unwrapped.layout  # type: ignore[attr-defined]
        mapping: QuantityMapping = unwrapped.mapping  # type: ignore[attr-defined]
        check_modalities(ObservationLayout.from_dict(state["layout"]).n_modalities, mapping.n_modalities, path)
        try:
            agent = cls(layout, mapping, ReinforceConfig(**state["config"]), seed=int(state["seed"]))
            agent.policy.load_state_dict(state["policy"])
            agent.optimizer.load_state_dict(state["optimizer"])
            agent.obs_rms.mean = state["obs_rms"]["mean"].numpy().astype(np.float64)
            agent.obs_rms.var = state["obs_rms"]["var"].numpy().astype(np.float64)
            agent.obs_rms.count = float(state["obs_rms"]["count"])
            agent._torch_rng.set_state(state["rng"]["torch"])
            agent._np_rng.bit_generator.state = state["rng"]["numpy"]
            agent.num_timesteps = int(state["num_timesteps"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"{path} is an incomplete or inconsistent DUS-R policy file: {error}") from error
        return agent

"""DUS-R: the DUS paper's own learner, REINFORCE with a grouped baseline, as a Stable-Baselines3 algorithm.

:class:`Reinforce` is a ``BaseAlgorithm`` like sb3-contrib's episodic ARS: it trains, logs,
checkpoints, resumes, evaluates and exports through the same code as PPO (``train_agent.py --algo
reinforce``, ``Reinforce.save`` / ``Reinforce.load``, ``SB3Agent``, ``export_sb3_policy``), and SB3
callbacks see it as any on-policy algorithm: ``on_rollout_start``, one ``on_step`` per vector step
(with ``infos`` in ``locals``), ``on_rollout_end``, one update per batch.

**Policy** (:class:`ReinforcePolicy`). A Gaussian over actions in ``[-1, 1]^M``: an MLP (tanh
hidden layers, ``net_arch``) gives the mean, squashed by a final ``tanh`` into ``[-1, 1]``; the log
standard deviation is a learned vector, independent of the state (``log_std_init``). Samples may
leave ``[-1, 1]``; the environment clips them (its documented behaviour), and the log-probability is
that of the unclipped sample, which keeps the gradient estimate exact. The output layer starts near
zero, so an untrained policy is uniform sampling (action 0) plus exploration noise. The mean network
is the attribute ``actor`` (observations -> mean action): ``predict(deterministic=True)`` and the
exported artifact use it alone.

**Observations** are normalised by SB3's ``VecNormalize`` as for every other algorithm
(``normalize: {norm_obs: true, norm_reward: false}`` in ``agents/hyperparams/reinforce.yml``).

**Baseline: same instance, same step.** A batch holds ``episodes_per_batch`` episodes in groups of
``group_size`` that share a reset seed, i.e. the same task instance, data order and model
initialisation; they run ``n_envs`` at a time, in whole rounds. Episode ``i``'s return-to-go at step
``t`` is compared with the mean return-to-go at step ``t`` of the *other* episodes of its group
(leave-one-out). Why this and not a learned value function: in this environment the return-to-go is
dominated by *which* training run it is (the spread of the return over task instances is as large as
the effect of the allocation) and by *when* (early steps gain most accuracy). The group mean at step
``t`` removes both exactly, with no critic to fit from a few hundred noisy episodes and no lag behind
the changing policy, and it stays unbiased because an episode's baseline never depends on its own
actions. Advantages are then divided by their batch standard deviation (``normalize_advantage``).

**Seeding.** Network initialisation, the groups' reset seeds and the exploration noise come from a
local ``torch.Generator`` and ``numpy.random.Generator`` seeded by :meth:`Reinforce.set_random_seed`
(the constructor's ``seed``); global random state is never touched. Same seed, same settings: same
policy, bit for bit on CPU. The reset seeds reach the envs through the vector env's per-env seeds
(``VecEnv._seeds``, what ``VecEnv.seed`` sets), which ``DummyVecEnv``, ``SubprocVecEnv`` and the
native vector env all pass to their next ``reset``. A resumed run is reseeded like every SB3 run
(``agents.training.resume_seed``), so it draws fresh, reproducible episodes.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import safe_mean
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from dus_env.validation import check_float, check_int, fail

from .seed_ranges import DUS_R_GROUP_SEEDS

SelfReinforce = TypeVar("SelfReinforce", bound="Reinforce")


class ReinforcePolicy(BasePolicy):
    """``N(actor(obs), exp(log_std)^2)`` over actions; ``actor`` = tanh MLP with a ``tanh`` output (see the module docstring).

    :param net_arch: widths of the tanh hidden layers.
    :param log_std_init: initial log standard deviation of the actions (-0.5: std 0.61).
    :param generator: draws the initial weights (orthogonal, as SB3's policies; gain 0.01 for the
        output layer); ``None``: a generator seeded with 0, e.g. when weights are loaded afterwards.
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | tuple[int, ...] = (64, 64),
        log_std_init: float = -0.5,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(observation_space, action_space, optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs)
        self.net_arch = [int(width) for width in net_arch]
        self.log_std_init = float(log_std_init)
        obs_dim = int(np.prod(observation_space.shape))
        n_actions = int(np.prod(action_space.shape))
        layers: list[nn.Module] = []
        width = obs_dim
        # Built on the meta device: torch's default initialisation would draw from the global generator.
        for hidden in self.net_arch:
            layers += [nn.Linear(width, hidden, device="meta"), nn.Tanh()]
            width = hidden
        layers += [nn.Linear(width, n_actions, device="meta"), nn.Tanh()]
        self.actor = nn.Sequential(*layers).to_empty(device="cpu")
        self.log_std = nn.Parameter(torch.full((n_actions,), self.log_std_init))
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        linears = [m for m in self.actor if isinstance(m, nn.Linear)]
        for index, linear in enumerate(linears):
            # A tiny output layer makes the untrained mean ~0: uniform sampling plus noise.
            nn.init.orthogonal_(linear.weight, gain=0.01 if index == len(linears) - 1 else float(np.sqrt(2.0)), generator=generator)
            nn.init.zeros_(linear.bias)
        # As SB3's policies: optimizer_class is any torch optimizer, all of which take lr (the base class's stub does not).
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            "net_arch": self.net_arch,
            "log_std_init": self.log_std_init,
            "optimizer_class": self.optimizer_class,
            "optimizer_kwargs": self.optimizer_kwargs,
        }

    def distribution(self, observations: torch.Tensor) -> torch.distributions.Normal:
        mean = self.actor(observations.float())
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))

    def forward(self, observations: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self._predict(observations, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:
        """The mean action, or (``deterministic=False``, SB3's ``predict`` only; training draws its own
        noise from :class:`Reinforce`'s generator) a sample."""
        if not isinstance(observation, torch.Tensor):  # DUS envs observe one vector, never a dict
            raise TypeError(f"ReinforcePolicy takes a tensor observation, not {type(observation).__name__}")
        if deterministic:
            return self.actor(observation.float())
        return self.distribution(observation).sample()


@dataclass
class EpisodeBatch:
    """One batch: ``E = episodes_per_batch`` episodes padded to the longest, ``T`` steps.

    :param observations: float32 ``[E, T, D]``, as the policy saw them (normalised).
    :param actions: float32 ``[E, T, M]``, the unclipped samples.
    :param rewards: float64 ``[E, T]``, 0 after an episode's end.
    :param mask: bool ``[E, T]``, the steps inside each episode.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: np.ndarray
    mask: np.ndarray


def group_advantages(rewards: np.ndarray, mask: np.ndarray, group_size: int, gamma: float) -> np.ndarray:
    """Return-to-go minus the leave-one-out mean return-to-go of the episode's group at the same step.

    :param rewards: ``[E, T]``, 0 after an episode's end; episodes ``g * group_size ...`` form group ``g``.
    :param mask: ``[E, T]``, the steps inside each episode.
    :return: ``[E, T]`` advantages, 0 outside the mask. A finished episode has return-to-go 0 after
        its end (it can stop early when training diverges), also as another episode's baseline.
    """
    to_go = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        running = np.where(mask[:, t], rewards[:, t], 0.0) + gamma * running
        to_go[:, t] = running
    grouped = to_go.reshape(-1, group_size, to_go.shape[1])
    baseline = (grouped.sum(axis=1, keepdims=True) - grouped) / (group_size - 1)
    return np.where(mask, to_go - baseline.reshape(to_go.shape), 0.0)


class Reinforce(BaseAlgorithm):
    """DUS-R (see the module docstring): a Gaussian policy trained by REINFORCE with a grouped baseline.

    :param policy: ``"MlpPolicy"`` (:class:`ReinforcePolicy`) or the class itself.
    :param env: the training vector env; ``episodes_per_batch`` must be a multiple of its number of envs.
    :param learning_rate: Adam step size (or an SB3 schedule of the remaining progress).
    :param episodes_per_batch: episodes per policy update; a multiple of ``group_size`` and of the
        number of parallel envs.
    :param group_size: episodes per shared reset seed; the baseline compares within a group (>= 2).
    :param gamma: discount of the return-to-go; 1 makes the return the whole accuracy gain.
    :param normalize_advantage: divide advantages by their batch standard deviation.
    :param ent_coef: weight of the entropy bonus (0: exploration only through the learned std).
    :param max_grad_norm: gradient norm clip.
    :param policy_kwargs: :class:`ReinforcePolicy` arguments (``net_arch``, ``log_std_init``, ...).
    :param stats_window_size: episodes averaged in ``rollout/ep_rew_mean`` and ``rollout/ep_len_mean``.
    :param tensorboard_log: TensorBoard folder (``None``: none).
    :param seed: seed of the local generators (weights, reset seeds, noise).
    :param verbose: 0 silent, 1 SB3's console table.
    :param device: torch device ("cpu": these networks are tiny).
    :raises ValueError: a value out of range (the message names the argument and the allowed range).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": ReinforcePolicy}
    policy: ReinforcePolicy

    def __init__(
        self,
        policy: str | type[ReinforcePolicy] = "MlpPolicy",
        env: GymEnv | str | None = None,
        learning_rate: float | Schedule = 1e-3,
        episodes_per_batch: int = 8,
        group_size: int = 4,
        gamma: float = 1.0,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        seed: int | None = None,
        verbose: int = 0,
        device: torch.device | str = "cpu",
        _init_setup_model: bool = True,
    ) -> None:
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            seed=seed,
            supported_action_spaces=(spaces.Box,),
        )
        owner = type(self).__name__
        if not callable(learning_rate):
            check_float(owner, "learning_rate", learning_rate, 0.0, low_open=True)
        check_int(owner, "group_size", group_size, 2, 1_000_000)
        check_int(owner, "episodes_per_batch", episodes_per_batch, group_size, 1_000_000)
        if episodes_per_batch % group_size:
            fail(owner, "episodes_per_batch", episodes_per_batch, f"it must be a multiple of group_size={group_size}")
        check_float(owner, "gamma", gamma, 0.0, 1.0)
        check_float(owner, "ent_coef", ent_coef, 0.0)
        check_float(owner, "max_grad_norm", max_grad_norm, 0.0, low_open=True)
        _check_policy_kwargs(owner, self.policy_kwargs)
        self.episodes_per_batch = episodes_per_batch
        self.group_size = group_size
        self.gamma = gamma
        self.normalize_advantage = normalize_advantage
        self.ent_coef = ent_coef
        self.max_grad_norm = max_grad_norm
        # SB3's load() builds the model with default arguments (and the policy class) before restoring the
        # saved ones: then only _setup_model, which load() calls next, checks the env.
        if self.env is not None and isinstance(policy, str):
            self._check_env(self.env)
        if _init_setup_model:
            self._setup_model()

    def _check_env(self, env: VecEnv) -> None:
        if self.episodes_per_batch % env.num_envs:
            fail(
                type(self).__name__,
                "episodes_per_batch",
                self.episodes_per_batch,
                f"it must be a multiple of n_envs={env.num_envs} (every env runs whole rounds): change one of them",
            )

    def _setup_model(self) -> None:
        if self.env is not None:
            self._check_env(self.env)
        self._setup_lr_schedule()
        self.set_random_seed(self.seed if self.seed is not None else 0)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, generator=self._torch_rng, **self.policy_kwargs
        ).to(self.device)

    def set_random_seed(self, seed: int | None = None) -> None:
        """Reseed the local generators, the action space and the envs' next reset (envs ``seed + i``, as
        SB3 does: the observations of that first reset reach ``VecNormalize``); unlike SB3's, global
        random state is untouched."""
        if seed is None:
            return
        self._torch_rng = torch.Generator().manual_seed(int(seed))
        self._np_rng = np.random.default_rng(int(seed))
        self.action_space.seed(int(seed))
        if self.env is not None:
            self.env.seed(int(seed))

    def _excluded_save_params(self) -> list[str]:
        # Generators are not saved: a resumed run is reseeded (agents.training.resume_seed).
        return [*super()._excluded_save_params(), "_torch_rng", "_np_rng"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    # -- training -------------------------------------------------------------------------------

    def learn(
        self: SelfReinforce,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int | None = 1,
        tb_log_name: str = "Reinforce",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfReinforce:
        """Train for ``total_timesteps`` env steps, in whole batches (it may overshoot by less than one).

        :param log_interval: dump the logger every this many updates (``None``: never).
        """
        assert self.env is not None, "Reinforce.learn needs an env: pass one to the constructor or to load()"
        self._check_env(self.env)
        total_timesteps, callback = self._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            batch = self.collect_batch(callback)
            if batch is None:
                break
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self.train(batch)
            if log_interval is not None and self._n_updates % log_interval == 0:
                self.dump_logs()
        callback.on_training_end()
        return self

    def collect_batch(self, callback: BaseCallback) -> EpisodeBatch | None:
        """``episodes_per_batch`` episodes, ``group_size`` per reset seed, ``n_envs`` at a time (``None``: a callback stopped training)."""
        assert self.env is not None
        env, n_envs = self.env, self.env.num_envs
        n_groups = self.episodes_per_batch // self.group_size
        seeds = np.repeat(self._np_rng.integers(DUS_R_GROUP_SEEDS.start, DUS_R_GROUP_SEEDS.stop, size=n_groups), self.group_size)
        std = self.policy.log_std.detach().exp()
        rounds: list[tuple[list[torch.Tensor], list[torch.Tensor], list[np.ndarray], list[np.ndarray]]] = []
        callback.on_rollout_start()
        for start in range(0, len(seeds), n_envs):
            # VecEnvs reset a finished episode without a seed; the next reset passes these, env by env.
            env.unwrapped._seeds = [int(seed) for seed in seeds[start : start + n_envs]]
            observations = env.reset()
            active = np.ones(n_envs, dtype=bool)
            obs_steps, action_steps, reward_steps, mask_steps = [], [], [], []
            while active.any():
                obs_tensor = torch.as_tensor(observations, dtype=torch.float32)
                with torch.no_grad():
                    mean = self.policy.actor(obs_tensor)
                actions = mean + std * torch.randn(mean.shape, generator=self._torch_rng)
                new_obs, rewards, dones, infos = env.step(actions.numpy())
                self.num_timesteps += n_envs
                callback.update_locals(locals())
                if not callback.on_step():
                    return None
                self._update_info_buffer(infos, dones)
                obs_steps.append(obs_tensor)
                action_steps.append(actions)
                reward_steps.append(np.where(active, rewards, 0.0))
                mask_steps.append(active.copy())
                active &= ~dones
                observations = new_obs
            rounds.append((obs_steps, action_steps, reward_steps, mask_steps))
        callback.update_locals(locals())
        callback.on_rollout_end()
        return _stack_rounds(rounds)

    def train(self, batch: EpisodeBatch) -> None:
        """One policy-gradient step on ``batch``; logs ``train/*``."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        mask = torch.from_numpy(batch.mask)
        advantage = torch.from_numpy(group_advantages(batch.rewards, batch.mask, self.group_size, self.gamma)[batch.mask]).float()
        if self.normalize_advantage and advantage.numel() > 1:
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        distribution = self.policy.distribution(batch.observations[mask])
        log_prob = distribution.log_prob(batch.actions[mask]).sum(-1)
        entropy = distribution.entropy().sum(-1).mean()
        policy_loss = -(log_prob * advantage).mean()
        loss = policy_loss - self.ent_coef * entropy
        self.policy.optimizer.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        self._n_updates += 1
        self.logger.record("train/loss", float(loss.detach()))
        self.logger.record("train/policy_gradient_loss", float(policy_loss.detach()))
        self.logger.record("train/entropy_loss", -float(entropy.detach()))
        self.logger.record("train/grad_norm", float(grad_norm))
        self.logger.record("train/std", float(self.policy.log_std.detach().exp().mean()))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def dump_logs(self) -> None:
        """``rollout/`` and ``time/`` scalars, then everything recorded since the last dump, at ``num_timesteps``."""
        elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        if self.ep_info_buffer:
            self.logger.record("rollout/ep_rew_mean", safe_mean([info["r"] for info in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([info["l"] for info in self.ep_info_buffer]))
        self.logger.record("time/fps", int((self.num_timesteps - self._num_timesteps_at_start) / elapsed))
        self.logger.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)


def _stack_rounds(rounds: list[tuple[list[torch.Tensor], list[torch.Tensor], list[np.ndarray], list[np.ndarray]]]) -> EpisodeBatch:
    """Rounds of ``[n_envs, ...]`` steps -> episode-major arrays (episode ``round * n_envs + env``), zero-padded to the longest round."""
    longest = max(len(masks) for *_, masks in rounds)

    def padded(steps: list[Any]) -> list[Any]:
        zeros = torch.zeros_like if isinstance(steps[0], torch.Tensor) else np.zeros_like
        return steps + [zeros(steps[0])] * (longest - len(steps))

    return EpisodeBatch(
        observations=torch.cat([torch.stack(padded(obs), dim=1) for obs, *_ in rounds]),
        actions=torch.cat([torch.stack(padded(actions), dim=1) for _, actions, *_ in rounds]),
        rewards=np.concatenate([np.stack(padded(rewards), axis=1) for *_, rewards, _ in rounds]).astype(np.float64),
        mask=np.concatenate([np.stack(padded(masks), axis=1) for *_, masks in rounds]),
    )


def _check_policy_kwargs(owner: str, policy_kwargs: dict[str, Any]) -> None:
    """The policy's arguments, checked before anything is built (``policy_kwargs.net_arch``, ``policy_kwargs.log_std_init``)."""
    accepted = {"net_arch", "log_std_init", "optimizer_class", "optimizer_kwargs"}
    for key in policy_kwargs:
        if key not in accepted:
            fail(owner, "policy_kwargs", policy_kwargs, f"unknown key {key!r}; accepted are {', '.join(sorted(accepted))}")
    net_arch = policy_kwargs.get("net_arch", [64])
    if not isinstance(net_arch, (list, tuple)):
        fail(owner, "policy_kwargs.net_arch", net_arch, "expected a list of layer widths, e.g. [64, 64]")
    for width in net_arch:
        check_int(owner, "policy_kwargs.net_arch", width, 1, 65_536)
    check_float(owner, "policy_kwargs.log_std_init", policy_kwargs.get("log_std_init", -0.5), -10.0, 2.0)

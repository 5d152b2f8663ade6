"""SB3's PPO hyperparameters as RLlib's: one hyperparameter file (``agents/hyperparams/ppo.yml``) for both backends.

Why translate rather than keep a second file: ``train_agent.py --backend rllib`` and the SB3 backend
should train the same PPO (same rollout, minibatch, epochs, learning rate, discount, GAE, clipping,
network), so that their figures compare backends, not settings (``docs/performance.md``). Every key is
either translated (:data:`TRANSLATED`), or named with what RLlib does instead (:data:`APPROXIMATED`),
or refused: nothing is dropped silently.

This module needs no Ray: ``train_agent.py`` checks the hyperparameters before it starts Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .errors import UsageError
from .sb3_agent import parse_policy_kwargs, vec_normalize_kwargs

#: SB3 PPO hyperparameter -> RLlib ``PPOConfig.training`` argument (same meaning).
TRANSLATED = {
    "learning_rate": "lr",
    "batch_size": "minibatch_size",
    "n_epochs": "num_epochs",
    "gamma": "gamma",
    "gae_lambda": "lambda_",
    "clip_range": "clip_param",
    "ent_coef": "entropy_coeff",
    "vf_coef": "vf_loss_coeff",
    "max_grad_norm": "grad_clip",
}
#: Keys the driver uses to size the run (``n_steps * n_envs`` steps per iteration) or to build the module.
STRUCTURAL = ("n_envs", "n_timesteps", "n_steps", "policy", "policy_kwargs", "normalize")
#: What RLlib does where SB3 has a setting it cannot take; said once when a run starts.
APPROXIMATED = {
    "norm_reward": "RLlib has no reward normalisation: rewards reach the value function unscaled",
    "log_std_init": "RLlib's free log std starts at 0 (std 1)",
    "ortho_init": "RLlib initialises its layers its own way",
}
#: ``policy_kwargs`` keys the RLlib module takes.
POLICY_KWARGS = ("net_arch", "activation_fn", "log_std_init", "ortho_init")
#: SB3 activation classes -> RLlib's ``fcnet_activation`` names.
ACTIVATIONS = {torch.nn.Tanh: "tanh", torch.nn.ReLU: "relu", torch.nn.ELU: "elu", torch.nn.SiLU: "swish"}


def check_rllib_hyperparams(hyperparams: Mapping[str, Any], num_env_runners: int) -> list[str]:
    """Refuse what the RLlib backend cannot train; return the notes on what it approximates."""
    return rllib_ppo_settings(hyperparams, num_env_runners)[1]


def rllib_ppo_settings(hyperparams: Mapping[str, Any], num_env_runners: int) -> tuple[dict[str, Any], list[str]]:
    """The RLlib settings of a PPO run, and the notes on what differs from SB3's PPO.

    :return: ``{"training": PPOConfig.training kwargs, "model": DefaultModelConfig kwargs,
        "env_runners": env runner kwargs, "mean_std_filter": bool}`` and the notes.
    :raises UsageError: a key RLlib's PPO has no counterpart for, a learning-rate schedule, a policy
        other than ``MlpPolicy``, or ``n_envs`` that the env runners cannot share equally.
    """
    unknown = sorted(set(hyperparams) - set(TRANSLATED) - set(STRUCTURAL))
    if unknown:
        raise UsageError(
            f"--backend rllib cannot train PPO with hyperparameter(s) {', '.join(unknown)}: it takes "
            f"{', '.join(sorted([*TRANSLATED, *STRUCTURAL]))}"
        )
    if hyperparams.get("policy", "MlpPolicy") != "MlpPolicy":
        raise UsageError(f"--backend rllib trains an MLP policy: hyperparameter policy={hyperparams['policy']!r} must be MlpPolicy")
    notes: list[str] = []
    training: dict[str, Any] = {}
    for key, name in TRANSLATED.items():
        if key in hyperparams:
            value = hyperparams[key]
            if isinstance(value, str):
                raise UsageError(f"--backend rllib takes a number for {key}, not the schedule {value!r}")
            training[name] = value
    n_envs, n_steps = int(hyperparams.get("n_envs", 1)), int(hyperparams.get("n_steps", 2048))
    runners = max(num_env_runners, 1)
    if n_envs % runners:
        raise UsageError(
            f"n_envs={n_envs} cannot be shared by {num_env_runners} env runners: pass --num-env-runners that divides it "
            f"(e.g. {', '.join(str(d) for d in range(1, min(n_envs, 16) + 1) if n_envs % d == 0)})"
        )
    # One iteration = one SB3 rollout: every env steps n_steps times. SB3's PPO has no KL penalty and
    # no value clipping unless asked (clip_range_vf): both off here.
    training.update(train_batch_size_per_learner=n_envs * n_steps, use_kl_loss=False, vf_clip_param=float("inf"))
    policy_kwargs = parse_policy_kwargs(hyperparams.get("policy_kwargs") or {})
    extra = sorted(set(policy_kwargs) - set(POLICY_KWARGS))
    if extra:
        raise UsageError(f"--backend rllib cannot take policy_kwargs {', '.join(extra)}: it takes {', '.join(POLICY_KWARGS)}")
    model = {"fcnet_hiddens": _hidden_sizes(policy_kwargs.get("net_arch", [64, 64])), "vf_share_layers": False, "free_log_std": True}
    activation = policy_kwargs.get("activation_fn", torch.nn.Tanh)
    if activation not in ACTIVATIONS:
        raise UsageError(f"--backend rllib cannot use activation_fn {activation!r}: it takes {', '.join(c.__name__ for c in ACTIVATIONS)}")
    model["fcnet_activation"] = ACTIVATIONS[activation]
    for key in ("log_std_init", "ortho_init"):
        if key in policy_kwargs:
            notes.append(f"policy_kwargs {key}={policy_kwargs[key]!r}: {APPROXIMATED[key]}")
    normalize = vec_normalize_kwargs(hyperparams) or {}
    if normalize.get("norm_reward", True) and normalize:
        notes.append(f"normalize norm_reward: {APPROXIMATED['norm_reward']}")
    settings = {
        "training": training,
        "model": model,
        "env_runners": {
            "num_env_runners": num_env_runners,
            "num_envs_per_env_runner": n_envs // runners,
            "rollout_fragment_length": n_steps,
        },
        "mean_std_filter": bool(normalize.get("norm_obs", True)) if normalize else False,
    }
    return settings, notes


def _hidden_sizes(net_arch: Any) -> list[int]:
    """SB3's ``net_arch`` (a list, or ``dict(pi=..., vf=...)`` with equal sizes) as RLlib's ``fcnet_hiddens``."""
    if isinstance(net_arch, Mapping):
        pi, vf = list(net_arch.get("pi", [])), list(net_arch.get("vf", []))
        if pi != vf:
            raise UsageError(f"--backend rllib uses one size list for actor and critic: net_arch pi={pi} and vf={vf} must be equal")
        net_arch = pi
    if not isinstance(net_arch, list) or not all(isinstance(size, int) and size > 0 for size in net_arch):
        raise UsageError(f"policy_kwargs net_arch={net_arch!r} is invalid for --backend rllib: expected a list of layer sizes")
    return list(net_arch)

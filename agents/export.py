"""Export trained agents as self-contained policy artifacts (:mod:`dus_env.policy_artifact`).

Only export needs Stable-Baselines3; the artifact then runs with torch or onnxruntime alone,
through ``dus_env.sampler.DUSSampler`` or ``agents.exported.ExportedPolicyAgent``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dus_env.config import EnvConfig
from dus_env.policy_artifact import ObservationNormalization, write_policy_artifact

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecNormalize


class SB3DeterministicActor(torch.nn.Module):
    """The deterministic action of an SB3 policy as a plain module: what ``predict(deterministic=True)`` returns.

    No distribution object is traced (the ONNX exporter cannot follow ``torch.distributions``):

    * actor-critic policies (PPO, A2C, TRPO): features -> actor MLP -> mean action, ``tanh`` when
      the policy squashes its output (gSDE);
    * SAC / TQC: the actor's mean action through ``tanh`` (the mode of a squashed Gaussian);
    * TD3 / DDPG: the actor itself, already deterministic;
    * ARS (sb3-contrib): the policy's own forward, which for a ``Box`` action space is its
      ``action_net`` (ending in ``tanh`` when the policy squashes, the ``MlpPolicy`` default;
      ``LinearPolicy`` has no ``tanh``); ARS ignores ``deterministic``, its action has no noise.

    Actions are clipped to ``[-1, 1]``, as ``predict`` clips them to the action space (a squashed
    policy's ``[-1, 1]`` output is unscaled to the space, which is ``[-1, 1]`` itself). Recurrent
    policies are refused: the artifact is a feed-forward network without the LSTM state.
    """

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        from sb3_contrib.ars.policies import ARSPolicy
        from stable_baselines3.common.policies import ActorCriticPolicy

        if hasattr(policy, "lstm_actor"):
            raise TypeError(
                f"cannot export a recurrent policy ({type(policy).__name__}): the exported artifact is a feed-forward "
                "network and would drop the LSTM state; export a PPO/A2C/SAC/TD3 policy instead"
            )
        self.policy: Any = policy  # an SB3 policy of one of the kinds below; its parts are reached by name
        if isinstance(policy, ActorCriticPolicy):
            self.kind = "actor_critic"
        elif isinstance(policy, ARSPolicy):
            self.kind = "ars"
            # ARS loads its weights as views of one flat vector; a deep copy gives each its own
            # storage, as the torch.export archive expects (it warns about shared ones).
            self.policy = copy.deepcopy(policy)
        elif hasattr(policy, "actor") and hasattr(policy.actor, "get_action_dist_params"):
            self.kind = "squashed_gaussian"
        elif hasattr(policy, "actor"):
            self.kind = "deterministic_actor"
        else:
            raise TypeError(f"cannot export a {type(policy).__name__}: expected an actor-critic policy, an ARS policy or one with an actor")

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        if self.kind == "actor_critic":
            features = self.policy.extract_features(observation)
            actor_features = features[0] if isinstance(features, tuple) else features
            actions = self.policy.action_net(self.policy.mlp_extractor.forward_actor(actor_features))
            if self.policy.squash_output:
                actions = torch.tanh(actions)
        elif self.kind == "ars":
            actions = self.policy(observation)
        elif self.kind == "squashed_gaussian":
            mean_actions, _, _ = self.policy.actor.get_action_dist_params(observation)
            actions = torch.tanh(mean_actions)
        else:
            actions = self.policy.actor(observation)
        return torch.clamp(actions, -1.0, 1.0)


def export_sb3_policy(
    model: BaseAlgorithm,
    vec_normalize: VecNormalize | None,
    env_config: EnvConfig,
    out_dir: str | Path,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact of an SB3 model trained on a DUS env.

    :param model: the trained algorithm (its policy is copied to CPU for export).
    :param vec_normalize: the ``VecNormalize`` wrapper used in training, or ``None``; only its
        observation statistics are exported (``norm_obs=False`` exports none).
    :param env_config: the training env's config (``env.unwrapped.config``).
    :param out_dir: artifact folder, replaced atomically.
    :param metadata: extra provenance stored under ``source``.
    """
    normalization = None
    if vec_normalize is not None and vec_normalize.norm_obs:
        from stable_baselines3.common.running_mean_std import RunningMeanStd

        rms = vec_normalize.obs_rms
        if not isinstance(rms, RunningMeanStd):  # DUS envs observe one vector, never a dict
            raise TypeError(f"cannot export normalisation statistics of dict observations ({sorted(rms)})")
        normalization = ObservationNormalization(
            np.asarray(rms.mean, dtype=np.float64),
            np.asarray(rms.var, dtype=np.float64),
            float(vec_normalize.epsilon),
            float(vec_normalize.clip_obs),
        )
    policy = model.policy.to("cpu")
    policy.set_training_mode(False)
    return _export(
        SB3DeterministicActor(policy), env_config, out_dir, normalization, {"algorithm": type(model).__name__, **(metadata or {})}
    )


def _export(
    actor: torch.nn.Module,
    env_config: EnvConfig,
    out_dir: str | Path,
    normalization: ObservationNormalization | None,
    source: dict[str, Any],
) -> Path:
    return write_policy_artifact(
        actor,
        out_dir,
        layout=env_config.observation_layout(),
        mapping=env_config.quantity_mapping(),
        env_config=env_config.to_dict(),
        normalization=normalization,
        source=source,
    )

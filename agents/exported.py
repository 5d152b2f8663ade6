"""An exported policy artifact as an agent, so ``evaluate.py`` benchmarks exactly what ships."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from dus_env.env import DUSEnv
from dus_env.policy_artifact import ArtifactError, PolicyArtifact

from .base import Agent


class ExportedPolicyAgent(Agent):
    """Runs a policy artifact on the env's observations: ``backend="onnx"`` (default, onnxruntime) or
    ``"torch"`` (``policy.pt2`` through ``torch.export``), as :class:`~dus_env.policy_artifact.PolicyArtifact`."""

    name = "exported"

    def __init__(self, artifact: PolicyArtifact, env: gym.Env) -> None:
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, DUSEnv):
            raise TypeError(f"an exported policy acts in a dus_env environment, got {type(unwrapped).__name__}")
        super().__init__(unwrapped.layout, unwrapped.mapping)
        if artifact.layout.n_modalities != unwrapped.n_modalities:
            raise ArtifactError(
                f"policy artifact {artifact.path} was exported for {artifact.layout.n_modalities} modalities, "
                f"the env has {unwrapped.n_modalities}"
            )
        self.artifact = artifact

    @classmethod
    def load(cls, path: str | Path, env: gym.Env, backend: str = "onnx") -> ExportedPolicyAgent:
        return cls(PolicyArtifact(path, backend), env)

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self.artifact.act(observation)

"""The agent interface every policy implements, so that ``evaluate.py`` can benchmark any of them."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from dus_env.observation import ObservationLayout
from dus_env.quantities import QuantityMapping


class Agent(ABC):
    """A sampling policy: observation in, action in ``[-1, 1]^M`` out.

    A new agent is one subclass with ``act``; ``reset`` is called at the start of every episode
    with that episode's seed (for agents with their own randomness).

    :param layout: the env's observation layout (read slots by name, never by index).
    :param mapping: the env's action-to-quantity map (to turn wanted quantities into actions).
    """

    name: str = "agent"

    def __init__(self, layout: ObservationLayout, mapping: QuantityMapping) -> None:
        self.layout = layout
        self.mapping = mapping

    def reset(self, seed: int | None = None) -> None:  # noqa: B027 (a hook: stateless agents keep the default)
        """Start of an episode; stateless agents need nothing."""

    def episode_copy(self) -> Agent:
        """An independent agent for one episode of a batch (episodes of a batch run side by side).

        A deep copy by default; agents holding large read-only parts (a loaded model) override it
        to share them and copy only their per-episode state.
        """
        return copy.deepcopy(self)

    @abstractmethod
    def act(self, observation: np.ndarray) -> np.ndarray:
        """The action for one observation (float32, shape ``[M]``)."""


def check_modalities(trained: int, env: int, policy: str | Path) -> None:
    """Refuse a saved policy trained on ``trained`` modalities for an env with ``env`` (every loader's check).

    :raises ValueError: the counts differ; the message says what to do instead.
    """
    if trained != env:
        raise ValueError(
            f"policy {policy} was trained on {trained} modalities, the env has {env}: "
            "evaluate it on an env with the same number of modalities, or train a policy for this one"
        )

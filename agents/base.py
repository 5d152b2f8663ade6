"""The agent interface every policy implements, so that ``evaluate.py`` can benchmark any of them."""

from __future__ import annotations

from abc import ABC, abstractmethod

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

    def reset(self, seed: int | None = None) -> None:
        """Start of an episode; stateless agents need nothing."""

    @abstractmethod
    def act(self, observation: np.ndarray) -> np.ndarray:
        """The action for one observation (float32, shape ``[M]``)."""

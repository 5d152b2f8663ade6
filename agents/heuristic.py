"""DUS-H as an agent: the weaker modality, by cumulative score, gets more samples.

The rule and its temperature are documented in :mod:`dus_env.heuristic`; this class only adapts
it to the :class:`~agents.base.Agent` interface.
"""

from __future__ import annotations

import numpy as np

from dus_env.heuristic import DEFAULT_TEMPERATURE, check_temperature, heuristic_action
from dus_env.observation import ObservationLayout
from dus_env.quantities import QuantityMapping

from .base import Agent


class HeuristicAgent(Agent):
    """DUS-H (see :mod:`dus_env.heuristic`).

    :param temperature: ``tau``, in units of the cumulative score (a probability in ``[0, 1]``).
    """

    name = "heuristic"

    def __init__(self, layout: ObservationLayout, mapping: QuantityMapping, temperature: float = DEFAULT_TEMPERATURE) -> None:
        super().__init__(layout, mapping)
        self.temperature = check_temperature(temperature)

    def act(self, observation: np.ndarray) -> np.ndarray:
        return heuristic_action(self.layout, self.mapping, observation, self.temperature)

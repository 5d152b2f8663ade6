"""Names of the files in a run folder: ``train_agent.py`` writes them, the policy loaders read them back.

Why a module of their own: the writers (:mod:`agents.training`, :mod:`agents.callbacks`), the
resume logic (:mod:`agents.runs`) and both loaders (:class:`agents.sb3_agent.SB3Agent`,
:class:`agents.reinforce.ReinforceAgent`, each of which also recognises the other's final file to
say which loader a folder needs) must agree on them, and the loaders cannot import each other.
"""

from __future__ import annotations

CONFIG_FILE = "config.yml"
#: Periodic checkpoints, relative to the run folder.
CHECKPOINT_DIR = "checkpoints"
#: The final policy of a Stable-Baselines3 run, and its ``VecNormalize`` statistics beside it.
SB3_FINAL_FILE = "final_model.zip"
VECNORMALIZE_FILE = "vecnormalize.pkl"
#: The final policy of a DUS-R run.
REINFORCE_FINAL_FILE = "final_model.pt"
#: Checkpoints are ``<prefix>_<N>_steps.zip`` (SB3's ``CheckpointCallback`` names, with
#: ``<prefix>_vecnormalize_<N>_steps.pkl``) or ``<prefix>_<N>_steps.pt`` (DUS-R).
SB3_CHECKPOINT_PREFIX = "rl_model"
REINFORCE_CHECKPOINT_PREFIX = "reinforce"

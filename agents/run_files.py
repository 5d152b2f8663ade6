"""Names of the files in a run folder: ``train_agent.py`` writes them, the policy loaders read them back.

Why a module of their own: the writers (:mod:`agents.training`, :mod:`agents.callbacks`), the
resume logic (:mod:`agents.runs`) and the loader (:class:`agents.sb3_agent.SB3Agent`) must agree on
them, and the loader cannot import the training modules. Every algorithm, DUS-R included, writes
the same files.
"""

from __future__ import annotations

CONFIG_FILE = "config.yml"
#: Periodic checkpoints, relative to the run folder.
CHECKPOINT_DIR = "checkpoints"
#: The final policy of a run, and its ``VecNormalize`` statistics beside it.
SB3_FINAL_FILE = "final_model.zip"
VECNORMALIZE_FILE = "vecnormalize.pkl"
#: Checkpoints are ``<prefix>_<N>_steps.zip`` with ``<prefix>_vecnormalize_<N>_steps.pkl``
#: (SB3's ``CheckpointCallback`` names).
SB3_CHECKPOINT_PREFIX = "rl_model"

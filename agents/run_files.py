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


def legacy_dus_r_message(where: object, file_name: str) -> str | None:
    """What to do with a DUS-R run of dus_env 0.4 (its own ``.pt`` checkpoint and final-model files,
    which 0.5's :class:`agents.reinforce.Reinforce` cannot read), or ``None`` for any other file."""
    if not file_name.endswith(".pt"):
        return None
    return (
        f"{where} is a DUS-R run of dus_env 0.4 ({file_name}): since 0.5 DUS-R is an SB3 algorithm with .zip "
        "checkpoints, and 0.4's .pt files do not load. Resume or export it with dus_env 0.4, or start a new run; "
        "its exported/policy.onnx still runs in DUSSampler and evaluate.py (exported:RUN/exported, backend onnx)"
    )

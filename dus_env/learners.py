"""Learner configs: the multimodal learning method that consumes the per-modality sample quantities.

The learners themselves are batched (:mod:`dus_env.batched.learners`): one implementation trains
the single env's model and a vector env's ``N`` models alike. What they do:

* ``joint`` (late-fusion baseline): one paired batch of ``max_j n_j`` samples; modality ``j``
  takes part in a seeded random subset of ``n_j`` of them and is left out of the fused logits of
  the rest; one fused cross-entropy step. A modality with more samples than the others therefore
  also trains on samples where it must predict alone.
* ``alternating`` (MLA-style): each modality draws its own batch of ``n_j`` samples and is updated
  in turn, through a head shared by all modalities.
"""

from __future__ import annotations

from dataclasses import dataclass

from .validation import as_tuple, check_choice, check_float, check_int

LEARNER_KINDS = ("joint", "alternating")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class LearnerConfig:
    """Model and optimizer of the learner.

    :param kind: ``joint`` or ``alternating`` (see the module docstring).
    :param hidden_sizes: hidden layer widths of every modality encoder.
    :param embedding_dim: width of each encoder's output.
    :param optimizer: ``adam`` or ``sgd`` (with ``momentum``).
    :param lr: learning rate.
    :param momentum: SGD momentum (ignored by Adam).
    :param weight_decay: L2 penalty.
    """

    kind: str = "joint"
    hidden_sizes: tuple[int, ...] = (64,)
    embedding_dim: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_choice(owner, "kind", self.kind, LEARNER_KINDS)
        hidden = as_tuple(owner, "hidden_sizes", self.hidden_sizes)
        object.__setattr__(self, "hidden_sizes", hidden)
        for width in hidden:
            check_int(owner, "hidden_sizes", width, 1, 65_536)
        check_int(owner, "embedding_dim", self.embedding_dim, 1, 65_536)
        check_choice(owner, "optimizer", self.optimizer, OPTIMIZERS)
        check_float(owner, "lr", self.lr, 0.0, low_open=True)
        check_float(owner, "momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_float(owner, "weight_decay", self.weight_decay, 0.0)

    @property
    def shared_head(self) -> bool:
        """MLA-style alternating training updates every modality through one shared head."""
        return self.kind == "alternating"

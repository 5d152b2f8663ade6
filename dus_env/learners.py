"""Learner configs: the multimodal learning method that consumes the per-modality sample quantities.

The learners themselves are batched (:mod:`dus_env.batched.learners`): one implementation trains
the single env's model and a vector env's ``N`` models alike. What they do:

* ``joint`` (late-fusion baseline): one paired batch of ``max_j n_j`` samples; modality ``j``
  takes part in a seeded random subset of ``n_j`` of them and is left out of the fused logits of
  the rest; one fused cross-entropy step. A modality with more samples than the others therefore
  also trains on samples where it must predict alone.
* ``alternating`` (MLA-style): each modality draws its own batch of ``n_j`` samples and is updated
  in turn, through a head shared by all modalities.
* ``mla``: ``alternating`` with MLA's gradient projection on the shared head (Zhang et al., CVPR
  2024; :mod:`dus_env.methods.mla`). ``alternating`` with ``projection=True`` is the same learner.
* ``ogm_ge``: ``joint`` with OGM-GE's gradient modulation and Gaussian enhancement (Peng et al.,
  CVPR 2022; :mod:`dus_env.methods.ogm_ge`).
* ``mie``: modalities in turn, each with its own batch of ``n_j`` samples and its own head, SAM
  updates and flat gradient modification between modalities (MIE / IGM, Jiang, Chi, Yang;
  :mod:`dus_env.methods.mie`).

Every learner draws its training rows in the order ``row_order`` names: ``epoch`` (a random
permutation per epoch), ``bss_curriculum`` or ``bss_adaptive`` (balance-aware sequence sampling,
Guan et al., IJCAI 2025; :mod:`dus_env.methods.bss`). The quantities (the action) say how many
rows of each modality an iteration uses; the row order says which rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .validation import as_tuple, check_bool, check_choice, check_float, check_int, fail

LEARNER_KINDS = ("joint", "alternating", "mla", "ogm_ge", "mie")
OPTIMIZERS = ("adam", "sgd")
ROW_ORDERS = ("epoch", "bss_curriculum", "bss_adaptive")
GROW_UNITS = ("decisions", "epochs")

#: Options that only some learner kinds (or row orders) read: setting one for another is an error,
#: not a silent no-op.
_KIND_OPTIONS = {
    "ogm_ge": ("ogm_alpha", "modulation_start", "modulation_end", "gaussian_enhancement"),
    "mie": ("rho", "mie_alpha", "flat_ratio"),
}
_CURRICULUM_OPTIONS = ("bss_lambda0", "bss_grow", "bss_grow_unit")


@dataclass(frozen=True)
class LearnerConfig:
    """Model, optimizer and method of the learner.

    :param kind: ``joint``, ``alternating``, ``mla``, ``ogm_ge`` or ``mie`` (see the module docstring).
    :param hidden_sizes: hidden layer widths of every modality encoder.
    :param embedding_dim: width of each encoder's output.
    :param optimizer: ``adam`` or ``sgd`` (with ``momentum``).
    :param lr: learning rate.
    :param momentum: SGD momentum (ignored by Adam).
    :param weight_decay: L2 penalty.
    :param ogm_alpha: OGM-GE's modulation strength ``alpha`` in ``k = 1 - tanh(alpha * relu(rho - 1))``
        (the official README recommends 0.1 to 0.8 by dataset; 0.8 is its CREMA-D value).
    :param modulation_start: first iteration of the episode (0-based) that OGM-GE modulates.
    :param modulation_end: last modulated iteration (included); ``None`` = to the episode's end.
    :param gaussian_enhancement: add OGM-GE's noise ``N(0, std(g)^2)`` (off: plain OGM).
    :param projection: MLA's projection of the shared head's gradient; ``None`` = on for ``mla``,
        off for ``alternating``; only these two kinds accept it.
    :param rho: MIE's SAM radius (per weight tensor).
    :param mie_alpha: MIE's temperature in ``Lambda = exp(-alpha (Sigma - s_min) / (s_max - s_min))``
        (the official CREMA-D config's ``temperature1``).
    :param flat_ratio: MIE's weight of the perturbed loss, ``(1 - f) L(w) + f L(w + eps)``.
    :param row_order: ``epoch``, ``bss_curriculum`` or ``bss_adaptive`` (see the module docstring).
    :param bss_lambda0: the curriculum's starting pool fraction ``lambda0``.
    :param bss_grow: the curriculum's ``T_grow``, in ``bss_grow_unit``: the pool is whole after it.
        The default, 7 decision steps, is a third of the default 20-step episode, as the official
        code's 40 of 120 epochs.
    :param bss_grow_unit: ``decisions`` (decision steps of the episode) or ``epochs`` (passes of a row
        stream over its pool).
    :param bss_measure_every: decision steps between two balance measurements after the one at
        reset; 0 = only at reset; ``None`` = the official code's choice (0 for the curriculum, every
        step for the adaptive order, whose code re-measures every epoch).
    """

    kind: str = "joint"
    hidden_sizes: tuple[int, ...] = (64,)
    embedding_dim: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    ogm_alpha: float = 0.8
    modulation_start: int = 0
    modulation_end: int | None = None
    gaussian_enhancement: bool = True
    projection: bool | None = None
    rho: float = 0.05
    mie_alpha: float = 0.4
    flat_ratio: float = 0.3
    row_order: str = "epoch"
    bss_lambda0: float = 0.1
    bss_grow: float = 7.0
    bss_grow_unit: str = "decisions"
    bss_measure_every: int | None = None

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
        check_float(owner, "ogm_alpha", self.ogm_alpha, 0.0)
        check_int(owner, "modulation_start", self.modulation_start, 0)
        if self.modulation_end is not None:
            check_int(owner, "modulation_end", self.modulation_end, self.modulation_start)
        check_bool(owner, "gaussian_enhancement", self.gaussian_enhancement)
        if self.projection is not None:
            check_bool(owner, "projection", self.projection)
        check_float(owner, "rho", self.rho, 0.0)
        check_float(owner, "mie_alpha", self.mie_alpha, 0.0)
        check_float(owner, "flat_ratio", self.flat_ratio, 0.0, 1.0)
        check_choice(owner, "row_order", self.row_order, ROW_ORDERS)
        check_float(owner, "bss_lambda0", self.bss_lambda0, 0.0, 1.0, low_open=True)
        check_float(owner, "bss_grow", self.bss_grow, 0.0, low_open=True)
        check_choice(owner, "bss_grow_unit", self.bss_grow_unit, GROW_UNITS)
        if self.bss_measure_every is not None:
            check_int(owner, "bss_measure_every", self.bss_measure_every, 0)
        self._check_applicable(owner)

    def _check_applicable(self, owner: str) -> None:
        """An option the chosen kind or row order never reads must keep its default."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for kind, names in _KIND_OPTIONS.items():
            for name in names:
                if self.kind != kind and getattr(self, name) != defaults[name]:
                    fail(
                        owner,
                        name,
                        getattr(self, name),
                        f"only kind={kind!r} reads it (kind is {self.kind!r}); leave it out or set kind={kind!r}",
                    )
        if self.projection is not None and self.kind not in ("alternating", "mla"):
            fail(owner, "projection", self.projection, f"only kinds 'alternating' and 'mla' read it (kind is {self.kind!r})")
        if self.kind == "mie" and (self.rho == 0) != (self.flat_ratio == 0):
            unused = "flat_ratio" if self.rho == 0 else "rho"
            if getattr(self, unused) != defaults[unused]:
                fail(
                    owner,
                    unused,
                    getattr(self, unused),
                    f"SAM is off ({'rho' if unused == 'flat_ratio' else 'flat_ratio'}=0), "
                    "so nothing reads it; leave it out, or give both rho > 0 and flat_ratio > 0",
                )
        if self.kind == "mla" and self.projection is False:
            fail(owner, "projection", self.projection, "kind 'mla' is alternating with the projection; for none use kind='alternating'")
        for name in _CURRICULUM_OPTIONS:
            if self.row_order != "bss_curriculum" and getattr(self, name) != defaults[name]:
                fail(owner, name, getattr(self, name), f"only row_order='bss_curriculum' reads it (row_order is {self.row_order!r})")
        if self.row_order == "epoch" and self.bss_measure_every is not None:
            fail(
                owner,
                "bss_measure_every",
                self.bss_measure_every,
                "only the BSS row orders read it (row_order is 'epoch'); set row_order='bss_curriculum' or 'bss_adaptive'",
            )

    @property
    def shared_head(self) -> bool:
        """MLA-style alternating training updates every modality through one shared head."""
        return self.kind in ("alternating", "mla")

    @property
    def uses_projection(self) -> bool:
        """Whether the alternating learner projects the head's gradient (``mla``, or ``projection=True``)."""
        return self.kind == "mla" or bool(self.projection)

    @property
    def bss_measure_interval(self) -> int:
        """``bss_measure_every`` with ``None`` resolved per row order."""
        if self.bss_measure_every is not None:
            return self.bss_measure_every
        return 1 if self.row_order == "bss_adaptive" else 0

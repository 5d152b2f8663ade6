"""The model- and order-side balancing methods DUS plugs into, as formulas on plain tensors.

Each module holds one method's update rule with its paper reference. The env's batched learners
(:mod:`dus_env.batched.learners`, :mod:`dus_env.batched.row_order`) call these functions with a
leading env dimension; a user's own training loop calls the same functions (or the small helpers
beside them) with ordinary ``nn.Module`` parameters, e.g. next to :class:`dus_env.DUSSampler`
(``examples/plugin_methods_with_sampler.py``).

* :mod:`.ogm_ge`: on-the-fly gradient modulation with Gaussian enhancement (Peng et al., CVPR 2022).
* :mod:`.mla`: the shared head's gradient projection of alternating unimodal adaptation (Zhang et al., CVPR 2024).
* :mod:`.mie`: sharpness-aware minimisation and flat gradient modification (MIE; IGM, Jiang, Chi, Yang, IJCAI 2025).
* :mod:`.bss`: balance-aware sequence sampling, curriculum and adaptive orders (Guan et al., IJCAI 2025).
"""

from .bss import adaptive_weights, balance_measures, curriculum_fraction, curriculum_scores
from .mie import flat_modification, sam_perturbation
from .mla import HeadProjector, projection_alpha, update_projector
from .ogm_ge import enhanced_gradient, modulate_encoders, ogm_ge_coefficients

__all__ = [
    "HeadProjector",
    "adaptive_weights",
    "balance_measures",
    "curriculum_fraction",
    "curriculum_scores",
    "enhanced_gradient",
    "flat_modification",
    "modulate_encoders",
    "ogm_ge_coefficients",
    "projection_alpha",
    "sam_perturbation",
    "update_projector",
]

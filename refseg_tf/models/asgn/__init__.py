"""ASGN (Qiu et al.): DE / SE generator modules, the discriminator, the adversarial `ASGN` model
and the `asgn_*` presets."""

from refseg_tf.models.asgn.layers import DetailEnhancement, Discriminator, SemanticEmbedding
from refseg_tf.models.asgn.model import (
    ASGN,
    ASGN_OPTIMIZER,
    CROSS_ENTROPY_WEIGHT,
    GENERATOR_ADVERSARIAL_LOSSES,
    ASGNGenerator,
)
from refseg_tf.models.asgn.presets import ASGN_PRESETS, GENERATORS
from refseg_tf.models.asgn import experiments  # noqa: F401  (registers its experiments)

__all__ = [
    "ASGN",
    "ASGNGenerator",
    "ASGN_OPTIMIZER",
    "ASGN_PRESETS",
    "CROSS_ENTROPY_WEIGHT",
    "DetailEnhancement",
    "Discriminator",
    "GENERATORS",
    "GENERATOR_ADVERSARIAL_LOSSES",
    "SemanticEmbedding",
]

"""LTS (Jing et al. 2021): layers, the `LTS` model and the `lts` / `lts_trans` presets."""

from refseg_tf.models.lts.layers import (
    ASPPSegmentation,
    ConvBNLeaky,
    GRUTextEncoder,
    LTSFusion,
    RelevanceFilter,
    TransformerLocalizer,
    relevance_heatmaps,
    sine_position_encoding,
)
from refseg_tf.models.lts.model import (
    LOCALIZATIONS,
    LTS,
    LTS_LOSS,
    LTS_OPTIMIZER,
    PixelBCELoss,
)
from refseg_tf.models.lts.presets import LTS_PRESETS
from refseg_tf.models.lts import experiments  # noqa: F401  (registers its experiments)

__all__ = [
    "ASPPSegmentation",
    "ConvBNLeaky",
    "GRUTextEncoder",
    "LOCALIZATIONS",
    "LTS",
    "LTSFusion",
    "LTS_LOSS",
    "LTS_OPTIMIZER",
    "LTS_PRESETS",
    "PixelBCELoss",
    "RelevanceFilter",
    "TransformerLocalizer",
    "relevance_heatmaps",
    "sine_position_encoding",
]

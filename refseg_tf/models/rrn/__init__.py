"""RRN (Li et al. 2018): its refinement layers, the `RRN` model and the `rrn` preset
(registered on import)."""

from refseg_tf.models.rrn.layers import (
    INITIAL_STATE_MODES,
    LSTM_CELLS,
    PEEPHOLE_MODES,
    REFINEMENT_UPDATES,
    ConvLSTMStep,
    RecurrentRefinement,
    SampleLayerNormalization,
)
from refseg_tf.models.rrn.model import (
    RRN,
    RRN_AUTHORS_CODE,
    RRN_LOSS,
    RRN_OPTIMIZER,
    RRN_VARIANTS,
    TABLE1_ROWS,
)
from refseg_tf.models.rrn.presets import RRN_PRESETS
from refseg_tf.models.rrn import experiments  # noqa: F401  (registers its experiments)

__all__ = [
    "ConvLSTMStep",
    "INITIAL_STATE_MODES",
    "LSTM_CELLS",
    "PEEPHOLE_MODES",
    "REFINEMENT_UPDATES",
    "RRN",
    "RRN_AUTHORS_CODE",
    "RRN_LOSS",
    "RRN_OPTIMIZER",
    "RRN_PRESETS",
    "RRN_VARIANTS",
    "RecurrentRefinement",
    "SampleLayerNormalization",
    "TABLE1_ROWS",
]

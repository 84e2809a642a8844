"""LSTM-CNN (Hu et al. 2016) and the R+LSTM / D+LSTM / D-LSTM-ours baselines: the `LSTMCNN`
model and its presets (registered on import)."""

from refseg_tf.models.lstm_cnn.model import (
    HU_HIGH_RES_LOSS,
    HU_LOW_RES_LOSS,
    HU_OPTIMIZER,
    HU_STAGES,
    LSTMCNN,
    UPSAMPLING_MODES,
)
from refseg_tf.models.lstm_cnn.presets import LSTM_CNN_PRESETS
from refseg_tf.models.lstm_cnn import experiments  # noqa: F401  (registers its experiments)

__all__ = [
    "HU_HIGH_RES_LOSS",
    "HU_LOW_RES_LOSS",
    "HU_OPTIMIZER",
    "HU_STAGES",
    "LSTMCNN",
    "LSTM_CNN_PRESETS",
    "UPSAMPLING_MODES",
]

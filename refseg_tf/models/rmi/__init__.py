"""RMI (Liu et al. 2017): `MultimodalLSTM`, the `RMI` model and the `r_rmi` / `d_rmi` presets."""

from refseg_tf.models.rmi.layers import ClippedArctanh, MultimodalLSTM
from refseg_tf.models.rmi.model import OUTPUT_TRANSFORMS, RMI, RMI_LOSS, RMI_OPTIMIZER
from refseg_tf.models.rmi.presets import RMI_PRESETS
from refseg_tf.models.rmi import experiments  # noqa: F401  (registers its experiments)

__all__ = [
    "ClippedArctanh",
    "MultimodalLSTM",
    "OUTPUT_TRANSFORMS",
    "RMI",
    "RMI_LOSS",
    "RMI_OPTIMIZER",
    "RMI_PRESETS",
]

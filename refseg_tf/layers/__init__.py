"""refseg_tf.layers: small registered Keras layers shared by the models (keras / keras.ops only).

A layer used by one family only lives in that family's package (e.g. RRN's
`RecurrentRefinement` in `refseg_tf.models.rrn.layers`)."""

from refseg_tf.layers.fusion import TextVisualFusion
from refseg_tf.layers.spatial import (
    SPATIAL_CHANNELS,
    L2Normalize,
    ResizeLike,
    SpatialCoordinates,
    TileToSpatial,
    resize_bilinear,
    spatial_size,
)
from refseg_tf.layers.text import PAD_ID, LSTMTextEncoder
from refseg_tf.layers.upsampling import (
    BilinearUpsamplingInitializer,
    bilinear_kernel,
    bilinear_kernel_1d,
)

__all__ = [
    "BilinearUpsamplingInitializer",
    "L2Normalize",
    "LSTMTextEncoder",
    "PAD_ID",
    "ResizeLike",
    "SPATIAL_CHANNELS",
    "SpatialCoordinates",
    "TextVisualFusion",
    "TileToSpatial",
    "bilinear_kernel",
    "bilinear_kernel_1d",
    "resize_bilinear",
    "spatial_size",
]

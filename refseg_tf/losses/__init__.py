"""refseg_tf.losses: per-pixel logistic losses for referring segmentation (keras.ops only)."""

from refseg_tf.losses.segmentation import (
    LABEL_MODES,
    LOSS_NAMES,
    LOSS_UPSAMPLINGS,
    PIXEL_REDUCTIONS,
    RESOLUTIONS,
    SigmoidCrossEntropyLoss,
    WeightedLogisticLoss,
    align_target_and_logits,
    downsample_mask,
    get_loss,
    weighted_logistic_loss,
    weighted_logistic_map,
)

__all__ = [
    "LABEL_MODES",
    "LOSS_NAMES",
    "LOSS_UPSAMPLINGS",
    "PIXEL_REDUCTIONS",
    "RESOLUTIONS",
    "SigmoidCrossEntropyLoss",
    "WeightedLogisticLoss",
    "align_target_and_logits",
    "downsample_mask",
    "get_loss",
    "weighted_logistic_loss",
    "weighted_logistic_map",
]

"""refseg_tf.metrics: referring-segmentation scores.

`scores` (numpy, no TensorFlow) computes the reported numbers at the original resolution;
`keras_metrics` holds streaming, distribute-safe Keras metrics for `compile(metrics=...)`.
Importing this package registers the Keras metrics for `.keras` loading (so it loads Keras).
"""

from refseg_tf.metrics.keras_metrics import MeanIoU, OverallIoU, PrecisionAtIoU
from refseg_tf.metrics.scores import (
    DEFAULT_THRESHOLDS,
    LENGTH_BUCKETS,
    SegmentationEvaluator,
    bucket_index,
    bucket_label,
    buckets_for_dataset,
    format_table,
    intersection_union,
    letterbox_localization_hit,
    localization_accuracy,
    localization_hit,
    per_sample_iou,
    precision_key,
    save_scores_json,
    scores_from_iou,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LENGTH_BUCKETS",
    "MeanIoU",
    "OverallIoU",
    "PrecisionAtIoU",
    "SegmentationEvaluator",
    "bucket_index",
    "bucket_label",
    "buckets_for_dataset",
    "format_table",
    "intersection_union",
    "letterbox_localization_hit",
    "localization_accuracy",
    "localization_hit",
    "per_sample_iou",
    "precision_key",
    "save_scores_json",
    "scores_from_iou",
]

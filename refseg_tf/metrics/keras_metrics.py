"""Streaming Keras metrics for referring segmentation: overall IoU, mean IoU, precision@X.

They score logits against the mask the model was trained on (the letterboxed square), so during
`fit`/`evaluate` they are a proxy; the reported numbers come from `refseg_tf.metrics.scores` at
the original image resolution. On the same binary maps both give identical values. Logits are
turned into binary maps at the mask's size by the scoring rule of `refseg_tf.scoring`
(`input_resolution_masks`): by default the authors' TF1 bilinear upsampling of the logits and
logit >= 1e-9; "resize_probability" resizes sigmoid probabilities and thresholds them (>=).

Every state variable is a sum (Keras metric variables aggregate by summing across replicas), so
the metrics are exact under `tf.distribute` strategies. Per-sample conventions follow
`refseg_tf.metrics.scores`: a sample with empty prediction and empty mask has IoU 1.0.

Backend-agnostic: only `keras` and `keras.ops`.
"""


import keras
from keras import ops

from refseg_tf import scoring
from refseg_tf.metrics.scores import precision_key


class _SegmentationIoUMetric(keras.metrics.Metric):
    """Shared part: binarises predictions and masks, computes per-sample I and U.

    Args:
        name: metric name (the key in the logs).
        probability_threshold: foreground where the probability is at least this; 0.5 means
            the authors' logit >= 1e-9. LTS predicts with 0.25.
        from_logits: whether `y_pred` holds logits (True, the models' output) or probabilities.
        scoring_rule: one of `refseg_tf.scoring.SCORING_RULES` ("upsample_logits" default).
        dtype: dtype of `result()`.
    """

    def __init__(self, name, probability_threshold=0.5, from_logits=True, dtype=None,
                 scoring_rule=scoring.DEFAULT_SCORING_RULE):
        super().__init__(name=name, dtype=dtype)
        self.scoring_rule = scoring.check_scoring_rule(scoring_rule)
        probability_threshold = float(probability_threshold)
        if not 0.0 < probability_threshold < 1.0:
            raise ValueError(
                f"{name}: probability_threshold must lie in (0, 1); got {probability_threshold}"
            )
        self.probability_threshold = probability_threshold
        self.from_logits = bool(from_logits)

    def _per_sample_counts(self, y_true, y_pred):
        """Per-sample (intersection, union) as float32 [B] vectors."""
        y_true = self._as_rank4(y_true, "y_true")
        y_pred = self._as_rank4(y_pred, "y_pred")
        predicted = self._binary_at_mask_size(ops.cast(y_pred, "float32"), y_true)
        target = ops.cast(ops.greater(ops.cast(y_true, "float32"), 0.5), "float32")
        intersection = ops.sum(predicted * target, axis=(1, 2, 3))
        union = ops.sum(ops.maximum(predicted, target), axis=(1, 2, 3))
        return intersection, union

    def _as_rank4(self, tensor, argument):
        tensor = ops.convert_to_tensor(tensor)
        if len(tensor.shape) == 3:
            tensor = ops.expand_dims(tensor, -1)
        if len(tensor.shape) != 4 or tensor.shape[-1] != 1:
            raise ValueError(
                f"{self.name}: {argument} must have shape [B, H, W, 1] (or [B, H, W]); got "
                f"{tuple(tensor.shape)}"
            )
        return tensor

    def _binary_at_mask_size(self, y_pred, y_true):
        """{0, 1} predictions at the mask's height and width, by the scoring rule."""
        target_size = tuple(y_true.shape[1:3])
        if None in target_size:
            raise ValueError(
                f"{self.name}: the mask (y_true) needs a static height and width to resize the "
                f"predictions to; got shape {tuple(y_true.shape)}"
            )
        return scoring.input_resolution_masks(
            y_pred, target_size, self.scoring_rule, self.probability_threshold, self.from_logits
        )

    def _per_sample_weights(self, sample_weight, reference):
        """Sample weights as a float32 [B] vector (ones when None)."""
        if sample_weight is None:
            return ops.ones_like(reference)
        weights = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
        if len(weights.shape) == 0:
            return ops.ones_like(reference) * weights
        if any(dim not in (1, None) for dim in weights.shape[1:]):
            raise ValueError(
                f"{self.name}: sample_weight must hold one weight per sample ([B] or [B, 1]); "
                f"got shape {tuple(weights.shape)}"
            )
        return ops.reshape(weights, (-1,))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "probability_threshold": self.probability_threshold,
                "from_logits": self.from_logits,
                "scoring_rule": self.scoring_rule,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class OverallIoU(_SegmentationIoUMetric):
    """Overall IoU: summed intersections over summed unions across every sample seen.

    The number Hu, RMI and RRN report ("overall IoU", sometimes "cumulative IoU"). Large objects
    weigh more than small ones. Sums are kept in float64 so that a split of millions of pixels
    adds up exactly.

    Args:
        name: metric name, "overall_iou".
        probability_threshold: foreground where sigmoid(logit) >= this (0.5: logit >= 1e-9).
        from_logits: `y_pred` holds logits (True) or probabilities (False).
        dtype: dtype of the result.
        scoring_rule: "upsample_logits" (default) or "resize_probability" (`refseg_tf.scoring`).

    Call args (`update_state`):
        y_true: mask [B, H, W, 1] with values in {0, 1} (> 0.5 counts as foreground).
        y_pred: logits [B, h, w, 1]; brought to H x W by the scoring rule.
        sample_weight: optional per-sample weights [B]; a weight scales the sample's I and U.

    Example:
        >>> metric = OverallIoU()
        >>> metric.update_state(masks, logits)
        >>> float(metric.result())

    Reference:
        Hu et al. 2016 Sec. 4.2; Liu et al. 2017 Sec. 4.2 (IoU = total intersection over total
        union).
    """

    def __init__(self, name="overall_iou", probability_threshold=0.5, from_logits=True, dtype=None,
                 scoring_rule=scoring.DEFAULT_SCORING_RULE):
        super().__init__(name, probability_threshold, from_logits, dtype, scoring_rule)
        self.total_intersection = self.add_variable(
            shape=(), initializer="zeros", dtype="float64", name="total_intersection"
        )
        self.total_union = self.add_variable(
            shape=(), initializer="zeros", dtype="float64", name="total_union"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        intersection, union = self._per_sample_counts(y_true, y_pred)
        weights = self._per_sample_weights(sample_weight, intersection)
        weighted_i = ops.sum(ops.cast(intersection * weights, "float64"))
        weighted_u = ops.sum(ops.cast(union * weights, "float64"))
        self.total_intersection.assign_add(weighted_i)
        self.total_union.assign_add(weighted_u)

    def result(self):
        # All unions empty means every prediction matched an empty mask: 1.0, as in scores.py.
        ratio = ops.where(
            self.total_union > 0,
            self.total_intersection / ops.maximum(self.total_union, 1.0),
            ops.ones_like(self.total_union),
        )
        return ops.cast(ratio, self.dtype)


class _PerSampleMeanMetric(_SegmentationIoUMetric):
    """Shared part of `MeanIoU` and `PrecisionAtIoU`: a weighted mean over samples.

    Each sample contributes `per_sample_value(I, U)` (float64 `[B]`) with its weight; the
    state is the float64 sum of weighted values (the variable `total_name`) and of weights
    (`count`), and the result their ratio (0 before any sample).

    Args:
        as `_SegmentationIoUMetric`.
    """

    total_name = "total"

    def __init__(self, name, probability_threshold, from_logits, dtype, scoring_rule):
        super().__init__(name, probability_threshold, from_logits, dtype, scoring_rule)
        self.total = self.add_variable(
            shape=(), initializer="zeros", dtype="float64", name=self.total_name
        )
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        intersection, union = self._per_sample_counts(y_true, y_pred)
        weights = ops.cast(self._per_sample_weights(sample_weight, intersection), "float64")
        self.total.assign_add(ops.sum(self.per_sample_value(intersection, union) * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.cast(ops.divide_no_nan(self.total, self.count), self.dtype)


@keras.saving.register_keras_serializable(package="refseg_tf")
class MeanIoU(_PerSampleMeanMetric):
    """Mean IoU: the per-sample IoU of a binary referring mask, averaged over samples.

    Not `keras.metrics.MeanIoU`: that one averages the IoU of each *class* (here background and
    foreground) over pixels pooled from all samples. This one computes one foreground IoU per
    sample (per referring expression) and averages those, as MCN/LTS and RRN's logs do.

    Args:
        name: metric name, "mean_iou".
        probability_threshold, from_logits, dtype, scoring_rule: as `OverallIoU`.

    Call args (`update_state`): as `OverallIoU`; `sample_weight` gives a weighted mean.

    Example:
        >>> metric = MeanIoU()
        >>> metric.update_state(masks, logits)
        >>> float(metric.result())

    Reference:
        Jing et al. 2021 (LTS) Sec. 4.1; Li et al. 2018 (RRN) public code's "mean IoU".
    """

    total_name = "total_iou"

    def __init__(self, name="mean_iou", probability_threshold=0.5, from_logits=True, dtype=None,
                 scoring_rule=scoring.DEFAULT_SCORING_RULE):
        super().__init__(name, probability_threshold, from_logits, dtype, scoring_rule)

    def per_sample_value(self, intersection, union):
        return _per_sample_iou(intersection, union)


@keras.saving.register_keras_serializable(package="refseg_tf")
class PrecisionAtIoU(_PerSampleMeanMetric):
    """precision@X: the share of samples whose IoU is at least X.

    The variable `total_name` ("hits") counts the (weighted) samples at IoU >= X.

    Args:
        threshold: the IoU threshold X in [0, 1]; a sample counts when IoU >= X.
        name: metric name; default "precision@X" (e.g. "precision@0.5").
        probability_threshold, from_logits, dtype, scoring_rule: as `OverallIoU`.

    Call args (`update_state`): as `OverallIoU`; `sample_weight` gives a weighted share.

    Example:
        >>> metric = PrecisionAtIoU(0.7)
        >>> metric.name
        'precision@0.7'

    Reference:
        Hu et al. 2016 Sec. 4.2 (precision at IoU thresholds 0.5 .. 0.9); the authors' code
        counts IoU >= X.
    """

    total_name = "hits"

    def __init__(
        self,
        threshold=0.5,
        name=None,
        probability_threshold=0.5,
        from_logits=True,
        dtype=None,
        scoring_rule=scoring.DEFAULT_SCORING_RULE,
    ):
        threshold = float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"PrecisionAtIoU: threshold must lie in [0, 1]; got {threshold}")
        name = precision_key(threshold) if name is None else name
        super().__init__(name, probability_threshold, from_logits, dtype, scoring_rule)
        self.threshold = threshold

    def per_sample_value(self, intersection, union):
        # float64 division of exact pixel counts: the same IoU values as scores.py, so a sample
        # at exactly X (e.g. I/U = 3/5 against 0.6) counts here as it does there.
        # An explicit float64 threshold: a Python float would become float32(X), above X.
        threshold = ops.convert_to_tensor(self.threshold, dtype="float64")
        hit = ops.greater_equal(_per_sample_iou(intersection, union), threshold)
        return ops.cast(hit, "float64")

    def get_config(self):
        config = super().get_config()
        config["threshold"] = self.threshold
        return config


def _per_sample_iou(intersection, union):
    """float64 I / U per sample, 1.0 where the union is empty (empty prediction and mask)."""
    intersection = ops.cast(intersection, "float64")
    union = ops.cast(union, "float64")
    return ops.where(union > 0, intersection / ops.maximum(union, 1.0), ops.ones_like(union))

"""Per-pixel logistic losses between a full-size mask and logits at any output stride."""

import keras
from keras import ops

from refseg_tf.labels import LABEL_MODES
from refseg_tf.labels import downsample_mask as _downsample_mask
from refseg_tf.layers.spatial import resize_bilinear, spatial_size

RESOLUTIONS = ("logits", "image")
# Per-example reduction over the pixels of the loss grid (always averaged over the batch).
PIXEL_REDUCTIONS = ("mean", "sum")
# Pixel grid of the bilinear upsampling of the logits at resolution "image": "tf1" (TF1
# `resize_bilinear`, no half-pixel centres: the RRN code, whose test-time upsampling is the
# same) or "half_pixel" (TF2 `tf.image.resize`).
LOSS_UPSAMPLINGS = ("tf1", "half_pixel")
DEFAULT_LOSS_UPSAMPLING = "tf1"


def _as_mask_batch(mask):
    """`[B, H, W]` or `[B, H, W, 1]` -> float32 `[B, H, W, 1]`."""
    mask = ops.cast(mask, "float32")
    if len(mask.shape) == 3:
        mask = ops.expand_dims(mask, -1)
    if len(mask.shape) != 4:
        raise ValueError(f"A mask batch must be [B, H, W, 1]; received shape {mask.shape}.")
    return mask


def _check_divisible(mask_size, grid_size):
    static = all(isinstance(value, int) for value in tuple(mask_size) + tuple(grid_size))
    if static and (mask_size[0] % grid_size[0] or mask_size[1] % grid_size[1]):
        raise ValueError(
            f"Cannot pool a {mask_size[0]}x{mask_size[1]} mask onto a {grid_size[0]}x"
            f"{grid_size[1]} logit grid: the mask size must be a multiple of the grid size "
            "(use an image size divisible by the model's output stride, or resolution='image')."
        )


def downsample_mask(mask, size, mode="soft"):
    """The training label of a loss at the logit grid: `refseg_tf.labels.downsample_mask`.

    The same rule as the input pipeline's labels (modes "any", "soft", "binary", "point");
    a loss additionally requires the mask size to be a multiple of the logit grid (a model's
    logits are at an integer output stride of the input).

    Args:
        mask: `[B, H, W, 1]` (or `[B, H, W]`) with values in [0, 1].
        size: `(h, w)` with `H % h == 0` and `W % w == 0`.
        mode: one of `LABEL_MODES`.

    Returns:
        float32 `[B, h, w, 1]`.
    """
    if mode not in LABEL_MODES:
        raise ValueError(
            f"`mode` (the label mode) must be one of {LABEL_MODES}; received {mode!r}."
        )
    mask = _as_mask_batch(mask)
    _check_divisible(tuple(mask.shape[1:3]), tuple(size))
    return _downsample_mask(mask, size, mode)


def weighted_logistic_map(labels, logits, foreground_weight=1.0, background_weight=1.0):
    """Per-pixel `a_f * z * log(1 + e^-v) + a_b * (1 - z) * log(1 + e^v)` (Hu et al. Eq. 2).

    For soft labels z in (0, 1) each class term is weighted by its own factor (the expected
    loss under the label probability); for z in {0, 1} this is exactly Eq. 2.
    """
    labels = ops.cast(labels, "float32")
    logits = ops.cast(logits, "float32")
    return foreground_weight * labels * ops.softplus(-logits) + background_weight * (
        1.0 - labels
    ) * ops.softplus(logits)


def _check_upsampling(upsampling):
    if upsampling not in LOSS_UPSAMPLINGS:
        raise ValueError(f"`upsampling` must be one of {LOSS_UPSAMPLINGS}; received {upsampling!r}.")


def align_target_and_logits(mask, logits, resolution="logits", label_mode="binary",
                            upsampling=DEFAULT_LOSS_UPSAMPLING):
    """Brings mask and logits to one resolution: `(labels, logits)`, both float32 `[B,h,w,1]`.

    resolution "logits": the mask is pooled onto the logit grid with `label_mode`;
    "image": the logits are upsampled bilinearly to the mask size (the mask is used as is),
    on the pixel grid `upsampling` ("tf1": TF1 `resize_bilinear`, the RRN code; "half_pixel":
    `tf.image.resize`; `refseg_tf.layers.spatial.resize_bilinear`).
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"`resolution` must be one of {RESOLUTIONS}; received {resolution!r}.")
    _check_upsampling(upsampling)
    mask = _as_mask_batch(mask)
    logits = ops.cast(logits, "float32")
    if resolution == "image":
        half_pixel = upsampling == "half_pixel"
        return mask, resize_bilinear(logits, spatial_size(mask), half_pixel_centers=half_pixel)
    return downsample_mask(mask, spatial_size(logits), label_mode), logits


def _check_pixel_reduction(pixel_reduction):
    if pixel_reduction not in PIXEL_REDUCTIONS:
        raise ValueError(
            f"pixel_reduction must be one of {PIXEL_REDUCTIONS}; received {pixel_reduction!r}."
        )


def weighted_logistic_loss(mask, logits, *args, **kwargs):
    """Per-example loss `[B]`: the weighted logistic loss averaged ("mean", Hu et al. Eq. 1)
    or summed ("sum", the RMI/RRN code's `util/loss.py`) over the pixels of the loss grid.

    The functional form of `WeightedLogisticLoss` (before its mean over the batch): `args` /
    `kwargs` are its arguments (`foreground_weight`, `background_weight`, `label_mode`,
    `resolution`, `pixel_reduction`, `upsampling`), with its defaults and checks.
    """
    return WeightedLogisticLoss(*args, **kwargs).call(mask, logits)


@keras.saving.register_keras_serializable(package="refseg_tf")
class WeightedLogisticLoss(keras.losses.Loss):
    """Weighted per-pixel logistic loss between a full-size mask and logits at any stride.

    `L = mean_ij [a_f * M_ij * log(1 + exp(-v_ij)) + a_b * (1 - M_ij) * log(1 + exp(v_ij))]`
    (or the sum over ij, `pixel_reduction="sum"`), the per-example values then averaged over
    the batch. `y_true` is always the full-size mask;
    the loss brings it to the logits (`resolution="logits"`, pooled with `label_mode`) or the
    logits to it (`resolution="image"`, bilinear on the `upsampling` grid). Computed in float32.

    Args:
        foreground_weight: a_f (Hu et al.: 3 in the paper; their code used 1 for the low-res
            stage and 1 with background 1/3 for the high-res stage).
        background_weight: a_b.
        label_mode: "any" (Hu low-res), "point" (the RMI code's 40x40 target), "soft" (area
            share) or "binary"; used only when the logits are coarser than the mask and
            `resolution="logits"` (see `refseg_tf.labels.downsample_mask`).
        resolution: "logits" (loss at the logit grid; Hu low-res, R/D+LSTM) or "image" (logits
            upsampled to the mask; RRN and D-LSTM-ours). For logits already at image size the
            two are the same.
        pixel_reduction: "mean" (Hu et al. Eq. 1 and their code) or "sum" (the RMI and RRN
            code, `util/loss.py`: a sum over the grid, averaged over the batch; with weight
            decay this sets the balance of the two terms, 1,600x (40x40) to 102,400x
            (320x320) a mean). The config key is `model.loss.reduction`.
        upsampling: the pixel grid of the bilinear upsampling at `resolution="image"`:
            "tf1" (default; TF1 `tf.image.resize_bilinear`, output pixel o samples logit
            coordinate `o * h / H`, as the RRN code's loss and test-time `self.up`, so
            training and the "upsample_logits" scoring rule share one grid) or "half_pixel"
            (`tf.image.resize`, `(o + 0.5) * h / H - 0.5`). The config key is
            `model.loss.upsampling`.
        name, reduction, dtype: as `keras.losses.Loss` (`reduction` is over the batch).

    Call args:
        y_true: `[B, H, W, 1]` (or `[B, H, W]`) mask in {0, 1}.
        y_pred: `[B, h, w, 1]` logits.

    Example:
        >>> loss = WeightedLogisticLoss(3.0, 1.0, label_mode="any")
        >>> loss(keras.ops.ones((2, 64, 64, 1)), keras.ops.zeros((2, 2, 2, 1)))  # 3 * log(2)

    Reference:
        Hu et al. 2016, Eq. 1-2; Liu et al. 2017 (RMI), Eq. 6 (loss at feature resolution);
        Li et al. 2018 (RRN), Eq. 4 (loss at image resolution); liruiyu/referseg_rrn
        `LSTM_model_convlstm_p543.py` (`self.up = tf.image.resize_bilinear(...)`, the loss
        and the test scores both on it).
    """

    def __init__(
        self,
        foreground_weight=1.0,
        background_weight=1.0,
        label_mode="binary",
        resolution="logits",
        pixel_reduction="mean",
        upsampling=DEFAULT_LOSS_UPSAMPLING,
        name="weighted_logistic_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _check_pixel_reduction(pixel_reduction)
        if label_mode not in LABEL_MODES:
            raise ValueError(f"`label_mode` must be one of {LABEL_MODES}; received {label_mode!r}.")
        if resolution not in RESOLUTIONS:
            raise ValueError(f"`resolution` must be one of {RESOLUTIONS}; received {resolution!r}.")
        _check_upsampling(upsampling)
        self.foreground_weight = float(foreground_weight)
        self.background_weight = float(background_weight)
        self.label_mode = label_mode
        self.resolution = resolution
        self.pixel_reduction = pixel_reduction
        self.upsampling = upsampling

    def call(self, y_true, y_pred):
        labels, logits = align_target_and_logits(
            y_true, y_pred, self.resolution, self.label_mode, self.upsampling
        )
        per_pixel = weighted_logistic_map(
            labels, logits, self.foreground_weight, self.background_weight
        )
        if self.pixel_reduction == "sum":
            return ops.sum(per_pixel, axis=(1, 2, 3))
        return ops.mean(per_pixel, axis=(1, 2, 3))

    def get_config(self):
        config = super().get_config()
        config.update(
            foreground_weight=self.foreground_weight,
            background_weight=self.background_weight,
            label_mode=self.label_mode,
            resolution=self.resolution,
            pixel_reduction=self.pixel_reduction,
            upsampling=self.upsampling,
        )
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class SigmoidCrossEntropyLoss(WeightedLogisticLoss):
    """Binary cross-entropy on logits: `WeightedLogisticLoss` with both class weights 1.

    Args:
        label_mode, resolution, pixel_reduction, upsampling, name, reduction, dtype: as
            `WeightedLogisticLoss` (positional in that order); `name` defaults to
            "sigmoid_cross_entropy".

    Example:
        >>> SigmoidCrossEntropyLoss(resolution="image")(mask, logits)  # RRN's training loss

    Reference:
        Li et al. 2018 (RRN), Eq. 4 (BCE with p upsampled bilinearly to the image size);
        Liu et al. 2017 (RMI), Eq. 5-6.
    """

    def __init__(self, *args, name="sigmoid_cross_entropy", **kwargs):
        # `WeightedLogisticLoss`'s arguments after the two class weights, in its order.
        super().__init__(1.0, 1.0, *args, name=name, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("foreground_weight")
        config.pop("background_weight")
        return config


LOSS_NAMES = ("weighted_logistic", "sigmoid_cross_entropy")


def get_loss(name, **kwargs):
    """A loss by name: "weighted_logistic" (`WeightedLogisticLoss`) or "sigmoid_cross_entropy"."""
    if name == "weighted_logistic":
        return WeightedLogisticLoss(**kwargs)
    if name == "sigmoid_cross_entropy":
        return SigmoidCrossEntropyLoss(**kwargs)
    raise ValueError(f"Unknown loss {name!r}; expected one of {LOSS_NAMES}.")

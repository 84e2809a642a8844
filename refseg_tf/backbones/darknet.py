"""Darknet-53 (the YOLOv3 / MCN / LTS visual backbone) returning C3, C4 and C5."""

from __future__ import annotations

import keras
from keras import ops

from refseg_tf.backbones.base import Backbone, as_int_tuple

DARKNET53_WIDTHS = (64, 128, 256, 512, 1024)
DARKNET53_DEPTHS = (1, 2, 8, 8, 4)
# How a frozen (trainable=False) batch norm normalises under training=True.
FROZEN_BATCHNORM_MODES = ("inference", "batch_statistics")
# The YOLOv3 neck on C5 (yolov3.cfg layers 75-80): 1x1 half width, 3x3 full width, three times.
NECK_CONVS = 6


@keras.saving.register_keras_serializable(package="refseg_tf")
class Darknet53(Backbone):
    """Darknet-53: conv + batch norm + LeakyReLU(0.1) units with residual stages.

    A 3x3 stem convolution (32 channels) is followed by 5 stages; each starts with a 3x3
    stride-2 convolution to `widths[i]` channels and stacks `depths[i]` residual blocks of a
    1x1 conv (`widths[i] / 2`) and a 3x3 conv (`widths[i]`). Convolutions have no bias (the
    batch-norm offset plays that role), as in darknet with `batch_normalize=1`. Stride-2
    convolutions pad one pixel on every side and then convolve without padding, which is
    darknet's `pad=1` arithmetic (output `floor((H - 1) / 2) + 1`, the same taps as darknet;
    Keras "same" padding would shift the grid by one pixel).

    With `neck=True` the first six convolutions of the YOLOv3 head follow C5 (1x1 to
    `widths[4] / 2`, 3x3 to `widths[4]`, three times; cfg layers 75-80 of yolov3.cfg), as MCN's
    `darknet_body` and LTS use it; its output is the feature `neck` (F_v1 of LTS).

    `darknet_layer_order` lists the conv layer names in the order of the darknet `.weights`
    file (52 convolutions for the default depths, then the 6 neck convolutions), which
    `load_darknet_weights` and `load_keras_darknet_weights` read.

    Features (name: stride, channels for the default widths; 416 px -> 52, 26, 13 cells):
        `C3`: 8, 256; `C4`: 16, 512; `C5`: 32, 1024 (outputs of stages 3, 4, 5);
        `neck` (only with `neck=True`): 32, 1024.

    Args:
        widths: channels of the 5 stages.
        depths: residual blocks per stage ((1, 2, 8, 8, 4) = Darknet-53).
        stem_filters: channels of the stem convolution.
        neck: add the 6-convolution YOLOv3 neck on C5 (feature `neck`; MCN / LTS).
        frozen_batchnorm: how a frozen batch norm normalises when the model trains:
            "inference" (Keras 3: moving statistics) or "batch_statistics" (Keras 2, hence MCN's
            frozen Darknet: the mini-batch's mean and variance, moving statistics and
            gamma / beta unchanged; keras-team/keras#9522). Trainable batch norms are plain
            Keras ones either way.
        leaky_alpha: negative slope of the LeakyReLU (0.1 in darknet).
        batchnorm_epsilon: darknet divides by sqrt(var) + 1e-6; Keras by sqrt(var + epsilon).
            The default 1e-5 differs from darknet by a relative ~5e-6 for unit variances.
        input_shape: `(H, W, 3)`; `None` dimensions allow any size.
        dtype: dtype policy for every layer.
        name: model name.

    Call args:
        inputs: float `[B, H, W, 3]`, pixels / 255 in RGB for darknet weights (preset "unit").
        training: bool, batch normalisation mode (see `set_trainable` for freezing).

    Example:
        >>> backbone = Darknet53(widths=(8, 8, 16, 16, 32), depths=(1, 1, 1, 1, 1), stem_filters=4)
        >>> backbone(keras.ops.zeros((1, 64, 64, 3)))["C5"].shape
        (1, 2, 2, 32)

    Reference:
        Redmon and Farhadi, "YOLOv3: An Incremental Improvement", 2018, Sec. 2.4 and Table 1;
        Jing et al. 2021 (LTS) Sec. 3.1: F_v1, F_v2, F_v3 at strides 32, 16, 8; the neck as
        MCN's `darknet_body` (luogen1996/MCN `model/visual_backbone.py`).
    """

    def __init__(
        self,
        widths=DARKNET53_WIDTHS,
        depths=DARKNET53_DEPTHS,
        stem_filters=32,
        neck=False,
        frozen_batchnorm="inference",
        leaky_alpha=0.1,
        batchnorm_epsilon=1e-5,
        input_shape=(None, None, 3),
        dtype=None,
        name="darknet53",
        **kwargs,
    ):
        widths = as_int_tuple(widths, 5, "widths")
        depths = as_int_tuple(depths, 5, "depths")
        if any(width % 2 for width in widths):
            raise ValueError(f"`widths` must be even (blocks halve them), got {widths}.")
        if frozen_batchnorm not in FROZEN_BATCHNORM_MODES:
            raise ValueError(
                f"`frozen_batchnorm` must be one of {FROZEN_BATCHNORM_MODES}; "
                f"received {frozen_batchnorm!r}."
            )
        unit = _DarknetUnit(float(leaky_alpha), float(batchnorm_epsilon), dtype, frozen_batchnorm)

        image = keras.Input(shape=tuple(input_shape), name="image", dtype="float32")
        x = unit(image, int(stem_filters), 3, "stem")
        features = {}
        for index, (width, depth) in enumerate(zip(widths, depths)):
            stage = index + 1
            x = unit(x, width, 3, f"stage{stage}_down", strides=2)
            for block in range(1, depth + 1):
                x = _residual_block(x, width, f"stage{stage}_block{block}", unit)
            if stage >= 3:
                features[f"C{stage}"] = x
        if neck:
            for index in range(NECK_CONVS):
                filters = widths[4] if index % 2 else widths[4] // 2
                x = unit(x, filters, 3 if index % 2 else 1, f"neck{index + 1}")
            features["neck"] = x

        strides = {"C3": 8, "C4": 16, "C5": 32, "neck": 32}
        channels = {"C3": widths[2], "C4": widths[3], "C5": widths[4], "neck": widths[4]}
        arguments = dict(
            widths=widths,
            depths=depths,
            stem_filters=int(stem_filters),
            neck=bool(neck),
            frozen_batchnorm=frozen_batchnorm,
            leaky_alpha=float(leaky_alpha),
            batchnorm_epsilon=float(batchnorm_epsilon),
            input_shape=tuple(input_shape),
        )
        super().__init__(image, features, strides, channels, arguments, name=name, dtype=dtype,
                         **kwargs)
        self.darknet_layer_order = tuple(unit.conv_names)


class _DarknetUnit:
    """Applies darknet's conv (no bias) + batch norm + LeakyReLU and records conv order."""

    def __init__(self, alpha, epsilon, dtype, frozen_batchnorm="inference"):
        self.alpha = alpha
        self.epsilon = epsilon
        self.dtype = dtype
        self.frozen_batchnorm = frozen_batchnorm
        self.conv_names = []

    def __call__(self, x, filters, kernel_size, name, strides=1):
        padding = "same"
        if strides > 1:
            x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad", dtype=self.dtype)(x)
            padding = "valid"
        x = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=False,
            name=f"{name}_conv",
            dtype=self.dtype,
        )(x)
        self.conv_names.append(f"{name}_conv")
        x = DarknetBatchNormalization(
            frozen_mode=self.frozen_batchnorm,
            epsilon=self.epsilon,
            name=f"{name}_bn",
            dtype=self.dtype,
        )(x)
        return keras.layers.LeakyReLU(
            negative_slope=self.alpha, name=f"{name}_leaky", dtype=self.dtype
        )(x)


@keras.saving.register_keras_serializable(package="refseg_tf")
class DarknetBatchNormalization(keras.layers.BatchNormalization):
    """`BatchNormalization` that can keep Keras 2's frozen behaviour.

    Keras 3 runs a layer with `trainable=False` in inference mode. Keras 2 (MCN, Keras 2.2.4)
    still normalised a frozen layer with the statistics of the mini-batch during training
    (keras-team/keras#9522; the fix, PR #9965, was not merged), without updating the moving
    statistics. `frozen_mode="batch_statistics"` does the latter; "inference" is Keras 3.

    Args:
        frozen_mode: "inference" or "batch_statistics".
        **kwargs: `keras.layers.BatchNormalization` arguments.
    """

    def __init__(self, frozen_mode="inference", **kwargs):
        super().__init__(**kwargs)
        if frozen_mode not in FROZEN_BATCHNORM_MODES:
            raise ValueError(
                f"`frozen_mode` must be one of {FROZEN_BATCHNORM_MODES}; received {frozen_mode!r}."
            )
        self.frozen_mode = frozen_mode

    def call(self, inputs, training=None, mask=None):
        if not (training and not self.trainable and self.frozen_mode == "batch_statistics"):
            return super().call(inputs, training=training, mask=mask)
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        inputs = ops.cast(inputs, compute_dtype)
        mean, variance = self._moments(inputs, mask)
        outputs = ops.batch_normalization(
            x=inputs,
            mean=mean,
            variance=variance,
            axis=self.axis,
            offset=ops.cast(self.beta, compute_dtype) if self.center else None,
            scale=ops.cast(self.gamma, compute_dtype) if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config["frozen_mode"] = self.frozen_mode
        return config


def _residual_block(x, width, name, unit):
    shortcut = x
    x = unit(x, width // 2, 1, f"{name}_conv1")
    x = unit(x, width, 3, f"{name}_conv2")
    return keras.layers.Add(name=f"{name}_add", dtype=unit.dtype)([shortcut, x])

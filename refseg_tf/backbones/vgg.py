"""VGG-16 as a fully convolutional network (FCN-32s trunk), as used by Hu et al. 2016."""

from __future__ import annotations

import keras

from refseg_tf.backbones.base import Backbone, as_int_tuple

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)


@keras.saving.register_keras_serializable(package="refseg_tf")
class VGG16FCN(Backbone):
    """VGG-16 with fc6/fc7/fc8 turned into convolutions (FCN-32s), returning named features.

    Blocks 1-5 are `depths[i]` 3x3 SAME convolutions + ReLU followed by a 2x2 max pool.
    fc6 is a 7x7 convolution with SAME padding + ReLU, fc7 a 1x1 convolution + ReLU and fc8 a
    linear 1x1 convolution, so fc8 keeps the pool5 grid: a 512 px input gives a 16x16 fc8 map.
    Layer names follow `keras.applications.VGG16` (`block1_conv1` ... `block5_pool`) so that
    `load_imagenet_weights` maps them by name; fc1/fc2/predictions become fc6/fc7/fc8.

    Features (name: stride, channels for the default widths):
        `conv3` (block3's last conv, after ReLU): 4, 256; `conv4` (block4_conv3): 8, 512;
        `conv5` (block5_conv3): 16, 512; `pool5`: 32, 512; `fc6`: 32, 4096; `fc7`: 32, 4096;
        `fc8`: 32, 1000 (linear, no ReLU).

    Dropout: the paper is silent; the authors' code (text_objseg `vgg_net.py`) has an optional
    dropout of 0.5 after fc6 and fc7, switched off (`vgg_dropout = False`) in their training
    scripts. `fc_dropout` therefore defaults to 0; set 0.5 for the classic VGG regime.

    Args:
        widths: output channels of the 5 conv blocks.
        depths: number of 3x3 convolutions in each of the 5 blocks.
        fc_units: channels of fc6 and fc7 (4096 in VGG-16).
        num_classes: channels of fc8 (1000 = ImageNet classes = Hu's D_im).
        fc6_kernel_size: spatial size of the fc6 convolution (7 = the 7x7 pool5 grid of a
            224 px ImageNet image, so the dense fc1 weights reshape onto it exactly).
        fc_dropout: dropout rate after fc6 and fc7 when training (0 disables).
        input_shape: `(H, W, 3)`; `None` dimensions allow any image size.
        dtype: dtype policy for every layer (e.g. "mixed_float16").
        name: model name.

    Call args:
        inputs: float `[B, H, W, 3]`, already normalised (for `keras.applications` ImageNet
            weights: Caffe-style BGR with the mean subtracted, preset "caffe_bgr").
        training: bool, enables dropout.

    Example:
        >>> backbone = VGG16FCN(widths=(4, 8, 8, 16, 16), fc_units=32, num_classes=10)
        >>> backbone(keras.ops.zeros((2, 64, 64, 3)))["fc8"].shape
        (2, 2, 2, 10)

    Reference:
        Hu, Rohrbach, Darrell, "Segmentation from Natural Language Expressions", ECCV 2016,
        Sec. 3.1 (VGG-16 as a fully convolutional network, D_im = 1000, stride s = 32);
        Long, Shelhamer, Darrell, "Fully Convolutional Networks", CVPR 2015 (FCN-32s).
    """

    def __init__(
        self,
        widths=VGG16_WIDTHS,
        depths=VGG16_DEPTHS,
        fc_units=4096,
        num_classes=1000,
        fc6_kernel_size=7,
        fc_dropout=0.0,
        input_shape=(None, None, 3),
        dtype=None,
        name="vgg16_fcn",
        **kwargs,
    ):
        widths = as_int_tuple(widths, 5, "widths")
        depths = as_int_tuple(depths, 5, "depths")
        if not 0.0 <= float(fc_dropout) < 1.0:
            raise ValueError(f"`fc_dropout` must be in [0, 1), got {fc_dropout}.")

        image = keras.Input(shape=tuple(input_shape), name="image", dtype="float32")
        features = {}
        x = image
        for block, (width, depth) in enumerate(zip(widths, depths), start=1):
            x = _conv_block(x, width, depth, block, dtype)
            if block >= 3:
                features[f"conv{block}"] = x
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool", dtype=dtype)(x)
        features["pool5"] = x
        x = _fc_conv(x, fc_units, fc6_kernel_size, "relu", "fc6", dtype)
        features["fc6"] = x
        x = _maybe_dropout(x, fc_dropout, "fc6_dropout", dtype)
        x = _fc_conv(x, fc_units, 1, "relu", "fc7", dtype)
        features["fc7"] = x
        x = _maybe_dropout(x, fc_dropout, "fc7_dropout", dtype)
        features["fc8"] = _fc_conv(x, num_classes, 1, None, "fc8", dtype)

        strides = {"conv3": 4, "conv4": 8, "conv5": 16}
        strides.update({key: 32 for key in ("pool5", "fc6", "fc7", "fc8")})
        channels = {"conv3": widths[2], "conv4": widths[3], "conv5": widths[4], "pool5": widths[4]}
        channels.update({"fc6": fc_units, "fc7": fc_units, "fc8": num_classes})
        arguments = dict(
            widths=widths,
            depths=depths,
            fc_units=int(fc_units),
            num_classes=int(num_classes),
            fc6_kernel_size=int(fc6_kernel_size),
            fc_dropout=float(fc_dropout),
            input_shape=tuple(input_shape),
        )
        super().__init__(image, features, strides, channels, arguments, name=name, dtype=dtype,
                         **kwargs)


def _conv_block(x, width, depth, block, dtype):
    for index in range(1, depth + 1):
        x = keras.layers.Conv2D(
            width,
            3,
            padding="same",
            activation="relu",
            name=f"block{block}_conv{index}",
            dtype=dtype,
        )(x)
    return x


def _fc_conv(x, units, kernel_size, activation, name, dtype):
    return keras.layers.Conv2D(
        units, kernel_size, padding="same", activation=activation, name=name, dtype=dtype
    )(x)


def _maybe_dropout(x, rate, name, dtype):
    if rate <= 0.0:
        return x
    return keras.layers.Dropout(rate, name=name, dtype=dtype)(x)

"""Dilated ResNet (ResNet-101 at output stride 8, DeepLab style) returning C1..C5 and fc1000."""

from __future__ import annotations

import keras

from refseg_tf.backbones.base import Backbone, as_int_tuple

RESNET101_DEPTHS = (3, 4, 23, 3)
RESNET_WIDTHS = (64, 128, 256, 512)
STEM_PADDINGS = ("symmetric", "same")

# Stride of the first block of stages 2..5 and dilation of the 3x3 convolutions of each stage.
_STAGE_LAYOUTS = {
    8: ((1, 2, 1, 1), (1, 1, 2, 4)),
    16: ((1, 2, 2, 1), (1, 1, 1, 2)),
    32: ((1, 2, 2, 2), (1, 1, 1, 1)),
}


@keras.saving.register_keras_serializable(package="refseg_tf")
class ResNetOS8(Backbone):
    """Bottleneck ResNet (v1, stride on the first 1x1 conv) with atrous stages 4 and 5.

    With the defaults this is ResNet-101 at output stride 8: stages 4 (`conv4`, DeepLab
    `res4`) and 5 (`conv5`, `res5`) keep stride 1 and dilate their 3x3 convolutions by 2 and 4,
    so a 320 px input gives 40x40 C3..C5 maps. The block structure and layer names are those of
    `keras.applications.ResNet101` (`conv1_conv`, `conv2_block1_0_conv` ... `conv5_block3_3_bn`),
    so ImageNet weights map one to one; its Dense classifier becomes the 1x1 conv `fc1000`.
    Dilation does not change any weight shape, so the same weights serve every output stride.

    Features (name: stride at output stride 8, channels for the default widths):
        `C1` (after the stem max pool): 4, 64; `C2` (`conv2_block3_out`, res2c): 4, 256;
        `C3` (`conv3_block4_out`, res3b3): 8, 512; `C4` (`conv4_block23_out`, res4b22): 8, 1024;
        `C5` (`conv5_block3_out`, res5c): 8, 2048; `fc1000` (linear 1x1 conv on C5): 8, 1000.

    Args:
        depths: bottleneck blocks per stage 2..5 ((3, 4, 23, 3) = ResNet-101).
        widths: bottleneck (3x3) channels per stage; a stage outputs `expansion * width`.
        stem_filters: channels of the 7x7 stem convolution.
        expansion: channel expansion of the last 1x1 conv of each block (4 in ResNet).
        num_classes: channels of `fc1000`.
        output_stride: 8 (stages 4, 5 dilated 2, 4), 16 (stage 5 dilated 2) or 32 (plain).
        batchnorm_epsilon: 1.001e-5 as keras.applications (Caffe/DeepLab used 1e-5; the TF1
            ports TF-resnet / TF-deeplab and DrSleep's slim batch norm use 1e-3).
        stem_padding: "symmetric" (keras.applications / Caffe: 3 zero rows each side of the
            7x7 stride-2 conv, 1 each side of the 3x3 stride-2 max pool) or "same" (TensorFlow
            SAME padding of both, as the TF1 ports TF-resnet, TF-deeplab and DrSleep's
            tensorflow-deeplab-resnet: on even inputs 2 rows before and 3 after the conv, none
            before and 1 after the pool). The other layers pad the same way in both modes.
        input_shape: `(H, W, 3)`; `None` dimensions allow any size.
        dtype: dtype policy for every layer.
        name: model name.

    Call args:
        inputs: float `[B, H, W, 3]`, already normalised (ImageNet and DeepLab weights expect
            Caffe-style BGR with the mean subtracted, preset "caffe_bgr").
        training: bool; batch normalisation uses batch statistics only when training and
            not frozen (see `set_trainable`).

    Example:
        >>> backbone = ResNetOS8(depths=(1, 1, 2, 1), widths=(4, 8, 8, 16), stem_filters=8)
        >>> backbone(keras.ops.zeros((1, 64, 64, 3)))["C5"].shape
        (1, 8, 8, 64)

    Reference:
        He et al., "Deep Residual Learning", CVPR 2016, Table 1 (ResNet-101);
        Chen et al., "DeepLab", TPAMI 2017, Sec. 3.1 (atrous convolution, output stride 8);
        Liu et al. 2017 (RMI) Sec. 4 and Li et al. 2018 (RRN) Sec. 3.1 use it at output stride 8.
    """

    def __init__(
        self,
        depths=RESNET101_DEPTHS,
        widths=RESNET_WIDTHS,
        stem_filters=64,
        expansion=4,
        num_classes=1000,
        output_stride=8,
        batchnorm_epsilon=1.001e-5,
        stem_padding="symmetric",
        input_shape=(None, None, 3),
        dtype=None,
        name="resnet101_os8",
        **kwargs,
    ):
        depths = as_int_tuple(depths, 4, "depths")
        widths = as_int_tuple(widths, 4, "widths")
        if int(output_stride) not in _STAGE_LAYOUTS:
            raise ValueError(f"`output_stride` must be 8, 16 or 32, got {output_stride}.")
        stage_strides, stage_dilations = _STAGE_LAYOUTS[int(output_stride)]
        if stem_padding not in STEM_PADDINGS:
            raise ValueError(
                f"`stem_padding` must be one of {STEM_PADDINGS}; received {stem_padding!r}."
            )
        builder = _LayerFactory(float(batchnorm_epsilon), dtype)

        image = keras.Input(shape=tuple(input_shape), name="image", dtype="float32")
        features = {"C1": _stem(image, int(stem_filters), builder, stem_padding)}
        x = features["C1"]
        stride = 4
        strides = {"C1": 4}
        for index in range(4):
            stage = index + 2
            stride *= stage_strides[index]
            x = _stage(
                x,
                stage=stage,
                width=widths[index],
                depth=depths[index],
                expansion=int(expansion),
                stride=stage_strides[index],
                dilation=stage_dilations[index],
                builder=builder,
            )
            features[f"C{stage}"] = x
            strides[f"C{stage}"] = stride
        features["fc1000"] = keras.layers.Conv2D(
            int(num_classes), 1, name="fc1000", dtype=dtype
        )(x)
        strides["fc1000"] = stride

        channels = {"C1": int(stem_filters), "fc1000": int(num_classes)}
        channels.update({f"C{i + 2}": int(expansion) * widths[i] for i in range(4)})
        arguments = dict(
            depths=depths,
            widths=widths,
            stem_filters=int(stem_filters),
            expansion=int(expansion),
            num_classes=int(num_classes),
            output_stride=int(output_stride),
            batchnorm_epsilon=float(batchnorm_epsilon),
            stem_padding=stem_padding,
            input_shape=tuple(input_shape),
        )
        super().__init__(image, features, strides, channels, arguments, name=name, dtype=dtype,
                         **kwargs)


class _LayerFactory:
    """Creates the conv / batch-norm / activation layers with shared settings."""

    def __init__(self, epsilon, dtype):
        self.epsilon = epsilon
        self.dtype = dtype

    def conv(self, filters, kernel_size, name, strides=1, dilation=1, padding="valid"):
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            dilation_rate=dilation,
            padding=padding,
            name=name,
            dtype=self.dtype,
        )

    def batch_norm(self, name):
        return keras.layers.BatchNormalization(epsilon=self.epsilon, name=name, dtype=self.dtype)

    def relu(self, name):
        return keras.layers.Activation("relu", name=name, dtype=self.dtype)


def _stem(image, filters, builder, padding="symmetric"):
    if padding == "same":
        x = builder.conv(filters, 7, "conv1_conv", strides=2, padding="same")(image)
        x = builder.relu("conv1_relu")(builder.batch_norm("conv1_bn")(x))
        return keras.layers.MaxPooling2D(
            3, strides=2, padding="same", name="pool1_pool", dtype=builder.dtype
        )(x)
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad", dtype=builder.dtype)(image)
    x = builder.conv(filters, 7, "conv1_conv", strides=2)(x)
    x = builder.batch_norm("conv1_bn")(x)
    x = builder.relu("conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad", dtype=builder.dtype)(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool", dtype=builder.dtype)(x)


def _stage(x, stage, width, depth, expansion, stride, dilation, builder):
    for block in range(1, depth + 1):
        x = _bottleneck(
            x,
            width,
            expansion,
            stride=stride if block == 1 else 1,
            dilation=dilation,
            projection=block == 1,
            name=f"conv{stage}_block{block}",
            builder=builder,
        )
    return x


def _bottleneck(x, width, expansion, stride, dilation, projection, name, builder):
    shortcut = x
    if projection:
        shortcut = builder.conv(expansion * width, 1, f"{name}_0_conv", strides=stride)(x)
        shortcut = builder.batch_norm(f"{name}_0_bn")(shortcut)
    x = builder.conv(width, 1, f"{name}_1_conv", strides=stride)(x)
    x = builder.relu(f"{name}_1_relu")(builder.batch_norm(f"{name}_1_bn")(x))
    x = builder.conv(width, 3, f"{name}_2_conv", dilation=dilation, padding="same")(x)
    x = builder.relu(f"{name}_2_relu")(builder.batch_norm(f"{name}_2_bn")(x))
    x = builder.conv(expansion * width, 1, f"{name}_3_conv")(x)
    x = builder.batch_norm(f"{name}_3_bn")(x)
    x = keras.layers.Add(name=f"{name}_add", dtype=builder.dtype)([shortcut, x])
    return builder.relu(f"{name}_out")(x)

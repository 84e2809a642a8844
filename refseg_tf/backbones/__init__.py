"""Backbones (VGG-16 FCN-32s, ResNet-101 output stride 8, Darknet-53) and their weight loaders.

Every backbone maps a normalised image `[B, H, W, 3]` to a dict of named features and exposes
`feature_names`, `feature_strides` and `feature_channels`. `get_backbone(name, tiny=True)` builds
a few-channel variant of the same topology for tests.
"""

import dataclasses
from typing import Callable, Optional

from refseg_tf.backbones.base import Backbone, set_trainable
from refseg_tf.backbones.darknet import Darknet53
from refseg_tf.backbones.resnet import ResNetOS8
from refseg_tf.backbones.vgg import VGG16FCN
from refseg_tf.backbones.weights import (
    deeplab_layer_names,
    load_darknet_weights,
    load_deeplab_resnet_weights,
    load_imagenet_weights,
    load_keras_darknet_weights,
    read_named_arrays,
)



def darknet53_neck(**kwargs):
    """Darknet-53 with the 6-convolution YOLOv3 neck on C5 (feature `neck`), as MCN and LTS."""
    kwargs.setdefault("neck", True)
    return Darknet53(**kwargs)


BACKBONES = {
    "vgg16_fcn": VGG16FCN,
    "resnet101_os8": ResNetOS8,
    "darknet53": Darknet53,
    "darknet53_neck": darknet53_neck,
}

# Same topology (layer names, strides, dilations) with few channels and blocks, for tests.
TINY_PRESETS = {
    "vgg16_fcn": dict(widths=(4, 8, 8, 16, 16), fc_units=32, num_classes=16),
    "resnet101_os8": dict(
        depths=(1, 2, 2, 1), widths=(4, 4, 8, 8), stem_filters=8, num_classes=16
    ),
    "darknet53": dict(widths=(8, 8, 16, 16, 32), depths=(1, 1, 2, 1, 1), stem_filters=4),
    "darknet53_neck": dict(widths=(8, 8, 16, 16, 32), depths=(1, 1, 2, 1, 1), stem_filters=4),
}


def get_backbone(name, tiny=False, weights=None, **kwargs):
    """Builds a backbone by name, optionally with pre-trained weights.

    Args:
        name: "vgg16_fcn", "resnet101_os8", "darknet53" or "darknet53_neck" (with the YOLOv3
            neck, for LTS).
        tiny: start from `TINY_PRESETS[name]` (few channels/blocks, same layer names and strides).
        weights: None (random initialisation), "imagenet" (vgg16_fcn, resnet101_os8: the
            keras.applications weights, downloaded once), or a file path: a DeepLab `.npz`/`.h5`
            for resnet101_os8 (`load_deeplab_resnet_weights`), a darknet `.weights` file for
            darknet53 (`load_darknet_weights`), a keras.applications VGG16 weights file for
            vgg16_fcn (`load_imagenet_weights`); for darknet53 a `.h5`/`.hdf5` path is read
            as MCN's Keras file (`load_keras_darknet_weights`).
        **kwargs: constructor arguments; they override the tiny preset.

    Returns:
        A `Backbone`.

    Example:
        >>> backbone = get_backbone("vgg16_fcn", weights="imagenet")  # Hu et al. 2016
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; expected one of {sorted(BACKBONES)}.")
    arguments = dict(TINY_PRESETS[name]) if tiny else {}
    arguments.update(kwargs)
    backbone = BACKBONES[name](**arguments)
    if weights is not None:
        load_weights(backbone, weights)
    return backbone


def load_darknet_family_weights(backbone, path):
    """A darknet `.weights` file or MCN's Keras `.h5` (by extension) into a `Darknet53`."""
    if str(path).lower().endswith((".h5", ".hdf5")):
        return load_keras_darknet_weights(backbone, path)
    return load_darknet_weights(backbone, path)


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """One entry of the weight dispatch table (`WEIGHT_SOURCES`; the first match wins).

    Args:
        name: a short name, for logs and errors.
        matches: `matches(backbone, weights) -> bool`; cheap (type checks, a file's name or
            its list of members), never loads the weights.
        load: `load(backbone, weights)`: checks every shape, then assigns.
        normalization: the input normalisation (`data.normalization`) the weights were
            trained with when the file implies one (Hu's vgg_params.npz: "vgg_rgb"), else None.
    """

    name: str
    matches: Callable
    load: Callable
    normalization: Optional[str] = None


def _interop(function_name):
    """A function of `refseg_tf.interop.backbone_files`, imported on first call: the authors'
    file formats and their naming live in refseg_tf.interop alone (it imports only backbone
    classes, so the table has no import cycle)."""

    def call(*args):
        from refseg_tf.interop import backbone_files

        return getattr(backbone_files, function_name)(*args)

    call.__name__ = function_name
    return call


def _is_imagenet(backbone, weights):
    return weights == "imagenet" and isinstance(backbone, (VGG16FCN, ResNetOS8))


def _is_hu_vgg_params(backbone, weights):
    return isinstance(backbone, VGG16FCN) and _interop("is_hu_vgg_params")(weights)


# Table of weight sources, most specific first. A new format adds one entry (before the
# generic entry of its backbone type).
WEIGHT_SOURCES = [
    WeightSource("imagenet", _is_imagenet, lambda backbone, _: load_imagenet_weights(backbone)),
    # Hu et al.'s text_objseg vgg_params.npz (processed_W / processed_B dicts).
    WeightSource("hu_vgg_params", _is_hu_vgg_params, _interop("load_hu_vgg_params"), "vgg_rgb"),
    WeightSource(
        "deeplab_named_arrays",
        lambda backbone, _: isinstance(backbone, ResNetOS8),
        load_deeplab_resnet_weights,
    ),
    WeightSource(
        "darknet", lambda backbone, _: isinstance(backbone, Darknet53), load_darknet_family_weights
    ),
    WeightSource(
        "keras_vgg16_file",
        lambda backbone, _: isinstance(backbone, VGG16FCN),
        lambda backbone, weights: load_imagenet_weights(backbone, weights=weights),
    ),
]


def weight_source(backbone, weights, argument="weights"):
    """The `WEIGHT_SOURCES` entry that loads `weights` into `backbone`.

    Raises:
        ValueError: no entry matches (names `argument`, the value and the backbone).
    """
    if isinstance(backbone, Darknet53) and weights == "imagenet":
        raise ValueError(
            f"`{argument}` must be a darknet .weights or MCN .h5 path: darknet53 has no "
            f"keras.applications weights; received {weights!r}."
        )
    for source in WEIGHT_SOURCES:
        if source.matches(backbone, weights):
            return source
    raise ValueError(
        f"`{argument}` must name weights of a known backbone; received {weights!r} for "
        f"{type(backbone).__name__}."
    )


def load_weights(backbone, weights, argument="weights"):
    """Loads pre-trained `weights` into `backbone`: the one dispatch of every weight source.

    Args:
        backbone: a `VGG16FCN`, `ResNetOS8` or `Darknet53` (with or without neck).
        weights: "imagenet" (VGG16FCN, ResNetOS8: the keras.applications weights) or a file:
            Hu et al.'s `vgg_params.npz` or a keras.applications VGG16 weights file
            (VGG16FCN), a DeepLab `.npz`/`.h5` (ResNetOS8), a darknet `.weights` file or
            MCN's Keras `.h5` (Darknet53). The format is detected (`WEIGHT_SOURCES`).
        argument: the setting `weights` came from, named in errors (e.g.
            "train.backbone_weights").

    Returns:
        the `WeightSource` used.

    Raises:
        ValueError: the backbone has no such weights.
    """
    source = weight_source(backbone, weights, argument)
    source.load(backbone, weights)
    return source


__all__ = [
    "BACKBONES",
    "TINY_PRESETS",
    "Backbone",
    "Darknet53",
    "ResNetOS8",
    "darknet53_neck",
    "VGG16FCN",
    "WEIGHT_SOURCES",
    "WeightSource",
    "deeplab_layer_names",
    "get_backbone",
    "load_darknet_weights",
    "load_deeplab_resnet_weights",
    "load_darknet_family_weights",
    "load_imagenet_weights",
    "load_keras_darknet_weights",
    "load_weights",
    "read_named_arrays",
    "set_trainable",
    "weight_source",
]

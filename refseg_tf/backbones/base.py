"""Common base class for backbones that return a dict of named multi-level features."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="refseg_tf")
class Backbone(keras.Model):
    """A functional Keras model mapping an image to a dict of named feature maps.

    Subclasses build their graph in `__init__` (as keras-hub backbones do) and call
    `super().__init__(image, features, strides, channels, arguments, name=name, dtype=dtype,
    **kwargs)`, `arguments` being their (checked) constructor arguments: the base sets each as
    an attribute and `get_config()` returns them, so `from_config` rebuilds the graph and a
    `.keras` file only has to carry the weights.

    Args:
        inputs: the image `keras.Input`, `[B, H, W, 3]` float (already normalised).
        outputs: dict of feature name -> symbolic tensor `[B, h, w, C]`; its insertion order
            becomes `feature_names`.
        feature_strides: dict of feature name -> stride relative to the input image.
        feature_channels: dict of feature name -> number of channels.
        arguments: dict of the subclass's constructor arguments (besides `name`, `dtype`,
            `trainable`), already checked and converted: each becomes an attribute of the same
            name (`input_shape`, which `keras.Model` owns, becomes `image_input_shape`) and a
            key of `get_config()` (tuples as lists).
        **kwargs: `name`, `trainable` as for `keras.Model`; `dtype`, the dtype policy the
            subclass gave its layers (kept for `get_config`).

    Call args:
        inputs: float tensor `[B, H, W, 3]`.
        training: bool; dropout and batch normalisation behaviour (frozen batch normalisation
            layers always run in inference mode, see `set_trainable`).

    Returns:
        dict of feature name -> float tensor `[B, H / stride, W / stride, C]` (exact when H and
        W are multiples of 32; otherwise rounded as each backbone's padding dictates).

    Example:
        >>> backbone = get_backbone("resnet101_os8", tiny=True)
        >>> features = backbone(images)  # features["C5"].shape == [B, H/8, W/8, C]
    """

    def __init__(self, inputs, outputs, feature_strides, feature_channels, arguments=None,
                 **kwargs):
        missing = [name for name in outputs if name not in feature_strides]
        if missing:
            raise ValueError(f"Backbone features {missing} have no stride in feature_strides.")
        # Functional models ignore `dtype`; the layers already carry it, the config keeps it.
        dtype = kwargs.pop("dtype", None)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.layer_dtype = dtype
        self.feature_names = tuple(outputs)
        self.feature_strides = {name: int(feature_strides[name]) for name in outputs}
        self.feature_channels = {name: int(feature_channels[name]) for name in outputs}
        arguments = dict(arguments or {})
        self.constructor_arguments = tuple(arguments)
        for key, value in arguments.items():
            setattr(self, _argument_attribute(key), value)

    def get_config(self):
        # The constructor arguments; the functional graph itself is never serialised because
        # `__init__` rebuilds it.
        dtype = self.layer_dtype
        if isinstance(dtype, keras.DTypePolicy):
            dtype = keras.dtype_policies.serialize(dtype)
        config = {"name": self.name, "trainable": self.trainable, "dtype": dtype}
        for key in self.constructor_arguments:
            value = getattr(self, _argument_attribute(key))
            config[key] = list(value) if isinstance(value, tuple) else value
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _argument_attribute(key):
    """The attribute holding constructor argument `key` (`keras.Model` owns `input_shape`)."""
    return "image_input_shape" if key == "input_shape" else key


def as_int_tuple(values, length, argument):
    """Returns `values` as a tuple of `length` positive ints, or raises naming `argument`."""
    values = tuple(int(v) for v in values)
    if len(values) != length or any(v <= 0 for v in values):
        raise ValueError(f"`{argument}` must be {length} positive integers, got {values}.")
    return values


def set_trainable(backbone, trainable, freeze_batchnorm=True, *, layers=None):
    """Freezes or unfreezes a backbone (or some of its layers), optionally keeping BN frozen.

    Papers train with a frozen backbone (RMI, RRN, MCN/LTS) or frozen VGG conv layers (Hu).
    A Keras 3 `BatchNormalization` layer with `trainable=False` runs in inference mode (moving
    statistics, no updates) even under `training=True`, which is what "frozen BN" means here.

    Args:
        backbone: a `keras.Model` (normally a `Backbone`).
        trainable: the trainable flag to set on the selected layers.
        freeze_batchnorm: when True, every batch-normalisation layer of the backbone is frozen
            afterwards, whatever `trainable` is (fine-tuning with frozen statistics, as DeepLab).
        layers: optional layer names or name prefixes (e.g. `("fc6", "fc7", "fc8")`); only the
            matching layers change, the others keep their current flag. `None` = all layers.

    Example:
        >>> set_trainable(vgg, False)                         # Hu: freeze everything ...
        >>> set_trainable(vgg, True, layers=("fc6", "fc7", "fc8"))  # ... but fine-tune fc6-8

    Note:
        Per-layer flags are not part of a saved model's config: call `set_trainable` again after
        `keras.saving.load_model`.
    """
    if layers is None:
        backbone.trainable = bool(trainable)
    else:
        prefixes = (layers,) if isinstance(layers, str) else tuple(layers)
        selected = [layer for layer in backbone.layers if layer.name.startswith(prefixes)]
        if not selected:
            raise ValueError(f"No layer of {backbone.name!r} matches the names {list(prefixes)}.")
        flags = {layer.name: layer.trainable for layer in backbone.layers}
        flags.update({layer.name: bool(trainable) for layer in selected})
        # Setting the model flag recurses into every layer, so restore the per-layer flags.
        backbone.trainable = any(flags.values())
        for layer in backbone.layers:
            layer.trainable = flags[layer.name]
    if freeze_batchnorm:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return backbone

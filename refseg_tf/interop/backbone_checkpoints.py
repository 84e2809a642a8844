"""The authors' TF1 ResNet-101 backbone checkpoints as `train.backbone_weights`.

`--config.train.backbone_weights=PATH` accepts, besides the `.npz` / `.h5` / darknet files of
`refseg_tf.backbones.weights`, the three TF1 checkpoints the RMI and RRN code initialise from
(names and layouts in `tf1_resnet`):

- TF-resnet `model/ResNet101_init.tfmodel` (R+LSTM / R+RMI, `main.py -w resnet`): ImageNet
  ResNet-101 with its fc1000 classifier;
- TF-deeplab `model/ResNet101_train.tfmodel` (D+LSTM / D+RMI, `-w deeplab`): DeepLab-v2
  ResNet-101 trained on PASCAL VOC (its VOC ASPP classifier is not loaded);
- DrSleep tensorflow-deeplab-resnet `deeplab_resnet.ckpt` (RRN's `deeplab_resnet_init.ckpt`
  has the same backbone names).

The flavour is detected from the variable names, or forced with a `flavour:` prefix
(`tf_resnet:/path/ResNet101_init.tfmodel`). Every variable is used, ignored as the VOC head /
training state, or named in an error; shapes are checked before anything is assigned.
"""

from __future__ import annotations

import logging
import os

from refseg_tf.interop import tf1_resnet
from refseg_tf.interop.assign import TF1_TRAINING_STATE, AssignmentPlan
from refseg_tf.interop.checkpoint import read_checkpoint

logger = logging.getLogger(__name__)

_SUFFIXES = (".ckpt", ".tfmodel", ".index")


def split_flavour(weights):
    """`"flavour:path"` -> (flavour, path); a plain path -> (None, path)."""
    text = os.fspath(weights)
    head, sep, tail = text.partition(":")
    if sep and head in tf1_resnet.FLAVOURS:
        return head, tail
    return None, text


def is_tf1_checkpoint(weights) -> bool:
    """Whether `weights` names a TF1 checkpoint (V1 file, V2 prefix / `.index`, `flavour:`)."""
    flavour, path = split_flavour(weights)
    if flavour is not None:
        return True
    if os.path.isfile(path + ".index") or path.endswith(".index"):
        return True
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "checkpoint")):
        return True
    return os.path.isfile(path) and path.endswith(_SUFFIXES)


def load_tf1_resnet_weights(backbone, weights, argument="weights"):
    """Loads one of the authors' TF1 ResNet-101 checkpoints into a `ResNetOS8`.

    Args:
        backbone: a `ResNetOS8` with the checkpoint's depths and widths. Built with
            `stem_padding="same"`, `batchnorm_epsilon=1e-3` its features are the ports'
            (otherwise a warning says so: the weights load, the stem pads differently).
        weights: the checkpoint path, optionally `flavour:path` (see `tf1_resnet.FLAVOURS`).
        argument: the setting named in errors.

    Returns:
        list of the backbone layer names that received weights.

    Raises:
        ValueError: unknown flavour, unreadable file, or a missing / mis-shaped / unexpected
            variable (file, variable and layer named); nothing is assigned then.
    """
    from refseg_tf.backbones.resnet import ResNetOS8

    if not isinstance(backbone, ResNetOS8):
        raise ValueError(
            f"`{argument}`: a TF1 ResNet checkpoint loads into resnet101_os8; the backbone is "
            f"{type(backbone).__name__}."
        )
    flavour, path = split_flavour(weights)
    variables = read_checkpoint(path)
    detected = tf1_resnet.detect_flavour(variables.names)
    if flavour is None:
        if detected is None:
            markers = ", ".join(repr(m) for m in tf1_resnet._MARKERS.values())
            raise ValueError(
                f"`{argument}`: {path} is a TF checkpoint but none of {markers} is in it: not "
                "a TF-resnet, TF-deeplab or tensorflow-deeplab-resnet ResNet checkpoint."
            )
        flavour = detected
    tf1_resnet.check_flavour(flavour)
    mismatched = [
        name for name, value in tf1_resnet.TF1_BACKBONE_KWARGS.items()
        if getattr(backbone, name) != value
    ]
    if mismatched:
        logger.warning(
            "%s: the %s weights were computed with %s; backbone %r has %s: its features will "
            "differ from the authors' (set model.backbone.kwargs).", path, flavour,
            tf1_resnet.TF1_BACKBONE_KWARGS, backbone.name,
            {name: getattr(backbone, name) for name in mismatched},
        )
    ignore = TF1_TRAINING_STATE + tuple("^" + p for p in tf1_resnet.IGNORED_PREFIXES[flavour])
    plan = AssignmentPlan(variables, ignore=ignore)
    layers = tf1_resnet.plan_backbone(plan, backbone, flavour)
    exclude = () if flavour == "tf_resnet" else (r"(^|/)fc1000/",)
    plan.require_complete(backbone, exclude=exclude)
    report = plan.apply()
    if flavour != "tf_resnet":
        logger.warning("%s has no fc1000 (a %s checkpoint): fc1000 keeps its weights.", path, flavour)
    logger.info("Loaded %d weights of %s from %s (%s).", report["assigned"], backbone.name, path, flavour)
    return layers

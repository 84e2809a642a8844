"""ResNet-101 variable names of the authors' TF1 backbones -> `ResNetOS8` layers.

Three TF1 ports of Caffe ResNet-101 initialised the RMI and RRN code; each names the same
weights differently (read from their public code, no code taken from it):

| flavour | who | conv kernel | batch norm (gamma, beta, mean, variance) | epsilon |
|---|---|---|---|---|
| `tf_resnet` | chenxi116/TF-resnet `ResNet101_init.tfmodel` (R+LSTM, R+RMI) | `ResNet/group_{s}_{b}/block_{k}/conv/DW` | `.../bn/{gamma,beta,mean,variance}` | 1e-3 |
| `tf_deeplab` | chenxi116/TF-deeplab `ResNet101_train.tfmodel` (D+LSTM, D+RMI) | `DeepLab/...` as above | as above, mean and variance divided by `.../bn/factor` | 1e-3 |
| `drsleep` | DrSleep/tensorflow-deeplab-resnet `deeplab_resnet.ckpt` (RRN) | `res4b22_branch2a/weights` (Caffe names) | `bn4b22_branch2a/{gamma,beta,moving_mean,moving_variance}` (slim) | 1e-3 |

Block `k` of the TF ports is 1, 2, 3 for the bottleneck's 1x1, 3x3, 1x1 convolutions and
`block_add` for the projection shortcut (keras `_1_`, `_2_`, `_3_`, `_0_`); group `s_b` is stage
`s`, block `b + 1`; the stem is `group_1/conv1` + `group_1/bn_conv1`. None of the three has conv
biases (those of `ResNetOS8` are set to zero). All three pad the 7x7 stride-2 stem convolution
and the max pool TensorFlow "SAME", so the backbone must be built with `stem_padding="same"` and
`batchnorm_epsilon=1e-3` (`backbone_kwargs`) to compute their features.

`ResNet/fc1000/{DW,biases}` (`[1, 1, 2048, 1000]`) is TF-resnet's ImageNet classifier (R+LSTM's
visual feature); TF-deeplab's `fc1_voc12/conv{0..3}` and DrSleep's `fc1_voc12_c{0..3}` are the
PASCAL VOC ASPP classifier, part of their checkpoints but of no network built from them here
(`IGNORED_PREFIXES`).
"""

from __future__ import annotations

from refseg_tf.backbones.resnet import ResNetOS8
from refseg_tf.backbones.weights import deeplab_layer_names

FLAVOURS = ("tf_resnet", "tf_deeplab", "drsleep")
SCOPES = {"tf_resnet": "ResNet", "tf_deeplab": "DeepLab", "drsleep": ""}
# Backbone keyword arguments under which `ResNetOS8` computes the ports' features.
TF1_BACKBONE_KWARGS = {"stem_padding": "same", "batchnorm_epsilon": 1e-3}
# Variables of the authors' backbone checkpoints that no network here uses (their VOC heads).
IGNORED_PREFIXES = {
    "tf_resnet": (),
    "tf_deeplab": ("DeepLab/fc1_voc12/",),
    "drsleep": ("fc1_voc12_c",),
}
# A name that only one flavour has: how `detect_flavour` tells them apart.
_MARKERS = {
    "tf_resnet": "ResNet/group_1/conv1/DW",
    "tf_deeplab": "DeepLab/group_1/conv1/DW",
    "drsleep": "conv1/weights",
}
_TF_BLOCKS = {0: "block_add", 1: "block_1", 2: "block_2", 3: "block_3"}


def detect_flavour(names):
    """The flavour whose stem kernel is among `names`, or None."""
    for flavour, marker in _MARKERS.items():
        if marker in names:
            return flavour
    return None


def check_flavour(flavour):
    if flavour not in FLAVOURS:
        raise ValueError(f"Backbone checkpoint flavour must be one of {FLAVOURS}; received {flavour!r}.")
    return flavour


def backbone_variable_names(backbone, flavour):
    """Every `ResNetOS8` layer with weights -> its checkpoint variable names, in weight order.

    Returns:
        dict keras layer name -> dict with "kind" ("conv", "bn", "fc"), and per kind: conv
        `{"kernel"}`; bn `{"gamma", "beta", "mean", "variance"}` and, for tf_deeplab,
        `"factor"`; fc `{"kernel", "bias"}` (tf_resnet only: the others have no fc1000).
    """
    check_flavour(flavour)
    if not isinstance(backbone, ResNetOS8):
        raise TypeError(
            f"The authors' ResNet checkpoints load into a ResNetOS8; received {type(backbone).__name__}."
        )
    names = {}
    if flavour == "drsleep":
        for conv_layer, (conv, bn, _) in deeplab_layer_names(backbone, "auto").items():
            names[conv_layer] = {"kind": "conv", "kernel": f"{conv}/weights"}
            names[conv_layer[: -len("conv")] + "bn"] = {
                "kind": "bn",
                "gamma": f"{bn}/gamma",
                "beta": f"{bn}/beta",
                "mean": f"{bn}/moving_mean",
                "variance": f"{bn}/moving_variance",
            }
        return names
    scope = SCOPES[flavour]

    def add(conv_layer, conv_scope, bn_scope):
        names[conv_layer] = {"kind": "conv", "kernel": f"{conv_scope}/DW"}
        bn = {"kind": "bn"}
        for role, variable in (("gamma", "gamma"), ("beta", "beta"), ("mean", "mean"), ("variance", "variance")):
            bn[role] = f"{bn_scope}/{variable}"
        if flavour == "tf_deeplab":
            bn["factor"] = f"{bn_scope}/factor"
        names[conv_layer[: -len("conv")] + "bn"] = bn

    add("conv1_conv", f"{scope}/group_1/conv1", f"{scope}/group_1/bn_conv1")
    for index, depth in enumerate(backbone.depths):
        stage = index + 2
        for block in range(1, depth + 1):
            for keras_index, tf_block in _TF_BLOCKS.items():
                if keras_index == 0 and block > 1:
                    continue
                group = f"{scope}/group_{stage}_{block - 1}/{tf_block}"
                add(f"conv{stage}_block{block}_{keras_index}_conv", f"{group}/conv", f"{group}/bn")
    if flavour == "tf_resnet":
        names["fc1000"] = {"kind": "fc", "kernel": f"{scope}/fc1000/DW", "bias": f"{scope}/fc1000/biases"}
    return names


def plan_backbone(plan, backbone, flavour):
    """Plans every backbone weight from the checkpoint of `flavour` (see the module table).

    Batch norm `factor` (TF-deeplab: Caffe's moving-average factor, `[1]`) divides mean and
    variance (0 -> zeros, as Caffe). Conv biases, which the checkpoints lack, are set to zero.
    `fc1000` is filled only from tf_resnet (the others have none): callers that use it must
    then `require_complete` without excluding it.

    Args:
        plan: an `AssignmentPlan` over the checkpoint.
        backbone: a built `ResNetOS8` (the checkpoint must have its depths and widths).
        flavour: one of `FLAVOURS`.

    Returns:
        the names of the layers planned.
    """
    import numpy as np

    planned = []
    for layer_name, spec in backbone_variable_names(backbone, flavour).items():
        layer = backbone.get_layer(layer_name)
        where = f"{backbone.name}/{layer_name}"
        if spec["kind"] in ("conv", "fc"):
            plan.assign(layer.kernel, plan.take(spec["kernel"], where, tuple(layer.kernel.shape)),
                        source=spec["kernel"], layer=where)
            if layer.use_bias:
                cout = (int(layer.kernel.shape[-1]),)
                if "bias" in spec:
                    plan.assign(layer.bias, plan.take(spec["bias"], where, cout),
                                source=spec["bias"], layer=where)
                else:
                    plan.assign(layer.bias, np.zeros(cout, np.float32),
                                source=f"{spec['kernel']} (no bias: zeros)", layer=where)
        else:
            channels = (int(layer.gamma.shape[0]),)
            values = {role: plan.take(spec[role], where, channels)
                      for role in ("gamma", "beta", "mean", "variance")}
            if "factor" in spec:
                factor = plan.take(spec["factor"], where, (1,))
                if factor is None:
                    values["mean"] = values["variance"] = None
                elif values["mean"] is not None and values["variance"] is not None:
                    factor = float(np.reshape(factor, ()))
                    scale = np.float32(0.0 if factor == 0.0 else 1.0 / factor)
                    values["mean"], values["variance"] = values["mean"] * scale, values["variance"] * scale
            targets = {"gamma": layer.gamma, "beta": layer.beta, "mean": layer.moving_mean,
                       "variance": layer.moving_variance}
            for role, target in targets.items():
                plan.assign(target, values[role], source=spec[role], layer=where)
        planned.append(layer_name)
    return planned

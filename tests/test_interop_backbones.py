"""The authors' TF1 ResNet-101 checkpoints as `train.backbone_weights` (TF-resnet, TF-deeplab,
DrSleep's tensorflow-deeplab-resnet), feature for feature.

The TF1 graphs (tests/tf1_phrasecut.py) are written here from the ports' variable names and
equations. Tolerance 1e-4 max abs: the same float32 maths in two implementations (oneDNN
reorders sums), nothing more.
"""

import os

import numpy as np
import pytest

from refseg_tf.backbones import ResNetOS8, load_weights
from tests import tf1_phrasecut as graphs

FLAVOURS = ("tf_resnet", "tf_deeplab", "drsleep")
TOLERANCE = 1e-4
SAME = dict(stem_padding="same", batchnorm_epsilon=1e-3)


def _backbone(spec):
    return ResNetOS8(
        depths=spec["depths"],
        widths=tuple(f // 4 for f in spec["filters"][1:]),
        stem_filters=spec["filters"][0],
        num_classes=spec["num_classes"],
        **SAME,
    )


def _compare(tmp_path, flavour, spec, size):
    image = np.random.default_rng(3).normal(0.0, 50.0, (size, size, 3)).astype(np.float32)
    prefix = str(tmp_path / f"{flavour}.ckpt")
    reference = graphs.run_backbone_reference(flavour, prefix, size=size, backbone=spec, image=image)
    backbone = _backbone(spec)
    before = np.asarray(backbone(image[None])["C5"])
    load_weights(backbone, prefix, argument="train.backbone_weights")
    features = backbone(image[None])
    np.testing.assert_allclose(np.asarray(features["C5"]), reference["res5c"], rtol=0, atol=TOLERANCE)
    if flavour == "tf_resnet":
        np.testing.assert_allclose(np.asarray(features["fc1000"]), reference["fc1000"], rtol=0,
                                   atol=TOLERANCE)
    assert np.abs(before - reference["res5c"]).max() > 100 * TOLERANCE  # the load did something
    return prefix, image, reference


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_tiny_backbone_checkpoint_gives_the_authors_features(tmp_path, flavour):
    _compare(tmp_path, flavour, graphs.TINY_RESNET, 64)


@pytest.mark.slow
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_paper_size_backbone_checkpoint_gives_the_authors_features(tmp_path, flavour):
    _compare(tmp_path, flavour, graphs.PAPER_RESNET, 320)


def test_backbone_weights_setting_takes_the_checkpoint_and_a_forced_flavour(tmp_path):
    from refseg_tf.interop import load_experiment_config
    from refseg_tf.training.trainer import build_model, load_backbone_weights

    prefix, image, reference = _compare(tmp_path, "tf_deeplab", graphs.TINY_RESNET, 64)
    config = load_experiment_config(os.path.join("experiments", "d_rmi_unc.py"))
    config.model.size = "tiny"
    config.model.vocabulary_size = 10
    config.model.backbone.kwargs = dict(widths=(4, 8, 12, 16), **SAME)
    config.train.backbone_weights = f"tf_deeplab:{prefix}.index"
    model = build_model(config)
    load_backbone_weights(model, config)
    c5 = np.asarray(model.backbone(image[None])["C5"])
    np.testing.assert_allclose(c5, reference["res5c"], rtol=0, atol=TOLERANCE)


def test_wrong_flavour_or_shape_names_the_variable_and_assigns_nothing(tmp_path):
    prefix = str(tmp_path / "drsleep.ckpt")
    image = np.zeros((64, 64, 3), np.float32)
    graphs.run_backbone_reference("drsleep", prefix, size=64, backbone=graphs.TINY_RESNET, image=image)
    backbone = _backbone(graphs.TINY_RESNET)
    before = [w.copy() for w in backbone.get_weights()]
    with pytest.raises(ValueError) as raised:
        load_weights(backbone, f"tf_resnet:{prefix}")
    assert "ResNet/group_1/conv1/DW" in str(raised.value) and "drsleep.ckpt" in str(raised.value)
    bad = graphs.rewrite_checkpoint(
        prefix, str(tmp_path / "bad.ckpt"),
        lambda v: {**v, "res4b_branch2b/weights": v["res4b_branch2b/weights"][:, :, :, 1:]},
    )
    with pytest.raises(ValueError) as raised:
        load_weights(backbone, bad)
    assert "res4b_branch2b/weights" in str(raised.value)
    assert "conv4_block2_2_conv" in str(raised.value)
    for old, new in zip(before, backbone.get_weights()):
        np.testing.assert_array_equal(old, new)  # shapes checked before anything is assigned


def test_stem_padding_is_checked_and_kept_in_the_config():
    with pytest.raises(ValueError, match="stem_padding"):
        ResNetOS8(depths=(1, 1, 1, 1), widths=(4, 4, 4, 4), stem_filters=8, stem_padding="valid")
    backbone = _backbone(graphs.TINY_RESNET)
    rebuilt = ResNetOS8.from_config(backbone.get_config())
    assert rebuilt.stem_padding == "same" and rebuilt.batchnorm_epsilon == 1e-3

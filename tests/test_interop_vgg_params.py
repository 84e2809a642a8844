"""Hu et al.'s `vgg_params.npz` (text_objseg convert_caffemodel output) as
`--config.train.backbone_weights`: the VGG16FCN features equal the authors' TF1 VGG graph.

The file is written here as the authors' training script reads it (`np.load(path)
['processed_W'][()]`: a dict `{layer: weights}`, fully connected layers as their `fc_layer`
matrices `[k * k * C, U]`). Tolerance 1e-4 max abs: float32 summation order (oneDNN).
"""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from refseg_tf.backbones import TINY_PRESETS, get_backbone, weight_source
from tests import tf1_reference

TOLERANCE = 1e-4
PAPER = dict(widths=(64, 128, 256, 512, 512), depths=(2, 2, 3, 3, 3), fc_units=4096,
             num_classes=1000, image_size=224)
TINY = dict(TINY_PRESETS["vgg16_fcn"], depths=(2, 2, 3, 3, 3), image_size=64)


def write_vgg_params(path, dims, seed=0):
    """Runs the authors' VGG (`vgg_fc8_full_conv`) on a random image, writes its weights as
    vgg_params.npz; returns (image, fc8)."""
    rng = np.random.default_rng(seed)
    size = dims["image_size"]
    image = rng.normal(0, 50, size=(1, size, size, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        picture = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3])
        fc8 = tf1_reference.vgg_fc8_full_conv(
            rng, picture, dims["widths"], dims["depths"], dims["fc_units"], dims["num_classes"]
        )
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            expected = session.run(fc8, {picture: image})
            values = {v.op.name: session.run(v) for v in tf.compat.v1.global_variables()}
    weights, biases = {}, {}
    for name, value in values.items():
        layer, kind = name.split("/")[-2:]
        if kind == "weights":
            # fc6..fc8 as the detection model's fc_layer matrices [k * k * C, U].
            weights[layer] = value.reshape(-1, value.shape[-1]) if layer.startswith("fc") else value
        else:
            biases[layer] = value
    np.savez(path, processed_W=weights, processed_B=biases)
    return image, expected


def check(tmp_path, dims, tiny):
    path = str(tmp_path / "vgg_params.npz")
    image, expected = write_vgg_params(path, dims)
    kwargs = {} if tiny else dict(widths=dims["widths"], fc_units=4096, num_classes=1000)
    backbone = get_backbone("vgg16_fcn", tiny=tiny, weights=path, **kwargs)
    found = np.asarray(backbone(image)["fc8"])
    assert found.shape == expected.shape
    assert np.std(expected) > 1e-2  # a real signal
    assert np.max(np.abs(found - expected)) < TOLERANCE, np.max(np.abs(found - expected))
    return path


def test_tiny_vgg_params_give_the_tf1_vgg_features(tmp_path):
    path = check(tmp_path, TINY, tiny=True)
    assert weight_source(get_backbone("vgg16_fcn", tiny=True), path).name == "hu_vgg_params"


@pytest.mark.slow
def test_paper_size_vgg_params_give_the_tf1_vgg_features(tmp_path):
    check(tmp_path, PAPER, tiny=False)


def test_vgg_params_require_the_authors_normalization(tmp_path):
    """Hu's VGG weights take RGB minus the VGG mean; training them on caffe_bgr is refused."""
    from refseg_tf.training.trainer import load_backbone_weights

    path = str(tmp_path / "vgg_params.npz")
    write_vgg_params(path, TINY)
    model = type("M", (), {"backbone": get_backbone("vgg16_fcn", tiny=True)})()
    config = ml_collections.ConfigDict(
        {"train": {"backbone_weights": path}, "data": {"normalization": "caffe_bgr"}}
    )
    with pytest.raises(ValueError, match="data.normalization=vgg_rgb"):
        load_backbone_weights(model, config)
    config.data.normalization = "vgg_rgb"
    load_backbone_weights(model, config)

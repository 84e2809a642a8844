"""Tests of the LTS family (refseg_tf.models.lts), the Darknet neck and its loaders, the
localisation accuracy and the LTS configs."""

import functools
import json
import struct

import h5py
import numpy as np
import pytest
import keras
from keras import ops

from refseg_tf.backbones import (
    Darknet53,
    get_backbone,
    load_darknet_weights,
    load_keras_darknet_weights,
)
from refseg_tf.backbones.darknet import DarknetBatchNormalization
from refseg_tf.layers import bilinear_kernel
from refseg_tf.metrics import letterbox_localization_hit
from refseg_tf.models import LTS, build_preset, get_preset
from refseg_tf.models.lts import (
    ASPPSegmentation,
    GRUTextEncoder,
    PixelBCELoss,
    RelevanceFilter,
    relevance_heatmaps,
    sine_position_encoding,
)
from refseg_tf.models.lts.layers import UNK_ID
from refseg_tf.models.lts.layers import ConvBNLeaky, LTSFusion, TransformerLocalizer
from tests.test_case import (
    IMAGE,
    TINY_DARKNET,
    VOCAB,
    assert_batch_equals_single_runs,
    run_layer_test,
    save_and_reload,
    segmenter_inputs as _inputs,
    segmenter_masks as _masks,
    to_numpy,
)
from tests.helpers import random_array


def _tiny_lts(name="lts", **overrides):
    return build_preset(name, VOCAB, size="tiny", backbone_kwargs=TINY_DARKNET, **overrides)


def _back_padded(count=4):
    return _inputs(count, padding="back")


# --------------------------------------------------------------------------- text encoder


def test_gru_encoder_masked_mean_ignores_back_padding():
    encoder = GRUTextEncoder(VOCAB, embedding_dim=4, units=3, dropout=0.0)
    ids = np.array([[5, 6, 7, 0, 0], [4, 0, 0, 0, 0]], "int32")
    out = encoder(ids)
    assert out["words"].shape == (2, 5, 6) and out["sentence"].shape == (2, 6)
    for row, length in enumerate((3, 1)):
        alone = encoder(ids[row : row + 1, :length])
        np.testing.assert_allclose(to_numpy(out["sentence"])[row], to_numpy(alone["sentence"])[0], atol=1e-6)
        np.testing.assert_allclose(
            to_numpy(out["sentence"])[row], to_numpy(out["words"])[row, :length].mean(0), atol=1e-6
        )
        assert np.all(to_numpy(out["words"])[row, length:] == 0)


def test_gru_encoder_reads_an_all_pad_row_as_unk():
    encoder = GRUTextEncoder(VOCAB, embedding_dim=4, units=3, dropout=0.0)
    out = encoder(np.array([[0, 0, 0], [UNK_ID, 0, 0]], "int32"))
    np.testing.assert_allclose(to_numpy(out["sentence"])[0], to_numpy(out["sentence"])[1], atol=1e-6)
    assert to_numpy(out["mask"])[0].tolist() == [True, False, False]


def test_gru_encoder_takes_glove_vectors():
    encoder = GRUTextEncoder(VOCAB, embedding_dim=4, units=3)
    encoder(np.ones((1, 2), "int32"))
    matrix = np.arange(VOCAB * 4, dtype="float32").reshape(VOCAB, 4)
    encoder.set_embeddings(matrix)
    np.testing.assert_array_equal(to_numpy(encoder.embedding.embeddings), matrix)
    with pytest.raises(ValueError, match="matrix"):
        encoder.set_embeddings(matrix[:, :3])


# --------------------------------------------------------------------------- localisation


def test_relevance_filtering_equals_a_per_sample_conv2d_loop():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 5, 6, 7)).astype("float32")
    sentence = rng.normal(size=(3, 4)).astype("float32")
    layer = RelevanceFilter(num_filters=2)
    heatmaps = to_numpy(layer(features, sentence))
    assert heatmaps.shape == (3, 5, 6, 2)
    kernels = sentence @ to_numpy(layer.kernel)  # K = f_text W_k, [B, n * C]
    for b in range(3):
        kernel = kernels[b].reshape(2, 7).T[None, None]  # [1, 1, C, n]
        expected = to_numpy(ops.conv(features[b : b + 1], kernel, padding="same"))[0]
        np.testing.assert_allclose(heatmaps[b], expected, atol=1e-5)


def test_word_filter_is_the_mean_of_per_word_maps():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 3, 3, 5)).astype("float32")
    words = rng.normal(size=(2, 4, 6)).astype("float32")
    mask = np.array([[True, True, True, False], [True, False, False, False]])
    layer = RelevanceFilter(source="words")
    heatmap = to_numpy(layer(features, None, words, mask))
    for b, length in enumerate((3, 1)):
        kernels = words[b, :length] @ to_numpy(layer.kernel)
        maps = to_numpy(relevance_heatmaps(features[b : b + 1], kernels[None]))[0]
        np.testing.assert_allclose(heatmap[b, ..., 0], maps.mean(-1), atol=1e-5)
    with pytest.raises(ValueError, match="num_filters"):
        RelevanceFilter(num_filters=2, source="words")


def test_sine_position_encoding_matches_detr():
    height, width, channels = 3, 4, 8
    pos = to_numpy(sine_position_encoding(height, width, channels))
    features = channels // 2
    dim_t = 10000.0 ** (2 * (np.arange(features) // 2) / features)
    y = np.arange(1, height + 1) / (height + 1e-6) * 2 * np.pi
    x = np.arange(1, width + 1) / (width + 1e-6) * 2 * np.pi
    for i in range(height):
        for j in range(width):
            py, px = y[i] / dim_t, x[j] / dim_t
            ey = np.stack([np.sin(py[0::2]), np.cos(py[1::2])], -1).reshape(-1)
            ex = np.stack([np.sin(px[0::2]), np.cos(px[1::2])], -1).reshape(-1)
            np.testing.assert_allclose(pos[i, j], np.concatenate([ey, ex]), atol=1e-5)


def test_aspp_deconvolution_starts_bilinear():
    head = ASPPSegmentation(channels=4, rates=(1, 2, 3))
    out = head(np.zeros((1, 6, 6, 5), "float32"))
    assert out.shape == (1, 12, 12, 1)
    np.testing.assert_array_equal(to_numpy(head.deconv.kernel), bilinear_kernel(4, 1))


_IDS = np.array([[5, 6, 7, 0], [4, 0, 0, 0], [3, 11, 0, 0]], "int32")
_WORD_MASK = _IDS != 0
_random = functools.partial(random_array, seed=0)  # this file's seeds
# (id, class, constructor kwargs, call args, call kwargs, float16 output?, float32 sublayers)
LTS_LAYER_CASES = [
    ("conv_bn_leaky", ConvBNLeaky, dict(filters=4, kernel_size=3), (_random(2, 4, 4, 3),), {},
     "float16", ()),
    ("gru_encoder", GRUTextEncoder, dict(vocabulary_size=VOCAB, embedding_dim=4, units=3),
     (_IDS,), {}, "float16", ()),
    ("fusion", LTSFusion, dict(channels=8, branch_channels=4),
     ([_random(2, 2, 2, 6), _random(2, 4, 4, 5), _random(2, 8, 8, 3)], _random(2, 6)), {},
     "float16", ()),
    ("relevance_filter", RelevanceFilter, dict(num_filters=2),
     (_random(3, 4, 4, 5), _random(3, 6)), {}, "float32", ()),
    ("word_filter", RelevanceFilter, dict(source="words"), (_random(3, 4, 4, 5), None),
     dict(word_mask=_WORD_MASK, words=_random(3, 4, 6)), "float32", ()),
    ("transformer", TransformerLocalizer, dict(d_model=8, num_heads=2, ffn_units=8),
     (_random(2, 4, 4, 8), _random(2, 6)), {}, "float32", ("score",)),
    ("aspp", ASPPSegmentation, dict(channels=4, rates=(1, 2, 3)), (_random(2, 6, 6, 5),), {},
     "float32", ("deconv",)),
]


@pytest.mark.parametrize(
    "layer_cls, init_kwargs, args, kwargs, mixed_dtype, float32_sublayers",
    [case[1:] for case in LTS_LAYER_CASES],
    ids=[case[0] for case in LTS_LAYER_CASES],
)
def test_lts_layers_pass_the_common_layer_checks(
    layer_cls, init_kwargs, args, kwargs, mixed_dtype, float32_sublayers
):
    run_layer_test(
        layer_cls, init_kwargs, args, call_kwargs=kwargs,
        mixed_precision_output_dtype=mixed_dtype, float32_sublayers=float32_sublayers,
    )


# --------------------------------------------------------------------------- model


# lts_trans: the transformer's own checks are in the layer cases above (`-m slow` runs it here).
_LTS_AND_SLOW_TRANS = ["lts", pytest.param("lts_trans", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", _LTS_AND_SLOW_TRANS)
def test_lts_presets_round_trip_with_their_heatmap(name, tmp_path):
    """Training + `.keras` of every preset: tests/test_models.py (run_segmenter_test)."""
    model = _tiny_lts(name)
    assert model.output_stride == 4 and model.has_heatmap and model.threshold == 0.25
    inputs = _back_padded(2)
    assert model(inputs).shape == (2, IMAGE // 4, IMAGE // 4, 1)
    assert model.heatmap(inputs).shape == (2, IMAGE // 8, IMAGE // 8, 1)
    reloaded = save_and_reload(model, tmp_path)
    np.testing.assert_allclose(to_numpy(reloaded(inputs)), to_numpy(model(inputs)), atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(reloaded.heatmap(inputs)), to_numpy(model.heatmap(inputs)), atol=1e-5
    )


@pytest.mark.parametrize("name", ["lts", "lts_trans"])
def test_training_checkpoint_restores_every_lts_weight(name, tmp_path):
    """Regression: the ASPP branches (and the transformer's norms) sat in Python lists, which
    `tf.train.Checkpoint` does not follow under Keras 3; their batch-norm statistics were
    missing from training checkpoints, so resuming a finished synthetic run re-saved
    `model.keras` with initial statistics (overall IoU 35.47 -> 26.59)."""
    import tensorflow as tf

    model = _tiny_lts(name)
    model(_back_padded(1))
    weights = [v for v in model.variables if "seed_generator" not in v.path]
    rng = np.random.default_rng(0)
    for variable in weights:
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(variable.dtype))
    saved = [to_numpy(v).copy() for v in weights]
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    for variable in weights:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    tf.train.Checkpoint(model=model).restore(path).assert_existing_objects_matched()
    lost = [v.path for v, value in zip(weights, saved) if not np.array_equal(to_numpy(v), value)]
    assert not lost, f"not in the training checkpoint: {lost}"


# "lts" batching runs by default in tests/test_models.py's common checks (its heatmap's shape in
# test_lts_presets_round_trip_with_their_heatmap); here with `-m slow` (issue 21: suite time).
@pytest.mark.parametrize("name", [pytest.param("lts", marks=pytest.mark.slow), "lts_trans"])
def test_lts_batch_equals_single_runs(name):
    model = _tiny_lts(name)
    assert_batch_equals_single_runs(model, "back")
    assert model(_back_padded(1)).shape == (1, IMAGE // 4, IMAGE // 4, 1)
    assert model.heatmap(_back_padded(1)).shape == (1, IMAGE // 8, IMAGE // 8, 1)


def test_lts_explain_draws_heatmaps_and_mask():
    model = _tiny_lts(num_filters=2)
    explanation = model.explain(_back_padded(1))
    assert explanation["maps"].shape == (1, 3, IMAGE, IMAGE)
    assert explanation["labels"] == [("heatmap 1", "heatmap 2", "mask")]  # one tuple per example
    assert np.all((to_numpy(explanation["maps"]) >= 0) & (to_numpy(explanation["maps"]) <= 1))


def test_lts_loss_is_l_seg_plus_lambda_l_loc_from_one_forward_pass():
    model = _tiny_lts(num_filters=2)
    model.compile()
    inputs, masks = _back_padded(2), _masks(2)
    forward = model.forward(inputs, training=False)
    summed = PixelBCELoss()
    expected = float(summed(masks, forward["mask"])) + 0.1 * sum(
        float(summed(masks, forward["heatmaps"][..., i : i + 1])) for i in range(2)
    )
    logits = model(inputs, training=False)
    calls = []
    original = model._fused
    model._fused = lambda *args: calls.append(1) or original(*args)
    total = float(model.compute_loss(inputs, masks, logits, training=False))
    assert calls == []  # the heatmaps of the call were handed over, no second forward pass
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    # Eq. 11: a sum over the H/4 grid, not a mean.
    labels = np.zeros((1, IMAGE, IMAGE, 1), "float32")
    zero_logits = np.zeros((1, IMAGE // 4, IMAGE // 4, 1), "float32")
    np.testing.assert_allclose(
        float(summed(labels, zero_logits)), (IMAGE // 4) ** 2 * np.log(2.0), rtol=1e-5
    )


@pytest.mark.parametrize(
    "switches, stride, heatmap, locating",
    [
        (dict(localization="none", segmentation=False, locating_loss_weight=0.0), 8, False, False),
        (dict(fusion=False, segmentation=False, locating_loss_weight=0.0), 8, True, False),
        (dict(localization="none", locating_loss_weight=0.0), 4, False, False),
        (dict(fusion=False), 4, True, True),
        (dict(locating_loss_weight=0.0), 4, True, False),
        (dict(filter_source="words", num_filters=1), 4, True, True),
    ],
)
def test_table2_and_table5_variants(switches, stride, heatmap, locating):
    model = _tiny_lts(**switches)
    logits = model(_back_padded(2), training=False)
    assert logits.shape == (2, IMAGE // stride, IMAGE // stride, 1)
    assert model.has_heatmap == heatmap and model.uses_locating_loss == locating
    if not model.segmentation and heatmap:  # the mask is the heatmap
        np.testing.assert_allclose(to_numpy(logits), to_numpy(model.heatmap(_back_padded(2))), atol=1e-6)


@pytest.mark.parametrize("name", _LTS_AND_SLOW_TRANS)
def test_lts_under_mixed_precision_returns_float32(name):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _tiny_lts(name)
        logits = model(_back_padded(2), training=False)
        heatmap = model.heatmap(_back_padded(2))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert logits.dtype == "float32" and heatmap.dtype == "float32"
    assert np.all(np.isfinite(to_numpy(logits))) and np.all(np.isfinite(to_numpy(heatmap)))


def test_lts_rejects_bad_arguments():
    with pytest.raises(ValueError, match="resolution"):
        _tiny_lts(loss_config={"resolution": "image"})
    with pytest.raises(ValueError, match="localization"):
        _tiny_lts(localization="attention")
    with pytest.raises(ValueError, match="fusion=False"):
        _tiny_lts(fusion=False, localization="none")
    with pytest.raises(ValueError, match="neck"):
        LTS(get_backbone("darknet53", tiny=True, **TINY_DARKNET), VOCAB)
    with pytest.raises(ValueError, match="multiple of 32"):
        _tiny_lts()({"image": np.zeros((1, 48, 48, 3), "float32"),
                     "word_ids": np.ones((1, 3), "int32")})
    with pytest.raises(ValueError, match="has no localisation"):
        _tiny_lts(localization="none").heatmap(_back_padded(1))
    with pytest.raises(ValueError, match="distinct dilations"):
        ASPPSegmentation(channels=4, rates=(2, 2))


# --------------------------------------------------------------------------- localisation accuracy


def test_letterbox_localization_hit_on_hand_made_heatmaps():
    # A 4x4 heatmap over a 16 px square; the 8 x 16 (h x w) image sits in rows 4-11.
    window = (4, 0, 8, 16)
    mask = np.zeros((4, 8), bool)  # the original image: 4 x 8, foreground top-right quarter
    mask[:2, 4:] = True
    heatmap = np.zeros((4, 4))
    heatmap[1, 3] = 5.0  # cell centre (6, 14) in the square -> (2, 14) in the window -> (1, 7)
    assert letterbox_localization_hit(heatmap, mask, window, 16)
    mask[1, 7] = False
    assert not letterbox_localization_hit(heatmap, mask, window, 16)
    heatmap = np.zeros((4, 4))
    heatmap[1, 2] = 5.0  # centre (6, 10) -> window (2, 10) -> original (1, 5): foreground
    assert letterbox_localization_hit(heatmap, mask, window, 16)
    heatmap = np.zeros((4, 4))
    heatmap[0, 2] = 5.0  # centre row 2 lies in the grey padding: a miss
    assert not letterbox_localization_hit(heatmap, mask, window, 16)
    heatmap = np.zeros((4, 4))
    heatmap[2, 0] = 5.0  # centre (10, 2) -> original (3, 1): background
    assert not letterbox_localization_hit(heatmap, mask, window, 16)
    with pytest.raises(ValueError, match="NaN"):
        letterbox_localization_hit(np.full((2, 2), np.nan), mask, window, 16)


# --------------------------------------------------------------------------- darknet neck + loaders


def _neck_backbone():
    return Darknet53(neck=True, **TINY_DARKNET)


def _write_darknet(path, backbone, seed=0):
    rng = np.random.default_rng(seed)
    written = {}
    with open(path, "wb") as handle:
        handle.write(struct.pack("<3i", 0, 2, 0) + struct.pack("<q", 7))
        for name in backbone.darknet_layer_order:
            kh, kw, cin, cout = backbone.get_layer(name).kernel.shape
            layer = {
                "beta": rng.normal(size=cout), "gamma": rng.normal(size=cout),
                "mean": rng.normal(size=cout), "variance": rng.uniform(0.5, 2, size=cout),
                "kernel": rng.normal(size=(cout, cin, kh, kw)),
            }
            for field in ("beta", "gamma", "mean", "variance", "kernel"):
                layer[field] = layer[field].astype("<f4")
                handle.write(layer[field].tobytes())
            written[name] = layer
        handle.write(np.ones(50, "<f4").tobytes())  # the yolo detection convs, unread
    return written


def test_darknet_neck_topology():
    backbone = _neck_backbone()
    order = backbone.darknet_layer_order
    assert len(order) == 1 + sum(1 + 2 * d for d in TINY_DARKNET["depths"]) + 6
    assert order[-6:] == tuple(f"neck{i}_conv" for i in range(1, 7))
    kernels = [backbone.get_layer(name).kernel.shape for name in order[-6:]]
    assert [k[0] for k in kernels] == [1, 3, 1, 3, 1, 3]
    assert [k[-1] for k in kernels] == [16, 32, 16, 32, 16, 32]
    features = backbone(np.zeros((1, 64, 64, 3), "float32"))
    assert features["neck"].shape == (1, 2, 2, 32) and backbone.feature_strides["neck"] == 32


def test_darknet_weights_fill_the_neck(tmp_path):
    backbone = _neck_backbone()
    written = _write_darknet(tmp_path / "yolov3.weights", backbone)
    load_darknet_weights(backbone, tmp_path / "yolov3.weights")
    for name in ("stem_conv", "neck1_conv", "neck6_conv"):
        np.testing.assert_array_equal(
            backbone.get_layer(name).kernel, written[name]["kernel"].transpose(2, 3, 1, 0)
        )
        gamma, beta, mean, variance = backbone.get_layer(name[:-4] + "bn").get_weights()
        np.testing.assert_array_equal(beta, written[name]["beta"])
        np.testing.assert_array_equal(variance, written[name]["variance"])
    # darknet53.conv.74 style: the file stops after the backbone convolutions.
    plain = Darknet53(**TINY_DARKNET)
    _write_darknet(tmp_path / "backbone.weights", plain)
    data = (tmp_path / "backbone.weights").read_bytes()
    (tmp_path / "backbone.weights").write_bytes(data[: len(data) - 200])
    with pytest.raises(ValueError, match="neck"):
        load_darknet_weights(backbone, tmp_path / "backbone.weights")


def _write_keras2_h5(path, backbone, seed=0, wrap=False, bad_layer=None):
    """A Keras 2 HDF5 weights file as keras-yolo3 / MCN write it (names by creation count)."""
    rng = np.random.default_rng(seed)
    written = {}
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = b"2.2.4"
        handle.attrs["backend"] = b"tensorflow"
        root = handle.create_group("model_weights") if wrap else handle
        names = [b"input_1"]
        root.create_group("input_1").attrs["weight_names"] = []
        for index, name in enumerate(backbone.darknet_layer_order, start=1):
            kernel_shape = tuple(backbone.get_layer(name).kernel.shape)
            if name == bad_layer:
                kernel_shape = kernel_shape[:-1] + (kernel_shape[-1] + 1,)
            cout = kernel_shape[-1]
            conv, bn, leaky = f"conv2d_{index}", f"batch_normalization_{index}", f"leaky_re_lu_{index}"
            arrays = {"kernel": rng.normal(size=kernel_shape).astype("float32")}
            group = root.create_group(conv)
            group.attrs["weight_names"] = [f"{conv}/kernel:0".encode()]
            group.create_dataset(f"{conv}/kernel:0", data=arrays["kernel"])
            group = root.create_group(bn)
            weight_names = []
            for weight in ("gamma", "beta", "moving_mean", "moving_variance"):
                arrays[weight] = rng.uniform(0.5, 2, size=cout).astype("float32")
                group.create_dataset(f"{bn}/{weight}:0", data=arrays[weight])
                weight_names.append(f"{bn}/{weight}:0".encode())
            group.attrs["weight_names"] = weight_names
            root.create_group(leaky).attrs["weight_names"] = []
            names += [conv.encode(), bn.encode(), leaky.encode()]
            written[name] = arrays
        # An MCN head layer after the backbone: ignored.
        group = root.create_group("conv2d_999")
        group.attrs["weight_names"] = [b"conv2d_999/kernel:0", b"conv2d_999/bias:0"]
        group.create_dataset("conv2d_999/kernel:0", data=np.zeros((1, 1, 32, 1), "float32"))
        group.create_dataset("conv2d_999/bias:0", data=np.zeros((1,), "float32"))
        root.attrs["layer_names"] = names + [b"conv2d_999"]
    return written


@pytest.mark.parametrize("wrap", [False, True])
def test_keras_h5_darknet_loader(tmp_path, wrap):
    backbone = _neck_backbone()
    path = tmp_path / "mcn_darknet.h5"
    written = _write_keras2_h5(path, backbone, wrap=wrap)
    loaded = load_keras_darknet_weights(backbone, path)
    assert len(loaded) == 2 * len(backbone.darknet_layer_order)
    for name, arrays in written.items():
        np.testing.assert_array_equal(backbone.get_layer(name).kernel, arrays["kernel"])
        gamma, beta, mean, variance = backbone.get_layer(name[:-4] + "bn").get_weights()
        np.testing.assert_array_equal(gamma, arrays["gamma"])
        np.testing.assert_array_equal(beta, arrays["beta"])
        np.testing.assert_array_equal(mean, arrays["moving_mean"])
        np.testing.assert_array_equal(variance, arrays["moving_variance"])
    bad = tmp_path / "bad.h5"
    _write_keras2_h5(bad, backbone, bad_layer="neck3_conv")
    before = to_numpy(backbone.get_layer("stem_conv").kernel)
    with pytest.raises(ValueError, match=r"bad\.h5.*conv2d_.*neck3_conv"):
        load_keras_darknet_weights(backbone, bad)
    np.testing.assert_array_equal(to_numpy(backbone.get_layer("stem_conv").kernel), before)


def test_frozen_batchnorm_modes():
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(4, 3, 3, 2)).astype("float32")
    for mode in ("inference", "batch_statistics"):
        layer = DarknetBatchNormalization(frozen_mode=mode)
        layer.build(x.shape)
        layer.trainable = False
        out = to_numpy(layer(x, training=True))
        if mode == "inference":  # Keras 3: moving statistics (0, 1)
            np.testing.assert_allclose(out, x / np.sqrt(1 + 1e-3), rtol=1e-5)
        else:  # Keras 2 / MCN: the mini-batch's statistics
            mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
            np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-3), atol=1e-5)
        np.testing.assert_array_equal(to_numpy(layer.moving_mean), 0.0)
    backbone = Darknet53(neck=True, frozen_batchnorm="batch_statistics", **TINY_DARKNET)
    assert backbone.get_layer("neck1_bn").frozen_mode == "batch_statistics"
    assert Darknet53.from_config(backbone.get_config()).frozen_batchnorm == "batch_statistics"


# --------------------------------------------------------------------------- parameter counts

VOCAB_COCO = 12112


def _bn(channels):
    return 4 * channels  # gamma, beta, moving mean, moving variance


def _conv_bn(kernel, cin, cout):
    return kernel * kernel * cin * cout + _bn(cout)


def lts_head_params(vocabulary, channels, n=1, transformer=False):
    """SPEC 2.3-2.6 dimensions: embedding 300, bi-GRU 1024 x 2 (Keras reset_after: 3 gates with
    two biases), W_t / W_v1 to 1024, Eq. 7 branches of 512, W_k 2048 -> n x 1024, ASPP 256 x 5,
    1x1 to one channel, a 4x4 deconvolution."""
    embedding, units, text = 300, 1024, 2048
    total = vocabulary * embedding
    total += 2 * 3 * (embedding * units + units * units + 2 * units)
    total += _conv_bn(1, channels["neck"], 1024) + text * 1024 + _bn(1024)  # W_v1, W_t
    total += _conv_bn(1, 1024, 512) + _conv_bn(1, channels["C4"], 512)  # W_m1, W_v2
    total += _conv_bn(1, 1024, 512) + _conv_bn(1, channels["C3"], 512)  # W_m2, W_v3
    if transformer:
        d, ffn = 1024, 1024
        total += 4 * (d * d + d)  # self-attention q, k, v, o
        total += 2 * (d * d + d) + 2 * (text * d + d)  # cross-attention: k, v read f_text
        total += d * ffn + ffn + ffn * d + d + 4 * 2 * d + d + 1  # FFN, 4 LayerNorms, Dense(1)
        prior = 1
    else:
        total += text * n * 1024
        prior = n
    seg_in = 1024 + prior
    total += _conv_bn(1, seg_in, 256) + 3 * _conv_bn(3, seg_in, 256) + _conv_bn(1, seg_in, 256)
    return total + 5 * 256 + 1 + 4 * 4


PAPER_DARKNET = {"neck": 1024, "C4": 512, "C3": 256}


@pytest.mark.parametrize(
    "name, overrides, transformer, by_hand",
    [
        ("lts", {"num_filters": 1}, False, 26_097_617),
        ("lts", {}, False, 28_202_193),
        ("lts_trans", {}, True, 36_602_834),
    ],
)
def test_lts_head_parameter_count(name, overrides, transformer, by_hand):
    n = overrides.get("num_filters", get_preset(name).kwargs.get("num_filters", 1))
    assert lts_head_params(VOCAB_COCO, PAPER_DARKNET, n, transformer) == by_hand
    if name == "lts_trans" or overrides:
        return  # building one paper-scale head (GRU 1024, 3.6 M embeddings) is enough
    backbone = _neck_backbone()
    model = build_preset(name, VOCAB_COCO, backbone=backbone, **overrides)
    model(_back_padded(1), training=False)
    head = model.count_params() - backbone.count_params()
    assert head == lts_head_params(VOCAB_COCO, backbone.feature_channels, n, transformer)


@pytest.mark.slow
def test_lts_trans_paper_scale_head_parameter_count():
    backbone = _neck_backbone()
    model = build_preset("lts_trans", VOCAB_COCO, backbone=backbone)
    model(_back_padded(1), training=False)
    head = model.count_params() - backbone.count_params()
    assert head == lts_head_params(VOCAB_COCO, backbone.feature_channels, 1, True)


# --------------------------------------------------------------------------- configs


def test_epochs_become_steps_from_metadata(tmp_path):
    from refseg_tf.training import experiments
    from refseg_tf.training.epochs import resolve_epochs

    config = experiments.lts("refcoco")
    assert (config.train.steps, tuple(config.train.optimizer.boundaries)) == (106_020, (68_324,))
    config.data.dir = str(tmp_path)
    (tmp_path / "metadata.json").write_text(
        json.dumps({"splits": {"train": {"refs": 100, "sentences": 250}}})
    )
    resolve_epochs(config)
    assert config.train.steps == 45 * 6 and tuple(config.train.optimizer.boundaries) == (29 * 6,)
    config.data.sentences = "all"
    resolve_epochs(config)
    assert config.train.steps == 45 * 14
    (tmp_path / "metadata.json").write_text(json.dumps({"splits": {}}))
    with pytest.raises(ValueError, match="splits.train.sentences"):
        resolve_epochs(config)


def test_lts_configs_state_the_paper_metric_and_recipe():
    from refseg_tf.training import experiments

    for dataset, length in (("refcoco", 15), ("refcocoplus", 15), ("refcocog_umd", 20)):
        config = experiments.lts(dataset)
        assert config.paper.metric == "mean_iou" and dict(config.paper.overall_iou) == {}
        assert config.data.max_length == length and config.data.image_size == 416
        assert (config.data.pad_value, config.data.resize_method, config.data.normalization) == (
            "grey", "bicubic", "unit"
        )
        assert config.data.text_padding == "back" and config.model.threshold == 0.25
        assert config.eval.scoring_rule == "resize_probability"
        assert config.train.batch_size == 18 and config.train.optimizer.learning_rate == 1e-3
    assert experiments.lts("refcoco").paper.mean_iou.val == 65.43
    assert experiments.lts("refcocog_umd").paper.mean_iou.test == 54.25
    assert experiments.lts("refcoco", localization="transformer").paper.mean_iou.val == 66.15
    row5 = experiments.lts("refcoco", table2_row=5)
    assert (row5.model.fusion, row5.model.segmentation, row5.paper.mean_iou.val) == (
        False, True, 63.64
    )
    assert experiments.lts("refcoco", table5_row="n2").model.num_filters == 2
    assert experiments.lts("refcoco", table5_row="wordfilter").model.filter_source == "words"
    row = experiments.lts("refcoco", table6_size=352)
    assert row.data.image_size == 352 and row.paper.mean_iou.val == 64.04
    with pytest.raises(ValueError, match="RefCOCO"):
        experiments.lts("refcocoplus", table2_row=1)
    with pytest.raises(ValueError, match="table6_size"):
        experiments.lts("refcoco", table6_size=400)


# --------------------------------------------------------------------------- end to end


def test_predictor_refuses_an_empty_expression_before_the_model():
    from refseg_tf.inference import Predictor
    from refseg_tf.text import Vocabulary
    from refseg_tf.training import experiments

    config = experiments.synthetic_lts()
    vocabulary = Vocabulary.build(["the red circle"])
    model = _tiny_lts()
    predictor = Predictor(model, config, vocabulary)
    image = np.zeros((40, 50, 3), "uint8")
    assert predictor.predict(image, "the red circle").shape == (40, 50)
    calls = []
    original = model._fused
    model._fused = lambda *args: calls.append(1) or original(*args)
    with pytest.raises(ValueError, match="non-empty"):
        predictor.predict(image, ["the circle", "  "])
    assert calls == []


@pytest.mark.slow  # about 20 s (issue 20); LTS trains by default in test_models' preset checks
def test_synthetic_lts_trains_by_epochs_and_reports_localization_accuracy(tmp_path):
    """refseg-train on `experiments.synthetic_lts` (epochs from metadata.json), refseg-evaluate."""
    from refseg_tf.data.converters.refer import ReferReader
    from refseg_tf.data.converters.writer import write_dataset
    from refseg_tf.synthetic_data import generate
    from refseg_tf.training import experiments, trainer
    from refseg_tf.training.evaluation import evaluate_model_dir

    summary = generate(str(tmp_path / "raw"), num_images=12, seed=5, image_size=48)
    reader = ReferReader(data_root=str(tmp_path / "raw"), dataset="synthetic", split_by="unc",
                         image_root=summary["image_root"])
    data_dir = str(tmp_path / "tfrecords")
    metadata = write_dataset(reader, data_dir, num_shards=1, show_progress=False)
    config = experiments.synthetic_lts()
    config.data.dir = data_dir
    config.data.sentences = "sample"
    config.model.backbone.kwargs = TINY_DARKNET
    config.train.batch_size = 16
    config.train.epochs = 2  # one batch per epoch: the train split has <= 16 refs
    config.train.optimizer.boundary_epochs = (1,)
    config.train.checkpoint_every = 1
    config.train.log_images_every = 0
    config.train.jit_compile = "false"
    model_dir = str(tmp_path / "model")
    trainer.train(config, model_dir, verbose=0)
    refs = metadata["splits"]["train"]["refs"]
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["train"]["steps"] == 2 * -(-refs // 16)
    assert saved["train"]["optimizer"]["boundaries"] == [-(-refs // 16)]
    report, table = evaluate_model_dir(model_dir, split="val")
    assert 0.0 <= report["scores"]["localization_accuracy"] <= 1.0
    assert "localization acc." in table
    written = json.loads((tmp_path / "model" / "eval_val.json").read_text())
    assert written["scores"]["localization_accuracy"] == report["scores"]["localization_accuracy"]

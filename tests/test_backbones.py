"""Tests for refseg_tf.backbones: shapes, serialisation, training/freezing and weight loaders."""

import logging
import struct
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from refseg_tf.backbones import (
    TINY_PRESETS,
    Darknet53,
    ResNetOS8,
    VGG16FCN,
    deeplab_layer_names,
    get_backbone,
    load_darknet_weights,
    load_deeplab_resnet_weights,
    load_imagenet_weights,
    set_trainable,
)
from refseg_tf.backbones.darknet import DarknetBatchNormalization
from tests.test_case import run_layer_test

NAMES = ("vgg16_fcn", "resnet101_os8", "darknet53")
EXPECTED_FEATURES = {
    "vgg16_fcn": ("conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"),
    "resnet101_os8": ("C1", "C2", "C3", "C4", "C5", "fc1000"),
    "darknet53": ("C3", "C4", "C5"),
}
EXPECTED_STRIDES = {
    "vgg16_fcn": dict(conv3=4, conv4=8, conv5=16, pool5=32, fc6=32, fc7=32, fc8=32),
    "resnet101_os8": {"C1": 4, "C2": 4, "C3": 8, "C4": 8, "C5": 8, "fc1000": 8},
    "darknet53": {"C3": 8, "C4": 16, "C5": 32},
}


def random_images(batch, size, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype("float32")


def randomize_batchnorm_statistics(model, seed=0):
    """Gives BN layers non-trivial moving statistics so inference-mode checks mean something."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                    rng.normal(0, 0.1, beta.shape).astype("float32"),
                    rng.normal(0, 0.1, mean.shape).astype("float32"),
                    rng.uniform(0.5, 2.0, variance.shape).astype("float32"),
                ]
            )


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="module")
def tiny_backbones():
    keras.utils.set_random_seed(1)
    models = {name: get_backbone(name, tiny=True) for name in NAMES}
    for model in models.values():
        randomize_batchnorm_statistics(model)
    return models


# --------------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_features_have_documented_names_strides_and_shapes(tiny_backbones, name):
    backbone = tiny_backbones[name]
    features = backbone(random_images(2, 64))
    assert backbone.feature_names == EXPECTED_FEATURES[name]
    assert set(features) == set(EXPECTED_FEATURES[name])
    assert backbone.feature_strides == EXPECTED_STRIDES[name]
    for feature, value in features.items():
        stride = backbone.feature_strides[feature]
        channels = backbone.feature_channels[feature]
        assert tuple(value.shape) == (2, 64 // stride, 64 // stride, channels), feature


def test_vgg_feature_channels_follow_widths_and_fc_sizes():
    backbone = VGG16FCN(widths=(2, 3, 4, 5, 6), fc_units=7, num_classes=9)
    assert backbone.feature_channels == {
        "conv3": 4, "conv4": 5, "conv5": 6, "pool5": 6, "fc6": 7, "fc7": 7, "fc8": 9,
    }
    assert backbone.get_layer("fc6").kernel.shape == (7, 7, 6, 7)
    assert backbone.get_layer("fc8").activation is keras.activations.linear


def test_vgg_fc8_is_16x16_for_512_pixels():
    backbone = VGG16FCN(widths=(2, 2, 2, 2, 2), fc_units=4, num_classes=3)
    assert tuple(backbone(np.zeros((1, 512, 512, 3), "float32"))["fc8"].shape) == (1, 16, 16, 3)


def test_vgg_dropout_is_off_by_default_and_active_only_when_training():
    default = get_backbone("vgg16_fcn", tiny=True)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in default.layers)
    backbone = get_backbone("vgg16_fcn", tiny=True, fc_dropout=0.5)
    images = random_images(1, 64)
    inference = [backbone(images, training=False)["fc8"] for _ in range(2)]
    np.testing.assert_allclose(inference[0], inference[1])
    assert not np.allclose(backbone(images, training=True)["fc8"], inference[0])


@pytest.mark.parametrize("output_stride", [16, 32])
def test_resnet_output_stride_sets_strides_and_reuses_the_same_weights(
    tiny_backbones, output_stride
):
    reference = tiny_backbones["resnet101_os8"]  # output stride 8
    backbone = get_backbone("resnet101_os8", tiny=True, output_stride=output_stride)
    backbone.set_weights(reference.get_weights())  # dilation adds no weights
    images = random_images(1, 64)
    features, reference_features = backbone(images), reference(images)
    assert backbone.feature_strides["C5"] == output_stride
    assert tuple(features["C5"].shape[1:3]) == (64 // output_stride,) * 2
    np.testing.assert_allclose(features["C2"], reference_features["C2"], rtol=1e-5, atol=1e-5)
    # Atrous convolution is exact: the dilated map subsampled equals the strided network's map.
    for feature in ("C4", "C5", "fc1000"):
        step = backbone.feature_strides[feature] // reference.feature_strides[feature]
        subsampled = np.asarray(reference_features[feature])[:, ::step, ::step]
        np.testing.assert_allclose(features[feature], subsampled, rtol=1e-4, atol=1e-5)


def test_resnet_dilates_stages_4_and_5():
    backbone = get_backbone("resnet101_os8", tiny=True)
    assert backbone.get_layer("conv3_block1_2_conv").dilation_rate == (1, 1)
    assert backbone.get_layer("conv4_block2_2_conv").dilation_rate == (2, 2)
    assert backbone.get_layer("conv5_block1_2_conv").dilation_rate == (4, 4)
    assert backbone.get_layer("conv4_block1_1_conv").strides == (1, 1)
    assert backbone.get_layer("conv3_block1_1_conv").strides == (2, 2)


def test_darknet_downsampling_uses_darknet_padding_for_odd_sizes():
    backbone = get_backbone("darknet53", tiny=True)
    features = backbone(random_images(1, 67))
    # darknet: out = floor((H - 1) / 2) + 1 per stride-2 conv: 67 -> 34 -> 17 -> 9 -> 5 -> 3
    assert [features[name].shape[1] for name in ("C3", "C4", "C5")] == [9, 5, 3]


def test_darknet_residual_unit_is_conv_bn_leaky_relu():
    backbone = get_backbone("darknet53", tiny=True)
    assert backbone.get_layer("stem_conv").use_bias is False
    assert backbone.get_layer("stem_leaky").negative_slope == pytest.approx(0.1)
    assert backbone.get_layer("stage3_block2_conv1_conv").kernel.shape == (1, 1, 16, 8)


def test_tiny_preset_keeps_the_topology_and_kwargs_override_it():
    backbone = get_backbone("resnet101_os8", tiny=True, num_classes=5)
    assert backbone.depths == TINY_PRESETS["resnet101_os8"]["depths"]
    assert backbone.feature_channels["fc1000"] == 5
    assert backbone.get_config()["num_classes"] == 5


def test_invalid_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="Unknown backbone 'resnet50'"):
        get_backbone("resnet50")
    with pytest.raises(ValueError, match="`depths` must be 4 positive integers"):
        ResNetOS8(depths=(1, 1, 1))
    with pytest.raises(ValueError, match="`output_stride` must be 8, 16 or 32"):
        ResNetOS8(output_stride=4)
    with pytest.raises(ValueError, match="`widths` must be 5 positive integers"):
        VGG16FCN(widths=(1, 2, 0, 3, 4))
    with pytest.raises(ValueError, match="`widths` must be even"):
        Darknet53(widths=(8, 8, 15, 16, 32))


# --------------------------------------------------------------------------------------------
# Serialisation, batching, mixed precision
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_keras_file_round_trip_keeps_config_and_outputs(tiny_backbones, name, tmp_path):
    backbone = tiny_backbones[name]
    path = tmp_path / f"{name}.keras"
    backbone.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(backbone)
    assert restored.get_config() == backbone.get_config()
    assert restored.feature_strides == backbone.feature_strides
    images = random_images(2, 64)
    expected, actual = backbone(images), restored(images)
    for feature in backbone.feature_names:
        np.testing.assert_allclose(actual[feature], expected[feature], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_n_equals_n_batches_of_one(tiny_backbones, name):
    backbone = tiny_backbones[name]
    images = random_images(3, 64, seed=5)
    batched = backbone(images, training=False)
    for index in range(3):
        single = backbone(images[index : index + 1], training=False)
        for feature in backbone.feature_names:
            np.testing.assert_allclose(
                single[feature][0], batched[feature][index], rtol=1e-4, atol=1e-4
            )


def test_dtype_policy_reaches_every_layer_and_survives_saving(tmp_path):
    backbone = get_backbone("vgg16_fcn", tiny=True, dtype="mixed_float16")
    assert backbone.get_layer("block5_conv3").compute_dtype == "float16"
    assert backbone(random_images(1, 32))["fc8"].dtype == "float16"
    backbone.save(tmp_path / "mixed.keras")
    restored = keras.saving.load_model(tmp_path / "mixed.keras")
    assert restored.get_layer("fc8").dtype_policy.name == "mixed_float16"


# The common layer checks of tests/test_case.py: config round trip, symbolic call, training
# step, mixed-precision policy of every layer (saving: test_keras_file_round_trip_... above).
BACKBONE_CASES = [
    ("vgg16_fcn", VGG16FCN, dict(TINY_PRESETS["vgg16_fcn"])),
    ("resnet101_os8", ResNetOS8, dict(TINY_PRESETS["resnet101_os8"], depths=(1, 1, 1, 1))),
    ("darknet53_neck", Darknet53,
     dict(widths=(8, 8, 16, 16, 32), depths=(1, 1, 1, 1, 1), stem_filters=4, neck=True)),
]


@pytest.mark.parametrize(
    "backbone_cls, init_kwargs", [case[1:] for case in BACKBONE_CASES],
    ids=[case[0] for case in BACKBONE_CASES],
)
def test_backbone_passes_the_common_layer_checks(backbone_cls, init_kwargs):
    run_layer_test(backbone_cls, init_kwargs, random_images(2, 64), run_saving=False)


@pytest.mark.parametrize("frozen_mode", ["inference", "batch_statistics"])
def test_darknet_batchnorm_passes_the_common_layer_checks(frozen_mode):
    run_layer_test(
        DarknetBatchNormalization, dict(frozen_mode=frozen_mode),
        random_images(2, 4)[..., :2], expected_output_shape=(2, 4, 4, 2),
    )


# --------------------------------------------------------------------------------------------
# Training and freezing
# --------------------------------------------------------------------------------------------


def sgd_step(model, images, learning_rate=0.1):
    optimizer = keras.optimizers.SGD(learning_rate)
    with tf.GradientTape() as tape:
        features = model(images, training=True)
        loss = sum(tf.reduce_mean(tf.square(value)) for value in features.values())
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(gradients, model.trainable_variables)


def snapshot(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}


@pytest.mark.parametrize("name", NAMES)
def test_training_step_changes_every_trainable_weight(name):
    backbone = get_backbone(name, tiny=True)
    set_trainable(backbone, True, freeze_batchnorm=False)
    before = snapshot(backbone)
    sgd_step(backbone, random_images(2, 64))
    after = snapshot(backbone)
    trainable = {v.path for v in backbone.trainable_variables}
    assert trainable
    unchanged = [path for path in trainable if np.array_equal(before[path], after[path])]
    assert not unchanged
    if name != "vgg16_fcn":  # moving statistics follow the batch when BN is not frozen
        moving = [v.path for v in backbone.non_trainable_variables if "moving_mean" in v.path]
        assert moving and not np.array_equal(before[moving[0]], after[moving[0]])


@pytest.mark.parametrize("name", NAMES)
def test_frozen_backbone_keeps_all_weights_and_runs_bn_in_inference_mode(name):
    backbone = get_backbone(name, tiny=True)
    randomize_batchnorm_statistics(backbone)
    set_trainable(backbone, False)
    assert backbone.trainable_variables == []
    images = random_images(2, 64)
    before = snapshot(backbone)
    training_output = backbone(images, training=True)
    inference_output = backbone(images, training=False)
    for feature in backbone.feature_names:
        np.testing.assert_allclose(training_output[feature], inference_output[feature], atol=1e-5)
    after = snapshot(backbone)
    assert all(np.array_equal(before[path], after[path]) for path in before)


def test_trainable_with_frozen_batchnorm_trains_convs_only():
    backbone = get_backbone("resnet101_os8", tiny=True)
    randomize_batchnorm_statistics(backbone)
    set_trainable(backbone, True)  # freeze_batchnorm=True by default
    trainable_paths = [v.path for v in backbone.trainable_variables]
    assert trainable_paths and all("_conv" in p or "fc1000" in p for p in trainable_paths)
    images = random_images(2, 64)
    before = snapshot(backbone)
    np.testing.assert_allclose(
        backbone(images, training=True)["C5"], backbone(images, training=False)["C5"], atol=1e-5
    )
    sgd_step(backbone, images)
    after = snapshot(backbone)
    bn_paths = [p for p in before if "_bn/" in p]
    assert bn_paths and all(np.array_equal(before[p], after[p]) for p in bn_paths)
    assert not np.array_equal(before["conv1_conv/kernel"], after["conv1_conv/kernel"])


def test_set_trainable_on_selected_layers_keeps_the_others_frozen():
    backbone = get_backbone("vgg16_fcn", tiny=True)
    set_trainable(backbone, False)
    set_trainable(backbone, True, layers=("fc6", "fc7", "fc8"))
    layers = {v.path.split("/")[0] for v in backbone.trainable_variables}
    assert layers == {"fc6", "fc7", "fc8"}
    with pytest.raises(ValueError, match="No layer of 'vgg16_fcn' matches"):
        set_trainable(backbone, True, layers="res5")


# --------------------------------------------------------------------------------------------
# ImageNet loader (keras.applications)
# --------------------------------------------------------------------------------------------


def tiny_keras_vgg16(widths, fc_units, num_classes):
    """A VGG-16 laid out and named as keras.applications.VGG16(include_top=True), few channels."""
    image = keras.Input((224, 224, 3))
    x = image
    for block, (width, depth) in enumerate(zip(widths, (2, 2, 3, 3, 3)), start=1):
        for index in range(1, depth + 1):
            x = keras.layers.Conv2D(
                width, 3, padding="same", activation="relu", name=f"block{block}_conv{index}"
            )(x)
        x = keras.layers.MaxPooling2D(2, 2, name=f"block{block}_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(fc_units, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(fc_units, activation="relu", name="fc2")(x)
    x = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(image, x, name="vgg16")


def tiny_keras_resnet(widths=(4, 4, 8, 8), depths=(1, 2, 2, 1), classes=16):
    """keras.applications' own ResNet builder (private module) with few channels and blocks."""
    from keras.src.applications import resnet as keras_resnet

    def stack_fn(x):
        for index, (width, depth) in enumerate(zip(widths, depths)):
            x = keras_resnet.stack_residual_blocks_v1(
                x, width, depth, stride1=1 if index == 0 else 2, name=f"conv{index + 2}"
            )
        return x

    return keras_resnet.ResNet(
        stack_fn, False, True, weights=None, input_shape=(64, 64, 3), classes=classes
    )


def test_imagenet_vgg_mapping_is_exact_and_fc6_equals_dense_on_the_patch():
    keras.utils.set_random_seed(3)
    widths, fc_units, num_classes = (4, 8, 8, 16, 16), 32, 16
    source = tiny_keras_vgg16(widths, fc_units, num_classes)
    backbone = VGG16FCN(widths=widths, fc_units=fc_units, num_classes=num_classes)
    loaded = load_imagenet_weights(backbone, source_model=source)
    assert len(loaded) == 16 and {"fc6", "fc7", "fc8", "block5_conv3"} <= set(loaded)
    np.testing.assert_array_equal(
        backbone.get_layer("block3_conv2").kernel, source.get_layer("block3_conv2").kernel
    )
    np.testing.assert_array_equal(
        backbone.get_layer("fc6").kernel, np.reshape(source.get_layer("fc1").kernel, (7, 7, 16, 32))
    )
    np.testing.assert_array_equal(
        backbone.get_layer("fc8").bias, source.get_layer("predictions").bias
    )

    patch = np.random.default_rng(0).normal(size=(2, 7, 7, 16)).astype("float32")
    dense = source.get_layer("fc1")(patch.reshape(2, -1))
    conv = backbone.get_layer("fc6")(patch)[:, 3, 3, :]  # the centre cell sees the whole patch
    np.testing.assert_allclose(conv, dense, rtol=1e-5, atol=1e-5)

    images = random_images(2, 224)
    logits = backbone(images)["fc8"][:, 3, 3, :]  # pool5 is 7x7 at 224 px
    np.testing.assert_allclose(keras.ops.softmax(logits), source(images), rtol=1e-4, atol=1e-6)


def test_imagenet_resnet_mapping_is_exact_and_c2_c3_match_where_strides_agree():
    keras.utils.set_random_seed(4)
    source = tiny_keras_resnet()
    randomize_batchnorm_statistics(source)
    backbone = ResNetOS8(depths=(1, 2, 2, 1), widths=(4, 4, 8, 8), stem_filters=64, num_classes=16)
    loaded = load_imagenet_weights(backbone, source_model=source)
    assert "fc1000" in loaded and "conv4_block2_3_bn" in loaded
    for layer in backbone.layers:
        if layer.weights and layer.name != "fc1000":
            source_weights = source.get_layer(layer.name).get_weights()
            for mine, theirs in zip(layer.get_weights(), source_weights):
                np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(
        backbone.get_layer("fc1000").kernel[0, 0], source.get_layer("predictions").kernel
    )
    images = random_images(2, 64)
    features = backbone(images)
    for feature, source_layer in (("C2", "conv2_block1_out"), ("C3", "conv3_block2_out")):
        probe = keras.Model(source.input, source.get_layer(source_layer).output)
        np.testing.assert_allclose(features[feature], probe(images), rtol=1e-5, atol=1e-5)


def test_imagenet_loader_errors_name_the_layers():
    backbone = VGG16FCN(widths=(4, 8, 8, 16, 16), fc_units=32, num_classes=16)
    wrong = tiny_keras_vgg16((4, 8, 8, 16, 16), 32, 10)
    with pytest.raises(ValueError, match="'predictions'.*'fc8'"):
        load_imagenet_weights(backbone, source_model=wrong)
    nameless = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="other")])
    with pytest.raises(ValueError, match="no layer 'block1_conv1'"):
        load_imagenet_weights(backbone, source_model=nameless)
    with pytest.raises(TypeError, match="load_darknet_weights"):
        load_imagenet_weights(get_backbone("darknet53", tiny=True), source_model=nameless)


# --------------------------------------------------------------------------------------------
# DeepLab (Caffe) ResNet loader
# --------------------------------------------------------------------------------------------


def test_deeplab_names_of_resnet101():
    names = deeplab_layer_names(types.SimpleNamespace(depths=(3, 4, 23, 3)))
    assert names["conv1_conv"] == ("conv1", "bn_conv1", "scale_conv1")
    assert names["conv2_block1_0_conv"] == ("res2a_branch1", "bn2a_branch1", "scale2a_branch1")
    assert names["conv2_block3_2_conv"][0] == "res2c_branch2b"
    assert names["conv3_block4_3_conv"][0] == "res3b3_branch2c"
    assert names["conv4_block23_3_conv"] == (
        "res4b22_branch2c", "bn4b22_branch2c", "scale4b22_branch2c",
    )
    assert names["conv5_block3_1_conv"][0] == "res5c_branch2a"
    assert len(names) == 1 + 4 + 3 * (3 + 4 + 23 + 3)  # stem + 4 shortcuts + 3 per block
    assert "conv3_block2_0_conv" not in names


def caffe_arrays_for(backbone, seed=0, with_fc=True):
    """Random arrays in Caffe (OIHW) layout under DeepLab names for a ResNetOS8."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for keras_name, (conv, bn, scale) in deeplab_layer_names(backbone).items():
        kh, kw, cin, cout = backbone.get_layer(keras_name).kernel.shape
        arrays[f"{conv}/weights"] = rng.normal(size=(cout, cin, kh, kw)).astype("float32")
        arrays[f"{bn}/mean"] = rng.normal(size=cout).astype("float32")
        arrays[f"{bn}/variance"] = rng.uniform(0.5, 2, size=cout).astype("float32")
        arrays[f"{scale}/weights"] = rng.normal(size=cout).astype("float32")
        arrays[f"{scale}/biases"] = rng.normal(size=cout).astype("float32")
    if with_fc:
        _, _, cin, cout = backbone.get_layer("fc1000").kernel.shape
        arrays["fc1000/weights"] = rng.normal(size=(cout, cin)).astype("float32")
        arrays["fc1000/biases"] = rng.normal(size=cout).astype("float32")
    return arrays


def assert_caffe_arrays_loaded(backbone, arrays):
    for keras_name, (conv, bn, scale) in deeplab_layer_names(backbone).items():
        kernel, bias = backbone.get_layer(keras_name).get_weights()
        np.testing.assert_array_equal(kernel, arrays[f"{conv}/weights"].transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(bias, np.zeros_like(bias))
        gamma, beta, mean, variance = backbone.get_layer(keras_name[:-4] + "bn").get_weights()
        np.testing.assert_array_equal(gamma, arrays[f"{scale}/weights"])
        np.testing.assert_array_equal(beta, arrays[f"{scale}/biases"])
        np.testing.assert_array_equal(mean, arrays[f"{bn}/mean"])
        np.testing.assert_array_equal(variance, arrays[f"{bn}/variance"])


@pytest.fixture(scope="module")
def tiny_resnet():
    return get_backbone("resnet101_os8", tiny=True, depths=(1, 4, 2, 1))


def test_deeplab_npz_lands_in_the_right_layers(tiny_resnet, tmp_path):
    arrays = caffe_arrays_for(tiny_resnet)
    assert "res3b3_branch2c/weights" in arrays and "res4b_branch2c/weights" in arrays
    np.savez(tmp_path / "deeplab.npz", **arrays)
    loaded = load_deeplab_resnet_weights(tiny_resnet, tmp_path / "deeplab.npz")
    assert "fc1000" in loaded and "conv3_block4_3_bn" in loaded
    assert_caffe_arrays_loaded(tiny_resnet, arrays)
    kernel = tiny_resnet.get_layer("fc1000").kernel
    np.testing.assert_array_equal(kernel[0, 0], arrays["fc1000/weights"].T)


def test_deeplab_h5_with_caffe_tensorflow_names_and_hwio(tiny_resnet, tmp_path):
    import h5py

    arrays = caffe_arrays_for(tiny_resnet, seed=1, with_fc=False)
    renamed = {}
    for key, value in arrays.items():
        if key.startswith("scale"):
            layer, blob = key.split("/")
            key = layer.replace("scale", "bn", 1) + ("/scale" if blob == "weights" else "/offset")
        elif key.endswith("/weights"):
            value = value.transpose(2, 3, 1, 0)
        renamed[key] = value
    renamed["bn_conv1/factor"] = np.array([2.0], "float32")
    with h5py.File(tmp_path / "deeplab.h5", "w") as handle:
        for key, value in renamed.items():
            handle[key] = value
    before_fc = tiny_resnet.get_layer("fc1000").get_weights()
    loaded = load_deeplab_resnet_weights(tiny_resnet, tmp_path / "deeplab.h5", kernel_layout="HWIO")
    assert "fc1000" not in loaded
    np.testing.assert_array_equal(tiny_resnet.get_layer("fc1000").get_weights()[0], before_fc[0])
    gamma, beta, mean, variance = tiny_resnet.get_layer("conv1_bn").get_weights()
    np.testing.assert_array_equal(mean, arrays["bn_conv1/mean"] / 2)
    np.testing.assert_array_equal(variance, arrays["bn_conv1/variance"] / 2)
    np.testing.assert_array_equal(gamma, arrays["scale_conv1/weights"])
    np.testing.assert_array_equal(
        tiny_resnet.get_layer("conv4_block2_2_conv").kernel,
        arrays["res4b_branch2b/weights"].transpose(2, 3, 1, 0),
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("res3b2_branch2b/weights"), "missing key 'res3b2_branch2b/weights'"),
        (lambda a: a.pop("bn5a_branch1/variance"), "missing key 'bn5a_branch1/variance'"),
        (lambda a: a.pop("scale2a_branch2a/biases"), "missing key 'scale2a_branch2a/biases'"),
        (lambda a: a.__setitem__("fc1_voc12_c0/weights", np.zeros(3)), "fc1_voc12_c0/weights"),
        (
            lambda a: a.__setitem__("res2a_branch2a/weights", np.zeros((8, 4, 1, 1))),
            r"key 'res2a_branch2a/weights' has shape \(8, 4, 1, 1\), expected \(4, 8, 1, 1\)",
        ),
        (lambda a: a.__setitem__("bn_conv1/mean", np.zeros(3)), "key 'bn_conv1/mean' has shape"),
    ],
)
def test_deeplab_bad_files_name_the_key(tiny_resnet, tmp_path, change, message):
    arrays = caffe_arrays_for(tiny_resnet, seed=2)
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    before = snapshot(tiny_resnet)
    with pytest.raises(ValueError, match=message) as error:
        load_deeplab_resnet_weights(tiny_resnet, path)
    assert "bad.npz" in str(error.value)
    after = snapshot(tiny_resnet)
    assert all(np.array_equal(before[p], after[p]) for p in before)  # nothing half-loaded


def test_deeplab_extra_keys_can_be_ignored_and_unknown_suffix_is_rejected(tiny_resnet, tmp_path):
    arrays = caffe_arrays_for(tiny_resnet, seed=3)
    arrays["fc1_voc12_c0/weights"] = np.zeros((2, 2), "float32")
    np.savez(tmp_path / "extra.npz", **arrays)
    load_deeplab_resnet_weights(tiny_resnet, tmp_path / "extra.npz", allow_extra_keys=True)
    assert_caffe_arrays_loaded(tiny_resnet, arrays)
    (tmp_path / "weights.pkl").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported weights file type '.pkl'"):
        load_deeplab_resnet_weights(tiny_resnet, tmp_path / "weights.pkl")


# --------------------------------------------------------------------------------------------
# darknet loader
# --------------------------------------------------------------------------------------------


def expected_darknet_order(depths):
    order = ["stem_conv"]
    for stage, depth in enumerate(depths, start=1):
        order.append(f"stage{stage}_down_conv")
        for block in range(1, depth + 1):
            prefix = f"stage{stage}_block{block}"
            order += [f"{prefix}_conv1_conv", f"{prefix}_conv2_conv"]
    return order


def write_darknet_file(path, backbone, seed=0, major=0, minor=2, trailing_floats=0):
    """Writes a darknet .weights file by hand: returns the per-layer arrays written."""
    rng = np.random.default_rng(seed)
    written = {}
    with open(path, "wb") as handle:
        handle.write(struct.pack("<3i", major, minor, 0))
        handle.write(struct.pack("<q" if major * 10 + minor >= 2 else "<i", 1234))
        for name in expected_darknet_order(backbone.depths):
            kh, kw, cin, cout = backbone.get_layer(name).kernel.shape
            layer = {
                "beta": rng.normal(size=cout),
                "gamma": rng.normal(size=cout),
                "mean": rng.normal(size=cout),
                "variance": rng.uniform(0.5, 2, size=cout),
                "kernel": rng.normal(size=(cout, cin, kh, kw)),
            }
            for field in ("beta", "gamma", "mean", "variance", "kernel"):
                layer[field] = layer[field].astype("<f4")
                handle.write(layer[field].tobytes())
            written[name] = layer
        handle.write(np.ones(trailing_floats, "<f4").tobytes())  # e.g. yolov3 detection layers
    return written


@pytest.mark.parametrize("minor, trailing", [(2, 0), (1, 100)])
def test_darknet_weights_land_in_the_right_layers(tiny_backbones, tmp_path, minor, trailing):
    backbone = tiny_backbones["darknet53"]
    assert list(backbone.darknet_layer_order) == expected_darknet_order(backbone.depths)
    path = tmp_path / "tiny.weights"
    written = write_darknet_file(path, backbone, minor=minor, trailing_floats=trailing)
    loaded = load_darknet_weights(backbone, path)
    assert len(loaded) == 2 * len(written)
    for name, layer in written.items():
        np.testing.assert_array_equal(
            backbone.get_layer(name).kernel, layer["kernel"].transpose(2, 3, 1, 0)
        )
        gamma, beta, mean, variance = backbone.get_layer(name[:-4] + "bn").get_weights()
        np.testing.assert_array_equal(gamma, layer["gamma"])
        np.testing.assert_array_equal(beta, layer["beta"])
        np.testing.assert_array_equal(mean, layer["mean"])
        np.testing.assert_array_equal(variance, layer["variance"])


def test_darknet_truncated_file_names_file_and_layer(tiny_backbones, tmp_path):
    backbone = tiny_backbones["darknet53"]
    path = tmp_path / "cut.weights"
    write_darknet_file(path, backbone)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 8])
    last = backbone.darknet_layer_order[-1]
    index = len(backbone.darknet_layer_order) - 1
    expected = rf"cut\.weights.*darknet conv layer {index} \({last} kernel\)"
    with pytest.raises(ValueError, match=expected):
        load_darknet_weights(backbone, path)
    path.write_bytes(data[:10])
    with pytest.raises(ValueError, match=r"cut\.weights.*the header"):
        load_darknet_weights(backbone, path)


def test_darknet_loader_logs_unread_detection_layers(tiny_backbones, tmp_path, caplog):
    path = tmp_path / "yolo.weights"
    write_darknet_file(path, tiny_backbones["darknet53"], trailing_floats=25)
    with caplog.at_level(logging.INFO, logger="refseg_tf.backbones.weights"):
        load_darknet_weights(tiny_backbones["darknet53"], path)
    assert "100 bytes of later layers unread" in caplog.text


# --------------------------------------------------------------------------------------------
# Paper scale (slow)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_paper_scale_parameter_counts_match_keras_applications():
    assert get_backbone("vgg16_fcn").count_params() == 138_357_544  # VGG16(include_top=True)
    assert get_backbone("resnet101_os8").count_params() == 44_707_176  # ResNet101(include_top)
    darknet = get_backbone("darknet53")
    assert len(darknet.darknet_layer_order) == 52  # darknet53.conv.74 holds 52 convolutions
    widths, expected = (64, 128, 256, 512, 1024), 3 * 3 * 3 * 32 + 4 * 32
    previous = 32
    for width, depth in zip(widths, (1, 2, 8, 8, 4)):
        expected += 9 * previous * width + 4 * width
        half = width // 2
        expected += depth * (width * half + 4 * half + 9 * half * width + 4 * width)
        previous = width
    assert darknet.count_params() == expected


@pytest.mark.slow
def test_paper_scale_imagenet_loaders_with_keras_applications_models():
    source = keras.applications.ResNet101(weights=None, include_top=True, input_shape=(64, 64, 3))
    randomize_batchnorm_statistics(source)
    backbone = get_backbone("resnet101_os8")
    load_imagenet_weights(backbone, source_model=source)
    for layer in backbone.layers:
        if layer.weights and layer.name != "fc1000":
            source_weights = source.get_layer(layer.name).get_weights()
            for mine, theirs in zip(layer.get_weights(), source_weights):
                np.testing.assert_array_equal(mine, theirs)
    images = random_images(1, 64)
    probe = keras.Model(source.input, source.get_layer("conv3_block4_out").output)
    np.testing.assert_allclose(backbone(images)["C3"], probe(images), rtol=1e-4, atol=1e-4)
    del source, backbone, probe

    source = keras.applications.VGG16(weights=None, include_top=True)
    backbone = get_backbone("vgg16_fcn")
    assert len(load_imagenet_weights(backbone, source_model=source)) == 16
    images = random_images(1, 224) * 50
    logits = backbone(images)["fc8"][:, 3, 3, :]
    np.testing.assert_allclose(keras.ops.softmax(logits), source(images), rtol=1e-3, atol=1e-6)


def test_get_backbone_loads_a_weights_file_with_one_argument(tiny_backbones, tmp_path):
    path = tmp_path / "tiny.weights"
    written = write_darknet_file(path, tiny_backbones["darknet53"], seed=7)
    backbone = get_backbone("darknet53", tiny=True, weights=str(path))
    np.testing.assert_array_equal(
        backbone.get_layer("stem_conv").kernel, written["stem_conv"]["kernel"].transpose(2, 3, 1, 0)
    )
    with pytest.raises(ValueError, match="darknet53 has no keras.applications weights"):
        get_backbone("darknet53", tiny=True, weights="imagenet")

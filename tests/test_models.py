"""Tests of refseg_tf.models: LSTM-CNN family, RRN, presets and build_model (tiny sizes).

Every registered preset (`refseg_tf.models.list_presets()`) runs the common checks of
`tests.test_case` (`run_segmenter_test`, `run_preset_test`, mixed precision): a new model family
joins by being registered. One preset per model family and per backbone runs by default
(`tests.helpers.default_presets`), the others with `-m slow`."""

import ml_collections
import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import ops

from refseg_tf.backbones import get_backbone
from refseg_tf.losses import SigmoidCrossEntropyLoss, WeightedLogisticLoss
from refseg_tf.models import (
    LSTMCNN,
    RRN,
    RRN_AUTHORS_CODE,
    RRN_VARIANTS,
    TABLE1_ROWS,
    ReferringSegmenter,
    build_model,
    build_preset,
    get_preset,
    list_presets,
)
from refseg_tf.models.rrn import RecurrentRefinement

from tests.test_case import (
    IMAGE,
    TINY_HEAD,
    TINY_RESNET,
    VOCAB,
    assert_batch_equals_single_runs,
    assert_mixed_precision,
    assert_trains_and_round_trips,
    build_tiny_preset,
    preset_text_padding,
    run_preset_test,
    run_segmenter_test,
    segmenter_inputs as _inputs,
    segmenter_masks as _masks,
    to_numpy,
    word_ids,
)
from tests.helpers import preset_params


def _frozen(backbone):
    backbone.trainable = False  # RMI/RRN keep the CNN fixed; it also keeps graph tracing short
    return backbone


@pytest.fixture(scope="module")
def vgg():
    return get_backbone("vgg16_fcn", tiny=True)


@pytest.fixture(scope="module")
def resnet():
    return get_backbone("resnet101_os8", tiny=True, **TINY_RESNET)


@pytest.fixture(scope="module")
def low_res(vgg):
    return LSTMCNN(vgg, VOCAB, classifier_units=8, **TINY_HEAD)


@pytest.fixture(scope="module")
def rrn(resnet):
    return RRN(resnet, VOCAB, fused_channels=8, visual_projection_dim=8, **TINY_HEAD)


# --------------------------------------------------------------------------- every preset


# One preset per family and per backbone by default (tests.helpers.default_presets).
@pytest.mark.parametrize("name", preset_params())
def test_preset_passes_the_common_segmenter_checks(name, tmp_path):
    """Shape, stride, float32 logits, batching over mixed lengths, paddings, fit, `.keras`."""
    model, reloaded = run_segmenter_test(
        lambda: build_tiny_preset(name, frozen_backbone=True),
        tmp_path,
        paddings=preset_text_padding(name),
        run_mixed_precision=False,  # test_preset_logits_stay_float32_under_mixed_precision
    )
    assert isinstance(reloaded.loss, type(model.default_loss()))


@pytest.mark.parametrize("name", preset_params())
def test_every_registered_preset_builds_at_tiny_size(name):
    run_preset_test(name)


# One preset per family and per backbone by default; the others build the same layers (`-m slow`).
@pytest.mark.parametrize("name", preset_params())
def test_preset_logits_stay_float32_under_mixed_precision(name):
    assert_mixed_precision(lambda: build_tiny_preset(name))


@pytest.mark.parametrize("method", ["fit", "train_on_batch"])
def test_fit_builds_the_optimizer_of_a_built_model_before_keras_traces(method, monkeypatch):
    """`ReferringSegmenter.fit` / `train_on_batch` build the optimizer, then call Keras's.

    A variable created in a `tf.function`'s first trace makes TensorFlow trace it again; Keras
    (without a strategy) creates the optimizer's slots in that trace, which doubled the time to
    the first step. That every family's `fit` then creates no variable while tracing is checked
    by `tests.test_case.assert_trains_and_round_trips`. An unbuilt model is left to Keras."""
    seen = []
    monkeypatch.setattr(
        keras.Model, method, lambda self, *args, **kwargs: seen.append(self.optimizer.built)
    )
    padding = preset_text_padding("lstm_cnn")[0]
    built, unbuilt = build_tiny_preset("lstm_cnn"), build_tiny_preset("lstm_cnn")
    built(_inputs(1, padding))
    for model in (built, unbuilt):
        model.compile()
        getattr(model, method)(_inputs(2, padding), _masks(2))
    assert seen == [True, False]


# --------------------------------------------------------------------------- input contracts


@pytest.mark.parametrize("name", preset_params())
def test_preset_runs_on_what_its_input_contract_accepts_and_no_looser(name):
    """The declared contract, not the family's name, says which inputs a preset takes: every
    size and padding it accepts runs; a model that refuses more (LTS: S off a multiple of 32)
    says so in its contract."""
    contract = get_preset(name).input_contract
    model = build_tiny_preset(name, frozen_backbone=True)
    size = contract.valid_image_size(IMAGE + 1)  # not a power of two unless the contract says
    for padding in contract.text_paddings:
        logits = model(_inputs(1, padding, image_size=size), training=False)
        assert logits.shape[0] == 1
    if contract.image_size_multiple > 1:
        with pytest.raises(ValueError, match=f"multiple of {contract.image_size_multiple}"):
            model(_inputs(1, contract.text_paddings[0], image_size=size + 1), training=False)
    else:
        model(_inputs(1, contract.text_paddings[0], image_size=IMAGE + 1), training=False)


def test_input_contract_is_checked_in_one_place_naming_preset_key_and_value():
    from refseg_tf.models import InputContract, check_input_contract
    from refseg_tf.training import config as config_lib

    message = r"preset 'lts' needs `data.image_size` a multiple of 32; received 300"
    config = config_lib.base_config()
    config.model.name = "lts"
    config.data.text_padding = "back"
    config.data.image_size = 300
    with pytest.raises(ValueError, match=message + r" \(the next valid size: 320\)"):
        config_lib.validate_config(config)
    config.model.update(vocabulary_size=VOCAB, size="tiny")
    with pytest.raises(ValueError, match=message):
        build_model(config, build=True)
    config.data.update(image_size=320, text_padding="front")
    with pytest.raises(ValueError, match=r"preset 'lts' needs `data.text_padding` one of \('back',\)"):
        config_lib.validate_config(config)
    with pytest.raises(ValueError, match=r"preset 'lts' needs `image_size` .* received 33"):
        check_input_contract("lts", {"image_size": 33})
    check_input_contract("lts", {"image_size": 416, "text_padding": "back"})
    check_input_contract("rrn", {"image_size": 300, "text_padding": "front"})  # the default
    assert get_preset("rrn").input_contract == InputContract()
    for bad in (dict(image_size_multiple=0), dict(text_paddings=("left",)), dict(text_paddings=())):
        with pytest.raises(ValueError):
            InputContract(**bad)


# --------------------------------------------------------------------------- LSTM-CNN


def test_lstm_cnn_low_res_outputs_and_paper_defaults(low_res):
    logits = low_res(_inputs(2))
    assert tuple(logits.shape) == (2, 2, 2, 1) and logits.dtype == "float32"
    assert low_res.output_stride == 32 and low_res.threshold == 0.5
    loss = low_res.default_loss()
    assert isinstance(loss, WeightedLogisticLoss) and loss.label_mode == "any"
    assert (loss.foreground_weight, loss.background_weight) == (3.0, 1.0)
    optimizer = low_res.default_optimizer()
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert np.isclose(float(optimizer.learning_rate), 0.01) and optimizer.momentum == 0.9
    names = [metric.name for metric in low_res.default_metrics()]
    assert names == ["overall_iou", "mean_iou", "precision@0.5"]


def test_lstm_cnn_with_masked_padding_passes_the_segmenter_checks(tmp_path):
    """The class defaults mask the pads: front and back padding give the same logits.

    Fit + `.keras` of LSTMCNN (its WeightedLogisticLoss compiled): the `lstm_cnn` preset's
    common checks, the same class and loss with the pad mask off."""
    model, _ = run_segmenter_test(
        lambda: LSTMCNN(
            _frozen(get_backbone("vgg16_fcn", tiny=True)), VOCAB, classifier_units=8, **TINY_HEAD
        ),
        tmp_path,
        padding_invariant=True,
        expected_stride=32,
        run_training=False,
        run_mixed_precision=False,  # test_logits_stay_float32_under_mixed_precision
    )
    assert model.mask_text_padding is True
    assert isinstance(model.default_loss(), WeightedLogisticLoss)


def test_high_resolution_model_from_low_resolution(low_res, tmp_path):
    high = LSTMCNN.from_low_resolution(low_res)
    assert high.upsampling == "deconv" and high.output_stride == 1
    assert high.loss_config["background_weight"] == pytest.approx(1 / 3)
    for name in ("backbone", "fusion", "score_conv"):
        for ours, theirs in zip(getattr(high, name).weights, getattr(low_res, name).weights):
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    inputs = _inputs(2)
    upsampled = to_numpy(high(inputs))
    assert upsampled.shape == (2, IMAGE, IMAGE, 1)
    coarse = to_numpy(low_res(inputs))
    bilinear = tf.image.resize(coarse, (IMAGE, IMAGE)).numpy()
    inner = slice(16, 48)  # between the centres of the outer cells of the 2x2 grid
    np.testing.assert_allclose(upsampled[:, inner, inner], bilinear[:, inner, inner], atol=1e-5)
    # A high-resolution stage trains through the deconvolution.
    assert any("upsample" in v.path for v in high.trainable_variables)

    path = str(tmp_path / "low.keras")
    low_res.save(path)
    from_file = LSTMCNN.from_low_resolution(path)
    np.testing.assert_allclose(to_numpy(from_file(inputs)), upsampled, atol=1e-5)
    with pytest.raises(ValueError, match="low-resolution"):
        LSTMCNN.from_low_resolution(high)
    with pytest.raises(FileNotFoundError):
        LSTMCNN.from_low_resolution(str(tmp_path / "missing.keras"))


def test_predict_probabilities_and_masks(low_res):
    inputs = _inputs(3)
    probabilities = low_res.predict_probabilities(inputs)
    assert probabilities.shape == (3, IMAGE, IMAGE, 1)
    expected = tf.sigmoid(tf.image.resize(to_numpy(low_res(inputs)), (IMAGE, IMAGE))).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, _masks(3))).batch(2)
    np.testing.assert_allclose(low_res.predict_probabilities(dataset), expected, atol=1e-5)
    masks = low_res.predict_masks(inputs, scoring_rule="resize_probability")
    assert masks.dtype == bool and (masks == (expected >= 0.5)).all()
    # The default, the authors' rule: TF1 bilinear logits (no half-pixel centres), >= 1e-9.
    upsampled = tf.compat.v1.image.resize_bilinear(
        to_numpy(low_res(inputs)), (IMAGE, IMAGE), align_corners=False, half_pixel_centers=False
    ).numpy()
    assert (low_res.predict_masks(inputs) == (upsampled >= 1e-9)).all()


def test_hu_preset_runs_the_lstm_over_front_pads(vgg):
    """Hu's code has no pad mask: front and back padding then give different logits."""
    model = build_preset("lstm_cnn", VOCAB, size="tiny", backbone=vgg)
    assert model.mask_text_padding is False and model.fusion.text_encoder.mask_padding is False
    assert model.default_loss().pixel_reduction == "mean"
    front = to_numpy(model(_inputs(4, "front")))
    back = to_numpy(model(_inputs(4, "back")))
    assert not np.allclose(front, back, atol=1e-6)


def test_logits_stay_float32_under_mixed_precision():
    model = assert_mixed_precision(
        lambda: build_preset("lstm_cnn", VOCAB, size="tiny", stage="high")
    )
    assert model.upsampling == "deconv"


@pytest.mark.parametrize(
    "name, feature, projection, kernel, loss_class, resolution",
    [
        ("r_lstm", "fc1000", None, 1, SigmoidCrossEntropyLoss, "logits"),
        ("d_lstm", "C5", 8, 1, SigmoidCrossEntropyLoss, "logits"),
        ("d_lstm_ours", "C5", 8, 3, SigmoidCrossEntropyLoss, "image"),
    ],
)
def test_rmi_and_rrn_baselines(resnet, name, feature, projection, kernel, loss_class, resolution):
    model = build_preset(name, VOCAB, size="tiny", backbone=resnet)
    assert model.visual_feature == feature and model.visual_projection_dim == projection
    assert model.score_kernel_size == kernel and model.output_stride == 8
    loss = model.default_loss()
    assert isinstance(loss, loss_class) and loss.resolution == resolution
    if resolution == "logits":
        assert loss.label_mode == "point"  # the RMI code's TF1 resize_bilinear target
    assert loss.pixel_reduction == "sum"  # the RMI/RRN code's util/loss.py
    assert model.mask_text_padding is True  # the RMI code skips <pad> steps
    assert isinstance(model.default_optimizer(), keras.optimizers.Adam)
    logits = to_numpy(model(_inputs(2)))
    assert logits.shape == (2, IMAGE // 8, IMAGE // 8, 1) and np.isfinite(logits).all()


# --------------------------------------------------------------------------- RRN


def test_rrn_outputs_defaults_and_batching(rrn):
    logits = rrn(_inputs(2))
    assert tuple(logits.shape) == (2, 8, 8, 1) and logits.dtype == "float32"
    assert rrn.output_stride == 8
    loss = rrn.default_loss()
    assert isinstance(loss, SigmoidCrossEntropyLoss) and loss.resolution == "image"
    assert rrn.refinement.update == "lstm" and rrn.refinement.activation == "tanh"
    assert list(rrn.laterals) == ["C5", "C4", "C3"]
    for padding in ("front", "back"):
        assert_batch_equals_single_runs(rrn, padding, count=3)


# Rows 4-6 and 14 only change the pyramid length or order of rows that run by default.
_SLOW_ROWS = (4, 5, 6, 14)
RRN_CASES = [
    pytest.param(dict(table1_row=row), marks=[pytest.mark.slow] if row in _SLOW_ROWS else [])
    for row in sorted(TABLE1_ROWS)
] + [dict(initial_state="input"), dict(lstm_cell="unrolled"), dict(RRN_AUTHORS_CODE)]


@pytest.mark.parametrize("case", RRN_CASES, ids=lambda case: "-".join(map(str, case.values())))
def test_rrn_variants_build_and_run(resnet, case):
    model = build_preset("rrn", VOCAB, size="tiny", backbone=resnet, **case)
    logits = to_numpy(model(_inputs(2), training=False))
    assert logits.shape == (2, 8, 8, 1) and np.isfinite(logits).all()
    row = TABLE1_ROWS.get(case.get("table1_row"), {"variant": "lstm_tanh"})
    assert model.variant == row["variant"]
    assert (model.refinement.update, model.refinement.activation) == RRN_VARIANTS[row["variant"]]
    pyramid = row.get("pyramid", ("C5", "C4", "C3"))
    assert model.pyramid == tuple(pyramid) and model.refinement.num_steps == len(pyramid)
    channels = resnet.feature_channels
    expected = sum(channels[level] * 8 + 8 for level in dict.fromkeys(pyramid))
    assert sum(layer.count_params() for layer in model.laterals.values()) == expected


def test_rrn_with_unrolled_cell_serves_any_image_size(resnet):
    model = build_preset("rrn", VOCAB, size="tiny", backbone=resnet, lstm_cell="unrolled")
    inputs = _inputs(2)
    expected = to_numpy(model(inputs))
    signature = {
        "image": tf.TensorSpec([None, None, None, 3]),
        "word_ids": tf.TensorSpec([None, None], tf.int32),
    }
    traced = tf.function(lambda x: model(x, training=False), input_signature=[signature])
    np.testing.assert_allclose(to_numpy(traced(inputs)), expected, atol=1e-5)
    larger = {"image": np.zeros((1, 96, 96, 3), "float32"), "word_ids": word_ids(1)}
    assert tuple(traced(larger).shape) == (1, 12, 12, 1)


def test_rrn_laterals_resize_stride4_levels_to_the_q_grid(resnet):
    model = build_preset("rrn", VOCAB, size="tiny", backbone=resnet, table1_row=7)
    assert resnet.feature_strides["C1"] == 4 and resnet.feature_strides["C5"] == 8
    assert tuple(model(_inputs(1)).shape) == (1, 8, 8, 1)


# --------------------------------------------------------------------------- build_model


def test_build_model_from_config_dict():
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict(
        dict(
            name="rrn",
            size="tiny",
            vocabulary_size=VOCAB,
            backbone=dict(name="resnet101_os8", kwargs=dict(TINY_RESNET)),
            table1_row=9,
            loss=dict(resolution="logits"),
            threshold=0.4,
        )
    )
    model = build_model(config)
    assert isinstance(model, RRN) and model.variant == "rnn" and model.threshold == 0.4
    assert model.backbone.depths == (1, 1, 1, 1)
    assert model.loss_config == {
        "name": "sigmoid_cross_entropy",
        "label_mode": "binary",
        "resolution": "logits",
        "reduction": "sum",
    }
    high = build_model(
        {"name": "lstm_cnn", "size": "tiny", "vocabulary_size": VOCAB, "stage": "high"}
    )
    assert isinstance(high, LSTMCNN) and high.upsampling == "deconv"
    assert high.backbone.name == "vgg16_fcn"
    optimizer = build_model(
        {"model": {"name": "d_lstm", "size": "tiny", "vocabulary_size": VOCAB,
                   "backbone": "resnet101_os8", "optimizer": {"learning_rate": 1e-3}}}
    ).default_optimizer()
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert np.isclose(float(optimizer.learning_rate), 1e-3)


def test_build_model_rejects_bad_configs():
    base = {"size": "tiny", "vocabulary_size": VOCAB}
    with pytest.raises(ValueError, match="config.model.name"):
        build_model({"vocabulary_size": VOCAB})
    with pytest.raises(ValueError, match="vocabulary_size"):
        build_model({"name": "rrn"})
    with pytest.raises(ValueError, match="Unknown model preset"):
        build_model(dict(base, name="unet"))
    with pytest.raises(ValueError, match="does not take"):
        build_model(dict(base, name="lstm_cnn", pyramid=("C5",)))
    with pytest.raises(ValueError, match="stage"):
        build_model(dict(base, name="rrn", stage="high"))
    with pytest.raises(ValueError, match="table1_row"):
        build_model(dict(base, name="rrn", table1_row=2))


def test_every_family_package_registers_its_presets_and_experiments():
    """The preset list is the registry's: each family package under refseg_tf/models/ registers
    presets of its own model class(es) on import, and each library preset has a registered
    experiment (`refseg_tf/models/<family>/experiments.py`). Presets of test-only packages
    (a throw-away family) are left out."""
    import os

    import refseg_tf.models as models_package
    from refseg_tf.training import experiments

    root = os.path.dirname(models_package.__file__)
    families = sorted(
        entry for entry in os.listdir(root) if os.path.isfile(os.path.join(root, entry, "__init__.py"))
    )
    assert list_presets() == sorted(list_presets())
    by_family = {}
    for name in list_presets():
        module = get_preset(name).model_class.__module__
        if module.startswith("refseg_tf."):
            assert module.startswith("refseg_tf.models."), (name, module)
            by_family.setdefault(module.split(".")[2], []).append(name)
    assert sorted(by_family) == families, (sorted(by_family), families)
    library_presets = {name for names in by_family.values() for name in names}
    trained = {experiments.get_experiment(name).model.name for name in experiments.list_experiments()}
    assert library_presets <= trained, sorted(library_presets - trained)


def test_models_reject_bad_arguments(vgg, resnet, low_res):
    with pytest.raises(ValueError, match="not a feature"):
        LSTMCNN(vgg, VOCAB, visual_feature="C5")
    with pytest.raises(ValueError, match="pyramid"):
        RRN(resnet, VOCAB, pyramid=("C5", "C6"))
    with pytest.raises(ValueError, match="variant"):
        RRN(resnet, VOCAB, variant="gru")
    with pytest.raises(ValueError, match="threshold"):
        LSTMCNN(vgg, VOCAB, threshold=1.5)
    with pytest.raises(ValueError, match="label_mode"):
        LSTMCNN(vgg, VOCAB, loss_config={"label_mode": "max"})
    with pytest.raises(ValueError, match="upsampling"):
        LSTMCNN(vgg, VOCAB, upsampling="bilinear")
    with pytest.raises(TypeError, match="Backbone"):
        LSTMCNN(keras.Sequential([keras.layers.Dense(2)]), VOCAB)
    with pytest.raises(ValueError, match="'image'"):
        low_res(np.zeros((1, IMAGE, IMAGE, 3), "float32"))
    assert isinstance(low_res, ReferringSegmenter)


def test_refinement_is_a_registered_layer_of_the_model(rrn):
    assert isinstance(rrn.refinement, RecurrentRefinement)
    assert keras.saving.get_registered_name(RRN) == "refseg_tf>RRN"


# --------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.parametrize("name", list_presets())
def test_every_preset_fits_with_a_trainable_backbone(name, tmp_path):
    model = build_tiny_preset(name)
    assert_trains_and_round_trips(model, tmp_path, padding=preset_text_padding(name)[0])


@pytest.mark.parametrize("preset, frozen", [("d_lstm", True), ("r_lstm", False)])
def test_visual_text_segmenter_freezes_fc1000_only_when_another_feature_is_read(
    resnet, preset, frozen
):
    # refseg_tf/models/visual_text.py: LSTMCNN, RMI and RRN share VisualTextSegmenter; a model
    # reading C5 (D+LSTM) freezes the backbone's unused fc1000, R+LSTM (reads fc1000) trains it.
    from refseg_tf.models import LSTMCNN, RMI, RRN
    from refseg_tf.models.visual_text import VisualTextSegmenter

    assert all(issubclass(cls, VisualTextSegmenter) for cls in (LSTMCNN, RMI, RRN))
    model = build_preset(preset, VOCAB, size="tiny", backbone=resnet)
    fc1000 = model.backbone.get_layer("fc1000")
    fc1000.trainable = True  # the `resnet` fixture is shared between the cases
    model.freeze_for_training(ml_collections.ConfigDict())
    config = model.visual_text_config()
    assert set(VisualTextSegmenter.VISUAL_TEXT_KEYS) <= set(config) and "backbone" in config
    assert fc1000.trainable is (not frozen)
    fc1000.trainable = True

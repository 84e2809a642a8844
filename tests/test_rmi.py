"""Tests of the RMI family (refseg_tf.models.rmi): MultimodalLSTM, RMI, presets, configs, maps."""

import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import ops

from refseg_tf.backbones import get_backbone
from refseg_tf.losses import SigmoidCrossEntropyLoss
from refseg_tf.models import RMI, MultimodalLSTM, build_preset, get_preset
from refseg_tf.models.rmi import ClippedArctanh
from tests.test_param_counts import PAPER_CHANNELS, rmi_head
from tests.test_case import (
    IMAGE,
    TINY_RESNET,
    VOCAB,
    assert_batch_equals_single_runs,
    run_layer_test,
    save_and_reload,
    segmenter_inputs as _inputs,
    to_numpy,
)

GRID, STEPS, UNITS = 3, 4, 5
CHANNELS = (6, 7, 9, 8)  # visual, word embedding, word-LSTM state, spatial


def _layer_inputs(batch=3, seed=0, lengths=(4, 2, 1)):
    rng = np.random.default_rng(seed)
    visual = rng.normal(size=(batch, GRID, GRID, CHANNELS[0])).astype("float32")
    words = rng.normal(size=(batch, STEPS, CHANNELS[1])).astype("float32")
    text = rng.normal(size=(batch, STEPS, CHANNELS[2])).astype("float32")
    spatial = rng.normal(size=(batch, GRID, GRID, CHANNELS[3])).astype("float32")
    mask = np.zeros((batch, STEPS), bool)
    for row, length in enumerate((list(lengths) * batch)[:batch]):
        mask[row, STEPS - length :] = True  # front padding
    return visual, words, text, spatial, mask


@pytest.fixture(scope="module")
def resnet():
    return get_backbone("resnet101_os8", tiny=True, **TINY_RESNET)


@pytest.fixture(scope="module")
def r_rmi(resnet):
    return build_preset("r_rmi", VOCAB, size="tiny", backbone=resnet)


# --------------------------------------------------------------------------- MultimodalLSTM


def _reference_conv_lstm(layer, visual, words, text, spatial, mask):
    """A direct 1x1 convolutional LSTM over the tiled [v; w; h; s] input (numpy)."""
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    batch, steps = words.shape[:2]
    hidden = np.zeros((batch, GRID, GRID, UNITS), "float32")
    carry = np.zeros_like(hidden)
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    outputs = []
    for t in range(steps):
        tile = lambda v: np.broadcast_to(v[:, None, None, :], (batch, GRID, GRID, v.shape[-1]))  # noqa: E731
        tiled = np.concatenate([visual, tile(words[:, t]), tile(text[:, t]), spatial, hidden], -1)
        gates = np.einsum("bhwc,cg->bhwg", tiled, kernel) + bias  # the 1x1 convolution
        i, g, f, o = np.split(gates, 4, axis=-1)
        new_carry = sigmoid(f) * carry + sigmoid(i) * np.tanh(g)
        new_hidden = sigmoid(o) * np.tanh(new_carry)
        real = mask[:, t, None, None, None]
        hidden, carry = np.where(real, new_hidden, hidden), np.where(real, new_carry, carry)
        outputs.append(hidden)
    return np.stack(outputs, axis=1)


def test_split_gates_equal_a_direct_1x1_convolution_over_the_concatenated_input():
    layer = MultimodalLSTM(UNITS)
    inputs = _layer_inputs()
    layer(*inputs[:4], word_mask=inputs[4])
    kernel, bias = layer.get_weights()
    assert kernel.shape == (sum(CHANNELS) + UNITS, 4 * UNITS)
    # Forget-gate bias 1, the others 0 (gate order i, g, f, o).
    np.testing.assert_array_equal(bias, np.repeat([0.0, 0.0, 1.0, 0.0], UNITS))
    layer.set_weights([kernel, np.random.default_rng(1).normal(size=bias.shape)])
    expected = _reference_conv_lstm(layer, *inputs)
    sequences = to_numpy(layer(*inputs[:4], word_mask=inputs[4], return_sequences=True))
    np.testing.assert_allclose(sequences, expected, atol=1e-5)
    final = to_numpy(layer(*inputs[:4], word_mask=inputs[4]))
    np.testing.assert_allclose(final, expected[:, -1], atol=1e-5)


def test_mlstm_batch_equals_single_runs_with_different_lengths():
    layer = MultimodalLSTM(UNITS)
    inputs = _layer_inputs(lengths=(4, 1, 3))
    batched = to_numpy(layer(*inputs[:4], word_mask=inputs[4]))
    for index in range(3):
        single = [x[index : index + 1] for x in inputs]
        np.testing.assert_allclose(
            batched[index], to_numpy(layer(*single[:4], word_mask=single[4]))[0], atol=1e-6
        )
    # A pad step keeps the state: the one-word sentence equals a one-step run.
    last = [x[1:2, -1:] if x.ndim == 3 or x.ndim == 2 else x[1:2] for x in inputs]
    one_step = to_numpy(layer(last[0], last[1], last[2], last[3]))
    np.testing.assert_allclose(batched[1], one_step[0], atol=1e-6)


def _layer_model(layer):
    visual = keras.Input((GRID, GRID, CHANNELS[0]))
    words = keras.Input((STEPS, CHANNELS[1]))
    text = keras.Input((STEPS, CHANNELS[2]))
    spatial = keras.Input((GRID, GRID, CHANNELS[3]))
    mask = keras.Input((STEPS,), dtype="bool")
    hidden = layer(visual, words, text, spatial, word_mask=mask)
    return keras.Model([visual, words, text, spatial, mask], keras.layers.Dense(1)(hidden))


def test_mlstm_trains_and_round_trips(tmp_path):
    model = _layer_model(MultimodalLSTM(UNITS, name="mlstm"))
    inputs = list(_layer_inputs(batch=4))
    target = np.random.default_rng(2).normal(size=(4, GRID, GRID, 1)).astype("float32")
    model.compile(keras.optimizers.Adam(0.01), "mse")
    before = [np.array(w) for w in model.get_layer("mlstm").get_weights()]
    losses = [float(model.train_on_batch(inputs, target)) for _ in range(5)]
    assert losses[-1] < losses[0]
    after = model.get_layer("mlstm").get_weights()
    assert all(not np.allclose(b, a) for b, a in zip(before, after))

    path = str(tmp_path / "mlstm.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(reloaded(inputs)), to_numpy(model(inputs)), atol=1e-6)
    assert reloaded.get_layer("mlstm").get_config() == model.get_layer("mlstm").get_config()


def test_mlstm_compiles_with_xla():
    layer = MultimodalLSTM(UNITS)
    inputs = _layer_inputs()
    eager = to_numpy(layer(*inputs[:4], word_mask=inputs[4]))
    compiled = tf.function(lambda *x: layer(*x[:4], word_mask=x[4]), jit_compile=True)
    np.testing.assert_allclose(to_numpy(compiled(*inputs)), eager, atol=1e-5)


def test_paper_scale_mlstm_parameter_count():
    layer = MultimodalLSTM(500)
    layer.build((1, 40, 40, 1000), (1, 20, 1000), (1, 20, 1000), (1, 40, 40, 8))
    assert layer.count_params() == (3008 + 500) * 2000 + 2000 == 7_018_000


def test_mlstm_and_arctanh_reject_bad_inputs_and_compute_the_head():
    with pytest.raises(ValueError, match="`units` must be"):
        MultimodalLSTM(0)
    values = np.array([[-0.5, 0.0, 0.9, 1.0]], "float32")
    expected = 0.5 * (np.log(1.001 + values) - np.log(1.001 - values))
    np.testing.assert_allclose(to_numpy(ClippedArctanh()(values)), expected, rtol=1e-5)
    assert np.isfinite(to_numpy(ClippedArctanh()(values))).all()


# --------------------------------------------------------------------------- RMI model


def test_rmi_outputs_defaults_and_batching(r_rmi):
    logits = r_rmi(_inputs(2))
    assert tuple(logits.shape) == (2, IMAGE // 8, IMAGE // 8, 1) and logits.dtype == "float32"
    assert r_rmi.output_stride == 8 and r_rmi.visual_feature == "fc1000"
    assert r_rmi.visual_projection is None and r_rmi.output_transform == "atanh_relu"
    loss = r_rmi.default_loss()
    assert isinstance(loss, SigmoidCrossEntropyLoss) and loss.resolution == "logits"
    optimizer = r_rmi.default_optimizer()
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert np.isclose(float(optimizer.learning_rate), 2.5e-4)
    for padding in ("front", "back"):
        assert_batch_equals_single_runs(r_rmi, padding, count=4)


def test_rmi_extra_front_pad_steps_change_nothing(r_rmi):
    inputs = _inputs(4)
    longer = dict(inputs, word_ids=np.pad(inputs["word_ids"], ((0, 0), (3, 0))))
    np.testing.assert_allclose(to_numpy(r_rmi(longer)), to_numpy(r_rmi(inputs)), atol=1e-6)


def test_d_rmi_projects_c5_and_the_plain_head_variant(resnet):
    model = build_preset("d_rmi", VOCAB, size="tiny", backbone=resnet)
    assert model.visual_feature == "C5" and model.visual_projection_dim == 8
    assert np.isfinite(to_numpy(model(_inputs(2)))).all()
    plain = build_preset("r_rmi", VOCAB, size="tiny", backbone=resnet, output_transform="none")
    assert plain.arctanh is None and np.isfinite(to_numpy(plain(_inputs(2)))).all()
    with pytest.raises(ValueError, match="output_transform"):
        RMI(resnet, VOCAB, output_transform="tanh")
    with pytest.raises(ValueError, match="not a feature"):
        RMI(resnet, VOCAB, visual_feature="C6")


def test_rmi_is_registered_and_round_trips(r_rmi, tmp_path):
    """Training + `.keras` of every preset: tests/test_models.py (run_segmenter_test)."""
    reloaded = save_and_reload(r_rmi, tmp_path)
    assert isinstance(reloaded, RMI) and isinstance(reloaded.mlstm, MultimodalLSTM)
    inputs = _inputs(2)
    np.testing.assert_allclose(to_numpy(reloaded(inputs)), to_numpy(r_rmi(inputs)), atol=1e-5)
    assert keras.saving.get_registered_name(RMI) == "refseg_tf>RMI"


@pytest.mark.parametrize(
    "layer_cls, init_kwargs, args, kwargs, shape",
    [
        (MultimodalLSTM, dict(units=UNITS), _layer_inputs()[:4],
         dict(word_mask=_layer_inputs()[4]), (3, GRID, GRID, UNITS)),
        (MultimodalLSTM, dict(units=UNITS), _layer_inputs()[:4],
         dict(return_sequences=True, word_mask=_layer_inputs()[4]),
         (3, STEPS, GRID, GRID, UNITS)),
        (ClippedArctanh, {}, (np.tanh(_layer_inputs()[0]),), {}, (3, GRID, GRID, CHANNELS[0])),
    ],
    ids=["mlstm", "mlstm_sequences", "clipped_arctanh"],
)
def test_rmi_layers_pass_the_common_layer_checks(layer_cls, init_kwargs, args, kwargs, shape):
    run_layer_test(layer_cls, init_kwargs, args, call_kwargs=kwargs, expected_output_shape=shape)


def test_rmi_explain_gives_one_map_per_real_word_at_image_size(r_rmi):
    inputs = _inputs(3)  # sentences of 5, 1 and 3 words
    explanation = r_rmi.explain(inputs)
    maps, is_word = to_numpy(explanation["maps"]), to_numpy(explanation["is_word"])
    assert maps.shape == (3, inputs["word_ids"].shape[1], IMAGE, IMAGE)
    np.testing.assert_array_equal(is_word.sum(axis=1), [5, 1, 3])
    np.testing.assert_array_equal(is_word, inputs["word_ids"] != 0)
    # The last map is the channel mean of the (atanh) state the head reads, upsampled.
    hidden, _ = r_rmi._mlstm_states(inputs, training=False, return_sequences=False)
    mean = to_numpy(ops.mean(r_rmi.arctanh(hidden), axis=-1, keepdims=True))
    expected = tf.image.resize(mean, (IMAGE, IMAGE)).numpy()[..., 0]
    np.testing.assert_allclose(maps[:, -1], expected, atol=1e-5)



def test_rmi_explain_labels_its_steps_with_the_words_read(r_rmi):
    """RMI turns `is_word` into labels itself: the word at each real step, None at a pad."""
    inputs = _inputs(3)
    words = [f"w{i}" for i in range(VOCAB)]
    explanation = r_rmi.explain(inputs, words=words)
    ids = np.asarray(inputs["word_ids"])
    for row, labels in zip(ids, explanation["labels"]):
        assert labels == tuple(words[i] if i else None for i in row)
    unnamed = r_rmi.explain(inputs)["labels"][1]  # one word: "word 1", the rest None
    assert [label for label in unnamed if label is not None] == ["word 1"]


def test_capabilities_have_refusing_defaults_on_the_base_class(resnet):
    """Shared code asks the declared capabilities (no hasattr); the defaults refuse clearly."""
    model = build_preset("d_lstm", VOCAB, size="tiny", backbone=resnet)
    assert not model.has_heatmap and not model.has_explanation and not model.takes_word_vectors
    assert model.has_detail_hook and model.inference_model() is model
    with pytest.raises(ValueError, match="LSTMCNN has no per-step maps"):
        model.explain(_inputs(1))
    with pytest.raises(ValueError, match="LSTMCNN has no localisation heatmap"):
        model.heatmap(_inputs(1))
    with pytest.raises(ValueError, match=r"LSTMCNN takes no word vectors.*\(3, 4\)"):
        model.load_word_vectors(np.zeros((3, 4)))
    assert build_preset("r_rmi", VOCAB, size="tiny", backbone=resnet).has_explanation


# --------------------------------------------------------------------------- presets, counts

VOCAB_COCO = 12112


def test_rmi_head_formula_gives_the_hand_computed_paper_counts():
    # r_rmi: embedding 12,112,000 + word LSTM 8,004,000 + mLSTM 7,018,000 + score 501.
    assert rmi_head(VOCAB_COCO, PAPER_CHANNELS) == 27_134_501
    # d_rmi: + conv0 (2048 -> 1000, 2,049,000); fc1000 of the backbone is unused.
    assert rmi_head(VOCAB_COCO, PAPER_CHANNELS, "C5", projection=1000) == 29_183_501


@pytest.mark.parametrize("name", ["r_rmi", "d_rmi"])
def test_paper_scale_rmi_heads_on_tiny_backbones(name, resnet):
    model = build_preset(name, VOCAB_COCO, backbone=resnet)
    model(_inputs(1) | {"image": np.zeros((1, 16, 16, 3), "float32")}, training=False)
    head = model.count_params() - resnet.count_params()
    preset = get_preset(name)
    feature = preset.kwargs["visual_feature"]
    projection = preset.kwargs.get("visual_projection_dim")
    assert head == rmi_head(VOCAB_COCO, resnet.feature_channels, feature, projection)


# --------------------------------------------------------------------------- configs


RMI_ROWS = [f"{m}_rmi_{d}" for m in ("r", "d") for d in ("unc", "uncplus", "gref", "referit")]


@pytest.mark.parametrize("name", RMI_ROWS)
def test_rmi_rows_follow_the_authors_recipe(name):
    from tests.test_experiments import PAPER_IOU, build_tiny, load_experiment

    config = load_experiment(name)
    assert config.model.name == name[:5]
    assert config.data.sentences == "all" and config.data.tokenizer == "authors"
    assert config.data.image_size == 320 and config.data.max_length == 20
    assert config.data.text_padding == "front" and config.data.normalization == "caffe_bgr"
    optimizer = config.train.optimizer
    assert (optimizer.name, optimizer.learning_rate, optimizer.epsilon) == ("adam", 2.5e-4, 1e-8)
    assert (optimizer.schedule, optimizer.decay_steps, optimizer.power) == (
        "polynomial", 750000, 0.9,
    )
    assert optimizer.end_learning_rate == 1e-5 and config.train.batch_size == 1
    assert config.train.weight_decay_scope == "conv_kernels"
    assert config.train.freeze_backbone
    if name.startswith("r_"):
        assert config.train.backbone_weights == "imagenet"
        assert tuple(config.train.trainable_backbone_layers) == ("fc1000",)
    else:
        assert config.train.backbone_weights.endswith(".npz")
        assert tuple(config.train.trainable_backbone_layers) == ()
    assert dict(config.paper.overall_iou) == PAPER_IOU[name]
    assert "--dense_crf" in config.description
    crf = dict(config.paper.overall_iou_dense_crf)
    assert set(crf) == set(PAPER_IOU[name])
    assert all(crf[split] >= PAPER_IOU[name][split] - 0.5 for split in crf)
    if name.endswith("_unc"):
        model, logits = build_tiny(config)
        assert isinstance(model, RMI) and logits.shape == (1, 8, 8, 1)
    else:  # the UNC row's model (built there): `build_tiny` reads config.model and max_length
        assert config.model.to_dict() == load_experiment(name[:5] + "_unc").model.to_dict()


# --------------------------------------------------------------------------- pictures


def test_step_maps_picture_has_a_panel_per_word(tmp_path):
    from refseg_tf import visualize

    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    maps = np.random.default_rng(1).normal(size=(3, 30, 40)).astype("float32")
    picture = visualize.render_step_maps(image, maps, ["a", "b", "c"], title="a b c", padding=2)
    assert picture.dtype == np.uint8
    # Four panels (title + 3 words) of 40 px in a 2 x 2 grid.
    assert picture.shape[1] == 2 * 40 + 3 * 2 and picture.shape[0] > 2 * 30
    with pytest.raises(ValueError, match="labels"):
        visualize.render_step_maps(image, maps, ["a"])
    with pytest.raises(ValueError, match="maps must have shape"):
        visualize.render_step_maps(image, maps[:, :10], ["a", "b", "c"])
    colors = visualize.heat_colors(np.array([0.0, 1.0]))
    assert tuple(colors[0]) == (0, 0, 96) and tuple(colors[1]) == (255, 255, 96)


@pytest.mark.parametrize("name, panels", [("r_rmi", 4), ("rrn", 4)])
def test_predict_explain_writes_one_panel_per_step(tmp_path, resnet, name, panels):
    from PIL import Image

    from refseg_tf.inference import Predictor
    from refseg_tf.predict import default_explain_path, explain_to_file
    from refseg_tf.text import Vocabulary
    from refseg_tf.training import experiments

    config = experiments.synthetic_rmi("r_rmi")
    config.data.image_size = IMAGE
    vocabulary = Vocabulary.build(["the red circle on the left"])
    model = build_preset(name, len(vocabulary), size="tiny", backbone=resnet)
    predictor = Predictor(model, config, vocabulary)
    image = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    path = default_explain_path(str(tmp_path / "mask.png"))
    assert path.endswith("mask_explain.jpg")
    written = explain_to_file(predictor, image, "the red square", path)
    with Image.open(written) as picture:
        width, height = picture.size
    # Title + 3 words ("square" is <unk>) or 3 levels: a 2 x 2 grid of 80-px-wide panels.
    columns = int(np.ceil(np.sqrt(panels)))
    assert width == columns * 80 + (columns + 1) * 4 and height > 2 * 48


@pytest.mark.parametrize("case", [{}, {"lstm_cell": "unrolled", "initial_state": "input"}])
def test_rrn_explain_gives_the_state_after_each_refinement_step(resnet, case):
    model = build_preset("rrn", VOCAB, size="tiny", backbone=resnet, **case)
    inputs = _inputs(2)
    explanation = model.explain(inputs)
    labels = ("q",) * (case.get("initial_state") == "input") + ("C5", "C4", "C3")
    assert explanation["labels"] == [labels, labels]  # one tuple per example
    maps = to_numpy(explanation["maps"])
    assert maps.shape == (2, len(labels), IMAGE, IMAGE) and np.isfinite(maps).all()
    # The last map is the channel mean of the state the score convolution reads.
    image_features = model.backbone(inputs["image"])
    fused = model.fusion(image_features["C5"], inputs["word_ids"])
    laterals = [model.laterals[lv](model.resize(image_features[lv], fused)) for lv in model.pyramid]
    final = model.refinement(fused, laterals)
    mean = to_numpy(ops.mean(final, axis=-1, keepdims=True))
    expected = tf.image.resize(mean, (IMAGE, IMAGE)).numpy()[..., 0]
    np.testing.assert_allclose(maps[:, -1], expected, atol=1e-5)


def test_rmi_logits_stay_float32_under_mixed_precision(resnet):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_preset("d_rmi", VOCAB, size="tiny", backbone_kwargs=TINY_RESNET)
        logits = model(_inputs(2))
        maps = model.explain(_inputs(2))["maps"]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.mlstm.compute_dtype == "float16"
    assert logits.dtype == "float32" and np.isfinite(to_numpy(logits)).all()
    assert maps.dtype == "float32" and np.isfinite(to_numpy(maps)).all()

"""Tests of refseg_tf.layers, RRN's refinement layers and refseg_tf.losses: values, shapes,
batching, training, saving. Every layer also runs `tests.test_case.run_layer_test`
(`test_layer_passes_the_common_layer_checks`)."""

import functools

import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import ops

from refseg_tf.layers import (
    BilinearUpsamplingInitializer,
    L2Normalize,
    LSTMTextEncoder,
    ResizeLike,
    SpatialCoordinates,
    TextVisualFusion,
    TileToSpatial,
    bilinear_kernel_1d,
    resize_bilinear,
)
from refseg_tf.models.rrn import ConvLSTMStep, RecurrentRefinement, SampleLayerNormalization
from refseg_tf.losses import (
    SigmoidCrossEntropyLoss,
    WeightedLogisticLoss,
    downsample_mask,
    get_loss,
    weighted_logistic_loss,
)
from refseg_tf.models.rrn import ConvLSTMStep, RecurrentRefinement, SampleLayerNormalization
from tests.test_case import VOCAB, run_layer_test, save_and_reload, to_numpy
from tests.helpers import random_array


# --------------------------------------------------------------------------- spatial helpers


def test_spatial_coordinates_values_follow_cell_borders():
    grid = to_numpy(SpatialCoordinates()(ops.zeros((3, 2, 4, 5))))
    assert grid.shape == (3, 2, 4, 8)
    np.testing.assert_allclose(grid[0], grid[2])  # broadcast over the batch
    # x borders of column 1 of 4: [-0.5, 0.0], centre -0.25; y of row 1 of 2: [0, 1].
    np.testing.assert_allclose(grid[0, 1, 1], [-0.5, 0.0, 0.0, 1.0, -0.25, 0.5, 0.25, 0.5])
    np.testing.assert_allclose(grid[0, 0, 0, :6], [-1.0, -1.0, -0.5, 0.0, -0.75, -0.5])
    np.testing.assert_allclose(grid[0, 1, 3, 2:4], [1.0, 1.0])


def test_spatial_coordinates_with_dynamic_shape_matches_eager():
    layer = SpatialCoordinates()
    features = np.zeros((2, 3, 5, 4), np.float32)
    traced = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 4])])
    np.testing.assert_allclose(to_numpy(traced(features)), to_numpy(layer(features)))


def test_l2_normalize_unit_norm_zero_safe_and_float16_safe():
    values = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    out = to_numpy(L2Normalize()(values))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)
    big = np.full((1, 1000), 100.0, np.float16)  # sum of squares 1e7 overflows float16
    out16 = to_numpy(L2Normalize(dtype="mixed_float16")(big))
    np.testing.assert_allclose(out16.astype(np.float32), 1 / np.sqrt(1000), rtol=1e-3)


def test_tile_to_spatial_copies_the_vector_everywhere():
    vector = np.arange(6, dtype=np.float32).reshape(2, 3)
    tiled = to_numpy(TileToSpatial()(vector, ops.zeros((2, 4, 5, 1))))
    assert tiled.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(tiled[1, 3, 4], vector[1])


@pytest.mark.parametrize("size", [(7, 9), (2, 3), (8, 8)])
def test_resize_bilinear_static_and_dynamic_paths_match_tf(size):
    images = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype(np.float32)
    expected = tf.image.resize(images, size, method="bilinear").numpy()
    np.testing.assert_allclose(to_numpy(resize_bilinear(images, size)), expected, atol=1e-5)
    dynamic = tf.function(
        lambda x, h, w: resize_bilinear(x, (h, w)),
        input_signature=[
            tf.TensorSpec([None, None, None, 3]),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ],
    )
    np.testing.assert_allclose(to_numpy(dynamic(images, *size)), expected, atol=1e-5)


def test_resize_like_takes_the_reference_size():
    layer = ResizeLike()
    maps = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
    assert tuple(layer(maps, ops.zeros((2, 4, 4, 1))).shape) == (2, 4, 4, 3)
    np.testing.assert_array_equal(to_numpy(layer(maps, ops.zeros((2, 8, 8, 5)))), maps)


def test_spatial_layers_survive_keras_save_load(tmp_path):
    features = keras.Input((None, None, 4))
    text = keras.Input((6,))
    coords = SpatialCoordinates()(features)
    outputs = keras.layers.Concatenate()(
        [L2Normalize()(features), TileToSpatial()(text, features), coords]
    )
    outputs = ResizeLike()(outputs, keras.layers.AveragePooling2D(2)(features))
    model = keras.Model([features, text], outputs)
    inputs = [np.random.rand(2, 4, 6, 4).astype("float32"), np.random.rand(2, 6).astype("float32")]
    reloaded = save_and_reload(model, tmp_path)
    np.testing.assert_allclose(to_numpy(reloaded(inputs)), to_numpy(model(inputs)), atol=1e-6)


# --------------------------------------------------------------------------- upsampling


def test_bilinear_kernel_profile():
    np.testing.assert_allclose(bilinear_kernel_1d(4), [0.25, 0.75, 0.75, 0.25])
    profile = bilinear_kernel_1d(64)
    assert profile.shape == (64,) and np.isclose(profile.sum(), 32.0)


def test_bilinear_deconvolution_reproduces_bilinear_resize_inside_the_map():
    stride = 4
    deconv = keras.layers.Conv2DTranspose(
        1,
        2 * stride,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer=BilinearUpsamplingInitializer(),
    )
    coarse = np.random.default_rng(2).normal(size=(2, 5, 5, 1)).astype(np.float32)
    upsampled = to_numpy(deconv(coarse))
    expected = tf.image.resize(coarse, (20, 20), method="bilinear").numpy()
    inner = slice(stride, -stride)  # borders differ: zero padding vs edge clamping
    np.testing.assert_allclose(upsampled[:, inner, inner], expected[:, inner, inner], atol=1e-5)
    with pytest.raises(ValueError, match="square kernel"):
        BilinearUpsamplingInitializer()((4, 4, 2, 1))


# --------------------------------------------------------------------------- text encoder


def _front_pad(ids, length):
    return [0] * (length - len(ids)) + list(ids)


def _back_pad(ids, length):
    return list(ids) + [0] * (length - len(ids))


SENTENCES = [[5, 6, 7, 8, 9], [4], [3, 11, 12], [7, 7]]


@pytest.fixture(scope="module")
def encoder():
    layer = LSTMTextEncoder(VOCAB, embedding_dim=8, units=12)
    layer(np.zeros((1, 6), "int32"))
    return layer


@pytest.mark.parametrize("pad", [_front_pad, _back_pad])
def test_text_encoder_batch_equals_single_unpadded_runs(encoder, pad):
    batch = np.array([pad(s, 6) for s in SENTENCES], "int32")
    encoded = to_numpy(encoder(batch))
    assert encoded.shape == (4, 12)
    for index, sentence in enumerate(SENTENCES):
        alone = to_numpy(encoder(np.array([sentence], "int32")))[0]
        np.testing.assert_allclose(encoded[index], alone, atol=1e-6)


def test_text_encoder_front_and_back_padding_agree_and_pads_only_give_zero(encoder):
    front = to_numpy(encoder(np.array([_front_pad(s, 7) for s in SENTENCES], "int32")))
    back = to_numpy(encoder(np.array([_back_pad(s, 7) for s in SENTENCES], "int32")))
    np.testing.assert_allclose(front, back, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(encoder(np.zeros((2, 4), "int32"))), 0.0)
    assert not np.allclose(front[0], front[1])


def test_text_encoder_without_padding_mask_runs_over_the_pad_steps(encoder):
    """Hu's lstm_net.py: no mask, the LSTM reads the learned <pad> embedding at front pads."""
    layer = LSTMTextEncoder(VOCAB, 8, 12, mask_padding=False)
    layer.build((None, 6))
    layer.set_weights(encoder.get_weights())
    ids = np.array([_front_pad(s, 6) for s in SENTENCES], "int32")
    # Reference: a plain Keras LSTM over every embedded step, pads included.
    embedding, kernel, recurrent, bias = encoder.get_weights()
    reference = keras.layers.LSTM(12)
    reference.build((None, 6, 8))
    reference.set_weights([kernel, recurrent, bias])
    expected = to_numpy(reference(embedding[ids]))
    np.testing.assert_allclose(to_numpy(layer(ids)), expected, atol=1e-5)
    assert not np.allclose(to_numpy(layer(ids)), to_numpy(encoder(ids)), atol=1e-4)
    assert float(np.abs(to_numpy(layer(np.zeros((1, 4), "int32")))).max()) > 0  # pads are read
    again = LSTMTextEncoder.from_config(layer.get_config())
    assert again.mask_padding is False


def test_text_encoder_sequence_outputs(encoder):
    layer = LSTMTextEncoder(VOCAB, 8, 12, return_sequences=True)
    layer.build((None, 6))
    layer.set_weights(encoder.get_weights())
    ids = np.array([_front_pad(s, 6) for s in SENTENCES], "int32")
    out = layer(ids)
    assert tuple(out["sequence"].shape) == (4, 6, 12)
    assert tuple(out["embeddings"].shape) == (4, 6, 8)
    np.testing.assert_array_equal(to_numpy(out["mask"]), ids != 0)
    np.testing.assert_allclose(to_numpy(out["final"]), to_numpy(encoder(ids)), atol=1e-6)
    np.testing.assert_allclose(to_numpy(out["sequence"])[:, -1], to_numpy(out["final"]), atol=1e-6)


def test_text_encoder_trains_and_round_trips(tmp_path):
    ids = keras.Input((5,), dtype="int32")
    model = keras.Model(ids, keras.layers.Dense(1)(LSTMTextEncoder(VOCAB, 8, 8)(ids)))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    x = np.array([_front_pad(s, 5) for s in SENTENCES], "int32")
    y = np.array([[1.0], [-1.0], [0.5], [0.0]], np.float32)
    losses = [float(model.train_on_batch(x, y)) for _ in range(8)]
    assert losses[-1] < losses[0]
    reloaded = save_and_reload(model, tmp_path)
    np.testing.assert_allclose(to_numpy(reloaded(x)), to_numpy(model(x)), atol=1e-6)
    with pytest.raises(ValueError, match="vocabulary_size"):
        LSTMTextEncoder(1)


# --------------------------------------------------------------------------- fusion


def test_text_visual_fusion_shapes_batching_and_extra_features(tmp_path):
    fusion = TextVisualFusion(
        VOCAB, embedding_dim=8, text_units=8, fused_channels=6, visual_projection_dim=5
    )
    rng = np.random.default_rng(3)
    visual = rng.normal(size=(3, 4, 4, 7)).astype(np.float32)
    ids = np.array([_front_pad(s, 5) for s in SENTENCES[:3]], "int32")
    fused = to_numpy(fusion(visual, ids))
    assert fused.shape == (3, 4, 4, 6) and (fused >= 0).all()
    for index in range(3):
        single = to_numpy(fusion(visual[index : index + 1], ids[index : index + 1]))
        np.testing.assert_allclose(fused[index], single[0], atol=1e-5)
    # conv1x1 over [projected 5 + text 8 + spatial 8] -> 6, plus projection, embedding, LSTM.
    expected = (7 * 5 + 5) + VOCAB * 8 + 4 * (8 + 8 + 1) * 8 + (5 + 8 + 8) * 6 + 6
    assert fusion.count_params() == expected

    with_extra = TextVisualFusion(VOCAB, embedding_dim=8, text_units=8, fused_channels=6)
    extra = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    assert tuple(with_extra(visual, ids, extra_features=extra).shape) == (3, 4, 4, 6)
    assert with_extra.fusion_conv.kernel.shape == (1, 1, 7 + 8 + 8 + 2, 6)

    visual_in = keras.Input((None, None, 7))
    ids_in = keras.Input((5,), dtype="int32")
    model = keras.Model([visual_in, ids_in], fusion(visual_in, ids_in))
    reloaded = save_and_reload(model, tmp_path)
    np.testing.assert_allclose(to_numpy(reloaded([visual, ids])), fused, atol=1e-5)


# --------------------------------------------------------------------------- refinement

REFINEMENT_CASES = [
    dict(update="plain", activation="relu"),
    dict(update="rnn", activation="relu"),
    dict(update="rnn", activation="tanh"),
    dict(update="fpn", activation=None),
    dict(update="lstm", activation="relu"),
    dict(update="lstm", activation="tanh"),
    dict(update="lstm", activation="tanh", lstm_cell="layer_norm", peephole="spatial"),
    dict(update="lstm", activation="tanh", lstm_cell="layer_norm", peephole="channel"),
    dict(update="lstm", activation="tanh", lstm_cell="layer_norm"),
    dict(update="lstm", activation="relu", lstm_cell="unrolled"),
    dict(update="lstm", activation="tanh", lstm_cell="unrolled", peephole="channel"),
]


def _refinement_params(units, steps, case, initial_state, grid=4, kernel=1):
    total = steps + (1 if initial_state == "input" else 0)
    conv = kernel * kernel * 2 * units * units + units
    if case["update"] == "plain":
        return total * conv
    if case["update"] == "rnn":
        return conv
    if case["update"] == "fpn":
        return 0
    if case.get("lstm_cell", "keras") == "keras":
        return 4 * units * (kernel * kernel * 2 * units + 1)
    peephole = {None: 0, "channel": 3 * units, "spatial": 3 * grid * grid * units}
    # layer norm: gamma and beta for 5 maps and no conv bias; otherwise a conv bias of 4 units.
    extra = 10 * units if case["lstm_cell"] == "layer_norm" else 4 * units
    return kernel * kernel * 2 * units * 4 * units + extra + peephole[case.get("peephole")]


@pytest.mark.parametrize("initial_state", ["hidden", "input"])
@pytest.mark.parametrize("case", REFINEMENT_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_recurrent_refinement_variants(case, initial_state):
    rng = np.random.default_rng(4)
    q = rng.normal(size=(3, 4, 4, 6)).astype(np.float32)
    xs = [rng.normal(size=(3, 4, 4, 6)).astype(np.float32) for _ in range(3)]
    layer = RecurrentRefinement(6, 3, initial_state=initial_state, **case)
    out = to_numpy(layer(q, xs))
    assert out.shape == (3, 4, 4, 6) and np.isfinite(out).all()
    assert layer.count_params() == _refinement_params(6, 3, case, initial_state)
    single = to_numpy(layer(q[1:2], [x[1:2] for x in xs]))
    np.testing.assert_allclose(out[1], single[0], atol=1e-5)
    if case["update"] == "fpn":
        np.testing.assert_allclose(out, q + sum(xs), atol=1e-5)
    if case["update"] == "plain" and initial_state == "hidden":
        # The first update only sees h_0 = q: changing q changes the output.
        assert not np.allclose(to_numpy(layer(q * 0, xs)), out)


def test_recurrent_refinement_hidden_mode_starts_from_q_and_sequences():
    rng = np.random.default_rng(5)
    q = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    xs = [rng.normal(size=(2, 3, 3, 4)).astype(np.float32) for _ in range(2)]
    for cell in ("keras", "unrolled", "layer_norm"):
        layer = RecurrentRefinement(4, 2, lstm_cell=cell, return_sequences=True)
        states = to_numpy(layer(q, xs))
        assert states.shape == (2, 2, 3, 3, 4)
        assert not np.allclose(to_numpy(layer(q + 1.0, xs)), states)  # h_0 = q matters
    input_mode = RecurrentRefinement(4, 2, initial_state="input", return_sequences=True)
    assert tuple(input_mode(q, xs).shape) == (2, 3, 3, 3, 4)


def test_keras_conv_lstm_path_matches_a_hand_written_lstm():
    rng = np.random.default_rng(6)
    q = rng.normal(size=(1, 2, 2, 3)).astype(np.float32)
    xs = [rng.normal(size=(1, 2, 2, 3)).astype(np.float32) for _ in range(2)]
    layer = RecurrentRefinement(3, 2, update="lstm", activation="tanh")
    out = to_numpy(layer(q, xs))
    kernel, recurrent, bias = [np.asarray(w) for w in layer.step_layers[0].get_weights()]
    h, c = q.reshape(-1, 3), np.zeros((4, 3), np.float32)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for x in xs:
        z = x.reshape(-1, 3) @ kernel.reshape(3, 12) + h @ recurrent.reshape(3, 12) + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
    np.testing.assert_allclose(out.reshape(-1, 3), h, atol=1e-5)


def _keras_to_step_gate_order(weights):
    """Keras ConvLSTM gate order (i, f, c, o) -> ConvLSTMStep order (candidate, i, f, o)."""
    input_gate, forget_gate, candidate, output_gate = np.split(weights, 4, axis=-1)
    return np.concatenate([candidate, input_gate, forget_gate, output_gate], axis=-1)


def test_unrolled_cell_equals_keras_conv_lstm_and_handles_any_size():
    rng = np.random.default_rng(11)
    q = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    xs = [rng.normal(size=(2, 4, 4, 3)).astype(np.float32) for _ in range(3)]
    reference = RecurrentRefinement(3, 3, kernel_size=3)
    unrolled = RecurrentRefinement(3, 3, kernel_size=3, lstm_cell="unrolled", forget_bias=0.0)
    expected = to_numpy(reference(q, xs))
    unrolled(q, xs)
    kernel, recurrent, bias = reference.step_layers[0].get_weights()
    unrolled.step_layers[0].gates.set_weights(
        [
            _keras_to_step_gate_order(np.concatenate([kernel, recurrent], axis=2)),
            _keras_to_step_gate_order(bias),
        ]
    )
    np.testing.assert_allclose(to_numpy(unrolled(q, xs)), expected, atol=1e-5)
    # Unlike ConvLSTM2D, the unrolled cell also runs on another map size.
    small = [x[:, :3, :3] for x in xs]
    assert tuple(unrolled(q[:, :3, :3], small).shape) == (2, 3, 3, 3)


def test_layer_norm_cell_matches_reference_formulas():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 3, 3, 2)).astype(np.float32)
    h = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    c = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    cell = ConvLSTMStep(4, layer_norm=True, peephole="channel", epsilon=1e-6)
    new_h, new_c = (to_numpy(t) for t in cell(x, h, c))
    for norm in cell.norms.values():  # non-trivial scale and offset
        norm.set_weights([rng.normal(size=4).astype("float32") for _ in range(2)])
    new_h, new_c = (to_numpy(t) for t in cell(x, h, c))

    def norm(name, v):
        gamma, beta = [np.asarray(w) for w in cell.norms[name].get_weights()]
        mean = v.mean(axis=(1, 2, 3), keepdims=True)
        var = v.var(axis=(1, 2, 3), keepdims=True)
        return (v - mean) / np.sqrt(var + 1e-6) * gamma + beta

    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    kernel = np.asarray(cell.gates.get_weights()[0]).reshape(6, 16)
    peep = {k: np.asarray(v) for k, v in cell.peephole_weights.items()}
    z = np.concatenate([x, h], -1) @ kernel
    j, i, f, o = np.split(z, 4, axis=-1)
    i = norm("input", i + peep["input"] * c)
    f = norm("forget", f + peep["forget"] * c)
    j = norm("candidate", j)
    c_ref = sigmoid(f + 1.0) * c + sigmoid(i) * np.tanh(j)
    o = norm("output", o + peep["output"] * c_ref)
    c_ref = norm("cell", c_ref)
    np.testing.assert_allclose(new_c, c_ref, atol=1e-4)
    np.testing.assert_allclose(new_h, sigmoid(o) * np.tanh(c_ref), atol=1e-4)


def test_sample_layer_normalization_is_per_example():
    values = np.random.default_rng(8).normal(size=(2, 3, 3, 4)).astype(np.float32) * 5 + 2
    out = to_numpy(SampleLayerNormalization(epsilon=1e-6)(values))
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1.0, atol=1e-3)


def test_recurrent_refinement_rejects_bad_configurations():
    with pytest.raises(ValueError, match="update must be"):
        RecurrentRefinement(4, 3, update="gru")
    with pytest.raises(ValueError, match="without activation"):
        RecurrentRefinement(4, 3, update="fpn", activation="relu")
    with pytest.raises(ValueError, match="peephole"):
        RecurrentRefinement(4, 3, update="lstm", peephole="spatial")
    with pytest.raises(ValueError, match="initial_state"):
        RecurrentRefinement(4, 3, initial_state="zeros")
    layer = RecurrentRefinement(4, 2)
    with pytest.raises(ValueError, match="2 pyramid inputs"):
        layer(ops.zeros((1, 2, 2, 4)), [ops.zeros((1, 2, 2, 4))] * 3)
    with pytest.raises(ValueError, match="static feature-map size"):
        cell = ConvLSTMStep(4, peephole="spatial")
        cell.build((None, None, None, 2), (None, None, None, 4), (None, None, None, 4))


@pytest.mark.parametrize(
    "case",
    [dict(update="plain", activation="relu"), dict(update="lstm", activation="tanh")]
    + [dict(update="lstm", activation="tanh", lstm_cell="layer_norm", peephole="spatial")],
    ids=["plain", "conv_lstm", "layer_norm_cell"],
)
def test_recurrent_refinement_trains_and_round_trips(case, tmp_path):
    q_in = keras.Input((4, 4, 4))
    x_in = [keras.Input((4, 4, 4)) for _ in range(2)]
    refined = RecurrentRefinement(4, 2, **case)(q_in, x_in)
    model = keras.Model([q_in] + x_in, keras.layers.Conv2D(1, 1)(refined))
    rng = np.random.default_rng(9)
    inputs = [rng.normal(size=(2, 4, 4, 4)).astype(np.float32) for _ in range(3)]
    target = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    losses = [float(model.train_on_batch(inputs, target)) for _ in range(6)]
    assert losses[-1] < losses[0]
    reloaded = save_and_reload(model, tmp_path)
    np.testing.assert_allclose(to_numpy(reloaded(inputs)), to_numpy(model(inputs)), atol=1e-5)


# --------------------------------------------------------------------------- losses


def _block_mask():
    """8x8 mask: top-left 4x4 block full, top-right block with one pixel, bottom-left half."""
    mask = np.zeros((1, 8, 8, 1), np.float32)
    mask[0, :4, :4] = 1
    mask[0, 0, 7] = 1
    mask[0, 4:6, :4] = 1
    return mask


def test_downsample_mask_modes():
    mask = _block_mask()
    np.testing.assert_array_equal(downsample_mask(mask, (2, 2), "any")[0, ..., 0], [[1, 1], [1, 0]])
    np.testing.assert_allclose(
        to_numpy(downsample_mask(mask, (2, 2), "soft"))[0, ..., 0], [[1, 1 / 16], [0.5, 0]]
    )
    np.testing.assert_array_equal(
        downsample_mask(mask, (2, 2), "binary")[0, ..., 0], [[1, 0], [1, 0]]
    )
    np.testing.assert_array_equal(downsample_mask(mask[..., 0], (8, 8), "any"), mask)
    with pytest.raises(ValueError, match="multiple of the grid size"):
        downsample_mask(mask, (3, 3), "any")
    with pytest.raises(ValueError, match="label mode"):
        downsample_mask(mask, (2, 2), "max")


def test_weighted_logistic_loss_values():
    mask = _block_mask()
    logits = np.zeros((1, 2, 2, 1), np.float32)
    # At logit 0 every cell costs log 2 times its class weight; "any" label has 3 positives.
    loss = WeightedLogisticLoss(3.0, 1.0, label_mode="any")
    np.testing.assert_allclose(float(loss(mask, logits)), (3 * 3 + 1) / 4 * np.log(2), rtol=1e-6)
    soft = WeightedLogisticLoss(2.0, 1.0, label_mode="soft")
    share = np.array([1, 1 / 16, 0.5, 0])
    expected = np.mean(2 * share + (1 - share)) * np.log(2)
    np.testing.assert_allclose(float(soft(mask, logits)), expected, rtol=1e-6)
    # Confident correct logits cost almost nothing, confident wrong ones a lot.
    good = np.where(downsample_mask(mask, (2, 2), "any") > 0, 20.0, -20.0)
    assert float(loss(mask, good)) < 1e-6
    assert float(loss(mask, -good)) > 10


def test_image_resolution_loss_upsamples_logits_and_matches_keras_bce():
    rng = np.random.default_rng(10)
    mask = (rng.random((2, 16, 16, 1)) > 0.5).astype(np.float32)
    logits = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
    upsampled = tf.compat.v1.image.resize_bilinear(logits, (16, 16)).numpy()  # TF1, the default
    reference = keras.losses.BinaryCrossentropy(from_logits=True)(mask, upsampled)
    ours = SigmoidCrossEntropyLoss(resolution="image")(mask, logits)
    np.testing.assert_allclose(float(ours), float(reference), rtol=1e-5)
    per_example = to_numpy(weighted_logistic_loss(mask, logits, resolution="image"))
    assert per_example.shape == (2,)
    np.testing.assert_allclose(per_example.mean(), float(ours), rtol=1e-6)


def test_loss_configs_round_trip_and_names():
    loss = WeightedLogisticLoss(3.0, 0.5, label_mode="soft", resolution="image")
    clone = WeightedLogisticLoss.from_config(loss.get_config())
    assert (clone.foreground_weight, clone.background_weight) == (3.0, 0.5)
    assert (clone.label_mode, clone.resolution) == ("soft", "image")
    bce = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
        SigmoidCrossEntropyLoss(label_mode="any")
    ))
    assert isinstance(bce, SigmoidCrossEntropyLoss) and bce.label_mode == "any"
    assert isinstance(get_loss("weighted_logistic", foreground_weight=2.0), WeightedLogisticLoss)
    with pytest.raises(ValueError, match="Unknown loss"):
        get_loss("dice")
    with pytest.raises(ValueError, match="resolution"):
        WeightedLogisticLoss(resolution="features")


def test_loss_gradient_pushes_logits_towards_the_mask():
    mask = _block_mask()
    logits = tf.Variable(np.zeros((1, 2, 2, 1), np.float32))
    with tf.GradientTape() as tape:
        value = WeightedLogisticLoss(3.0, 1.0, label_mode="any")(mask, logits)
    gradient = tape.gradient(value, logits).numpy()[0, ..., 0]
    assert (gradient[[0, 0, 1], [0, 1, 0]] < 0).all() and gradient[1, 1] > 0


# --------------------------------------------------------------------------- common layer checks


_IDS = np.array([_front_pad(s, 5) for s in SENTENCES[:3]], "int32")
_random = functools.partial(random_array, seed=12)  # this file's seeds
_MAPS = [_random(2, 4, 4, 4, seed=s) for s in (1, 2)]
# (id, layer class, constructor kwargs, positional call arguments, expected output shape)
LAYER_CASES = [
    ("spatial_coordinates", SpatialCoordinates, {}, (_random(2, 3, 4, 5),), (2, 3, 4, 8)),
    ("l2_normalize", L2Normalize, {}, (_random(2, 3, 4, 5),), (2, 3, 4, 5)),
    ("tile_to_spatial", TileToSpatial, {}, (_random(2, 3), _random(2, 4, 5, 1)), (2, 4, 5, 3)),
    ("resize_like", ResizeLike, {}, (_random(2, 8, 8, 3), _random(2, 4, 4, 1)), (2, 4, 4, 3)),
    ("text_encoder", LSTMTextEncoder, dict(vocabulary_size=VOCAB, embedding_dim=4, units=5),
     (_IDS,), (3, 5)),
    ("text_encoder_unmasked", LSTMTextEncoder,
     dict(vocabulary_size=VOCAB, embedding_dim=4, units=5, mask_padding=False), (_IDS,), (3, 5)),
    ("text_encoder_sequences", LSTMTextEncoder,
     dict(vocabulary_size=VOCAB, embedding_dim=4, units=5, return_sequences=True), (_IDS,),
     {"sequence": (3, 5, 5), "final": (3, 5), "embeddings": (3, 5, 4), "mask": (3, 5)}),
    ("fusion", TextVisualFusion,
     dict(vocabulary_size=VOCAB, embedding_dim=4, text_units=4, fused_channels=6,
          visual_projection_dim=5), (_random(3, 4, 4, 7), _IDS), (3, 4, 4, 6)),
    ("sample_layer_norm", SampleLayerNormalization, {}, (_random(2, 3, 3, 4),), (2, 3, 3, 4)),
    ("conv_lstm_step", ConvLSTMStep, dict(units=4, layer_norm=True, peephole="spatial"),
     (_random(2, 3, 3, 2), _random(2, 3, 3, 4), _random(2, 3, 3, 4, seed=3)),
     [(2, 3, 3, 4), (2, 3, 3, 4)]),
    ("refinement_conv_lstm", RecurrentRefinement, dict(units=4, num_steps=2),
     (_random(2, 4, 4, 4), _MAPS), (2, 4, 4, 4)),
    ("refinement_plain", RecurrentRefinement,
     dict(units=4, num_steps=2, update="plain", activation="relu"),
     (_random(2, 4, 4, 4), _MAPS), (2, 4, 4, 4)),
    ("refinement_layer_norm_input", RecurrentRefinement,
     dict(units=4, num_steps=2, lstm_cell="layer_norm", peephole="channel", initial_state="input",
          return_sequences=True), (_random(2, 4, 4, 4), _MAPS), (2, 3, 4, 4, 4)),
    ("refinement_unrolled", RecurrentRefinement,
     dict(units=4, num_steps=2, lstm_cell="unrolled"), (_random(2, 4, 4, 4), _MAPS),
     (2, 4, 4, 4)),
]


@pytest.mark.parametrize(
    "layer_cls, init_kwargs, args, shape", [case[1:] for case in LAYER_CASES],
    ids=[case[0] for case in LAYER_CASES],
)
def test_layer_passes_the_common_layer_checks(layer_cls, init_kwargs, args, shape):
    run_layer_test(layer_cls, init_kwargs, args, expected_output_shape=shape)


def test_bilinear_initializer_config_round_trip():
    initializer = BilinearUpsamplingInitializer()
    clone = BilinearUpsamplingInitializer.from_config(initializer.get_config())
    assert clone.get_config() == initializer.get_config()
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(initializer)
    )
    assert isinstance(restored, BilinearUpsamplingInitializer)
    np.testing.assert_array_equal(
        to_numpy(restored((4, 4, 1, 1))), to_numpy(initializer((4, 4, 1, 1)))
    )

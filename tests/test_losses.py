"""The losses and labels against the authors' rules, written out here in numpy / TF1 terms.

References (read from the authors' public code, re-expressed in numpy):
- per-pixel loss: `sigmoid_cross_entropy_with_logits(v, z) = max(v, 0) - v z + log(1 + e^-|v|)`;
  Hu's `util/loss.py` takes the mean over every score, the RMI/RRN `util/loss.py` the sum over
  [1, 2, 3] (the grid) and then the mean over the batch;
- RMI's 40x40 target: TF1 `resize_bilinear(mask320, [40, 40])` (align_corners=False, no
  half-pixel centres) = pixel (8i, 8j);
- weight decay: `0.0005 * sum(tf.nn.l2_loss(w))` over the `DW` variables (the convolution
  kernels outside the LSTMs), added to the data term.
"""

import numpy as np
import pytest
import tensorflow as tf

from refseg_tf.data.transforms import downsample_label
from refseg_tf.labels import LABEL_MODES, downsample_mask
from refseg_tf.losses import SigmoidCrossEntropyLoss, WeightedLogisticLoss
from refseg_tf.losses import downsample_mask as loss_downsample_mask


def _numpy_bce(logits, labels):
    return np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))


def _example(seed=0, size=40):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (2, size, size, 1)).astype(np.float32)
    mask = (rng.uniform(size=(2, size, size, 1)) < 0.3).astype(np.float32)
    return mask, logits


# --------------------------------------------------------------------------- reductions


def test_sum_and_mean_reductions_equal_hand_computed_values():
    mask, logits = _example()
    per_pixel = _numpy_bce(logits.astype(np.float64), mask)
    hu_mean = per_pixel.mean()  # tf.reduce_mean over every score
    rmi_sum = per_pixel.sum(axis=(1, 2, 3)).mean()  # reduce_sum over the grid, mean over batch
    mean_loss = SigmoidCrossEntropyLoss(pixel_reduction="mean")
    sum_loss = SigmoidCrossEntropyLoss(pixel_reduction="sum")
    assert float(mean_loss(mask, logits)) == pytest.approx(hu_mean, rel=1e-5)
    assert float(sum_loss(mask, logits)) == pytest.approx(rmi_sum, rel=1e-5)
    assert rmi_sum / hu_mean == pytest.approx(1600, rel=1e-6)


def test_weighted_sum_reduction_equals_the_weighted_sum():
    mask, logits = _example(1)
    weights = mask * 1.0 + (1 - mask) / 3.0  # Hu's high-resolution weights (1, 1/3)
    expected = (_numpy_bce(logits.astype(np.float64), mask) * weights).sum(axis=(1, 2, 3)).mean()
    loss = WeightedLogisticLoss(1.0, 1.0 / 3.0, pixel_reduction="sum")
    assert float(loss(mask, logits)) == pytest.approx(expected, rel=1e-5)


def test_pixel_reduction_survives_get_config_and_rejects_bad_values():
    loss = SigmoidCrossEntropyLoss(label_mode="point", pixel_reduction="sum")
    again = SigmoidCrossEntropyLoss.from_config(loss.get_config())
    assert (again.pixel_reduction, again.label_mode) == ("sum", "point")
    with pytest.raises(ValueError, match="pixel_reduction"):
        SigmoidCrossEntropyLoss(pixel_reduction="total")


def test_model_loss_config_reduction_reaches_the_loss():
    from refseg_tf.models import build_preset

    model = build_preset("d_lstm", 20, size="tiny")
    assert model.loss_config["reduction"] == "sum"
    assert model.default_loss().pixel_reduction == "sum"
    hu = build_preset("lstm_cnn", 20, size="tiny")
    assert hu.default_loss().pixel_reduction == "mean"
    with pytest.raises(ValueError, match="reduction"):
        build_preset("d_lstm", 20, size="tiny", loss_config={"reduction": "max"})


# --------------------------------------------------------------------------- point labels


def test_point_labels_sample_pixel_8i_8j():
    rng = np.random.default_rng(2)
    mask = (rng.uniform(size=(2, 320, 320, 1)) < 0.5).astype(np.float32)
    expected = mask[:, ::8, ::8, :]  # label[i, j] = mask[8i, 8j]
    np.testing.assert_array_equal(np.asarray(downsample_mask(mask, (40, 40), "point")), expected)
    np.testing.assert_array_equal(np.asarray(loss_downsample_mask(mask, (40, 40), "point")), expected)
    np.testing.assert_array_equal(downsample_label(mask[0], 40, "point").numpy(), expected[0])
    # ... which is what the RMI code's TF1 resize_bilinear computed.
    tf1 = tf.compat.v1.image.resize_bilinear(
        mask, [40, 40], align_corners=False, half_pixel_centers=False
    ).numpy()
    np.testing.assert_array_equal(tf1, expected)


def test_point_labels_at_an_uneven_factor_take_the_floor_pixel():
    mask = np.arange(10 * 10, dtype=np.float32).reshape(1, 10, 10, 1)
    rows = [i * 10 // 4 for i in range(4)]  # floor(i * S / g) = 0, 2, 5, 7
    expected = mask[:, rows][:, :, rows]
    np.testing.assert_array_equal(np.asarray(downsample_mask(mask, (4, 4), "point")), expected)


def test_pipeline_and_loss_share_one_label_rule():
    from refseg_tf.data import transforms
    from refseg_tf.losses import LABEL_MODES as loss_modes

    assert transforms.LABEL_MODES is LABEL_MODES and loss_modes is LABEL_MODES
    rng = np.random.default_rng(3)
    mask = (rng.uniform(size=(3, 64, 64, 1)) < 0.4).astype(np.float32)
    for mode in LABEL_MODES:
        np.testing.assert_array_equal(
            downsample_label(mask, 8, mode).numpy(), np.asarray(loss_downsample_mask(mask, (8, 8), mode))
        )


# --------------------------------------------------------------------------- decay vs data


# The RRN code's `DW` variables (LSTM_model_convlstm_p543.py `_conv`): mlp0, fusion, the
# laterals and score, by the library's layer names. Not: the embedding, the word LSTM
# (`kernel` in TF >= 1.2) or the ConvLSTM (`util/cell.py` `kernel`, peepholes, layer norms).
RRN_DW_LAYERS = (
    "fusion/visual_projection/kernel",
    "fusion/fusion_conv/kernel",
    "lateral_C5/kernel",
    "lateral_C4/kernel",
    "lateral_C3/kernel",
    "score/kernel",
)


def _is_authors_dw(path):
    return any(path.endswith(name) for name in RRN_DW_LAYERS)


def test_l2_to_data_ratio_of_a_built_rrn_matches_the_authors_code():
    """Sum over pixels + decay on conv kernels: the balance of the authors' total loss."""
    import keras

    from refseg_tf.models import RRN_AUTHORS_CODE, build_preset
    from refseg_tf.training.optimizers import apply_weight_decay

    keras.utils.set_random_seed(4)
    size = 64
    model = build_preset("rrn", 20, size="tiny", **RRN_AUTHORS_CODE)
    rng = np.random.default_rng(4)
    inputs = {
        "image": rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32),
        "word_ids": rng.integers(1, 20, (2, 6)).astype(np.int32),
    }
    logits = model(inputs, training=False)
    model.backbone.trainable = False  # RRN: DeepLab frozen
    apply_weight_decay(model, 5e-4, "conv_kernels")
    mask = (rng.uniform(size=(2, size, size, 1)) < 0.3).astype(np.float32)

    library = float(sum(model.losses)) / float(model.default_loss()(mask, logits))

    # The authors' terms, from the variables and logits alone.
    kernels = [v for v in model.trainable_weights if _is_authors_dw(v.path)]
    assert len(kernels) == len(RRN_DW_LAYERS)
    l2 = 5e-4 * sum(0.5 * float(np.sum(np.square(v.numpy()))) for v in kernels)
    up = tf.compat.v1.image.resize_bilinear(
        np.asarray(logits), [size, size], align_corners=False, half_pixel_centers=False
    ).numpy()
    data = _numpy_bce(up.astype(np.float64), mask).sum(axis=(1, 2, 3)).mean()
    assert library == pytest.approx(l2 / data, rel=0.01)
    # With a per-pixel mean the same decay would weigh size * size times more.
    assert l2 / data < 1.0


@pytest.mark.parametrize("mode", LABEL_MODES)
def test_labels_with_shapes_known_only_at_run_time(mode):
    """Inside a graph with unknown sizes (e.g. a traced loss), the same labels come out."""
    rng = np.random.default_rng(5)
    mask = (rng.uniform(size=(2, 64, 64, 1)) < 0.4).astype(np.float32)
    spec = tf.TensorSpec([None, None, None, 1])

    @tf.function(input_signature=[spec, spec])
    def labels(mask, logits):
        return downsample_mask(mask, (tf.shape(logits)[1], tf.shape(logits)[2]), mode)

    got = labels(mask, np.zeros((2, 8, 8, 1), np.float32)).numpy()
    np.testing.assert_array_equal(got, np.asarray(downsample_mask(mask, (8, 8), mode)))

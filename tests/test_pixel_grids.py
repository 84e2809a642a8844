"""The two bilinear pixel grids (TF1 corner-aligned, half-pixel) and the image-resolution loss.

The RRN code (liruiyu/referseg_rrn `LSTM_model_convlstm_p543.py`) trains on and scores
`tf.image.resize_bilinear(score, [H, W])` of TF1 (align_corners=False, no half-pixel centres):
the loss at image resolution must upsample on that grid, with the one keras.ops resize that
`refseg_tf.scoring` also uses.
"""

import numpy as np
import pytest
import tensorflow as tf

from refseg_tf import scoring
from refseg_tf.layers.spatial import resize_bilinear
from refseg_tf.losses import LOSS_UPSAMPLINGS, SigmoidCrossEntropyLoss, WeightedLogisticLoss
from refseg_tf.losses import align_target_and_logits
from tests.references import tf1_resize_reference

SHAPES = [((5, 5), (40, 40)), ((4, 6), (32, 20)), ((10, 10), (4, 7)), ((3, 3), (3, 3))]


def _random_maps(in_size, seed=0, channels=2):
    return np.random.default_rng(seed).normal(size=(2, *in_size, channels)).astype(np.float32)


@pytest.mark.parametrize("in_size,out_size", SHAPES)
def test_tf1_resize_equals_tf_compat_v1_resize_bilinear(in_size, out_size):
    maps = _random_maps(in_size)
    expected = tf.compat.v1.image.resize_bilinear(
        maps, out_size, align_corners=False, half_pixel_centers=False
    ).numpy()
    resized = np.asarray(resize_bilinear(maps, out_size, half_pixel_centers=False))
    np.testing.assert_allclose(resized, expected, atol=1e-5)
    np.testing.assert_allclose(
        resized[1, ..., 0], tf1_resize_reference(maps[1, ..., 0].astype(np.float64), *out_size),
        atol=1e-5,
    )
    # scoring's keras.ops TF1 resize is this one function.
    np.testing.assert_array_equal(np.asarray(scoring.resize_tf1_bilinear(maps, out_size)), resized)


@pytest.mark.parametrize("in_size,out_size", SHAPES)
def test_half_pixel_resize_equals_tf_image_resize(in_size, out_size):
    maps = _random_maps(in_size, seed=1)
    expected = tf.image.resize(maps, out_size, method="bilinear", antialias=False).numpy()
    np.testing.assert_allclose(np.asarray(resize_bilinear(maps, out_size)), expected, atol=1e-5)


@pytest.mark.parametrize("half_pixel_centers", [True, False])
def test_both_grids_with_sizes_known_only_at_run_time(half_pixel_centers):
    maps = _random_maps((5, 5), seed=2)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 2]), tf.TensorSpec([2], tf.int32)])
    def resize(images, size):
        return resize_bilinear(images, (size[0], size[1]), half_pixel_centers=half_pixel_centers)

    expected = tf.compat.v1.image.resize_bilinear(
        maps, [40, 24], half_pixel_centers=half_pixel_centers
    ).numpy()
    np.testing.assert_allclose(resize(maps, tf.constant([40, 24])).numpy(), expected, atol=1e-5)


def test_the_two_grids_differ_by_a_half_cell_shift():
    """TF1 puts logit cell i on pixel s*i; half-pixel centres it on its block, s*i + (s-1)/2."""
    logits = np.zeros((1, 4, 4, 1), np.float32)
    logits[0, 1, 1, 0] = 1.0
    tf1 = np.asarray(resize_bilinear(logits, (32, 32), half_pixel_centers=False))[0, ..., 0]
    half = np.asarray(resize_bilinear(logits, (32, 32)))[0, ..., 0]
    assert np.unravel_index(np.argmax(tf1), tf1.shape) == (8, 8)
    peak = np.argwhere(half == half.max())
    np.testing.assert_array_equal(peak.min(0), (11, 11))
    np.testing.assert_array_equal(peak.max(0), (12, 12))  # centre 11.5 = 8 + 3.5


def _authors_image_loss(mask, logits):
    """numpy of the RRN code's `weighed_logistic_loss(self.up, target_fine, 1, 1)`:
    `self.up` = TF1 resize_bilinear of the logits, sigmoid cross-entropy summed over
    [1, 2, 3], averaged over the batch (util/loss.py)."""
    height, width = mask.shape[1:3]
    losses = []
    for example in range(mask.shape[0]):
        up = tf1_resize_reference(logits[example, ..., 0].astype(np.float64), height, width)
        labels = mask[example, ..., 0].astype(np.float64)
        per_pixel = np.maximum(up, 0) - up * labels + np.log1p(np.exp(-np.abs(up)))
        losses.append(per_pixel.sum())
    return float(np.mean(losses))


def _example(seed=3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(2, 5, 5, 1)).astype(np.float32)
    mask = (rng.uniform(size=(2, 40, 40, 1)) < 0.3).astype(np.float32)
    return mask, logits


def test_image_resolution_loss_with_tf1_upsampling_equals_the_authors_loss():
    mask, logits = _example()
    loss = SigmoidCrossEntropyLoss(resolution="image", pixel_reduction="sum", upsampling="tf1")
    np.testing.assert_allclose(float(loss(mask, logits)), _authors_image_loss(mask, logits),
                               rtol=1e-5)
    # "tf1" is the default, and "half_pixel" is a different loss.
    default = SigmoidCrossEntropyLoss(resolution="image", pixel_reduction="sum")
    assert float(default(mask, logits)) == pytest.approx(float(loss(mask, logits)), rel=1e-6)
    half = SigmoidCrossEntropyLoss(resolution="image", pixel_reduction="sum",
                                   upsampling="half_pixel")
    assert abs(float(half(mask, logits)) - float(loss(mask, logits))) > 1.0


@pytest.mark.parametrize("upsampling", LOSS_UPSAMPLINGS)
def test_loss_upsampling_follows_the_chosen_grid(upsampling):
    mask, logits = _example(seed=4)
    _, upsampled = align_target_and_logits(mask, logits, "image", upsampling=upsampling)
    expected = tf.compat.v1.image.resize_bilinear(
        logits, [40, 40], half_pixel_centers=upsampling == "half_pixel"
    ).numpy()
    np.testing.assert_allclose(np.asarray(upsampled), expected, atol=1e-5)


def test_loss_upsampling_survives_get_config_and_rejects_bad_values():
    loss = WeightedLogisticLoss(1.0, 1.0, resolution="image", upsampling="half_pixel")
    assert WeightedLogisticLoss.from_config(loss.get_config()).upsampling == "half_pixel"
    restored = SigmoidCrossEntropyLoss.from_config(
        SigmoidCrossEntropyLoss(upsampling="half_pixel").get_config()
    )
    assert restored.upsampling == "half_pixel"
    with pytest.raises(ValueError, match="`upsampling` must be one of"):
        WeightedLogisticLoss(upsampling="align_corners")


def test_model_loss_config_upsampling_reaches_the_loss():
    from refseg_tf.models import build_preset

    model = build_preset("d_lstm_ours", 20, size="tiny")  # RRN Sec. 4.2.1: loss at image size
    assert model.loss_config["upsampling"] == "tf1"
    assert model.default_loss().upsampling == "tf1"
    custom = build_preset("d_lstm_ours", 20, size="tiny", loss_config={"upsampling": "half_pixel"})
    assert custom.default_loss().upsampling == "half_pixel"
    with pytest.raises(ValueError, match="upsampling"):
        build_preset("d_lstm_ours", 20, size="tiny", loss_config={"upsampling": "bicubic"})


def test_hu_bilinear_deconvolution_upsamples_on_the_half_pixel_grid():
    """Hu's low-resolution row upsamples as his 2s x 2s, stride-s deconvolution at its bilinear
    initialisation: cell i centred on pixel s*i + (s-1)/2, as "resize_probability"'s grid."""
    import keras

    from refseg_tf.layers.upsampling import BilinearUpsamplingInitializer

    stride = 8
    deconvolution = keras.layers.Conv2DTranspose(
        1, 2 * stride, strides=stride, padding="same", use_bias=False,
        kernel_initializer=BilinearUpsamplingInitializer(),
    )
    logits = _random_maps((6, 6), seed=5, channels=1)
    upsampled = deconvolution(logits).numpy()
    half = np.asarray(resize_bilinear(logits, (48, 48)))
    tf1 = np.asarray(resize_bilinear(logits, (48, 48), half_pixel_centers=False))
    inner = slice(stride // 2, 48 - stride // 2)  # the deconvolution zero-pads the border
    np.testing.assert_allclose(upsampled[:, inner, inner], half[:, inner, inner], atol=1e-5)
    # Thresholded, the zero padding does not matter: the binary maps agree everywhere.
    np.testing.assert_array_equal(upsampled >= 1e-9, half >= 1e-9)
    assert np.mean((upsampled >= 1e-9) != (tf1 >= 1e-9)) > 0.05

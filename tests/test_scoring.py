"""The scoring rule against a numpy re-implementation of the authors' test pipeline.

The reference below is written from the authors' code (chenxi116/TF-phrasecut-public
`main.py` test and `util/im_processing.resize_and_crop`, skimage `resize` order 1 with the
`constant` border of its 2017 default), not from `refseg_tf.scoring`:
TF1 bilinear upsampling of the logits (coordinate = o * in / out) -> `>= 1e-9` ->
resize the binary square to round(S * max(h / S, w / S)) (half-pixel centres, zero outside)
-> crop the centred window -> `> 0`.
"""

import numpy as np
import pytest
import tensorflow as tf

from refseg_tf import scoring
from tests.references import tf1_resize_reference

GRID, SIZE, HEIGHT, WIDTH = 40, 320, 427, 640


def _tf1_upsample_reference(values, out_size):
    return tf1_resize_reference(values, out_size, out_size)


def _skimage_order1_constant_weights(in_size, out_size):
    scale = in_size / out_size
    weights = np.zeros((out_size, in_size))
    for o in range(out_size):
        coordinate = (o + 0.5) * scale - 0.5
        low = int(np.floor(coordinate))
        frac = coordinate - low
        for index, weight in ((low, 1 - frac), (low + 1, frac)):
            if 0 <= index < in_size:  # mode="constant", cval=0: outside contributes nothing
                weights[o, index] += weight
    return weights


def _authors_resize_and_crop(image, height, width):
    side = image.shape[0]
    scale = max(height / side, width / side)
    resized_h, resized_w = int(np.round(side * scale)), int(np.round(side * scale))
    crop_h = int(np.floor(resized_h - height) / 2)
    crop_w = int(np.floor(resized_w - width) / 2)
    resized = (
        _skimage_order1_constant_weights(side, resized_h)
        @ image
        @ _skimage_order1_constant_weights(side, resized_w).T
    )
    return resized[crop_h : crop_h + height, crop_w : crop_w + width]


def authors_masks(logits, height, width, size=SIZE):
    upsampled = _tf1_upsample_reference(logits.astype(np.float64), size)
    binary = (upsampled >= 1e-9).astype(np.float64)
    return _authors_resize_and_crop(binary, height, width) > 0


def blob_logits(seed, grid=GRID):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:grid, 0:grid]
    cy, cx, r = rng.uniform(8, grid - 8), rng.uniform(8, grid - 8), rng.uniform(4, 12)
    logits = (r - np.hypot(y - cy, x - cx)) + rng.normal(0, 1.5, (grid, grid))
    return logits.astype(np.float32)


@pytest.fixture(scope="module")
def reference_case():
    logits = blob_logits(0)
    return logits, authors_masks(logits, HEIGHT, WIDTH)


def _window(height=HEIGHT, width=WIDTH, size=SIZE):
    from refseg_tf.data.transforms import letterbox_geometry

    return letterbox_geometry(height, width, size).numpy()


def test_score_masks_equals_authors_pipeline(reference_case):
    logits, expected = reference_case
    assert 0.05 < expected.mean() < 0.6
    (mask,) = scoring.score_masks(
        logits[None, ..., None], _window()[None], [[HEIGHT, WIDTH]], SIZE
    )
    assert mask.dtype == bool and mask.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(mask, expected)


def test_tf1_resize_in_keras_ops_equals_tf_compat_v1():
    logits = np.stack([blob_logits(seed) for seed in range(3)])[..., None]
    expected = tf.compat.v1.image.resize_bilinear(
        logits, [SIZE, SIZE], align_corners=False, half_pixel_centers=False
    ).numpy()
    np.testing.assert_allclose(scoring.resize_tf1_bilinear(logits, (SIZE, SIZE)), expected,
                               atol=2e-5)
    reference = _tf1_upsample_reference(logits[0, ..., 0].astype(np.float64), SIZE)
    np.testing.assert_allclose(expected[0, ..., 0], reference, atol=2e-5)
    masks = scoring.input_resolution_masks(logits, (SIZE, SIZE))
    np.testing.assert_array_equal(np.asarray(masks) > 0, expected >= 1e-9)


def test_upsampling_is_not_half_pixel():
    """The TF1 rule is about half a cell away from TF2's `tf.image.resize`: the rules differ."""
    logits = blob_logits(1)[None, ..., None]
    tf1 = scoring.upsample_logits_tf(logits, SIZE).numpy()
    tf2 = tf.image.resize(logits, [SIZE, SIZE]).numpy()
    assert np.abs(tf1 - tf2).max() > 0.1
    np.testing.assert_array_equal(tf1[0, ::8, ::8, 0], logits[0, ..., 0])


def test_resize_probability_rule_thresholds_probabilities_at_original_size():
    from refseg_tf.data.transforms import restore_to_original

    logits = blob_logits(2)
    (mask,) = scoring.score_masks(
        logits[None, ..., None], _window()[None], [[HEIGHT, WIDTH]], SIZE,
        rule="resize_probability", threshold=0.25,
    )
    probabilities = tf.image.resize(tf.sigmoid(logits[None, ..., None]), [SIZE, SIZE])[0]
    expected = restore_to_original(probabilities, (HEIGHT, WIDTH), SIZE).numpy()[..., 0] >= 0.25
    np.testing.assert_array_equal(mask, expected)


def test_logit_threshold_and_bad_arguments():
    assert scoring.logit_threshold(0.5) == 1e-9
    assert scoring.logit_threshold(0.25) == pytest.approx(np.log(1 / 3))
    with pytest.raises(ValueError, match="`scoring_rule` must be one of"):
        scoring.check_scoring_rule("sigmoid_first")
    assert scoring.logit_threshold(0.0) == -np.inf and scoring.logit_threshold(1.0) == np.inf
    with pytest.raises(ValueError, match="`threshold` must lie in"):
        scoring.logit_threshold(1.5)


def test_restore_binary_mask_dilates_like_the_authors():
    binary = np.zeros((SIZE, SIZE), np.float32)
    binary[100:110, 50:60] = 1
    expected = _authors_resize_and_crop(binary.astype(np.float64), HEIGHT, WIDTH) > 0
    np.testing.assert_array_equal(scoring.restore_binary_mask(binary, (HEIGHT, WIDTH)), expected)
    # The crop-then-resize of another image size (portrait, downscaled) also matches.
    expected = _authors_resize_and_crop(binary.astype(np.float64), 300, 200) > 0
    np.testing.assert_array_equal(scoring.restore_binary_mask(binary, (300, 200)), expected)


class _FixedLogits:
    """A stand-in model that returns the same 40x40 logits for every input (batch-tiled)."""

    threshold = 0.5

    def __init__(self, logits):
        self.logits = tf.constant(logits[None, ..., None])

    def __call__(self, inputs, training=False):
        batch = tf.shape(inputs["image"])[0]
        return tf.tile(self.logits, [batch, 1, 1, 1])


def test_predictor_mask_equals_authors_pipeline(reference_case):
    from refseg_tf.inference import Predictor
    from refseg_tf.text import Vocabulary
    from refseg_tf.training.config import base_config

    logits, expected = reference_case
    config = base_config()
    config.data.image_size = SIZE
    predictor = Predictor(_FixedLogits(logits), config, Vocabulary.build(["the dog"]))
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    mask = predictor.predict_mask(image, "the dog")
    np.testing.assert_array_equal(mask, expected)
    first, second = predictor.predict_mask(image, ["the dog", "a dog"])
    np.testing.assert_array_equal(second, expected)
    probability = predictor.predict(image, "the dog")
    assert probability.shape == (HEIGHT, WIDTH) and 0.0 <= probability.min() <= probability.max() <= 1


def test_evaluation_batch_scoring_equals_authors_pipeline(reference_case):
    """`refseg-evaluate` scores every batch with `evaluation.score_batch`."""
    from refseg_tf.training import evaluation

    logits, expected = reference_case
    other = blob_logits(7)
    batch = {
        "image_window": np.stack([_window(), _window(300, 200)]),
        "original_size": np.array([[HEIGHT, WIDTH], [300, 200]]),
    }
    masks = evaluation.score_batch(np.stack([logits, other])[..., None], batch, SIZE)
    np.testing.assert_array_equal(masks[0], expected)
    np.testing.assert_array_equal(masks[1], authors_masks(other, 300, 200))
    assert "logit >= 1e-09" in evaluation.scoring_rule_line("upsample_logits", 0.5)


def test_keras_metric_applies_the_rule_at_input_resolution(reference_case):
    """The Keras metrics score steps 1-2 of the authors' pipeline against the S x S mask."""
    from refseg_tf.metrics import OverallIoU

    logits, _ = reference_case
    predicted = _tf1_upsample_reference(logits.astype(np.float64), SIZE) >= 1e-9
    truth = np.zeros((SIZE, SIZE), bool)
    truth[60:200, 80:260] = True
    intersection = np.logical_and(predicted, truth).sum()
    union = np.logical_or(predicted, truth).sum()
    metric = OverallIoU()
    metric.update_state(truth[None, ..., None].astype(np.float32), logits[None, ..., None])
    assert float(metric.result()) == pytest.approx(intersection / union, abs=1e-6)


def test_dense_crf_path_uses_the_upsampled_sigmoid_and_the_same_restore(reference_case,
                                                                        monkeypatch):
    """DenseCRF gets sigmoid(TF1-upsampled logits) at S; its binary output is restored by the rule."""
    from refseg_tf.training import evaluation

    logits, expected = reference_case
    seen = {}

    def fake_crf(image, probability):  # a CRF that changes nothing: argmax of the unary
        seen["probability"] = probability
        return (probability >= 0.5).astype(np.float32)

    monkeypatch.setattr(evaluation, "dense_crf", fake_crf)
    batch = {"image_window": _window()[None], "original_size": np.array([[HEIGHT, WIDTH]])}
    images = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    (mask,) = evaluation.score_batch(logits[None, ..., None], batch, SIZE, crf_images=images)
    upsampled = _tf1_upsample_reference(logits.astype(np.float64), SIZE)
    np.testing.assert_allclose(seen["probability"], 1 / (1 + np.exp(-upsampled)), atol=1e-5)
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("rule", scoring.SCORING_RULES)
def test_graph_form_in_a_saved_signature_equals_score_masks(reference_case, rule, tmp_path):
    """`score_mask_tf` / `probability_map_tf` with a dynamic image size, traced into a
    SavedModel signature as the export does, equal the numpy `score_masks` / `probability_maps`
    (and under "upsample_logits" the authors' pipeline)."""
    logits, expected = reference_case
    logits = logits[None, ..., None]

    class Scorer(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([GRID, GRID, 1], tf.float32), tf.TensorSpec([2], tf.int32)
        ])
        def score(self, example_logits, original_size):
            return {
                "mask": scoring.score_mask_tf(example_logits, original_size, SIZE, rule, 0.5),
                "probability": scoring.probability_map_tf(example_logits, original_size, SIZE, rule),
            }

    tf.saved_model.save(Scorer(), str(tmp_path), signatures={})
    loaded = tf.saved_model.load(str(tmp_path))
    outputs = loaded.score(tf.constant(logits[0]), tf.constant([HEIGHT, WIDTH]))
    masks = scoring.score_masks(logits, _window(), [[HEIGHT, WIDTH]], SIZE, rule, 0.5)
    maps = scoring.probability_maps(logits, _window(), [[HEIGHT, WIDTH]], SIZE, rule)
    np.testing.assert_array_equal(outputs["mask"].numpy(), masks[0])
    np.testing.assert_allclose(outputs["probability"].numpy(), maps[0], atol=1e-6)
    if rule == "upsample_logits":
        np.testing.assert_array_equal(outputs["mask"].numpy(), expected)
    else:
        np.testing.assert_array_equal(outputs["mask"].numpy(), maps[0] >= 0.5)

"""Tests of refseg_tf.metrics: numpy scores against hand-computed cases, Keras metrics against
the numpy scores, and the Keras metrics under MirroredStrategy (2 logical CPUs, subprocess)."""

import json
import math
import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refseg_tf.metrics import scores as S

# --------------------------------------------------------------------------------------------
# numpy: intersection_union


def test_intersection_union_hand_case():
    pred = np.array([[1, 1, 0], [0, 1, 0]])
    gt = np.array([[1, 0, 0], [1, 1, 1]])
    # I: (0,0), (1,1) -> 2; U: (0,0), (0,1), (1,0), (1,1), (1,2) -> 5
    assert S.intersection_union(pred, gt) == (2, 5)
    assert S.intersection_union(pred.astype(bool), gt.astype(np.float32)) == (2, 5)


def test_intersection_union_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        S.intersection_union(np.zeros((2, 3)), np.zeros((3, 2)))


def test_intersection_union_rejects_non_binary_values():
    with pytest.raises(ValueError, match="gt must be binary.*255"):
        S.intersection_union(np.zeros((2, 2)), np.full((2, 2), 255, np.uint8))
    with pytest.raises(ValueError, match="pred must be binary"):
        S.intersection_union(np.full((2, 2), 0.7), np.zeros((2, 2)))


# --------------------------------------------------------------------------------------------
# numpy: scores_from_iou


def test_scores_from_iou_hand_case():
    # IoUs 3/4, 0/2, 6/10, 4/5 = 0.75, 0, 0.6, 0.8
    scores = S.scores_from_iou([3, 0, 6, 4], [4, 2, 10, 5])
    assert scores["overall_iou"] == pytest.approx(13 / 21)
    assert scores["mean_iou"] == pytest.approx((0.75 + 0 + 0.6 + 0.8) / 4)
    assert scores["precision@0.5"] == 0.75
    assert scores["precision@0.6"] == 0.75  # 0.6 exactly counts
    assert scores["precision@0.7"] == 0.5
    assert scores["precision@0.8"] == 0.25  # 0.8 exactly counts
    assert scores["precision@0.9"] == 0.0
    assert scores["count"] == 4
    assert list(scores) == [
        "overall_iou",
        "mean_iou",
        "precision@0.5",
        "precision@0.6",
        "precision@0.7",
        "precision@0.8",
        "precision@0.9",
        "count",
    ]


def test_iou_exactly_at_each_threshold_counts():
    # IoU = 5/10, 6/10, 7/10, 8/10, 9/10, and 59/100 just below 0.6
    intersections = [5, 6, 7, 8, 9, 59]
    unions = [10, 10, 10, 10, 10, 100]
    scores = S.scores_from_iou(intersections, unions)
    assert scores["precision@0.5"] == pytest.approx(6 / 6)
    assert scores["precision@0.6"] == pytest.approx(4 / 6)
    assert scores["precision@0.7"] == pytest.approx(3 / 6)
    assert scores["precision@0.8"] == pytest.approx(2 / 6)
    assert scores["precision@0.9"] == pytest.approx(1 / 6)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 10**6), st.integers(0, 10**6)).map(
            lambda pair: (min(pair[1], pair[0]), pair[0])
        ),
        min_size=1,
        max_size=20,
    )
)
def test_precision_matches_exact_rational_comparison(samples):
    intersections = [i for i, _ in samples]
    unions = [u for _, u in samples]
    scores = S.scores_from_iou(intersections, unions)
    for tenths in range(5, 10):
        threshold = Fraction(tenths, 10)
        expected = sum(Fraction(i, u) >= threshold for i, u in samples) / len(samples)
        assert scores[f"precision@{tenths / 10:g}"] == pytest.approx(expected, abs=1e-12)


def test_empty_prediction_and_empty_gt_is_iou_one():
    scores = S.scores_from_iou([0, 1], [0, 2])
    assert scores["mean_iou"] == pytest.approx(0.75)
    assert scores["overall_iou"] == pytest.approx(0.5)  # the empty sample adds nothing
    assert scores["precision@0.9"] == 0.5
    assert S.scores_from_iou([0], [0])["overall_iou"] == 1.0
    np.testing.assert_array_equal(S.per_sample_iou([0, 1, 0], [0, 4, 3]), [1.0, 0.25, 0.0])


def test_scores_of_no_samples_are_nan():
    scores = S.scores_from_iou([], [])
    assert scores["count"] == 0
    assert math.isnan(scores["overall_iou"]) and math.isnan(scores["precision@0.5"])


def test_scores_reject_inconsistent_counts():
    with pytest.raises(ValueError, match="sample 1 has intersection 5 and union 3"):
        S.scores_from_iou([1, 5], [2, 3])
    with pytest.raises(ValueError, match="same length"):
        S.scores_from_iou([1, 2], [2])


def test_custom_thresholds_and_keys():
    scores = S.scores_from_iou([1, 3], [4, 4], thresholds=(0.25, 0.75))
    assert scores["precision@0.25"] == 1.0 and scores["precision@0.75"] == 0.5
    assert S.precision_key(0.5) == "precision@0.5"


# --------------------------------------------------------------------------------------------
# numpy: SegmentationEvaluator and length buckets


def _random_pairs(count, seed, shape=(6, 9)):
    rng = np.random.default_rng(seed)
    return [(rng.random(shape) > 0.5, rng.random(shape) > 0.6) for _ in range(count)]


def test_evaluator_equals_scores_from_iou():
    pairs = _random_pairs(12, seed=0)
    evaluator = S.SegmentationEvaluator()
    counts = [evaluator.update(pred, gt, sample_id=i) for i, (pred, gt) in enumerate(pairs)]
    expected = S.scores_from_iou([i for i, _ in counts], [u for _, u in counts])
    assert evaluator.result() == expected
    assert len(evaluator) == evaluator.count == 12
    assert evaluator.sample_ids == list(range(12))


def test_evaluator_update_batch_equals_single_updates():
    pairs = _random_pairs(7, seed=1)
    single, batched = S.SegmentationEvaluator(), S.SegmentationEvaluator()
    for index, (pred, gt) in enumerate(pairs):
        single.update(pred, gt, length=index + 1)
    preds = np.stack([pred for pred, _ in pairs])
    gts = np.stack([gt for _, gt in pairs])
    batched.update_batch(preds[:3], gts[:3], lengths=[1, 2, 3])
    batched.update_batch(list(preds[3:]), list(gts[3:]), lengths=[4, 5, 6, 7])
    assert batched.result() == single.result()
    np.testing.assert_array_equal(batched.ious, single.ious)
    assert batched.by_length(S.LENGTH_BUCKETS["unc"]) == single.by_length(S.LENGTH_BUCKETS["unc"])


def test_evaluator_rejects_duplicates_and_names_the_sample():
    evaluator = S.SegmentationEvaluator()
    evaluator.update([[1]], [[1]], sample_id="s1")
    with pytest.raises(ValueError, match="'s1' was already recorded"):
        evaluator.update([[1]], [[0]], sample_id="s1")
    with pytest.raises(ValueError, match=r"sample 's2'.*\(1, 2\).*\(2, 1\)"):
        evaluator.update([[1, 0]], [[1], [0]], sample_id="s2")
    assert len(evaluator) == 1
    evaluator.reset()
    assert len(evaluator) == 0
    evaluator.update([[1]], [[1]], sample_id="s1")  # allowed again after reset


@pytest.mark.parametrize(
    "dataset, lengths_to_labels",
    [
        (
            "unc",
            {0: "1-2", 1: "1-2", 2: "1-2", 3: "3", 4: "4-5", 5: "4-5", 6: "6-20", 20: "6-20",
             21: "6-20", 40: "6-20"},
        ),
        (
            "refcocog",
            {1: "1-5", 5: "1-5", 6: "6-7", 7: "6-7", 8: "8-10", 10: "8-10", 11: "11-20",
             20: "11-20", 25: "11-20"},
        ),
        ("referit", {1: "1", 2: "2", 3: "3-4", 4: "3-4", 5: "5-20", 20: "5-20", 21: "5-20"}),
    ],
)
def test_bucket_boundaries(dataset, lengths_to_labels):
    buckets = S.LENGTH_BUCKETS[dataset]
    for length, label in lengths_to_labels.items():
        assert S.bucket_label(buckets[S.bucket_index(length, buckets)]) == label, length


def test_rmi_bucket_tables():
    # Liu et al. 2017 Tables 2-5 column headers
    labels = {
        name: [S.bucket_label(bucket) for bucket in buckets]
        for name, buckets in S.LENGTH_BUCKETS.items()
    }
    assert labels == {
        "refcocog": ["1-5", "6-7", "8-10", "11-20"],
        "unc": ["1-2", "3", "4-5", "6-20"],
        "referit": ["1", "2", "3-4", "5-20"],
    }


def test_by_length_hand_case():
    evaluator = S.SegmentationEvaluator(buckets=S.LENGTH_BUCKETS["unc"])
    evaluator.add(1, 2, length=1)  # 1-2
    evaluator.add(3, 4, length=2)  # 1-2
    evaluator.add(2, 2, length=3)  # 3
    evaluator.add(0, 5, length=25)  # 6-20 (above 20 goes in the last bucket)
    breakdown = evaluator.by_length()
    assert list(breakdown) == ["1-2", "3", "4-5", "6-20"]
    assert breakdown["1-2"]["overall_iou"] == pytest.approx(4 / 6)
    assert breakdown["1-2"]["mean_iou"] == pytest.approx((0.5 + 0.75) / 2)
    assert breakdown["1-2"]["count"] == 2
    assert breakdown["3"]["precision@0.9"] == 1.0
    assert breakdown["4-5"]["count"] == 0 and math.isnan(breakdown["4-5"]["mean_iou"])
    assert breakdown["6-20"]["overall_iou"] == 0.0
    referit = evaluator.by_length(S.LENGTH_BUCKETS["referit"])
    assert [scores["count"] for scores in referit.values()] == [1, 1, 1, 1]


def test_by_length_errors():
    evaluator = S.SegmentationEvaluator()
    evaluator.add(1, 2, length=3)
    with pytest.raises(ValueError, match="needs buckets"):
        evaluator.by_length()
    evaluator.add(1, 2)
    with pytest.raises(ValueError, match="1 of 2 samples"):
        evaluator.by_length(S.LENGTH_BUCKETS["unc"])
    with pytest.raises(ValueError, match="contiguous"):
        S.SegmentationEvaluator(buckets=[(1, 2), (4, 5)])


@pytest.mark.parametrize(
    "name, key",
    [
        ("refcoco", "unc"),
        ("RefCOCO+", "unc"),
        ("refcocoplus_unc", "unc"),
        ("unc", "unc"),
        ("synthetic", "unc"),
        ("refcocog", "refcocog"),
        ("refcocog_umd", "refcocog"),
        ("G-Ref", "refcocog"),
        ("referit", "referit"),
        ("ReferItGame", "referit"),
    ],
)
def test_buckets_for_dataset_names(name, key):
    assert S.buckets_for_dataset(name) == S.LENGTH_BUCKETS[key]


def test_buckets_for_unknown_dataset_name():
    with pytest.raises(ValueError, match="'flickr30k'.*refcoco"):
        S.buckets_for_dataset("flickr30k")


# --------------------------------------------------------------------------------------------
# numpy: localization accuracy


def test_localization_accuracy_with_lower_resolution_heatmap():
    mask = np.zeros((8, 8), np.uint8)
    mask[:4, 4:] = 1  # top-right quadrant
    heatmap_hit = np.array([[0.1, 0.9], [0.2, 0.3]])  # argmax cell (0, 1) -> pixel (2, 6)
    heatmap_miss = np.array([[0.1, 0.2], [0.9, 0.3]])  # argmax cell (1, 0) -> pixel (6, 2)
    heatmaps = np.stack([heatmap_hit, heatmap_miss])[..., None]
    masks = np.stack([mask, mask])[..., None]
    assert S.localization_accuracy(heatmaps, masks) == 0.5


def test_localization_cell_centre_mapping():
    # 3x3 heatmap over a 4x4 mask: cell 1's centre is at 1.5 * 4 / 3 = 2.0 -> pixel 2
    heatmap = np.zeros((3, 3))
    heatmap[1, 1] = 1.0
    at_2_2 = np.zeros((4, 4), bool)
    at_2_2[2, 2] = True
    at_1_1 = np.zeros((4, 4), bool)
    at_1_1[1, 1] = True
    assert S.localization_hit(heatmap, at_2_2)
    assert not S.localization_hit(heatmap, at_1_1)
    # Non-square: 2x4 heatmap over a 6x4 mask; cell (1, 3) -> pixel (4, 3)
    heatmap = np.zeros((2, 4))
    heatmap[1, 3] = 5.0
    mask = np.zeros((6, 4), bool)
    mask[4, 3] = True
    assert S.localization_hit(heatmap, mask)
    # A list of samples of different sizes
    assert S.localization_accuracy([np.zeros((3, 3)) + np.eye(3), heatmap], [at_1_1, mask]) == 0.5


def test_localization_accuracy_errors():
    with pytest.raises(ValueError, match="2 heatmaps but 1 masks"):
        S.localization_accuracy(np.zeros((2, 3, 3)), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="sample 1: heatmap contains NaN"):
        S.localization_accuracy([np.ones((2, 2)), np.full((2, 2), np.nan)], np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match=r"batch \[N, H, W\]"):
        S.localization_accuracy(np.zeros((3, 3)), np.zeros((3, 3)))


# --------------------------------------------------------------------------------------------
# numpy: table and JSON


def test_format_table_shows_percentages_and_length_rows():
    evaluator = S.SegmentationEvaluator(buckets=S.LENGTH_BUCKETS["referit"])
    evaluator.add(1, 2, length=1)
    evaluator.add(3, 4, length=2)
    text = S.format_table(evaluator.result(), evaluator.by_length())
    lines = text.splitlines()
    assert lines[0].split() == ["samples", "2"]
    assert lines[1].split() == ["overall", "IoU", "66.67"]
    assert lines[2].split() == ["mean", "IoU", "62.50"]
    assert lines[3].split() == ["prec@0.5", "100.00"]
    assert lines[5].split() == ["prec@0.7", "50.00"]
    assert "IoU by expression length (words)" in lines
    rows = {line.split()[0]: line.split() for line in lines[lines.index("") + 2 :]}
    assert rows["length"][:4] == ["length", "samples", "overall", "IoU"]
    assert rows["1"][:4] == ["1", "1", "50.00", "50.00"]
    assert rows["3-4"][1:] == ["0"] + ["-"] * 7
    assert S.format_table({**evaluator.result(), "localization_accuracy": 0.8174}).endswith(
        "81.74"
    )


def test_save_scores_json_round_trip_and_atomic(tmp_path):
    evaluator = S.SegmentationEvaluator(buckets=S.LENGTH_BUCKETS["unc"])
    evaluator.add(np.int64(1), np.int64(2), length=3)
    path = tmp_path / "sub" / "scores.json"
    written = S.save_scores_json(
        path, evaluator.result(), evaluator.by_length(), metadata={"split": "val", "step": 3}
    )
    assert written == str(path)
    document = json.loads(path.read_text())
    assert document["scores"]["overall_iou"] == 0.5
    assert document["by_length"]["1-2"]["overall_iou"] is None  # NaN -> null
    assert document["by_length"]["3"]["count"] == 1
    assert document["metadata"] == {"split": "val", "step": 3}
    assert os.listdir(path.parent) == ["scores.json"]
    with pytest.raises(TypeError):
        S.save_scores_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == document  # the old file is untouched
    assert os.listdir(path.parent) == ["scores.json"]


# --------------------------------------------------------------------------------------------
# Keras streaming metrics

keras = pytest.importorskip("keras")
from refseg_tf.metrics import MeanIoU, OverallIoU, PrecisionAtIoU  # noqa: E402
import tensorflow as tf  # noqa: E402


def _all_metrics(**kwargs):
    metrics = [OverallIoU(**kwargs), MeanIoU(**kwargs)]
    return metrics + [PrecisionAtIoU(t, **kwargs) for t in S.DEFAULT_THRESHOLDS]


def _keras_results(metrics):
    return {metric.name: float(metric.result()) for metric in metrics}


def _numpy_scores(masks, binary_preds):
    counts = [S.intersection_union(p[..., 0], m[..., 0]) for p, m in zip(binary_preds, masks)]
    scores = S.scores_from_iou([i for i, _ in counts], [u for _, u in counts])
    scores.pop("count")
    return scores


def test_keras_metrics_hand_case_same_size():
    y_true = np.array([[[1], [1]], [[0], [0]]], np.float32)[None]
    logits = np.array([[[2.0], [-1.0]], [[0.0], [3.0]]], np.float32)[None]  # 0 is background
    metrics = _all_metrics()
    for metric in metrics:
        metric.update_state(y_true, logits)
    results = _keras_results(metrics)
    assert results["overall_iou"] == pytest.approx(1 / 3)
    assert results["mean_iou"] == pytest.approx(1 / 3)
    assert results["precision@0.5"] == 0.0


def test_keras_metrics_resize_lower_resolution_logits():
    # Bilinear (half-pixel) upsampling of [[5, 5], [-5, -5]] to 4x4 gives rows 5, 2.5, -2.5, -5
    logits = np.array([[5.0, 5.0], [-5.0, -5.0]], np.float32)[None, :, :, None]
    y_true = np.zeros((1, 4, 4, 1), np.float32)
    y_true[0, :3, :2] = 1  # I = 4 (rows 0-1, cols 0-1), U = 8 + 2 = 10
    rule = "resize_probability"
    overall, precision = OverallIoU(scoring_rule=rule), PrecisionAtIoU(0.4, scoring_rule=rule)
    overall.update_state(y_true, logits)
    precision.update_state(y_true, logits)
    assert float(overall.result()) == pytest.approx(0.4)
    assert float(precision.result()) == 1.0  # IoU exactly 0.4 counts


def test_keras_metrics_upsample_logits_rule_hand_case():
    # TF1 bilinear (coordinate = row / 2) of [[5, 5], [-5, -5]] to 4x4 gives rows 5, 0, -5, -5:
    # only row 0 reaches logit >= 1e-9 (the authors' cut; 0 is background).
    logits = np.array([[5.0, 5.0], [-5.0, -5.0]], np.float32)[None, :, :, None]
    y_true = np.zeros((1, 4, 4, 1), np.float32)
    y_true[0, :3, :2] = 1  # I = 2 (row 0, cols 0-1), U = 4 + 6 - 2 = 8
    overall = OverallIoU()
    overall.update_state(y_true, logits)
    assert float(overall.result()) == pytest.approx(0.25)
    assert OverallIoU.from_config(overall.get_config()).scoring_rule == "upsample_logits"
    with pytest.raises(ValueError, match="`scoring_rule` must be one of"):
        MeanIoU(scoring_rule="probability_first")


def _rule_reference(logits, size, rule):
    """Binary maps by each rule, written with TensorFlow's own ops (not refseg_tf.scoring)."""
    if rule == "resize_probability":
        probabilities = tf.image.resize(tf.sigmoid(logits), [size, size]).numpy()
        return probabilities >= 0.5
    upsampled = tf.compat.v1.image.resize_bilinear(
        logits, [size, size], align_corners=False, half_pixel_centers=False
    )
    return upsampled.numpy() >= 1e-9


def _random_batch(rng, batch, size, logit_size):
    # 4x4-pixel blocks, so that logits at half resolution can still describe the masks
    blocks = (rng.random((batch, size // 4, size // 4, 1)) > 0.55).astype(np.float32)
    masks = blocks.repeat(4, axis=1).repeat(4, axis=2)
    logits = rng.normal(size=(batch, logit_size, logit_size, 1)).astype(np.float32)
    # Correlate predictions with (block-averaged) masks so IoUs spread over the thresholds
    factor = size // logit_size
    pooled = masks.reshape(batch, logit_size, factor, logit_size, factor, 1).mean(axis=(2, 4))
    logits += 4.0 * (pooled - 0.5) * rng.random((batch, 1, 1, 1)).astype(np.float32)
    return masks, logits


@pytest.mark.parametrize("rule", ["upsample_logits", "resize_probability"])
@pytest.mark.parametrize("logit_size", [16, 8])
def test_keras_metrics_equal_numpy_scores_on_random_batches(logit_size, rule):
    rng = np.random.default_rng(3)
    metrics = _all_metrics(scoring_rule=rule)
    all_masks, all_preds = [], []
    for batch in (3, 1, 5):
        masks, logits = _random_batch(rng, batch, 16, logit_size)
        for metric in metrics:
            metric.update_state(masks, logits)
        all_masks += list(masks)
        all_preds += list(_rule_reference(logits, 16, rule))
    expected = _numpy_scores(all_masks, all_preds)
    assert _keras_results(metrics) == pytest.approx(expected, abs=1e-6)
    assert len({round(v, 6) for v in expected.values()}) > 3  # the data is not degenerate


def test_keras_batch_of_n_equals_n_batches_of_one():
    rng = np.random.default_rng(4)
    masks, logits = _random_batch(rng, 6, 12, 12)
    batched, single = _all_metrics(), _all_metrics()
    for metric in batched:
        metric.update_state(masks, logits)
    for index in range(6):
        for metric in single:
            metric.update_state(masks[index : index + 1], logits[index : index + 1])
    assert _keras_results(batched) == pytest.approx(_keras_results(single), abs=1e-7)


def test_keras_sample_weight_zero_excludes_a_sample():
    rng = np.random.default_rng(5)
    masks, logits = _random_batch(rng, 4, 8, 8)
    weighted, subset = _all_metrics(), _all_metrics()
    for metric in weighted:
        metric.update_state(masks, logits, sample_weight=np.array([1, 0, 1, 1], np.float32))
    keep = [0, 2, 3]
    for metric in subset:
        metric.update_state(masks[keep], logits[keep])
    assert _keras_results(weighted) == pytest.approx(_keras_results(subset), abs=1e-7)
    with pytest.raises(ValueError, match="one weight per sample"):
        OverallIoU().update_state(masks, logits, sample_weight=np.ones((4, 8, 8, 1)))


def test_keras_probability_threshold_and_probabilities():
    logits = np.array([-1.5, -0.5, 0.5, 2.0], np.float32).reshape(1, 1, 4, 1)
    y_true = np.array([0, 1, 1, 1], np.float32).reshape(1, 1, 4, 1)
    # p = sigmoid(logits) = 0.18, 0.38, 0.62, 0.88; p > 0.25 -> last three -> IoU 1
    low = OverallIoU(probability_threshold=0.25)
    low.update_state(y_true, logits)
    assert float(low.result()) == 1.0
    default = OverallIoU()
    default.update_state(y_true, logits)
    assert float(default.result()) == pytest.approx(2 / 3)
    probabilities = 1 / (1 + np.exp(-logits))
    from_probs = MeanIoU(probability_threshold=0.25, from_logits=False)
    from_probs.update_state(y_true, probabilities)
    assert float(from_probs.result()) == 1.0
    with pytest.raises(ValueError, match="probability_threshold must lie in"):
        OverallIoU(probability_threshold=1.0)


def test_keras_empty_prediction_and_mask_is_iou_one():
    metrics = _all_metrics()
    for metric in metrics:
        metric.update_state(np.zeros((2, 4, 4, 1)), np.full((2, 4, 4, 1), -3.0))
    assert _keras_results(metrics) == {name: 1.0 for name in _keras_results(metrics)}


def test_keras_reset_state():
    rng = np.random.default_rng(6)
    first, second = _random_batch(rng, 3, 8, 8), _random_batch(rng, 2, 8, 8)
    reused, fresh = _all_metrics(), _all_metrics()
    for metric in reused:
        metric.update_state(*first)
        metric.reset_state()
        metric.update_state(*second)
    for metric in fresh:
        metric.update_state(*second)
    assert _keras_results(reused) == pytest.approx(_keras_results(fresh), abs=1e-7)
    for metric in reused:
        metric.reset_state()
        assert all(float(v.numpy()) == 0.0 for v in metric.variables)


def test_keras_metric_names_configs_and_bad_shapes():
    assert PrecisionAtIoU(0.7).name == "precision@0.7"
    assert MeanIoU().name == "mean_iou" and OverallIoU().name == "overall_iou"
    assert not issubclass(MeanIoU, keras.metrics.MeanIoU)
    metric = PrecisionAtIoU(0.8, name="p80", probability_threshold=0.3, from_logits=False)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(clone) is PrecisionAtIoU
    assert clone.get_config() == metric.get_config()
    assert (clone.threshold, clone.probability_threshold, clone.from_logits) == (0.8, 0.3, False)
    with pytest.raises(ValueError, match=r"y_pred must have shape \[B, H, W, 1\]"):
        OverallIoU().update_state(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4, 2)))
    with pytest.raises(ValueError, match="threshold must lie in"):
        PrecisionAtIoU(1.5)


@keras.saving.register_keras_serializable(package="refseg_tf_tests")
def _mean_logit_loss(y_true, y_pred):
    """A loss that accepts logits smaller than the mask (the metrics are under test, not it)."""
    return keras.ops.mean(y_pred) - keras.ops.mean(y_true)


def _tiny_logit_model():
    """A weight-free model: 2x average pooling turns a 16x16 'score' input into 8x8 logits."""
    inputs = keras.Input((16, 16, 1))
    return keras.Model(inputs, keras.layers.AveragePooling2D(2)(inputs))


def test_keras_metrics_survive_model_save_and_load(tmp_path):
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(6, 16, 16, 1)).astype(np.float32)
    masks = (rng.random((6, 16, 16, 1)) > 0.5).astype(np.float32)
    model = _tiny_logit_model()
    model.compile(loss=_mean_logit_loss, metrics=_all_metrics(probability_threshold=0.4))
    before = model.evaluate(scores, masks, batch_size=4, verbose=0, return_dict=True)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded.evaluate(scores, masks, batch_size=4, verbose=0, return_dict=True)
    assert after == pytest.approx(before, abs=1e-7)
    assert {"overall_iou", "mean_iou", "precision@0.5", "precision@0.9"} <= set(after)
    loaded_metric = next(m for m in loaded.metrics[1].metrics if m.name == "overall_iou")
    assert loaded_metric.probability_threshold == 0.4


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf

    # Must run before TensorFlow initialises its devices, hence a fresh process.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np
    from refseg_tf.metrics import MeanIoU, OverallIoU, PrecisionAtIoU, scores as S

    data = np.load(sys.argv[1])
    # batch 4 over 11 samples: the last batch of 3 is split unevenly between the replicas
    dataset = tf.data.Dataset.from_tensor_slices((data["scores"], data["masks"])).batch(4)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((16, 16, 1))
        model = keras.Model(inputs, keras.layers.AveragePooling2D(2)(inputs))
        metrics = [OverallIoU(), MeanIoU()] + [PrecisionAtIoU(t) for t in S.DEFAULT_THRESHOLDS]
        model.compile(loss=lambda y, p: keras.ops.mean(p) - keras.ops.mean(y), metrics=metrics)
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    result["replicas"] = strategy.num_replicas_in_sync
    print("RESULT " + json.dumps(result))
    """
)


def _mirrored_test_data():
    rng = np.random.default_rng(11)
    # 8-pixel blocks: the authors' TF1 upsampling shifts the stride-2 logits by half a cell, so
    # 4-pixel blocks never reach IoU 0.9 and the precision@X values would be degenerate.
    blocks = (rng.random((11, 2, 2, 1)) > 0.5).astype(np.float32)
    masks = blocks.repeat(8, axis=1).repeat(8, axis=2)
    scores = rng.normal(size=(11, 16, 16, 1)).astype(np.float32)
    scores += 2.0 * (masks - 0.5) * rng.random((11, 1, 1, 1)).astype(np.float32)
    return scores, masks


def _run_mirrored_evaluate(tmp_path, scores, masks):
    np.savez(tmp_path / "data.npz", scores=scores, masks=masks)
    script = tmp_path / "mirrored_metrics.py"
    script.write_text(_MIRRORED_SCRIPT)
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repository + os.pathsep + os.environ.get("PYTHONPATH", ""))
    completed = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data.npz")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(l for l in completed.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.mark.slow
def test_keras_metrics_under_mirrored_strategy_match_single_device(tmp_path):
    scores, masks = _mirrored_test_data()
    mirrored = _run_mirrored_evaluate(tmp_path, scores, masks)
    assert mirrored["replicas"] == 2

    model = _tiny_logit_model()
    model.compile(loss=_mean_logit_loss, metrics=_all_metrics())
    single = model.evaluate(scores, masks, batch_size=4, verbose=0, return_dict=True)
    logits = model.predict(scores, verbose=0)
    reference = _numpy_scores(masks, _rule_reference(logits, 16, "upsample_logits"))

    for name in reference:
        assert mirrored[name] == pytest.approx(single[name], abs=1e-6), name
        assert single[name] == pytest.approx(reference[name], abs=1e-6), name
    assert 0.0 < reference["precision@0.9"] < reference["precision@0.5"] < 1.0

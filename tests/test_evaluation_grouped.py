"""`refseg-evaluate` decodes each image once and scores in graph: same numbers as per sentence.

The reference below is the evaluation as it was before images were grouped: one decode and
letterbox per *sentence* in the tf.data pipeline, and the scoring rule run eagerly per
sentence in Python (`evaluation.score_batch` -> `scoring.score_masks`), each mask compared with
its ground truth by `SegmentationEvaluator.update`. The split has images of different sizes
(PNG and JPEG) with several refs and several sentences each; a batch spans images.
"""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from refseg_tf import scoring
from refseg_tf.data import schema
from refseg_tf.metrics import SegmentationEvaluator, letterbox_localization_hit
from refseg_tf.preprocessing import ReferringPreprocessor
from refseg_tf.text import Vocabulary, split_words
from refseg_tf.training import evaluation
from refseg_tf.training.config import base_config
from tests.helpers import encode_image

SIZE = 32
GRID = 8
MAX_LENGTH = 8
BUCKETS = ((1, 3), (4, 5), (6, 20))
# (height, width, format, sentences per ref)
IMAGES = [
    (37, 53, "png", [2, 1, 3]),
    (64, 40, "jpeg", [1]),
    (48, 48, "png", [3, 2]),
    (21, 90, "jpeg", [2, 2]),
    (80, 61, "png", [1, 4]),
]
WORDS = ["man", "left", "red", "dog", "small", "on", "the", "right", "car", "big", "tree"]


def _sentence(rng):
    count = int(rng.integers(1, 8))
    text = " ".join(rng.choice(WORDS, count))
    return text.capitalize() + ("." if rng.random() < 0.5 else "")


def _records(rng):
    records, sent_id = [], 0
    for image_id, (height, width, image_format, counts) in enumerate(IMAGES):
        yy, xx = np.mgrid[:height, :width]
        image = rng.integers(0, 256, [height, width, 3], dtype=np.uint8)
        image[..., 0] = np.uint8(255 * (xx / width))  # a ramp the fake model responds to
        refs = []
        for index, count in enumerate(counts):
            mask = (np.abs(yy - height * (index + 1) / (len(counts) + 1)) < height / 4) & (
                xx > width * index / (len(counts) + 1)
            )
            sentences = [schema.Sentence(sent_id + k, _sentence(rng)) for k in range(count)]
            sent_id += count
            refs.append(schema.RefRecord(100 * image_id + index, mask.astype(np.uint8), sentences))
        records.append(schema.ImageRecord(
            image_id, f"images/{image_id}.{image_format}", encode_image(image, image_format),
            image_format, height, width, refs,
        ))
    return records


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    directory = tmp_path_factory.mktemp("grouped_eval")
    records = _records(np.random.default_rng(5))
    shards = [records[:3], records[3:]]
    for index, shard in enumerate(shards):
        name = schema.SHARD_PATTERN.format(split="val", index=index, count=len(shards))
        with tf.io.TFRecordWriter(str(directory / name)) as writer:
            for record in shard:
                writer.write(schema.encode_example(record))
    vocabulary = Vocabulary.build(
        [s.text for record in records for ref in record.refs for s in ref.sentences]
    )
    vocabulary.save(str(directory / schema.VOCAB_FILENAME))
    config = base_config()
    config.data.dir = str(directory)
    return config, vocabulary, sum(len(r.sentences) for record in records for r in record.refs)


class _TextAwareModel:
    """Logits [B, g, g, 1] from the pooled image and the word ids: sentences of one image get
    different masks. With `heatmap=True` it also has an LTS-style localisation heatmap."""

    def __init__(self, heatmap=False, threshold=0.5):
        self.has_heatmap = heatmap
        self.threshold = threshold
        self._word_weights = tf.constant(np.linspace(-1.0, 1.3, MAX_LENGTH), tf.float32)

    def _text_shift(self, word_ids):
        ids = tf.cast(word_ids, tf.float32)
        return tf.sin(tf.reduce_sum(ids * self._word_weights, axis=1))[:, None, None, None]

    def __call__(self, inputs, training=False):
        pooled = tf.image.resize(inputs["image"], [GRID, GRID], method="area")
        ramp = pooled[..., :1] / 60.0
        texture = tf.reduce_mean(pooled[..., 1:], axis=-1, keepdims=True) / 40.0
        return ramp + texture + 0.8 * self._text_shift(inputs["word_ids"])

    def heatmap(self, inputs):
        pooled = tf.image.resize(inputs["image"], [GRID // 2, GRID // 2], method="area")
        return pooled[..., 1:2] * self._text_shift(inputs["word_ids"])


def _per_sentence_dataset(config, preprocessor, batch_size):
    """The eval pipeline as it was: each sentence decodes and letterboxes its image."""
    paths = sorted(tf.io.gfile.glob(f"{config.data.dir}/val-*-of-*.tfrecord"))

    def expand(serialized):
        parsed = schema.parse_example(serialized)
        refs = parsed["sentence/ref_index"]
        count = tf.size(refs)
        return {
            "image/encoded": tf.fill([count], parsed["image/encoded"]),
            "image/id": tf.fill([count], parsed["image/id"]),
            "ref/id": tf.gather(parsed["ref/id"], refs),
            "ref/mask": tf.gather(parsed["ref/mask"], refs),
            "sentence/id": parsed["sentence/id"],
            "sentence/text": parsed["sentence/text"],
        }

    def decode(element):
        image = tf.io.decode_image(element["image/encoded"], channels=3, expand_animations=False)
        image = tf.ensure_shape(image, [None, None, 3])
        mask = tf.io.decode_png(element["ref/mask"], channels=1)
        network_image, window = preprocessor.preprocess_image(image)
        return {
            "image": network_image,
            "mask": preprocessor.preprocess_mask(mask),
            "image_window": window,
            "sentence": element["sentence/text"],
            "original_mask": tf.cast(mask[..., 0] > 0, tf.uint8),
            "original_size": tf.shape(mask, out_type=tf.int32)[:2],
            "ref_id": element["ref/id"],
            "sent_id": element["sentence/id"],
            "image_id": element["image/id"],
        }

    def tokenize(batch):
        return {**batch, "word_ids": preprocessor.tokenize(batch["sentence"])}

    # Records alternate between the shards, as `load` interleaves them.
    records = tf.data.Dataset.from_tensor_slices(paths).interleave(
        tf.data.TFRecordDataset, cycle_length=len(paths), block_length=1
    )
    sentences = records.map(expand).unbatch().map(decode)
    return sentences.padded_batch(batch_size).map(tokenize)


def _per_sentence_evaluation(model, config, preprocessor, batch_size, threshold, use_crf):
    """The evaluation loop as it was: the rule and the comparison per sentence, in Python."""
    from refseg_tf.data.transforms import denormalize_image

    evaluator = SegmentationEvaluator(buckets=BUCKETS)
    predict = evaluation._predict_fn(model)
    hits = []
    for batch in _per_sentence_dataset(config, preprocessor, batch_size):
        logits = predict(batch["image"], batch["word_ids"])
        images = None
        if use_crf:
            images = tf.cast(tf.clip_by_value(
                denormalize_image(batch["image"], preprocessor.normalization), 0, 255
            ), tf.uint8).numpy()
        predictions = evaluation.score_batch(
            logits, batch, SIZE, preprocessor.scoring_rule, threshold, crf_images=images
        )
        heatmaps = model.heatmap(batch)[..., 0] if model.has_heatmap else None
        for i, prediction in enumerate(predictions):
            height, width = prediction.shape
            truth = batch["original_mask"][i, :height, :width].numpy() > 0
            if heatmaps is not None:
                hits.append(letterbox_localization_hit(
                    heatmaps[i].numpy(), truth, batch["image_window"][i].numpy(), SIZE
                ))
            evaluator.update(
                prediction, truth,
                length=len(split_words(batch["sentence"][i].numpy(), preprocessor.tokenizer_mode)),
                sample_id=int(batch["sent_id"][i].numpy()),
            )
    scores = evaluator.result()
    if hits:
        scores["localization_accuracy"] = float(np.mean(hits))
    return scores, evaluator.by_length(BUCKETS), evaluator


def _preprocessor(vocabulary, rule, **settings):
    return ReferringPreprocessor(
        vocabulary, image_size=SIZE, max_length=MAX_LENGTH, scoring_rule=rule, **settings
    )


def test_grouped_eval_pipeline_yields_the_per_sentence_examples(split):
    config, vocabulary, total = split
    preprocessor = _preprocessor(vocabulary, "upsample_logits", pad_value="grey")
    grouped = list(evaluation.evaluation_dataset(config, "val", 3, preprocessor=preprocessor))
    reference = list(_per_sentence_dataset(config, preprocessor, 3))
    assert sum(len(batch["sent_id"]) for batch in grouped) == total
    assert len(grouped) == len(reference)
    for new, old in zip(grouped, reference):
        assert set(new) == set(old)
        for key in old:
            np.testing.assert_array_equal(new[key].numpy(), old[key].numpy(), err_msg=key)
    # Images of different sizes share batches: the original masks are padded to the largest.
    assert any(len({tuple(size) for size in batch["original_size"].numpy()}) > 1
               for batch in grouped)


@pytest.fixture(autouse=True)
def _fresh_streams():
    """No cached eval pipeline (and its prefetching iterator) outlives the test that made it.

    Cleared after the test only: the streams are keyed by their preprocessor, which each
    stream keeps alive, so another file's streams cannot be mistaken for this test's. (Dropping
    a stream that had lived a while took 20 to 65 s while its pipeline was autotuned, see
    `evaluation._without_autotuning`.)
    """
    yield
    evaluation.clear_cached_streams()


# By default one case per scoring rule, with and without the heatmap and the CRF, a partial last
# batch (4 and 3 do not divide the 21 sentences) and a threshold other than 0.5; the other three
# combinations run with `-m slow` (issue 21: suite time).
@pytest.mark.parametrize(
    "rule, threshold, heatmap, use_crf, batch_size",
    [
        pytest.param("upsample_logits", 0.5, False, False, 3, marks=pytest.mark.slow),
        ("upsample_logits", 0.3, True, False, 4),
        pytest.param("resize_probability", 0.5, True, False, 5, marks=pytest.mark.slow),
        pytest.param("resize_probability", 0.65, False, False, 1, marks=pytest.mark.slow),
        ("upsample_logits", 0.5, False, True, 3),
        ("resize_probability", 0.5, True, True, 4),
    ],
)
def test_grouped_evaluation_equals_the_per_sentence_evaluation(
    split, monkeypatch, rule, threshold, heatmap, use_crf, batch_size
):
    config, vocabulary, total = split
    seen = []

    def fake_crf(image, probability):  # deterministic, depends on the image and the unary
        seen.append(image.copy())
        return ((probability >= 0.45) | (image[..., 0] > 230)).astype(np.float32)

    monkeypatch.setattr(evaluation, "dense_crf", fake_crf)
    model = _TextAwareModel(heatmap=heatmap, threshold=threshold)
    preprocessor = _preprocessor(vocabulary, rule)
    scores, by_length, evaluator = evaluation.evaluate_model(
        model, config, "val", batch_size=batch_size, use_crf=use_crf, buckets=BUCKETS,
        preprocessor=preprocessor,
    )
    grouped_crf_images, seen[:] = list(seen), []
    expected_scores, expected_by_length, expected = _per_sentence_evaluation(
        model, config, preprocessor, batch_size, threshold, use_crf
    )
    assert evaluator.count == total
    assert evaluator._sample_ids == expected._sample_ids
    assert evaluator._intersections == expected._intersections
    assert evaluator._unions == expected._unions
    assert evaluator._lengths == expected._lengths
    assert scores == expected_scores
    assert by_length == expected_by_length
    assert json.dumps([scores, by_length]) == json.dumps([expected_scores, expected_by_length])
    assert ("localization_accuracy" in scores) == heatmap
    if use_crf:
        assert len(grouped_crf_images) == len(seen) == total
        for new, old in zip(grouped_crf_images, seen):
            np.testing.assert_array_equal(new, old)
    # The case is not degenerate: masks are neither empty nor full, and differ per sentence.
    ious = [i / u for i, u in zip(evaluator._intersections, evaluator._unions) if u]
    assert 0.0 < min(ious) < max(ious) < 1.0
    assert len(set(ious)) > total // 2


@pytest.mark.parametrize("rule", scoring.SCORING_RULES)
def test_score_mask_batch_tf_in_a_graph_equals_score_masks(rule):
    rng = np.random.default_rng(2)
    sizes = np.array([[37, 53], [80, 61], [21, 90], [48, 48]], np.int32)
    windows = np.stack([
        evaluation.scoring._window_or_letterbox(None, size, SIZE).numpy() for size in sizes
    ])
    logits = rng.normal(size=[len(sizes), GRID, GRID, 1]).astype(np.float32)
    batch = tf.function(
        lambda *args: scoring.score_mask_batch_tf(*args, image_size=SIZE, rule=rule, threshold=0.4)
    )(logits, windows, sizes)
    expected = scoring.score_masks(logits, windows, sizes, SIZE, rule, threshold=0.4)
    assert batch.shape == (len(sizes), 80, 90)
    for mask, (height, width), padded in zip(expected, sizes, batch.numpy()):
        np.testing.assert_array_equal(padded[:height, :width], mask)
        assert not padded[height:].any() and not padded[:, width:].any()
        assert 0 < mask.sum() < mask.size

"""Scoring a trained model on a converted split at original resolution (TensorFlow only).

For every sentence of the split the logits become a binary mask at the original image size by
the scoring rule of `refseg_tf.scoring` (`eval.scoring_rule`: "upsample_logits", the authors'
rule, or "resize_probability"), optionally refined by DenseCRF on the padded input (RMI/RRN:
unary = sigmoid of the TF1-upsampled logits), and are compared with the original mask. Reports
overall IoU (sum I / sum U), mean IoU, prec@0.5..0.9 and the breakdown by expression length
(RMI Tables 2-5), and says which scoring rule produced them.
For models with a localisation heatmap (`model.has_heatmap`, LTS) it adds the localisation
accuracy.
"""

import functools
import os

import numpy as np
import tensorflow as tf
from absl import logging

from refseg_tf import scoring

# DenseCRF parameters of RMI/RRN's public test code (chenxi116/TF-phrasecut-public and
# liruiyu/referseg_rrn, the pydensecrf step of their evaluation; RMI Sec. 2 and Table 1 "DCRF").
CRF_ITERATIONS = 5
CRF_GAUSSIAN = {"sxy": 3, "compat": 3}
CRF_BILATERAL = {"sxy": 20, "srgb": 3, "compat": 10}


def dense_crf(image_uint8: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """Refines a foreground probability map with a fully connected CRF; returns a {0,1} map.

    Unary = [-log(1 - p), -log(p)]; pairwise Gaussian (sxy 3, compat 3) and bilateral
    (sxy 20, srgb 3, compat 10); 5 mean-field iterations; argmax.
    Needs the optional extra: `pip install refseg-tf[crf]` (module `pydensecrf`).
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as error:
        raise ImportError(
            "--dense_crf needs pydensecrf: pip install 'refseg-tf[crf]' (pydensecrf2)."
        ) from error
    height, width = probability.shape
    probability = np.clip(probability.astype(np.float32), 1e-8, 1 - 1e-8)
    unary = np.stack([-np.log(1 - probability), -np.log(probability)]).reshape(2, -1)
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(**CRF_GAUSSIAN)
    crf.addPairwiseBilateral(rgbim=np.ascontiguousarray(image_uint8), **CRF_BILATERAL)
    q = np.array(crf.inference(CRF_ITERATIONS)).reshape(2, height, width)
    return (np.argmax(q, axis=0) == 1).astype(np.float32)


def evaluation_preprocessor(config, data_dir=None, vocabulary=None):
    """The `ReferringPreprocessor` of `config` with `vocabulary` (default: the data's vocab.txt)."""
    from refseg_tf.preprocessing import VOCABULARY_FILENAME, ReferringPreprocessor

    if vocabulary is None:
        vocabulary = os.path.join(data_dir or config.data.dir, VOCABULARY_FILENAME)
        if not tf.io.gfile.exists(vocabulary):
            raise FileNotFoundError(
                f"No vocabulary file {VOCABULARY_FILENAME!r} in {data_dir or config.data.dir!r}; "
                "pass the model's vocabulary."
            )
    return ReferringPreprocessor.from_config(config, vocabulary)


def evaluation_dataset(config, split, batch_size, data_dir=None, vocabulary=None,
                       preprocessor=None):
    """Eval batches of `split` preprocessed by `preprocessor` (default: built from `config`,
    word ids from `vocabulary`, a path: the model's `vocab.txt`; text-blind control included)."""
    from refseg_tf.data import load

    if preprocessor is None:
        preprocessor = evaluation_preprocessor(config, data_dir, vocabulary)
    return load(
        data_dir or config.data.dir,
        split,
        mode="eval",
        batch_size=batch_size,
        preprocessor=preprocessor,
    )


def _predict_fn(model):
    @tf.function(reduce_retracing=True)
    def predict(image, word_ids):
        logits = model({"image": image, "word_ids": word_ids}, training=False)
        return tf.cast(logits, tf.float32)

    return predict


def _heatmap_fn(model):
    """The model's localisation heatmap (`ReferringSegmenter.heatmap`) as a tf.function, or None."""
    if not model.has_heatmap:
        return None

    @tf.function(reduce_retracing=True)
    def heatmap(image, word_ids):
        return model.heatmap({"image": image, "word_ids": word_ids})[..., 0]

    return heatmap


def scoring_rule_of(config) -> str:
    """`config.eval.scoring_rule` (checked), "upsample_logits" for configs written before it."""
    return scoring.check_scoring_rule(config.eval.get("scoring_rule", scoring.DEFAULT_SCORING_RULE))


def score_batch(logits, batch, image_size, rule=scoring.DEFAULT_SCORING_RULE, threshold=0.5,
                crf_images=None):
    """The predicted masks of one evaluation batch at the original sizes (bool numpy arrays).

    Args:
        logits: the model's logits [B, g, g, 1].
        batch: an eval batch of `refseg_tf.data.load` (`image_window`, `original_size`).
        image_size: side S of the network input.
        rule, threshold: the scoring rule (`refseg_tf.scoring`) and the probability threshold.
        crf_images: None, or uint8 [B, S, S, 3] padded input images to refine with DenseCRF
            (unary: sigmoid of the TF1-upsampled logits), whose binary output is restored by
            the same rule.
    """
    windows = np.asarray(batch["image_window"])
    sizes = np.asarray(batch["original_size"])
    if crf_images is None:
        return scoring.score_masks(logits, windows, sizes, image_size, rule, threshold)
    probabilities = scoring.foreground_probability(logits, image_size).numpy()[..., 0]
    return [
        scoring.restore_binary_mask(
            dense_crf(crf_images[i], probabilities[i]), sizes[i], rule, windows[i]
        )
        for i in range(len(sizes))
    ]


def _sentence_length(sentence: bytes, mode: str = "refseg") -> int:
    from refseg_tf.text import split_words

    return len(split_words(sentence, mode))


@functools.lru_cache(maxsize=None)
def _counts_fn(image_size: int, rule: str, threshold: float, logits_shape: tuple):
    """A tf.function: a batch's logits -> (intersection, union) int64 [B] of every sentence.

    The masks are `scoring.score_mask_batch_tf` (the scoring rule, in graph), compared with
    the zero-padded `original_mask` of the eval batch (padding counts in neither). Traced
    once per process for a model's logits shape [g, g, 1] (any batch and image sizes).
    """
    signature = [
        tf.TensorSpec([None, *logits_shape], tf.float32),
        tf.TensorSpec([None, 4], tf.int32),
        tf.TensorSpec([None, 2], tf.int32),
        tf.TensorSpec([None, None, None], tf.uint8),
    ]

    @tf.function(input_signature=signature)
    def counts(logits, image_window, original_size, original_mask):
        truth = original_mask > 0
        predicted = scoring.score_mask_batch_tf(
            logits, image_window, original_size, image_size, rule, threshold,
            padded_size=tf.shape(truth)[1:3],
        )
        intersection = tf.reduce_sum(tf.cast(predicted & truth, tf.int64), axis=[1, 2])
        union = tf.reduce_sum(tf.cast(predicted | truth, tf.int64), axis=[1, 2])
        return intersection, union

    return counts


def _crf_counts(logits, batch, image_size, rule, threshold, normalization):
    """(intersection, union) numpy [B] with DenseCRF refinement (`score_batch`, numpy)."""
    from refseg_tf.data.transforms import denormalize_image
    from refseg_tf.metrics import intersection_union

    images = tf.cast(
        tf.clip_by_value(denormalize_image(batch["image"], normalization), 0, 255), tf.uint8
    ).numpy()
    predictions = score_batch(logits, batch, image_size, rule, threshold, crf_images=images)
    truths = batch["original_mask"].numpy() > 0
    counts = [
        intersection_union(mask, truths[i, : mask.shape[0], : mask.shape[1]])
        for i, mask in enumerate(predictions)
    ]
    return tuple(np.array(values) for values in zip(*counts))


def _localization_hits(heatmaps, batch, image_size) -> list:
    """LTS localisation hit of every sentence of a batch (numpy, `letterbox_localization_hit`)."""
    from refseg_tf.metrics import letterbox_localization_hit

    heatmaps = np.asarray(heatmaps)
    original_masks = batch["original_mask"].numpy()
    sizes = batch["original_size"].numpy()
    windows = batch["image_window"].numpy()
    return [
        letterbox_localization_hit(
            heatmaps[i], original_masks[i, :height, :width] > 0, windows[i], image_size
        )
        for i, (height, width) in enumerate(sizes)
    ]


def evaluate_model(model, config, split, batch_size=8, data_dir=None, use_crf=False,
                   threshold=None, buckets=None, max_batches=None, vocabulary=None,
                   scoring_rule=None, preprocessor=None):
    """Scores `model` on `split`; returns (scores, by_length, evaluator).

    `preprocessor` is the model directory's `ReferringPreprocessor`; None builds it from
    `config` and `vocabulary`, the model's vocabulary file: always pass one of them when
    `data_dir` is another conversion, whose own `vocab.txt` numbers the words differently.
    `scoring_rule` None means the preprocessor's (`config.eval.scoring_rule`); `threshold`
    None means the model's.

    Each image is decoded and letterboxed once for all its sentences (`evaluation_dataset`),
    and without DenseCRF the scoring rule and the pixel counts run in one graph per batch
    (`scoring.score_mask_batch_tf`); only the per-sentence bookkeeping is Python.
    """
    from refseg_tf.metrics import SegmentationEvaluator, buckets_for_dataset

    if preprocessor is None:
        preprocessor = evaluation_preprocessor(config, data_dir, vocabulary)
    threshold = scoring.check_threshold(
        threshold if threshold is not None else preprocessor.threshold_for(model)
    )
    rule = scoring.check_scoring_rule(scoring_rule or preprocessor.scoring_rule)
    buckets = buckets or buckets_for_dataset(config.data.get("dataset", "synthetic"))
    evaluator = SegmentationEvaluator(buckets=buckets)
    predict = _predict_fn(model)
    heatmap_fn = _heatmap_fn(model)
    localization_hits = []
    image_size = preprocessor.image_size
    dataset = evaluation_dataset(config, split, batch_size, data_dir, preprocessor=preprocessor)
    if max_batches:
        dataset = dataset.take(int(max_batches))
    for batch in dataset:
        logits = predict(batch["image"], batch["word_ids"])
        if use_crf:
            intersections, unions = _crf_counts(
                logits, batch, image_size, rule, threshold, preprocessor.normalization
            )
        else:
            counts = _counts_fn(image_size, rule, threshold, tuple(logits.shape[1:]))
            intersections, unions = (value.numpy() for value in counts(
                logits, batch["image_window"], batch["original_size"], batch["original_mask"]
            ))
        if heatmap_fn is not None:
            heatmaps = heatmap_fn(batch["image"], batch["word_ids"])
            localization_hits.extend(_localization_hits(heatmaps, batch, image_size))
        sentences = batch["sentence"].numpy()
        for i, sent_id in enumerate(batch["sent_id"].numpy()):
            evaluator.add(
                intersections[i],
                unions[i],
                length=_sentence_length(sentences[i], preprocessor.tokenizer_mode),
                sample_id=int(sent_id),
            )
    if evaluator.count == 0:
        raise ValueError(f"Split {split!r} of {data_dir or config.data.dir} has no sentences.")
    scores = evaluator.result()
    if localization_hits:  # LTS Sec. 4.3: heatmap argmax inside the ground truth
        scores["localization_accuracy"] = float(np.mean(localization_hits))
    return scores, evaluator.by_length(buckets), evaluator


def scoring_rule_line(rule: str, threshold: float) -> str:
    """The line above the evaluation table that names the scoring rule."""
    if rule == "upsample_logits":
        cut = scoring.logit_threshold(threshold)
        return (f"Scoring rule: upsample_logits (TF1 bilinear logits to the input size, "
                f"logit >= {cut:g}, binary map resized to the original size, > 0)")
    return (f"Scoring rule: resize_probability (sigmoid, probabilities resized to the original "
            f"size, p >= {threshold:g})")


def evaluate_model_dir(model_dir, split="val", data_dir=None, use_crf=None, batch_size=None,
                       checkpoint="auto", max_batches=None):
    """Loads the model of `model_dir`, scores it, prints and writes `model_dir/eval_<split>.json`."""
    from refseg_tf.metrics import format_table, save_scores_json
    from refseg_tf.preprocessing import ReferringPreprocessor
    from refseg_tf.training.model_dir import load_trained_model

    model, config = load_trained_model(model_dir, checkpoint=checkpoint)
    preprocessor = ReferringPreprocessor.from_model_dir(model_dir)
    use_crf = bool(config.eval.dense_crf) if use_crf is None else use_crf
    threshold = preprocessor.threshold_for(model)
    rule = preprocessor.scoring_rule
    scores, by_length, _ = evaluate_model(
        model,
        config,
        split,
        batch_size=int(batch_size or config.eval.batch_size),
        data_dir=data_dir,
        use_crf=use_crf,
        threshold=threshold,
        max_batches=max_batches,
        scoring_rule=rule,
        preprocessor=preprocessor,
    )
    report = {
        "split": split,
        "model": config.model.name,
        "data_dir": data_dir or config.data.dir,
        "dense_crf": use_crf,
        "scoring_rule": rule,
        "threshold": threshold,
        "scores": scores,
        "by_length": by_length,
    }
    path = save_scores_json(
        os.path.join(model_dir, f"eval_{split}.json"),
        scores,
        by_length,
        metadata={
            key: report[key]
            for key in ("split", "model", "data_dir", "dense_crf", "scoring_rule", "threshold")
        },
    )
    table = f"{scoring_rule_line(rule, report['threshold'])}\n{format_table(scores, by_length)}"
    logging.info("Wrote %s", path)
    return report, table

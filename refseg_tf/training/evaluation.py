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

import collections
import contextlib
import functools
import os
import threading
import time
import weakref

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


# ------------------------------------------------------------------ the cached eval stream
# Building the eval pipeline (tracing its map functions) and creating an iterator over it
# (instantiating those functions, the tokenizer's above all) cost about 1 s per call on a
# 2-core CPU, far more than reading a small split. `evaluate_model` therefore keeps, per
# (preprocessor, data directory, split, batch size), the dataset and one iterator over
# `dataset, end-of-pass marker, dataset, marker, ...`: a call reads one pass up to its marker
# (an empty batch), and the next call continues with the next pass, whose batches are the same
# (the eval pipeline is deterministic). The shards are checked on every call, and a change of
# their files (size, modification time) builds the stream anew. At most `_STREAM_CACHE_SIZE`
# streams are kept; each holds its pipeline's prefetch buffers (a few batches).
_STREAM_CACHE_SIZE = 4
_STREAMS = collections.OrderedDict()
_STREAMS_LOCK = threading.Lock()


def _shard_stamp(data_dir, split) -> tuple:
    """(path, size, mtime) of the split's shards and of metadata.json: what identifies a
    conversion's files (checked by `verify_split` on every call)."""
    from refseg_tf.data import find_shards
    from refseg_tf.filenames import METADATA_FILENAME

    paths = find_shards(data_dir, split)
    metadata = os.path.join(os.fspath(data_dir), METADATA_FILENAME)
    stamp = []
    for path in [*paths, metadata]:
        try:
            info = os.stat(path)
            stamp.append((path, info.st_size, info.st_mtime_ns))
        except OSError:  # a remote file system or no metadata: identified by its path
            stamp.append((path, None, None))
    return tuple(stamp), paths


def _end_of_pass_marker(element_spec):
    """A dataset of one batch with no example, of the eval batches' structure and types."""

    def empty(spec):
        shape = [0 if size is None else size for size in spec.shape]
        shape[0] = 0
        if spec.dtype == tf.string:
            return tf.fill(shape, "")
        return tf.zeros(shape, spec.dtype)

    return tf.data.Dataset.from_tensors(tf.nest.map_structure(empty, element_spec))


def _without_autotuning(dataset):
    """`dataset` without tf.data's autotuning thread, whose iterator is destroyed promptly.

    The iterator of an autotuned pipeline waits, when destroyed, for its autotuning thread
    (`tf.data` `Model::OptimizeLoop`), which sleeps for its optimisation period (which doubles
    up to a minute) without waking on cancellation (TF 2.21): dropping a cached stream that
    had lived a while took 20-65 s. `AUTOTUNE` parallelism then takes TF's static default
    (the CPU budget; a prefetch buffer of a few batches), enough for an eval pass.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class _EvalStream:
    """One cached eval dataset and a repeating iterator over its passes (see above)."""

    def __init__(self, dataset, stamp):
        self.dataset = dataset
        self.stamp = stamp
        self.lock = threading.Lock()
        self._iterator = None

    def passes(self, max_batches=None):
        """The batches of one pass (the first `max_batches` of them): a generator.

        A full pass reads the shared iterator up to its marker; a cut pass (`max_batches`,
        or a caller who stops early or fails) reads a fresh iterator, or leaves the shared
        one to be created again, so the next pass starts at the first batch.
        """
        if max_batches or not self.lock.acquire(blocking=False):
            dataset = self.dataset.take(int(max_batches)) if max_batches else self.dataset
            yield from dataset
            return
        finished = False
        try:
            if self._iterator is None:
                marker = _end_of_pass_marker(self.dataset.element_spec)
                self._iterator = iter(self.dataset.concatenate(marker).repeat())
            while True:
                batch = next(self._iterator)
                if int(batch["sent_id"].shape[0]) == 0:
                    finished = True
                    return
                yield batch
        finally:
            if not finished:  # stopped inside a pass: the next one starts afresh
                self._iterator = None
            self.lock.release()


def _eval_stream(config, split, batch_size, data_dir, preprocessor) -> _EvalStream:
    """The cached `_EvalStream` of these arguments (built on first use), shards checked."""
    from refseg_tf.data import pipeline

    data_dir = os.fspath(data_dir or config.data.dir)
    stamp, paths = _shard_stamp(data_dir, split)
    key = (id(preprocessor), os.path.abspath(data_dir), split, int(batch_size))
    with _STREAMS_LOCK:
        stream = _STREAMS.get(key)
        if stream is not None:
            _STREAMS.move_to_end(key)
    if stream is not None and stream.stamp == stamp:
        pipeline.verify_split(data_dir, split, paths)  # as `load` does on every build
        return stream
    dataset = evaluation_dataset(config, split, batch_size, data_dir, preprocessor=preprocessor)
    # The stream holds `preprocessor`, so its id stays unique.
    stream = _EvalStream(_without_autotuning(dataset), stamp)
    with _STREAMS_LOCK:
        _STREAMS[key] = stream
        while len(_STREAMS) > _STREAM_CACHE_SIZE:
            _STREAMS.popitem(last=False)
    return stream


def clear_cached_streams() -> None:
    """Forgets the cached eval pipelines and their iterators (frees their buffers)."""
    with _STREAMS_LOCK:
        _STREAMS.clear()


# tf.functions of a model, traced once per process and reused by every `evaluate_model` call
# (weak keys: a model that is gone takes its functions with it; the functions reach the model
# through a weak reference, so they do not keep it alive).
_MODEL_FUNCTIONS = weakref.WeakKeyDictionary()


def _model_function(model, kind: str, make):
    try:
        functions = _MODEL_FUNCTIONS.setdefault(model, {})
    except TypeError:  # not weak-referenceable or not hashable: a new function per call
        return make(lambda: model)
    if kind not in functions:
        functions[kind] = make(weakref.ref(model))
    return functions[kind]


def _predict_fn(model):
    """The model's logits (float32) as a tf.function, one per model and process.

    `reduce_retracing`: the first batch size is traced as such, the next one (e.g. the final
    partial batch) once more with a free batch dimension, and later calls, from any
    `evaluate_model` call, reuse those traces.
    """

    def make(model_ref):
        @tf.function(reduce_retracing=True)
        def predict(image, word_ids):
            logits = model_ref()({"image": image, "word_ids": word_ids}, training=False)
            return tf.cast(logits, tf.float32)

        return predict

    return _model_function(model, "predict", make)


def _heatmap_fn(model):
    """The model's localisation heatmap (`ReferringSegmenter.heatmap`) as a tf.function, or None."""
    if not model.has_heatmap:
        return None

    def make(model_ref):
        @tf.function(reduce_retracing=True)
        def heatmap(image, word_ids):
            return model_ref().heatmap({"image": image, "word_ids": word_ids})[..., 0]

        return heatmap

    return _model_function(model, "heatmap", make)


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

    # Without AutoGraph (the scoring code branches on settings only): converting
    # `scoring` cost about 1 s of the first call on a 2-core CPU.
    @tf.function(input_signature=signature, autograph=False)
    def counts(logits, image_window, original_size, original_mask):
        truth = original_mask > 0
        predicted = scoring.score_mask_batch_tf(
            logits, image_window, original_size, image_size, rule, threshold,
            padded_size=tf.shape(truth)[1:3],
        )
        # Summed in int32 (a mask has far fewer than 2**31 pixels), returned as int64: about
        # 30% less CPU than int64 sums over the [B, H, W] maps (issue 22, figure 8).
        intersection = tf.reduce_sum(tf.cast(predicted & truth, tf.int32), axis=[1, 2])
        union = tf.reduce_sum(tf.cast(predicted | truth, tf.int32), axis=[1, 2])
        return tf.cast(intersection, tf.int64), tf.cast(union, tf.int64)

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
                   scoring_rule=None, preprocessor=None, timings=None):
    """Scores `model` on `split`; returns (scores, by_length, evaluator).

    `preprocessor` is the model directory's `ReferringPreprocessor`; None builds it from
    `config` and `vocabulary`, the model's vocabulary file: always pass one of them when
    `data_dir` is another conversion, whose own `vocab.txt` numbers the words differently.
    `scoring_rule` None means the preprocessor's (`config.eval.scoring_rule`); `threshold`
    None means the model's. `timings`, a dict, receives "setup_seconds" (shard check, the
    pipeline and functions, up to the first batch asked for) and "loop_seconds" (the rest).

    Each image is decoded and letterboxed once for all its sentences (`evaluation_dataset`),
    and without DenseCRF the scoring rule and the pixel counts run in one graph per batch
    (`scoring.score_mask_batch_tf`); only the per-sentence bookkeeping is Python. Repeated
    calls with the same model and preprocessor reuse the traced functions, the pipeline and
    its iterator (`_eval_stream`): a call then costs the shard check and the batches.
    """
    from refseg_tf.metrics import SegmentationEvaluator, buckets_for_dataset

    start = time.perf_counter()
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
    stream = _eval_stream(config, split, batch_size, data_dir, preprocessor)
    loop_start = time.perf_counter()
    with contextlib.closing(stream.passes(max_batches)) as batches:
        for batch in batches:
            _score_into(evaluator, localization_hits, batch, predict, heatmap_fn, preprocessor,
                        image_size, rule, threshold, use_crf)
    if timings is not None:
        timings["setup_seconds"] = loop_start - start
        timings["loop_seconds"] = time.perf_counter() - loop_start
    if evaluator.count == 0:
        raise ValueError(f"Split {split!r} of {data_dir or config.data.dir} has no sentences.")
    scores = evaluator.result()
    if localization_hits:  # LTS Sec. 4.3: heatmap argmax inside the ground truth
        scores["localization_accuracy"] = float(np.mean(localization_hits))
    return scores, evaluator.by_length(buckets), evaluator


def _score_into(evaluator, localization_hits, batch, predict, heatmap_fn, preprocessor,
                image_size, rule, threshold, use_crf) -> None:
    """Scores one eval batch into `evaluator` (and the LTS localisation hits)."""
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

"""The tf.data input pipeline: converted TFRecords -> batches of (image, words, mask) examples.

Stages (train mode; eval leaves out shuffling and repetition, and decodes and letterboxes
each image record once before expanding it into its sentences, `_decode_image_record`):

1. the split's shard files, shuffled each epoch (seeded) and repeated (forever by default),
   read by a parallel interleave; every image record gets its own stateless random seed (see
   `_read_records`), so sampling is reproducible with `seed` though it runs in parallel;
2. parse (`schema.parse_example`) and choose sentences: one per ref ("sample") or all ("all");
   the record is expanded into one element per chosen sentence that still holds the *encoded*
   image and mask, so the shuffle buffer holds compressed bytes (about 0.1 MB per element)
   rather than decoded float images (1.2 MB at 320 px);
3. shuffle those elements (train) so that a batch mixes images;
4. parallel decode and preprocessing by the model's `refseg_tf.preprocessing.ReferringPreprocessor`
   (`preprocess_image`, `preprocess_mask`) and `downsample_label`: the same object `Predictor`,
   the evaluation and the export use on a user's picture;
5. batch (padded in eval, for `original_mask`), tokenize the batch in graph (the preprocessor's
   `tokenize`, one call per batch in a parallel map), prefetch. When the conversion stored the
   word ids (`refseg-convert --word_ids`) and their fingerprint is the preprocessor's, the
   parallel per-record map of stage 2 reads them instead (`Tokenizer.pad` of the whole ids:
   the same values) and no tokenizer runs.

Reference: the preprocessing of the public code of Hu et al. 2016 (ronghanghu/text_objseg
`util/im_processing.py` resize-and-pad, `util/text_processing.py`), reused by RMI
(chenxi116/TF-phrasecut-public) and RRN (liruiyu/referseg_rrn); MCN / LTS (Jing et al. 2021,
Sec. 4.2) for the grey/bicubic/unit presets.
"""

import dataclasses
import functools
import json
import os
import random
from typing import Optional

import tensorflow as tf

from absl import logging

from refseg_tf.data import schema, transforms
from refseg_tf.data.shards import (  # noqa: F401  (re-exported: the names callers import from here)
    DamagedDataError,
    available_splits,
    find_shards,
    verify_split,
)

TFRECORD_BUFFER_BYTES = 256 * 1024  # TFRecordDataset's read buffer per shard
MODES = ("train", "eval")
SENTENCE_MODES = ("sample", "all")
VERIFY_MODES = ("checksum", "size", "none")
_MODEL_INPUTS = ("image", "word_ids")


@dataclasses.dataclass(frozen=True)
class _Preprocessing:
    """What the decode map does to one example (see `load` for the meaning of each field)."""

    preprocessor: object  # refseg_tf.preprocessing.ReferringPreprocessor
    label_grid: Optional[int]
    label_mode: str
    # Word ids read from the records (`refseg-convert --word_ids`, `_use_stored_word_ids`)
    # in the parallel per-record map, instead of a tokenizer map over the batches.
    stored_word_ids: bool = False


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """How records are read: order, repetition and parallelism."""

    training: bool
    seed: int
    repeat: Optional[int]
    parallel: int  # tf.data.AUTOTUNE or a positive count; 1 is fully sequential
    cycle_length: Optional[int]
    deterministic: bool
    interleave_all_files: bool = False


def choose_auto_shard_policy(num_shards: int, num_workers: int):
    """FILE when every worker gets at least one shard file, else DATA.

    With DATA every worker reads every file and keeps every num_workers-th batch.
    """
    if num_shards >= num_workers:
        return tf.data.experimental.AutoShardPolicy.FILE
    return tf.data.experimental.AutoShardPolicy.DATA


def detect_worker_count() -> int:
    """Workers (chief included) of the current strategy's cluster, or of TF_CONFIG; at least 1."""
    resolver = getattr(tf.distribute.get_strategy(), "cluster_resolver", None)
    if resolver is None:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster = resolver.cluster_spec().as_dict()
    count = sum(len(cluster.get(job, ())) for job in ("chief", "worker"))
    return max(count, 1)


def load(
    data_dir,
    split: str,
    mode: str = "train",
    batch_size: int = 8,
    *,
    preprocessor=None,
    label_grid: Optional[int] = None,
    label_mode: str = "binary",
    sentences: str = "sample",
    shuffle_buffer: int = 1000,
    interleave_all_files: bool = False,
    seed: Optional[int] = None,
    repeat: Optional[int] = None,
    drop_remainder: Optional[bool] = None,
    as_supervised: bool = False,
    num_parallel_calls: Optional[int] = None,
    cycle_length: Optional[int] = None,
    prefetch: bool = True,
    deterministic: Optional[bool] = None,
    num_workers: Optional[int] = None,
    input_context: Optional[tf.distribute.InputContext] = None,
    verify: str = "checksum",
) -> tf.data.Dataset:
    """Reads a converted split as batches of referring-segmentation examples.

    Args:
        data_dir: directory of a converted dataset (`<split>-NNNNN-of-MMMMM.tfrecord`, vocab.txt).
        split: split name, e.g. "train", "val", "testA".
        mode: "train" (shuffled, repeated, sentences sampled) or "eval" (every sentence exactly
            once in a fixed order, final partial batch kept, original masks and ids included).
        batch_size: examples per batch (per input pipeline under `input_context`).
        preprocessor: the `refseg_tf.preprocessing.ReferringPreprocessor` that defines image
            size, text length and padding, resize, padding value, normalisation, tokeniser,
            vocabulary and the text-blind control (e.g. a model directory's,
            `ReferringPreprocessor.from_model_dir`, or a training config's). None: the data
            directory's, `ReferringPreprocessor.from_data_dir(data_dir)` (its `vocab.txt`, the
            tokeniser it was built with, every other setting the `PreprocessingSettings`
            default); to change a setting, build one: `from_data_dir(data_dir, image_size=416)`.
        label_grid: None, or g to add a `label` [g, g, 1] downsampled from the mask.
        label_mode: "binary", "soft", "any" or "point" (see `refseg_tf.labels.downsample_mask`).
        sentences: train mode only: "sample" one sentence per ref per epoch, or "all" of them.
        shuffle_buffer: train mode only: elements (sentences) in the shuffle buffer.
        interleave_all_files: train mode only: read every shard at once, one record from each
            in turn (the shard order is reshuffled each epoch, as always), so that the window
            the shuffle buffer draws from spans the whole split instead of the first 16 shards'
            current records. For the batch-1 rows (RMI, RRN, ASGN), whose authors' readers
            permuted the whole set each epoch: a buffer covering the split would hold every
            encoded image in memory (config key `data.interleave_all_files`).
        seed: makes train mode reproducible (file order, sampling, shuffling); None: random.
        repeat: train mode only: number of epochs; None repeats forever.
        drop_remainder: drop a final partial batch; None means True in train, False in eval.
        as_supervised: yield `({"image", "word_ids"}, target)` with target `label` when
            `label_grid` is set, else `mask` (for `model.fit`).
        num_parallel_calls: parallelism of reading and mapping; None means AUTOTUNE, 1 is fully
            sequential (no interleave, no parallel map).
        cycle_length: shard files read at once; None lets tf.data choose.
        prefetch: end with `prefetch(AUTOTUNE)`.
        deterministic: element order guaranteed; None means True in eval or with a `seed`.
        num_workers: workers of a multi-worker job, for the auto-shard policy; None detects them
            from the current strategy or TF_CONFIG.
        input_context: from `strategy.distribute_datasets_from_function`: this pipeline then reads
            its own part of the shards (or of the records when there are fewer shards).
        verify: how the shards are checked against metadata.json before reading
            (`verify_split`): "checksum" (sizes, record counts and CRC-32), "size" (sizes and
            record counts) or "none".

    Returns:
        a `tf.data.Dataset` of dicts: `image` float32 [B, S, S, 3], `word_ids` int32 [B, T],
        `mask` float32 [B, S, S, 1], `image_window` int32 [B, 4] (top, left, height, width),
        `label` float32 [B, g, g, 1] with `label_grid`; eval mode adds `original_mask` uint8
        [B, Hmax, Wmax] (zero-padded), `original_size` int32 [B, 2], `ref_id`, `sent_id`,
        `image_id` int64 [B] and `sentence` string [B].

    Raises:
        ValueError: an argument is invalid (the message names it and the allowed values).
        FileNotFoundError: no shards of `split`, or no preprocessor given and no vocabulary
            file in `data_dir`.
        DamagedDataError: a shard differs from metadata.json (see `verify_split`).

    Example:
        from refseg_tf.preprocessing import ReferringPreprocessor

        train = load("data/unc", "train", batch_size=8, label_grid=40, label_mode="soft",
                     as_supervised=True)  # the data's vocabulary, S = 320, caffe_bgr
        preprocessor = ReferringPreprocessor.from_data_dir("data/unc", image_size=416,
                                                           normalization="unit")
        train = load("data/unc", "train", preprocessor=preprocessor, as_supervised=True)
        model.fit(train, steps_per_epoch=1000)
        for batch in load("data/unc", "val", mode="eval", batch_size=16):
            logits = model({"image": batch["image"], "word_ids": batch["word_ids"]})

    Reference: `util/im_processing.py` of the Hu et al. 2016 / RMI / RRN code, RMI Sec. 4.1
    (soft 40x40 target), Hu et al. 2016 Sec. 3.3 (coarse 16x16 label).
    """
    _validate_arguments(locals())
    training = mode == "train"
    paths = find_shards(data_dir, split)
    if verify != "none":
        verify_split(data_dir, split, paths, checksum=verify == "checksum")
    preprocessor = _checked_preprocessor(preprocessor, data_dir)
    if label_grid is not None and label_grid > preprocessor.image_size:
        raise ValueError(
            f"`label_grid` ({label_grid}) must not exceed the preprocessor's `image_size` "
            f"({preprocessor.image_size})."
        )
    schedule = _Schedule(
        training=training,
        seed=random.SystemRandom().randrange(2**31) if seed is None else seed,
        repeat=repeat,
        parallel=tf.data.AUTOTUNE if num_parallel_calls is None else num_parallel_calls,
        cycle_length=cycle_length,
        interleave_all_files=bool(interleave_all_files) and training,
        deterministic=_default_deterministic(training, seed, deterministic),
    )
    preprocessing = _Preprocessing(
        preprocessor=preprocessor,
        label_grid=label_grid,
        label_mode=label_mode,
        stored_word_ids=_use_stored_word_ids(data_dir, preprocessor),
    )
    records, policy = _read_records(paths, schedule, num_workers, input_context)
    if training:
        elements = _expand_to_sentences(records, sentences, schedule, preprocessing)
        elements = elements.shuffle(
            shuffle_buffer, seed=schedule.seed, reshuffle_each_iteration=True
        )
        decode = functools.partial(_decode_and_preprocess, preprocessing=preprocessing)
        examples = _map(elements, decode, schedule)
    else:
        examples = _eval_examples(records, preprocessing, schedule)
    batches = _batch(examples, batch_size, training, drop_remainder)
    if not preprocessing.stored_word_ids:  # one tokenizer call per batch, in a parallel map
        tokenize = functools.partial(
            _tokenize, preprocessor=preprocessor, keep_sentence=not training
        )
        batches = _map(batches, tokenize, schedule)
    if as_supervised:
        target = "label" if label_grid else "mask"
        batches = batches.map(lambda batch: ({k: batch[k] for k in _MODEL_INPUTS}, batch[target]))
    if prefetch:
        batches = batches.prefetch(tf.data.AUTOTUNE)
    return batches.with_options(_options(schedule.deterministic, policy))


def _validate_arguments(arguments: dict) -> None:
    transforms.check_choice("mode", arguments["mode"], MODES)
    transforms.check_choice("label_mode", arguments["label_mode"], transforms.LABEL_MODES)
    transforms.check_choice("sentences", arguments["sentences"], SENTENCE_MODES)
    transforms.check_choice("verify", arguments["verify"], VERIFY_MODES)
    if not isinstance(arguments["split"], str) or not arguments["split"]:
        raise ValueError(f"`split` must be a non-empty string; received {arguments['split']!r}.")
    for name in ("batch_size", "shuffle_buffer"):
        transforms.check_positive_int(name, arguments[name])
    for name in ("label_grid", "repeat", "num_parallel_calls", "cycle_length", "num_workers"):
        if arguments[name] is not None:
            transforms.check_positive_int(name, arguments[name])
    _validate_optional_int("seed", arguments["seed"])
    if arguments["mode"] == "eval" and arguments["repeat"] is not None:
        raise ValueError(
            "`repeat` must be None in mode 'eval' (every sentence exactly once); "
            f"received {arguments['repeat']!r}."
        )
    for name in ("drop_remainder", "deterministic"):
        if arguments[name] is not None and not isinstance(arguments[name], bool):
            raise ValueError(f"`{name}` must be None, True or False; received {arguments[name]!r}.")
    for name in ("as_supervised", "prefetch"):
        if not isinstance(arguments[name], bool):
            raise ValueError(f"`{name}` must be True or False; received {arguments[name]!r}.")


def _validate_optional_int(name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be None or a non-negative integer; received {value!r}.")


def _default_deterministic(training: bool, seed, deterministic) -> bool:
    """Element order is fixed in eval and in seeded training unless the caller says otherwise."""
    if deterministic is not None:
        return deterministic
    return not training or seed is not None


def _checked_preprocessor(preprocessor, data_dir):
    """The given `ReferringPreprocessor`, or the data directory's (`from_data_dir`)."""
    from refseg_tf.preprocessing import ReferringPreprocessor

    if preprocessor is None:
        return ReferringPreprocessor.from_data_dir(data_dir)
    if not isinstance(preprocessor, ReferringPreprocessor):
        raise ValueError(
            "`preprocessor` must be a ReferringPreprocessor or None; received "
            f"{type(preprocessor).__name__} (build one with "
            "`ReferringPreprocessor.from_data_dir(data_dir, image_size=...)`)."
        )
    return preprocessor


def _use_stored_word_ids(data_dir, preprocessor) -> bool:
    """Whether the records' stored word ids (`refseg-convert --word_ids`) are this
    preprocessor's: `metadata.json` "word_ids" holds the fingerprint of the vocabulary and
    tokeniser they were made with, compared with the preprocessor's. Otherwise the sentences
    are tokenised in graph, and the reason is logged (ids of another vocabulary or rule are
    never read)."""
    path = os.path.join(os.fspath(data_dir), schema.METADATA_FILENAME)
    try:
        with tf.io.gfile.GFile(path, "r") as stream:
            stored = json.load(stream).get("word_ids")
    except (tf.errors.OpError, ValueError, AttributeError):
        stored = None
    if not isinstance(stored, dict):
        logging.info("%s: no stored word ids; the sentences are tokenised in graph.", data_dir)
        return False
    if preprocessor.blind_word_ids is not None:
        return True  # the text-blind control's fixed ids, whatever the sentence
    if stored.get("fingerprint") != preprocessor.tokenization_fingerprint:
        logging.warning(
            "%s: the stored word ids were made with another vocabulary or tokenizer (%s, "
            "tokenizer %r, %s words) than the preprocessor's (tokenizer %r, %d words): the "
            "sentences are tokenised in graph instead.",
            data_dir, path, stored.get("tokenizer"), stored.get("vocabulary_size"),
            preprocessor.tokenizer_mode, len(preprocessor.vocabulary),
        )
        return False
    return True


def _stored_word_ids(parsed: dict, rows, preprocessing: _Preprocessing):
    """int32 [len(rows), T]: the preprocessor's ids of the record's sentences `rows`, from the
    stored whole ids (`Tokenizer.pad`: the same values as tokenising their text)."""
    ids = tf.RaggedTensor.from_row_lengths(
        parsed[schema.WORD_IDS_KEY], parsed[schema.NUM_WORDS_KEY], validate=False
    )
    return preprocessing.preprocessor.word_ids_from_ids(tf.gather(ids, rows))


def _map(dataset, function, schedule: _Schedule):
    """`dataset.map`, sequential when schedule.parallel == 1."""
    if schedule.parallel == 1:
        return dataset.map(function)
    return dataset.map(
        function, num_parallel_calls=schedule.parallel, deterministic=schedule.deterministic
    )


def _read_records(paths, schedule: _Schedule, num_workers, input_context):
    """(serialized record, stateless seed [2]) pairs, sharded for distribution.

    Returns (dataset, auto-shard policy). Every pass over a file draws a random nonce (a cheap,
    sequential map over file names, so it is reproducible with `seed`) and a record's seed is
    (nonce, index in the file): sampling then runs in a parallel map yet stays deterministic
    and differs between epochs. Only maps, shuffles and repeats sit between the file names and
    the reader, which tf.data's FILE auto-sharding requires (a `scan` or `zip` there breaks it).
    """
    files = tf.data.Dataset.from_tensor_slices(paths)
    manual = input_context is not None and input_context.num_input_pipelines > 1
    shard_files = manual and len(paths) >= input_context.num_input_pipelines
    if shard_files:
        files = files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if schedule.training:
        files = files.shuffle(len(paths), seed=schedule.seed, reshuffle_each_iteration=True)
        files = files.repeat(schedule.repeat)
        passes = files.map(lambda path: (path, _random_nonce(schedule.seed)))
    else:
        passes = files.map(lambda path: (path, tf.constant(0, tf.int64)))
    records = _interleave(passes, len(paths), schedule)
    if manual and not shard_files:
        records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if manual:
        return records, tf.data.experimental.AutoShardPolicy.OFF
    workers = num_workers or detect_worker_count()
    return records, choose_auto_shard_policy(len(paths), workers)


def _random_nonce(seed: int):
    return tf.random.uniform([], 0, tf.int64.max, dtype=tf.int64, seed=seed)


def _records_with_seeds(path, nonce):
    # buffer_size given (TF's default, 256 KiB): unspecified, TF logs an info line per file.
    indexed = tf.data.TFRecordDataset(path, buffer_size=TFRECORD_BUFFER_BYTES).enumerate()
    return indexed.map(lambda index, record: (record, tf.stack([nonce, index])))


def _interleave(passes, num_files: int, schedule: _Schedule):
    if schedule.interleave_all_files:
        # Every (per-epoch shuffled) shard at once, a record from each in turn.
        return passes.interleave(
            _records_with_seeds,
            cycle_length=num_files,
            block_length=1,
            num_parallel_calls=None if schedule.parallel == 1 else schedule.parallel,
            deterministic=schedule.deterministic,
        )
    if schedule.parallel == 1:
        return passes.interleave(_records_with_seeds, cycle_length=1, block_length=1)
    return passes.interleave(
        _records_with_seeds,
        cycle_length=schedule.cycle_length or min(num_files, 16),
        block_length=1,
        num_parallel_calls=schedule.parallel,
        deterministic=schedule.deterministic,
    )


def _expand_to_sentences(records, sentences: str, schedule: _Schedule,
                         preprocessing: _Preprocessing):
    select = functools.partial(
        _select_sentences, sentences=sentences, preprocessing=preprocessing
    )
    return _map(records, select, schedule).unbatch()


def _select_sentences(serialized, record_seed, sentences: str,
                      preprocessing: _Preprocessing) -> dict:
    """Parses one image record into per-sentence fields with a leading [N] axis (still
    encoded), with their `word_ids` when they are stored."""
    stored = preprocessing.stored_word_ids
    parsed = schema.parse_example(serialized, word_ids=stored)
    ref_index = parsed["sentence/ref_index"]
    num_refs = tf.size(parsed["ref/id"], out_type=tf.int64)
    checks = _record_checks(parsed, ref_index, num_refs, word_ids=stored)
    with tf.control_dependencies(checks):
        if sentences == "sample":
            chosen = _sample_one_per_ref(ref_index, num_refs, record_seed)
        else:
            chosen = tf.range(tf.size(ref_index))
    refs = tf.gather(ref_index, chosen)
    count = tf.size(chosen)
    selected = {}
    if stored:
        selected["word_ids"] = _stored_word_ids(parsed, chosen, preprocessing)
    return {
        **selected,
        "image/encoded": tf.fill([count], parsed["image/encoded"]),
        "image/height": tf.fill([count], parsed["image/height"]),
        "image/width": tf.fill([count], parsed["image/width"]),
        "image/id": tf.fill([count], parsed["image/id"]),
        "image/filename": tf.fill([count], parsed["image/filename"]),
        "ref/id": tf.gather(parsed["ref/id"], refs),
        "ref/mask": tf.gather(parsed["ref/mask"], refs),
        "sentence/id": tf.gather(parsed["sentence/id"], chosen),
        "sentence/text": tf.gather(parsed["sentence/text"], chosen),
    }


def _record_checks(parsed: dict, ref_index, num_refs, word_ids: bool = False) -> list:
    where = ["in image record", parsed["image/filename"], "image/id", parsed["image/id"]]
    in_range = tf.reduce_all((ref_index >= 0) & (ref_index < num_refs))
    same_count = tf.equal(tf.size(ref_index), tf.size(parsed["sentence/text"]))
    same_count &= tf.equal(tf.size(ref_index), tf.size(parsed["sentence/id"]))
    masks_match = tf.equal(tf.size(parsed["ref/mask"], out_type=tf.int64), num_refs)
    stored_checks = []
    if word_ids:
        counts = parsed[schema.NUM_WORDS_KEY]
        stored_match = tf.equal(tf.size(counts), tf.size(ref_index))
        stored_match &= tf.reduce_all(counts >= 0)
        stored_match &= tf.equal(
            tf.reduce_sum(counts), tf.size(parsed[schema.WORD_IDS_KEY], out_type=tf.int64)
        )
        stored_checks.append(tf.debugging.Assert(stored_match, [
            "sentence/num_words does not describe sentence/word_ids and sentence/text "
            "(metadata.json says the word ids are stored: convert again)", *where,
        ]))
    return [*stored_checks,
        tf.debugging.Assert(in_range, ["sentence/ref_index outside [0, len(ref/id))", *where]),
        tf.debugging.Assert(
            same_count, ["sentence/ref_index, sentence/id, sentence/text lengths differ", *where]
        ),
        tf.debugging.Assert(masks_match, ["ref/mask and ref/id lengths differ", *where]),
    ]


def _sample_one_per_ref(ref_index, num_refs, record_seed):
    """Indices of one uniformly drawn sentence per ref, in ref order (refs without one skipped)."""
    keys = tf.random.stateless_uniform(tf.shape(ref_index), seed=record_seed)
    permutation = tf.argsort(keys)
    refs_in_order = tf.gather(ref_index, permutation)
    positions = tf.range(tf.size(ref_index))
    first_position = tf.math.unsorted_segment_min(positions, refs_in_order, num_refs)
    # Empty segments (a ref without sentences) hold the dtype's maximum.
    first_position = tf.boolean_mask(first_position, first_position < tf.size(ref_index))
    return tf.gather(permutation, first_position)


def _decode_and_preprocess(element: dict, preprocessing: _Preprocessing) -> dict:
    image = tf.io.decode_image(element["image/encoded"], channels=3, expand_animations=False)
    mask = tf.io.decode_png(element["ref/mask"], channels=1)
    image, mask = _checked_sizes(image, mask, element)
    network_image, window = preprocessing.preprocessor.preprocess_image(image)
    input_mask = preprocessing.preprocessor.preprocess_mask(mask)
    example = {
        "image": network_image,
        "mask": input_mask,
        "image_window": window,
        "sentence": element["sentence/text"],
    }
    if preprocessing.stored_word_ids:
        example["word_ids"] = element["word_ids"]
        del example["sentence"]  # train batches carry no sentence
    if preprocessing.label_grid:
        example["label"] = transforms.downsample_label(
            input_mask, preprocessing.label_grid, preprocessing.label_mode
        )
    return example


def _eval_examples(records, preprocessing: _Preprocessing, schedule: _Schedule):
    """Eval mode: every image record decoded and letterboxed once (`_decode_image_record`),
    then one element per sentence, in the record's order (sentences are never sampled)."""
    decode = functools.partial(_decode_image_record, preprocessing=preprocessing)
    return _map(records, decode, schedule).unbatch()


def _decode_image_record(serialized, record_seed, preprocessing: _Preprocessing) -> dict:
    """One image record -> its eval examples with a leading [N sentences] axis.

    The image is decoded and letterboxed once and each ref's mask once; sentences then share
    them (`tf.gather` by `sentence/ref_index`). The fields and their values are those of a
    per-sentence decode, with the originals the evaluation scores against.
    """
    del record_seed  # eval reads every sentence: nothing is drawn
    stored = preprocessing.stored_word_ids
    parsed = schema.parse_example(serialized, word_ids=stored)
    ref_index = parsed["sentence/ref_index"]
    num_refs = tf.size(parsed["ref/id"], out_type=tf.int64)
    with tf.control_dependencies(_record_checks(parsed, ref_index, num_refs, word_ids=stored)):
        ref_index = tf.identity(ref_index)
    image = tf.io.decode_image(parsed["image/encoded"], channels=3, expand_animations=False)
    image = tf.ensure_shape(image, [None, None, 3])
    refs = _decode_ref_masks(image, parsed, preprocessing)
    network_image, window = preprocessing.preprocessor.preprocess_image(image)
    count = tf.size(ref_index)
    example = {
        "image": _repeat(network_image, count),
        "mask": tf.gather(refs["mask"], ref_index),
        "image_window": _repeat(window, count),
        "sentence": parsed["sentence/text"],
    }
    if preprocessing.label_grid:
        example["label"] = tf.gather(refs["label"], ref_index)
    example["original_mask"] = tf.gather(refs["original_mask"], ref_index)
    original_size = tf.shape(refs["original_mask"], out_type=tf.int32)[1:]
    example["original_size"] = _repeat(original_size, count)
    example["ref_id"] = tf.gather(parsed["ref/id"], ref_index)
    example["sent_id"] = parsed["sentence/id"]
    example["image_id"] = tf.fill([count], parsed["image/id"])
    if stored:
        example["word_ids"] = _stored_word_ids(parsed, tf.range(count), preprocessing)
    return example


def _repeat(value, count):
    return tf.repeat(value[tf.newaxis], count, axis=0)


def _decode_ref_masks(image, parsed: dict, preprocessing: _Preprocessing) -> dict:
    """Each ref's mask decoded once (size checked against the image): the letterboxed `mask`
    [R, S, S, 1], `label` [R, g, g, 1] with a label grid, `original_mask` uint8 [R, H, W]."""
    size = preprocessing.preprocessor.image_size
    where = {
        key: parsed[key] for key in ("image/height", "image/width", "image/filename", "image/id")
    }

    def decode(ref):
        encoded, ref_id = ref
        mask = tf.io.decode_png(encoded, channels=1)
        _, mask = _checked_sizes(image, mask, {**where, "ref/id": ref_id})
        input_mask = preprocessing.preprocessor.preprocess_mask(mask)
        decoded = {"mask": input_mask, "original_mask": tf.cast(mask[..., 0] > 0, tf.uint8)}
        if preprocessing.label_grid:
            decoded["label"] = transforms.downsample_label(
                input_mask, preprocessing.label_grid, preprocessing.label_mode
            )
        return decoded

    signature = {
        "mask": tf.TensorSpec([size, size, 1], tf.float32),
        "original_mask": tf.TensorSpec([None, None], tf.uint8),
    }
    if preprocessing.label_grid:
        grid = preprocessing.label_grid
        signature["label"] = tf.TensorSpec([grid, grid, 1], tf.float32)
    return tf.map_fn(decode, (parsed["ref/mask"], parsed["ref/id"]), fn_output_signature=signature)


def _checked_sizes(image, mask, element: dict):
    """Asserts that image, mask and the stored image/height, image/width agree."""
    image = tf.ensure_shape(image, [None, None, 3])
    stored = tf.cast(tf.stack([element["image/height"], element["image/width"]]), tf.int32)
    image_size = tf.shape(image)[:2]
    mask_size = tf.shape(mask)[:2]
    where = ["in image record", element["image/filename"], "image/id", element["image/id"]]
    checks = [
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(image_size, stored)),
            ["decoded image size", image_size, "!= image/height, image/width", stored, *where],
        ),
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(mask_size, stored)),
            [
                "ref/mask size",
                mask_size,
                "!= image size",
                stored,
                "ref/id",
                element["ref/id"],
                *where,
            ],
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(image), tf.identity(mask)


def _batch(examples, batch_size: int, training: bool, drop_remainder):
    """Train examples all have one shape: `batch` (about 0.07 ms less CPU per 320 px example
    than `padded_batch` on a 2-core EPYC with TF 2.21). Eval's original_mask
    differs in size between images: padded to the largest of the batch."""
    drop = training if drop_remainder is None else drop_remainder
    if training:
        return examples.batch(batch_size, drop_remainder=drop)
    return examples.padded_batch(batch_size, drop_remainder=drop)


def _tokenize(batch: dict, preprocessor, keep_sentence: bool) -> dict:
    batch = dict(batch)
    batch["word_ids"] = preprocessor.tokenize(batch["sentence"])
    if not keep_sentence:
        del batch["sentence"]
    return batch


def _options(deterministic: bool, policy) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = policy
    return options

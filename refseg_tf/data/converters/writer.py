"""Writes a reader's items as sharded TFRecords with `vocab.txt` and `metadata.json`.

Output layout (`schema.SHARD_PATTERN`):

    OUT/<split>-NNNNN-of-MMMMM.tfrecord   one tf.train.Example per image and split
    OUT/vocab.txt                         words of the vocabulary split (`Vocabulary.build`)
    OUT/metadata.json                     counts, skips, conversions, options, shard lists
    OUT/.shards/<shard name>.json         per-shard statistics ("sidecars", for resuming)

Every file is written to a temporary name and renamed into place, so a crash never leaves a
half-written shard under a final name. A shard counts as finished when its sidecar exists and
holds the fingerprint of the shard's planned items, the reader's options and the size and
modification time of every source file the items name (`reader.source_files`, so a fixed image
or mask file rebuilds its shard), and the shard file still has the size and CRC-32 the sidecar
recorded (a damaged shard is rewritten); a re-run keeps finished shards and takes their
statistics from the sidecars, so metadata.json is complete after a resumed run. metadata.json
lists each shard's size, CRC-32 and counts (`shard_files`), which `refseg_tf.data.load` checks
before reading. `metadata.json` is removed when a run starts and written when it ends, so
its presence marks a complete output. The sidecar of a shard is deleted before the shard is
rewritten, so a sidecar always describes the shard file beside it. Leftover temporary files of a crashed run
are never read and are replaced when their shard is written again.

With `num_workers > 1`, `reader.materialize` and the example encoding run in a process pool;
results are consumed in plan order, so the output is identical to a single-process run.
"""

import hashlib
import json
import math
import multiprocessing
import os
import pathlib
import sys
from typing import Optional

from absl import logging

from refseg_tf.data import schema
from refseg_tf.files import FILE_MODE, atomic_write_json
from refseg_tf.data.converters.report import (
    DEFAULT_MAX_SKIP_FRACTION,
    IMAGE,
    REF,
    SENTENCE,
    ConversionError,
    ConversionReport,
)

DEFAULT_IMAGES_PER_SHARD = 1000
SIDECAR_DIRNAME = ".shards"
_TEMP_MARKER = ".tmp-"
# Items per task sent to a worker process: large enough to amortise pickling, small enough to
# keep the progress bar moving.
_WORKER_CHUNKSIZE = 4


def write_dataset(
    reader,
    output_dir,
    *,
    num_shards: Optional[int] = None,
    images_per_shard: Optional[int] = None,
    num_workers: int = 0,
    min_count: int = 1,
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
    show_progress: bool = True,
    report: Optional[ConversionReport] = None,
    tokenizer: str = "refseg",
    vocabulary=None,
    word_ids: bool = False,
) -> dict:
    """Converts every split a reader plans into TFRecord shards, a vocabulary and metadata.

    Args:
        reader: an object following the reader protocol (`refseg_tf.data.converters`).
        output_dir: the output directory (created if needed).
        num_shards: shards per split (fewer for a split with fewer images). Exclusive with
            `images_per_shard`.
        images_per_shard: images per shard; the default when neither is given is
            `DEFAULT_IMAGES_PER_SHARD` (about 160 MB of COCO images).
        num_workers: processes materialising items in parallel; 0 or 1 runs in this process.
        min_count: words seen fewer times in the vocabulary split stay out of `vocab.txt`.
        max_skip_fraction: share of the images of a split that may be skipped before the run
            stops with `SkipBudgetExceeded`. Ignored when `report` is given (its own applies).
        show_progress: show a tqdm progress bar.
        report: the report to count into (a new one by default).
        tokenizer: "refseg" or "authors" (`refseg_tf.text.split_words`): builds the vocabulary;
            a sentence that tokenises to no word is skipped (counted, logged, in metadata).
        vocabulary: None builds `vocab.txt` from the vocabulary split; a word-list file path (or
            a `refseg_tf.text.Vocabulary`) is used as it is, with the same ids, and
            `metadata.json` counts the out-of-vocabulary tokens of the vocabulary split.
        word_ids: also store each sentence's word ids (of that vocabulary, by that tokenizer)
            beside its text, with their fingerprint in `metadata.json` "word_ids"
            (`converters.word_ids`): `refseg_tf.data.load` then need not tokenise.

    Returns:
        The metadata dict also written to `metadata.json`.

    Raises:
        ConversionError: unsafe or malformed input (from the reader), or too many skips.
        ValueError: invalid arguments or a reader that breaks the protocol.
    """
    from refseg_tf.text import as_vocabulary, check_tokenizer_mode

    report = report if report is not None else ConversionReport(max_skip_fraction)
    check_tokenizer_mode(tokenizer)
    given_vocabulary = None if vocabulary is None else as_vocabulary(vocabulary)
    sharding = _sharding_rule(num_shards, images_per_shard)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0; received {num_workers}.")
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / SIDECAR_DIRNAME).mkdir(exist_ok=True)

    plan = _checked_plan(reader, report)
    options = reader.options()
    # A split whose every image was skipped while planning is still reported (with 0 images).
    plan.update({split: [] for split in report.splits if split not in plan})
    totals = {split: len(items) + report.skip_count(split, IMAGE) for split, items in plan.items()}
    for split in plan:
        report.check_skip_budget(split, totals[split])
    _check_vocabulary_split(reader, plan)

    # metadata.json marks a complete output: written last, removed while the work goes on.
    (output_dir / schema.METADATA_FILENAME).unlink(missing_ok=True)
    progress = _progress_bar(sum(len(items) for items in plan.values()), show_progress)
    pool = _make_pool(reader, num_workers)
    finished = False
    try:
        split_stats = {}
        for split, items in plan.items():
            report.set_split(split)
            context = _SplitContext(reader, options, split, totals[split], report, progress, pool)
            context.tokenizer = tokenizer
            context.word_ids = word_ids
            split_stats[split] = _write_split(context, items, output_dir, sharding)
        finished = True
    finally:
        progress.close()
        _shut_down(pool, finished)

    vocabulary, vocabulary_info = _write_vocabulary(
        reader, split_stats, output_dir, min_count, tokenizer, given_vocabulary
    )
    word_ids_info = None
    if word_ids:
        from refseg_tf.data.converters.word_ids import add_word_ids

        word_ids_info = add_word_ids(output_dir, split_stats, vocabulary, tokenizer)
    metadata = _metadata(reader, options, split_stats, report, vocabulary, sharding, min_count)
    metadata["vocabulary"].update(vocabulary_info)
    if word_ids_info is not None:
        metadata["word_ids"] = word_ids_info
    write_json_atomic(output_dir / schema.METADATA_FILENAME, metadata)
    _print_summary(metadata, report, output_dir)
    return metadata


# --------------------------------------------------------------------------------- planning
def _sharding_rule(num_shards, images_per_shard):
    if num_shards is not None and images_per_shard is not None:
        raise ValueError("Give num_shards or images_per_shard, not both.")
    if num_shards is not None and num_shards < 1:
        raise ValueError(f"num_shards must be >= 1; received {num_shards}.")
    if images_per_shard is not None and images_per_shard < 1:
        raise ValueError(f"images_per_shard must be >= 1; received {images_per_shard}.")
    if num_shards is None and images_per_shard is None:
        images_per_shard = DEFAULT_IMAGES_PER_SHARD
    return {"num_shards": num_shards, "images_per_shard": images_per_shard}


def shard_count(num_items: int, num_shards=None, images_per_shard=None) -> int:
    """Number of shards for `num_items` images under the sharding rule (0 for no items)."""
    if num_items == 0:
        return 0
    if num_shards is not None:
        return min(num_shards, num_items)
    return math.ceil(num_items / images_per_shard)


def split_into_shards(items: list, count: int) -> list:
    """Splits `items` into `count` contiguous, nearly equal chunks (sizes differ by at most 1)."""
    base, extra = divmod(len(items), count) if count else (0, 0)
    chunks, start = [], 0
    for index in range(count):
        size = base + (1 if index < extra else 0)
        chunks.append(items[start : start + size])
        start += size
    return chunks


def _checked_plan(reader, report):
    plan = reader.plan(report)
    if not isinstance(plan, dict) or not all(isinstance(items, list) for items in plan.values()):
        raise ValueError(
            f"{type(reader).__name__}.plan() must return a dict split -> list of items; "
            f"received {type(plan).__name__}."
        )
    return plan


def _check_vocabulary_split(reader, plan):
    if reader.vocabulary_split not in plan:
        raise ConversionError(
            f"The vocabulary split '{reader.vocabulary_split}' of {reader.name} is not among the "
            f"planned splits {sorted(plan)}; the vocabulary cannot be built."
        )


def source_stamps(reader, item) -> list:
    """(path, size, modification time in ns) of each file `reader.source_files(item)` names.

    A missing or unreadable file has size and time None. Readers without `source_files` give
    an empty list (their shards then depend on the planned items only).
    """
    source_files = getattr(reader, "source_files", None)
    if source_files is None:
        return []
    stamps = []
    for path in source_files(item):
        try:
            status = os.stat(path)
            stamps.append((os.fspath(path), status.st_size, status.st_mtime_ns))
        except OSError:
            stamps.append((os.fspath(path), None, None))
    return stamps


def shard_fingerprint(
    reader_name: str, options: dict, split: str, index: int, count: int, items, stamps=()
):
    """A hash of everything that decides a shard's content (used to keep finished shards).

    `stamps` are the items' `source_stamps`: a changed source file changes the fingerprint.
    """
    from refseg_tf.version import __version__

    digest = hashlib.sha256()
    header = {
        "schema": schema.SCHEMA_VERSION,
        "converter": __version__,
        "dataset": reader_name,
        "options": options,
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode("utf-8"))
    digest.update(f"|{split}|{index}|{count}|".encode("utf-8"))
    for item in items:
        digest.update(repr(item).encode("utf-8"))
        digest.update(b"\n")
    for stamp in stamps:
        digest.update(repr(tuple(stamp)).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


# --------------------------------------------------------------------------------- writing
class _SplitContext:
    """What writing one split needs besides its items (keeps the helpers' signatures short)."""

    def __init__(self, reader, options, split, total_images, report, progress, pool):
        self.reader = reader
        self.options = options
        self.split = split
        self.total_images = total_images
        self.report = report
        self.progress = progress
        self.pool = pool
        self.keep_texts = split == reader.vocabulary_split
        self.tokenizer = "refseg"
        self.word_ids = False


def _write_split(context, items, output_dir, sharding):
    count = shard_count(len(items), **sharding)
    names = [
        schema.SHARD_PATTERN.format(split=context.split, index=i, count=count) for i in range(count)
    ]
    _remove_stale_shards(output_dir, context.split, set(names))
    if not items:
        logging.warning("Split '%s' has no images left to write.", context.split)
    shard_stats = []
    for index, (name, chunk) in enumerate(zip(names, split_into_shards(items, count))):
        stamps = [stamp for item in chunk for stamp in source_stamps(context.reader, item)]
        options = context.options
        if context.tokenizer != "refseg":  # decides which sentences are skipped as wordless
            options = dict(options, tokenizer=context.tokenizer)
        if context.word_ids:  # the shard's records then hold word ids (converters.word_ids)
            options = dict(options, word_ids=True)
        fingerprint = shard_fingerprint(
            context.reader.name, options, context.split, index, count, chunk, stamps
        )
        stats = _finished_shard_stats(output_dir, name, fingerprint)
        if stats is not None:
            logging.info("Keeping finished shard %s (%d images).", name, stats["images"])
            context.report.merge(ConversionReport.from_dict(stats["report"]))
            context.report.check_skip_budget(context.split, context.total_images)
            context.progress.update(len(chunk))
        else:
            stats = _write_shard(context, chunk, output_dir, name, fingerprint)
        shard_stats.append((name, stats))
    return shard_stats


def _finished_shard_stats(output_dir, name, fingerprint):
    shard_path = output_dir / name
    sidecar_path = _sidecar_path(output_dir, name)
    if not shard_path.is_file() or not sidecar_path.is_file():
        return None
    try:
        stats = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logging.warning("Unreadable sidecar %s: rewriting shard %s.", sidecar_path, name)
        return None
    if stats.get("fingerprint") != fingerprint or stats.get("bytes") != shard_path.stat().st_size:
        return None
    scan = schema.scan_shard(shard_path)
    if scan.crc32 != stats.get("crc32") or scan.problem is not None:
        logging.warning("Shard %s is damaged (its CRC-32 differs): rewriting it.", shard_path)
        return None
    return stats


def _write_shard(context, chunk, output_dir, name, fingerprint):
    import tensorflow as tf

    shard_path = output_dir / name
    sidecar_path = _sidecar_path(output_dir, name)
    # The sidecar goes first, so a crash below never leaves a sidecar describing another file.
    sidecar_path.unlink(missing_ok=True)
    _remove_leftover_temps(output_dir, name)
    temp_path = _temp_path(shard_path)
    shard_report = ConversionReport(log_events=False, max_examples=context.report.max_examples)
    counts = {"images": 0, "refs": 0, "sentences": 0}
    texts = []
    try:
        with tf.io.TFRecordWriter(str(temp_path)) as file:
            for result in _materialized(context, chunk):
                item_report = ConversionReport.from_dict(result["report"])
                context.report.merge(item_report, log=True)
                shard_report.merge(item_report)
                if result["example"] is not None:
                    file.write(result["example"])
                    counts["images"] += 1
                    counts["refs"] += result["refs"]
                    counts["sentences"] += len(result["texts"])
                    texts.extend(result["texts"] if context.keep_texts else [])
                context.progress.update(1)
                context.report.check_skip_budget(context.split, context.total_images)
        os.chmod(temp_path, FILE_MODE)  # the mode of every output (refseg_tf.files)
        os.replace(temp_path, shard_path)
    finally:
        temp_path.unlink(missing_ok=True)
    scan = schema.scan_shard(shard_path)
    stats = dict(counts, bytes=scan.bytes, crc32=scan.crc32, fingerprint=fingerprint)
    stats["report"] = shard_report.to_dict()
    stats["vocabulary_sentences"] = texts
    write_json_atomic(sidecar_path, stats)
    return stats


def _materialized(context, chunk):
    tasks = [
        (context.split, item, context.report.max_examples, context.tokenizer) for item in chunk
    ]
    if context.pool is None:
        return (_materialize_item(context.reader, *task) for task in tasks)
    return context.pool.imap(_materialize_in_worker, tasks, chunksize=_WORKER_CHUNKSIZE)


def _materialize_item(reader, split, item, max_examples, tokenizer="refseg"):
    """Runs `reader.materialize` and encodes the record; returns a picklable result dict."""
    report = ConversionReport(log_events=False, max_examples=max_examples)
    report.set_split(split)
    record = reader.materialize(item, report)
    result = {"example": None, "refs": 0, "texts": []}
    if record is None:
        if report.skip_count(split, IMAGE) == 0:
            report.skip(IMAGE, "reader returned no record", f"{reader.name} {_short_repr(item)}")
    elif not isinstance(record, schema.ImageRecord):
        raise ValueError(
            f"{type(reader).__name__}.materialize() must return a schema.ImageRecord or None; "
            f"received {type(record).__name__}."
        )
    else:
        record = _without_wordless_sentences(record, report, reader.name, tokenizer)
    if isinstance(record, schema.ImageRecord):
        result["example"] = schema.encode_example(record)
        result["refs"] = len(record.refs)
        result["texts"] = [sentence.text for ref in record.refs for sentence in ref.sentences]
    result["report"] = report.to_dict()
    return result


def _without_wordless_sentences(record, report, reader_name, tokenizer):
    """The record without sentences that tokenise to no word (each a counted, logged skip).

    A ref left without sentences is skipped, and an image left without refs.
    """
    import dataclasses

    from refseg_tf.text import split_words

    refs, changed = [], False
    for ref in record.refs:
        sentences = [s for s in ref.sentences if split_words(s.text, tokenizer)]
        for sentence in ref.sentences:
            if sentence not in sentences:
                report.skip(
                    SENTENCE, "sentence tokenises to no word",
                    f"{reader_name} image {record.image_id} ref {ref.ref_id} "
                    f"sent {sentence.sent_id} {sentence.text[:40]!r}",
                )
        if len(sentences) == len(ref.sentences):
            refs.append(ref)
            continue
        changed = True
        if sentences:
            refs.append(dataclasses.replace(ref, sentences=sentences))
        else:
            report.skip(REF, "no sentence with a word",
                        f"{reader_name} image {record.image_id} ref {ref.ref_id}")
    if not changed:
        return record
    if not refs:
        report.skip(IMAGE, "no ref with a sentence", f"{reader_name} image {record.image_id}")
        return None
    return dataclasses.replace(record, refs=refs)


_WORKER_READER = None


def _init_worker(reader):
    global _WORKER_READER
    _WORKER_READER = reader


def _materialize_in_worker(task):
    return _materialize_item(_WORKER_READER, *task)


def _make_pool(reader, num_workers):
    if num_workers <= 1:
        return None
    # fork: workers inherit the imported modules and the reader without re-importing
    # TensorFlow; they only build protocol buffers, never run TensorFlow ops.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    return context.Pool(num_workers, initializer=_init_worker, initargs=(reader,))


def _shut_down(pool, finished):
    if pool is None:
        return
    if finished:
        pool.close()
    else:  # do not wait for the queued items of a failed run
        pool.terminate()
    pool.join()


def _remove_stale_shards(output_dir, split, keep_names):
    for path in sorted(output_dir.glob(schema.SHARD_GLOB.format(split=split))):
        if path.name not in keep_names:
            logging.warning("Removing %s: a shard of an earlier run with another layout.", path)
            path.unlink()
            _sidecar_path(output_dir, path.name).unlink(missing_ok=True)


def _remove_leftover_temps(output_dir, name):
    for directory, stem in ((output_dir, name), (output_dir / SIDECAR_DIRNAME, name + ".json")):
        for path in directory.glob(f".{stem}{_TEMP_MARKER}*"):
            logging.info("Removing leftover temporary file %s.", path)
            path.unlink(missing_ok=True)


def _sidecar_path(output_dir, name):
    return output_dir / SIDECAR_DIRNAME / f"{name}.json"


def _temp_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}{_TEMP_MARKER}{os.getpid()}")


def write_json_atomic(path, data) -> None:
    """Writes `data` as indented JSON to a temporary file, then renames it to `path`."""
    atomic_write_json(path, data, sort_keys=False)


# --------------------------------------------------------------------------------- outputs
def _write_vocabulary(reader, split_stats, output_dir, min_count, tokenizer, given=None):
    """Writes vocab.txt (built, or the given word list unchanged); returns it and metadata."""
    from refseg_tf.text import UNK_ID, Vocabulary, split_words

    sentences = [
        text
        for _, stats in split_stats[reader.vocabulary_split]
        for text in stats["vocabulary_sentences"]
    ]
    info = {"tokenizer": tokenizer, "source": "built"}
    if given is None:
        vocabulary = Vocabulary.build(sentences, min_count=min_count, tokenizer=tokenizer)
    else:
        vocabulary = given
        ids = [i for text in sentences for i in vocabulary.ids_of(split_words(text, tokenizer))]
        info.update(
            source="given",
            tokens=len(ids),
            out_of_vocabulary_tokens=sum(1 for i in ids if i == UNK_ID),
        )
        logging.info(
            "Given vocabulary (%d words): %d of %d tokens of '%s' are out of vocabulary.",
            len(vocabulary), info["out_of_vocabulary_tokens"], len(ids), reader.vocabulary_split,
        )
    vocabulary.save(output_dir / schema.VOCAB_FILENAME)
    return vocabulary, info


def _metadata(reader, options, split_stats, report, vocabulary, sharding, min_count):
    from refseg_tf.version import __version__

    splits = {}
    for split, shards in split_stats.items():
        entry = {
            key: sum(stats[key] for _, stats in shards) for key in ("images", "refs", "sentences")
        }
        entry["bytes"] = sum(stats["bytes"] for _, stats in shards)
        entry["shards"] = [name for name, _ in shards]
        entry["shard_files"] = {
            name: {key: stats[key] for key in ("bytes", "crc32", "images", "refs", "sentences")}
            for name, stats in shards
        }
        entry["skipped"] = report.skipped(split)
        entry["converted"] = report.converted(split)
        entry["examples"] = {
            category: report.examples(split, category)
            for category in ("skipped", "converted")
            if report.examples(split, category)
        }
        splits[split] = entry
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "dataset": reader.name,
        "created_by": f"refseg_tf {__version__} ({type(reader).__module__}."
        f"{type(reader).__name__})",
        "options": options,
        "writer": dict(sharding, min_count=min_count, max_skip_fraction=report.max_skip_fraction),
        "vocabulary": {
            "file": schema.VOCAB_FILENAME,
            "split": reader.vocabulary_split,
            "size": len(vocabulary),
            "min_count": min_count,
        },
        "splits": splits,
    }


def summary_lines(metadata: dict) -> list:
    """Human-readable lines describing a conversion's metadata (one per split, then skips)."""
    lines = [f"Dataset {metadata['dataset']} (schema {metadata['schema_version']}):"]
    for split, entry in metadata["splits"].items():
        lines.append(
            f"  {split}: {entry['images']} images, {entry['refs']} refs, {entry['sentences']} "
            f"sentences in {len(entry['shards'])} shard(s), {entry['bytes'] / 1e6:.1f} MB"
        )
    vocabulary = metadata["vocabulary"]
    lines.append(
        f"  vocabulary: {vocabulary['size']} words from '{vocabulary['split']}' "
        f"(min_count={vocabulary['min_count']})"
    )
    return lines


def _print_summary(metadata, report, output_dir):
    lines = summary_lines(metadata) + ["  " + line for line in report.summary_lines()]
    lines.append(f"  written to {output_dir}")
    for line in lines:
        logging.info("%s", line)
    print("\n".join(lines), file=sys.stdout, flush=True)


def _progress_bar(total, show_progress):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="converting", disable=not show_progress)


def _short_repr(item, limit=200):
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."

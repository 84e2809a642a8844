"""Sentences tokenised once, at conversion: `refseg-convert --word_ids`.

After the vocabulary is written (`writer.write_dataset` builds it from the converted
vocabulary split, so it is known only once every shard is written), every shard is rewritten
with each sentence's whole word ids beside its text (`schema.WORD_IDS_KEY`,
`schema.NUM_WORDS_KEY`), and `metadata.json` gets a "word_ids" entry holding the fingerprint
of the vocabulary and tokeniser (`refseg_tf.text.tokenization_fingerprint`). `refseg_tf.data
.load` then reads the ids instead of running the in-graph tokenizer, when its preprocessor's
fingerprint is the same; otherwise it tokenises, and logs why.

The ids are whole (neither truncated nor padded), so one conversion serves every
`max_length` and `text_padding`: the pipeline applies them (`Tokenizer.pad`), exactly as the
tokenizer does to the ids it computes.

A shard's sidecar records the fingerprint its ids were made with: a resumed conversion keeps
shards whose ids are current and rewrites the others (e.g. after the vocabulary changed). A
rewrite is atomic (temporary file, rename); the sidecar is removed first and written after,
so a crash in between leaves a shard that the next run rewrites from its sources.

Reference: Hu et al.'s code (ronghanghu/text_objseg, `exp-referit/build_batches_*.py`) also
stored each sentence's encoded ids in its batch files, tokenising once for every epoch.
"""

import os
import pathlib

from absl import logging

from refseg_tf.data import schema


def sentence_word_ids(texts, vocabulary, mode: str):
    """The whole word ids of each sentence: (flat ids, number of ids per sentence)."""
    from refseg_tf.text import split_words

    flat, counts = [], []
    for text in texts:
        ids = vocabulary.ids_of(split_words(text, mode))
        flat.extend(ids)
        counts.append(len(ids))
    return flat, counts


def with_word_ids(serialized: bytes, vocabulary, mode: str) -> bytes:
    """One serialized image record with its sentences' word ids set (replaced if present)."""
    import tensorflow as tf

    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature
    texts = list(feature["sentence/text"].bytes_list.value)
    flat, counts = sentence_word_ids(texts, vocabulary, mode)
    for key, values in ((schema.WORD_IDS_KEY, flat), (schema.NUM_WORDS_KEY, counts)):
        feature[key].CopyFrom(tf.train.Feature(int64_list=tf.train.Int64List(value=values)))
    return example.SerializeToString()


def add_word_ids(output_dir, split_stats: dict, vocabulary, tokenizer: str) -> dict:
    """Stores the word ids in every shard of `split_stats` ({split: [(name, stats)]}, the
    writer's, updated in place: bytes, crc32, "word_ids"); returns metadata's "word_ids"."""
    from refseg_tf.text import tokenization_fingerprint

    output_dir = pathlib.Path(output_dir)
    fingerprint = tokenization_fingerprint(vocabulary, tokenizer)
    rewritten = kept = 0
    for shards in split_stats.values():
        for name, stats in shards:
            if stats.get("word_ids") == fingerprint:
                kept += 1
                continue
            _rewrite_shard(output_dir, name, stats, vocabulary, tokenizer, fingerprint)
            rewritten += 1
    logging.info(
        "Word ids stored in %d shard(s) (%d already held current ids).", rewritten, kept
    )
    return {
        "fingerprint": fingerprint,
        "tokenizer": tokenizer,
        "vocabulary_size": len(vocabulary),
        "features": [schema.WORD_IDS_KEY, schema.NUM_WORDS_KEY],
        "whole": True,  # neither truncated nor padded: `load` applies max_length and padding
    }


def _rewrite_shard(output_dir, name, stats, vocabulary, tokenizer, fingerprint):
    import tensorflow as tf

    from refseg_tf.data.converters import writer
    from refseg_tf.files import FILE_MODE

    shard_path = output_dir / name
    # The writer's layout: OUT/.shards/<shard name>.json, temporary files .<name>.tmp-<pid>
    # (which a later run removes if this one crashes).
    sidecar_path = output_dir / writer.SIDECAR_DIRNAME / f"{name}.json"
    sidecar_path.unlink(missing_ok=True)  # first: a sidecar never describes another file
    temp_path = shard_path.with_name(f".{name}.tmp-{os.getpid()}")
    try:
        with tf.io.TFRecordWriter(str(temp_path)) as file:
            for record in tf.data.TFRecordDataset(str(shard_path)):
                file.write(with_word_ids(record.numpy(), vocabulary, tokenizer))
        os.chmod(temp_path, FILE_MODE)
        os.replace(temp_path, shard_path)
    finally:
        temp_path.unlink(missing_ok=True)
    scan = schema.scan_shard(shard_path)
    stats.update(bytes=scan.bytes, crc32=scan.crc32, word_ids=fingerprint)
    writer.write_json_atomic(sidecar_path, stats)

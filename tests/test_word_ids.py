"""Word ids tokenised once at conversion (`refseg-convert --word_ids`, issue 22): the pipeline
reads them only when their fingerprint is its preprocessor's, and then gives exactly the ids
the in-graph tokenizer gives."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from refseg_tf.data import load, schema
from refseg_tf.data.converters.refer import ReferReader
from refseg_tf.data.converters.writer import write_dataset
from refseg_tf.preprocessing import ReferringPreprocessor
from refseg_tf.text import Tokenizer, Vocabulary, encode_sentence, split_words


def _reader(root, summary):
    return ReferReader(data_root=root, dataset="synthetic", split_by="unc",
                       image_root=summary["image_root"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The same synthetic scenes converted without and with stored word ids."""
    from refseg_tf.synthetic_data import generate

    base = tmp_path_factory.mktemp("word_ids")
    root = str(base / "raw")
    summary = generate(root, num_images=24, seed=1, image_size=48)
    plain, stored = str(base / "plain"), str(base / "stored")
    write_dataset(_reader(root, summary), plain, num_shards=2, show_progress=False)
    write_dataset(_reader(root, summary), stored, num_shards=2, show_progress=False,
                  word_ids=True)
    return {"root": root, "summary": summary, "plain": plain, "stored": stored}


def _batches(data_dir, mode, **settings):
    preprocessor = ReferringPreprocessor.from_data_dir(data_dir, image_size=32, **settings)
    dataset = load(data_dir, "train", mode, 4, preprocessor=preprocessor, seed=0,
                   repeat=1 if mode == "train" else None, verify="size")
    return [{key: value.numpy() for key, value in batch.items()} for batch in dataset]


def _metadata(data_dir):
    with open(os.path.join(data_dir, schema.METADATA_FILENAME), encoding="utf-8") as stream:
        return json.load(stream)


def test_stored_ids_are_the_whole_ids_of_each_sentence(converted):
    """Every record holds each sentence's untruncated ids (`encode_sentence` without padding);
    the tokenizer's `pad` of them is its own output on the text."""
    data_dir = converted["stored"]
    vocabulary = Vocabulary.load(os.path.join(data_dir, schema.VOCAB_FILENAME))
    tokenizer = Tokenizer(vocabulary, max_length=4, padding="front")
    metadata = _metadata(data_dir)
    assert metadata["word_ids"]["tokenizer"] == "refseg" and metadata["word_ids"]["whole"]
    sentences = 0
    for split in metadata["splits"]:
        for path in sorted(tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*.tfrecord"))):
            for record in tf.data.TFRecordDataset(path):
                example = schema.decode_example_numpy(record.numpy())
                texts = example["sentence/text"]
                counts = example[schema.NUM_WORDS_KEY]
                assert len(counts) == len(texts) and sum(counts) == len(example[schema.WORD_IDS_KEY])
                ids = tf.RaggedTensor.from_row_lengths(example[schema.WORD_IDS_KEY], counts)
                for text, row in zip(texts, ids.to_list()):
                    assert row == vocabulary.ids_of(split_words(text))
                np.testing.assert_array_equal(tokenizer.pad(ids), tokenizer(texts))
                sentences += len(texts)
    assert sentences == sum(entry["sentences"] for entry in metadata["splits"].values())


_FULL = {"max_length": 20}
_TRUNCATED = {"max_length": 3, "text_padding": "back"}  # whole ids cut as the tokenizer cuts
_BLIND = {"max_length": 5, "blind_expression": "the thing"}  # text-blind: the fixed ids


# Every setting in train mode, the full-length one in eval mode too (the eval path's sentence
# fields); the truncated and text-blind settings in eval mode run with `-m slow` (issue 21).
@pytest.mark.parametrize("settings, mode", [
    pytest.param(_FULL, "eval", id="settings0-eval"),
    pytest.param(_FULL, "train", id="settings0-train"),
    pytest.param(_TRUNCATED, "eval", id="settings1-eval", marks=pytest.mark.slow),
    pytest.param(_TRUNCATED, "train", id="settings1-train"),
    pytest.param(_BLIND, "eval", id="settings2-eval", marks=pytest.mark.slow),
    pytest.param(_BLIND, "train", id="settings2-train"),
])
def test_pipeline_from_stored_ids_equals_the_in_graph_tokenizer(converted, mode, settings):
    """Same batches, key for key, from the stored ids as from tokenising the text."""
    tokenised = _batches(converted["plain"], mode, **settings)
    from_stored = _batches(converted["stored"], mode, **settings)
    assert len(tokenised) == len(from_stored) > 0
    for expected, batch in zip(tokenised, from_stored):
        assert set(batch) == set(expected)
        for key in expected:
            np.testing.assert_array_equal(batch[key], expected[key], err_msg=key)
    if "blind_expression" in settings:
        vocabulary = Vocabulary.load(os.path.join(converted["stored"], schema.VOCAB_FILENAME))
        blind = encode_sentence("the thing", vocabulary, 5, "front")
        assert all((batch["word_ids"] == blind).all() for batch in from_stored)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_another_vocabulary_or_tokenizer_falls_back_to_tokenising(converted, caplog):
    """Stored ids of another vocabulary are never read: the sentences are tokenised with the
    preprocessor's own vocabulary (and the reason is logged)."""
    data_dir = converted["stored"]
    words = Vocabulary.load(os.path.join(data_dir, schema.VOCAB_FILENAME)).words
    shuffled = Vocabulary(words[:4] + tuple(reversed(words[4:])))  # same words, other ids
    for preprocessor in (
        ReferringPreprocessor.from_data_dir(data_dir, shuffled, image_size=32),
        ReferringPreprocessor.from_data_dir(data_dir, image_size=32, tokenizer="authors"),
    ):
        caplog.clear()
        batch = next(iter(load(data_dir, "val", "eval", 64, preprocessor=preprocessor)))
        assert any("stored word ids were made with another" in m for m in _warnings(caplog))
        np.testing.assert_array_equal(batch["word_ids"], preprocessor.tokenize(batch["sentence"]))
    assert shuffled.ids_of(["the"]) != Vocabulary(words).ids_of(["the"])


def test_mismatched_fingerprint_in_metadata_falls_back(converted, tmp_path, caplog):
    """metadata.json's fingerprint is what is trusted: changed, the stored ids are not read."""
    import shutil

    data_dir = str(tmp_path / "copy")
    shutil.copytree(converted["stored"], data_dir)
    metadata = _metadata(data_dir)
    metadata["word_ids"]["fingerprint"] = "0" * 64
    with open(os.path.join(data_dir, schema.METADATA_FILENAME), "w", encoding="utf-8") as stream:
        json.dump(metadata, stream)
    caplog.clear()
    fallback = _batches(data_dir, "eval", max_length=6)
    assert any("stored word ids were made with another" in m for m in _warnings(caplog))
    for expected, batch in zip(_batches(converted["plain"], "eval", max_length=6), fallback):
        np.testing.assert_array_equal(batch["word_ids"], expected["word_ids"])


def test_fingerprint_covers_vocabulary_and_tokenizer():
    from refseg_tf.text import tokenization_fingerprint

    vocabulary = Vocabulary.build(["the red ball", "a man"])
    same = tokenization_fingerprint(Vocabulary(vocabulary.words), "refseg")
    assert tokenization_fingerprint(vocabulary, "refseg") == same
    assert tokenization_fingerprint(vocabulary, "authors") != same
    assert tokenization_fingerprint(Vocabulary(vocabulary.words[:-1]), "refseg") != same
    preprocessor = ReferringPreprocessor(vocabulary, max_length=3)
    assert preprocessor.tokenization_fingerprint == same  # max_length and padding: not in it


def test_resumed_conversion_keeps_current_ids_and_the_option_off_removes_them(converted, tmp_path):
    """Re-running with --word_ids keeps every shard (bytes unchanged); without it the shards
    are rewritten without ids and metadata.json says none are stored."""
    import shutil

    data_dir = str(tmp_path / "again")
    shutil.copytree(converted["stored"], data_dir)
    shards = sorted(tf.io.gfile.glob(os.path.join(data_dir, "*.tfrecord")))
    before = {path: open(path, "rb").read() for path in shards}
    metadata = write_dataset(_reader(converted["root"], converted["summary"]), data_dir,
                             num_shards=2, show_progress=False, word_ids=True)
    assert {path: open(path, "rb").read() for path in shards} == before
    assert metadata["word_ids"] == _metadata(converted["stored"])["word_ids"]
    assert metadata["splits"] == _metadata(converted["stored"])["splits"]
    metadata = write_dataset(_reader(converted["root"], converted["summary"]), data_dir,
                             num_shards=2, show_progress=False)
    assert "word_ids" not in metadata
    example = schema.decode_example_numpy(next(iter(tf.data.TFRecordDataset(shards[0]))).numpy())
    assert schema.WORD_IDS_KEY not in example
    plain = sorted(tf.io.gfile.glob(os.path.join(converted["plain"], "*.tfrecord")))
    assert [open(p, "rb").read() for p in shards] == [open(p, "rb").read() for p in plain]


def test_convert_command_flag_stores_the_ids(converted, tmp_path):
    from absl import flags

    from refseg_tf import convert

    flag_values = flags.FlagValues()
    convert.define_flags(flag_values)
    flag_values([
        "refseg-convert", f"--data_root={converted['root']}", "--dataset=synthetic",
        f"--image_root={converted['summary']['image_root']}", "--noprogress", "--num_shards=1",
        "--word_ids", f"--output_dir={tmp_path / 'out'}",
    ])
    assert convert.convert_with_flags(flag_values) == 0
    metadata = _metadata(str(tmp_path / "out"))
    assert metadata["word_ids"]["fingerprint"] == _metadata(converted["stored"])["word_ids"][
        "fingerprint"]


def test_records_whose_counts_do_not_describe_their_ids_fail_by_name(converted, tmp_path):
    """A record whose `sentence/num_words` does not add up to its ids is an error naming the
    image, never ids shifted onto the wrong sentences."""
    import shutil

    data_dir = str(tmp_path / "damaged")
    shutil.copytree(converted["stored"], data_dir)
    path = sorted(tf.io.gfile.glob(os.path.join(data_dir, "val-*.tfrecord")))[0]
    records = [record.numpy() for record in tf.data.TFRecordDataset(path)]
    example = tf.train.Example.FromString(records[0])
    example.features.feature[schema.NUM_WORDS_KEY].int64_list.value[0] += 1
    records[0] = example.SerializeToString()
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    preprocessor = ReferringPreprocessor.from_data_dir(data_dir, image_size=32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="sentence/num_words does not describe"):
        list(load(data_dir, "val", "eval", 4, preprocessor=preprocessor, verify="none"))

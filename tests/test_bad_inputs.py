"""The bad-input corpus: each case is a small file generated here, with what must happen to it.

Every case is either an error whose message names the file (and says what to do), a counted
skip naming the record, or accepted. The README table "What happens on bad input" lists the
same cases. Each test below failed before its fix (issue 7); the docstrings say how.

One case of the table lives beside its harness: a multi-worker run that loses a worker
(killed, frozen, stuck; the survivor's error names it within the bound, a restart resumes
every worker at one step) is `tests/test_multiworker.py::
test_a_lost_worker_stops_the_other_in_bounded_time_and_both_resume` (slow: two TensorFlow
processes, twice) with its fast variant `test_a_lost_worker_is_named_by_probe_then_by_the_error`.
"""

import glob
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from PIL import Image

from refseg_tf import files
from refseg_tf.cli import user_errors_as_messages
from refseg_tf.data import pipeline, schema
from refseg_tf.data.converters import refer, rle, safe_pickle, writer
from refseg_tf.data.converters.report import ConversionError, ConversionReport
from tests.test_convert_refer import (
    HEIGHT,
    REPO_ROOT,
    WIDTH,
    ReferBuilder,
    _compressed_rle,
    _convert,
    _happy_dataset,
    _rectangle,
)

AREA = HEIGHT * WIDTH


# ============================================================================ 1. RLE masks
RLE_CASES = {
    # name: (segmentation, accepted)
    "uncompressed runs short of h*w": ({"size": [HEIGHT, WIDTH], "counts": [10, 5]}, False),
    "uncompressed runs beyond h*w": ({"size": [HEIGHT, WIDTH], "counts": [10, AREA]}, False),
    "uncompressed negative run": ({"size": [HEIGHT, WIDTH], "counts": [AREA + 5, -5]}, False),
    "compressed string that decodes short": ({"size": [HEIGHT, WIDTH], "counts": "1"}, False),
    "compressed string cut inside a run": ({"size": [HEIGHT, WIDTH], "counts": "1`"}, False),
    "compressed string with a foreign character": (
        {"size": [HEIGHT, WIDTH], "counts": "1 2"},
        False,
    ),
    "uncompressed exact cover": ({"size": [HEIGHT, WIDTH], "counts": [100, 50, AREA - 150]}, True),
}


@pytest.mark.parametrize("name", sorted(RLE_CASES))
def test_rle_that_does_not_cover_the_mask_is_a_counted_skip(tmp_path, name):
    """Before the fix pycocotools decoded a short RLE from uninitialised memory (no skip)."""
    segmentation, accepted = RLE_CASES[name]
    builder = ReferBuilder(tmp_path / "data")
    builder.add_image(1)
    builder.add_image(2)
    good = builder.add_annotation(1, [_rectangle(5, 5, 30, 25)])
    bad = builder.add_annotation(2, segmentation)
    builder.add_ref(1, good, "train", ["good box"])
    bad_ref = builder.add_ref(2, bad, "train", ["suspicious mask"])
    builder.write()
    report = ConversionReport(max_skip_fraction=1.0)
    metadata = _convert(builder.reader(), tmp_path / "out", report=report)
    skipped = metadata["splits"]["train"]["skipped"].get("ref", {})
    if accepted:
        assert skipped == {}
        assert metadata["splits"]["train"]["refs"] == 2
        return
    assert skipped == {"undecodable segmentation": 1}
    examples = [e["where"] for e in report.examples("train") if e["kind"] == "ref"]
    assert any(f"ref_id {bad_ref}" in where and f"ann_id {bad}" in where for where in examples)


def test_rle_check_agrees_with_pycocotools_on_valid_masks():
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = (rng.random((HEIGHT, WIDTH)) > 0.7).astype(np.uint8)
        counts = _compressed_rle(mask)["counts"]
        assert rle.rle_problem(counts, HEIGHT, WIDTH) is None
        assert sum(rle.compressed_runs(counts)) == AREA


def test_decoding_is_deterministic_for_every_accepted_rle():
    """A short RLE used to give a different mask on each decode; now it never decodes."""
    segmentation = {"size": [200, 200], "counts": [10, 5]}
    with pytest.raises(ValueError, match="cover 15 pixels"):
        refer.decode_segmentation(segmentation, 200, 200)
    from refseg_tf.data.converters import tfds_refcoco

    frozen = tfds_refcoco.freeze_segmentation({"size": [200, 200], "counts": "1"}, "x")
    with pytest.raises(ValueError, match="cover 1 pixels"):
        tfds_refcoco.decode_segmentation(frozen, 200, 200)


def test_both_coco_readers_decode_through_one_decoder_with_the_same_checks():
    """refer and TFDS used two decoders; the TFDS one did not check the RLE size."""
    from refseg_tf.data.converters import coco_masks, tfds_refcoco

    assert refer.decode_segmentation is coco_masks.decode_segmentation
    frozen = tfds_refcoco.freeze_segmentation({"size": [4, 4], "counts": [16]}, "x")
    with pytest.raises(ValueError, match=r"RLE size \[4, 4\] differs from the image size \[4, 5\]"):
        tfds_refcoco.decode_segmentation(frozen, 4, 5)
    polygon = tfds_refcoco.freeze_segmentation([[0, 0, 3, 0, 3, 3, 0, 3]], "x")
    np.testing.assert_array_equal(
        tfds_refcoco.decode_segmentation(polygon, 4, 4),
        refer.decode_segmentation([[0, 0, 3, 0, 3, 3, 0, 3]], 4, 4),
    )


def test_both_tfrecord_scanners_read_one_framing(tmp_path):
    """`scan_shard` and the TFDS converter's `scan_tfrecord` share `schema.read_record_frames`."""
    import tensorflow as tf

    from refseg_tf.data import schema
    from refseg_tf.data.converters import tfds_refcoco
    from refseg_tf.data.converters.report import ConversionError

    path = str(tmp_path / "x.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for payload in (b"first", b"second record"):
            writer.write(payload)
    assert [data for _, data in tfds_refcoco.scan_tfrecord(path)] == [b"first", b"second record"]
    assert schema.scan_shard(path).records == 2
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 3)
    assert schema.scan_shard(path).problem == "cut inside record 1 (it needs 13 bytes)"
    with pytest.raises(ConversionError, match="truncated record at byte 21"):
        list(tfds_refcoco.scan_tfrecord(path))


# ============================================================ 2, 5. incomplete or damaged splits
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A finished conversion: train in 2 shards, val and testA in 1."""
    root = tmp_path_factory.mktemp("converted")
    builder = _happy_dataset(root / "data")
    output_dir = root / "out"
    _convert(builder.reader(), output_dir, num_shards=2)
    return builder, output_dir


def _copy_output(converted, tmp_path):
    _, output_dir = converted
    copy = tmp_path / "copy"
    shutil.copytree(output_dir, copy)
    return copy


def _small(data_dir):
    """The data directory's preprocessor at a small input size."""
    from refseg_tf.preprocessing import ReferringPreprocessor

    return ReferringPreprocessor.from_data_dir(str(data_dir), image_size=32, max_length=5)


def _zero_bytes(path):
    open(path, "wb").close()


def _cut_at_record_boundary(path):
    data = open(path, "rb").read()
    length = int.from_bytes(data[:8], "little")
    open(path, "wb").write(data[: 12 + length + 4])  # the first record only


def _cut_inside_a_record(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 100])


def _flip_a_byte(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x40
    open(path, "wb").write(bytes(data))


SHARD_DAMAGE = {
    "zero-byte shard": (_zero_bytes, "0 bytes instead of"),
    "shard cut at a record boundary": (_cut_at_record_boundary, "1 records instead of 2"),
    "shard cut inside a record": (_cut_inside_a_record, "cut inside record"),
    "shard with a flipped byte": (_flip_a_byte, "CRC-32 differs"),
}


@pytest.mark.parametrize("name", sorted(SHARD_DAMAGE))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_damaged_shard_is_named_before_reading(converted, tmp_path, name, mode):
    """Before: a zero-byte or cut shard read as empty/short (exit 0), a flipped byte gave a
    DataLossError naming no file."""
    damage, expected = SHARD_DAMAGE[name]
    data_dir = _copy_output(converted, tmp_path)
    shard = data_dir / "testA-00000-of-00002.tfrecord"  # 2 of the 3 testA images
    damage(shard)
    with pytest.raises(pipeline.DamagedDataError) as raised:
        pipeline.load(str(data_dir), "testA", mode, batch_size=2, preprocessor=_small(data_dir))
    message = str(raised.value)
    assert str(shard) in message and expected in message
    assert "re-run refseg-convert" in message


def test_undamaged_split_loads_and_size_mode_skips_the_checksum(converted, tmp_path):
    data_dir = _copy_output(converted, tmp_path)
    for split in ("train", "val", "testA"):  # no error on the undamaged splits
        pipeline.verify_split(str(data_dir), split, pipeline.find_shards(str(data_dir), split))
    _flip_a_byte(data_dir / "train-00001-of-00002.tfrecord")
    small = _small(data_dir)
    pipeline.load(str(data_dir), "train", "eval", preprocessor=small, verify="size")  # no error
    with pytest.raises(ValueError, match="`verify` must be one of"):
        pipeline.load(str(data_dir), "train", "eval", preprocessor=small, verify="sometimes")


def test_training_checks_its_shards_before_writing_anything(converted, tmp_path):
    """Before: training read a zero-byte shard as empty and went on with the others."""
    from refseg_tf.training import trainer

    data_dir = _copy_output(converted, tmp_path)
    shard = data_dir / "train-00001-of-00002.tfrecord"
    _zero_bytes(shard)
    model_dir = tmp_path / "model"
    config = _model_dir_config(data_dir, **{"model.vocabulary_size": 0})
    with pytest.raises(pipeline.DamagedDataError, match=str(shard)):
        trainer.train(config, str(model_dir))
    assert not model_dir.exists()


def test_unfinished_conversion_without_metadata_is_refused(converted, tmp_path):
    data_dir = _copy_output(converted, tmp_path)
    os.remove(data_dir / schema.METADATA_FILENAME)
    with pytest.raises(pipeline.DamagedDataError, match="did not finish"):
        pipeline.load(str(data_dir), "val", "eval", preprocessor=_small(data_dir))


def test_metadata_records_size_crc_and_counts_of_each_shard(converted):
    _, output_dir = converted
    metadata = json.loads((output_dir / schema.METADATA_FILENAME).read_text())
    for split, entry in metadata["splits"].items():
        assert sorted(entry["shard_files"]) == entry["shards"]
        for name, stats in entry["shard_files"].items():
            scan = schema.scan_shard(output_dir / name)
            assert (scan.bytes, scan.crc32, scan.records) == (
                stats["bytes"], stats["crc32"], stats["images"]
            )
        assert sum(s["sentences"] for s in entry["shard_files"].values()) == entry["sentences"]


def test_resumed_conversion_rewrites_a_damaged_shard(converted, tmp_path):
    """Before: a finished shard with the right size but flipped bytes was kept on resume."""
    builder, output_dir = converted
    data_dir = _copy_output(converted, tmp_path)
    shard = data_dir / "train-00000-of-00002.tfrecord"
    _flip_a_byte(shard)
    _convert(builder.reader(), data_dir, num_shards=2)
    assert shard.read_bytes() == (output_dir / shard.name).read_bytes()


def test_damaged_record_while_reading_becomes_one_line(capsys):
    import tensorflow as tf

    @user_errors_as_messages("refseg-evaluate")
    def main(argv):
        raise tf.errors.DataLossError(None, None, "corrupted record at 1028")

    assert main([]) == 1
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "corrupted record at 1028" in line and "refseg-convert" in line


# =============================================================== 3. stale output, kill and resume
def _corrupt_image(builder, image_id):
    file_name = f"img_{image_id:04d}.jpg"
    with open(os.path.join(builder.image_root, file_name), "wb") as file:
        file.write(b"\xff\xd8 not really a jpeg")


def test_fixed_source_image_rebuilds_its_shard(tmp_path):
    """Before: the fingerprint held only the planned items, so the shard that had skipped the
    corrupt image was kept after the image was fixed."""
    builder = _happy_dataset(tmp_path / "data")
    good = open(os.path.join(builder.image_root, "img_0003.jpg"), "rb").read()
    _corrupt_image(builder, 3)  # image 3 is the only val image
    output_dir = tmp_path / "out"
    first = _convert(builder.reader(), output_dir, max_skip_fraction=1.0)
    assert first["splits"]["val"]["images"] == 0
    with open(os.path.join(builder.image_root, "img_0003.jpg"), "wb") as file:
        file.write(good)
    second = _convert(builder.reader(), output_dir, max_skip_fraction=1.0)
    assert second["splits"]["val"]["images"] == 1
    assert second["splits"]["val"]["skipped"] == {}


def test_source_stamps_follow_size_and_time(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"12345")
    reader = types.SimpleNamespace(source_files=lambda item: [path, tmp_path / "missing.jpg"])
    stamps = writer.source_stamps(reader, item=None)
    assert stamps[0][:2] == (str(path), 5) and stamps[1][1:] == (None, None)
    os.utime(path, ns=(1, 1))
    assert writer.source_stamps(reader, None)[0] != stamps[0]
    assert writer.source_stamps(types.SimpleNamespace(), None) == []


def _cli_conversion(builder, output_dir, *extra):
    return [
        sys.executable, "-m", "refseg_tf.convert", "--format=refer",
        f"--data_root={builder.root}", f"--dataset={builder.dataset}", "--split_by=unc",
        f"--image_root={builder.image_root}", f"--output_dir={output_dir}",
        "--images_per_shard=1", "--noprogress", "--max_skip_fraction=1", *extra,
    ]


def _big_dataset(root, count):
    """`count` train images of 320x320 noise (slow enough to encode that a kill lands mid-run)."""
    builder = ReferBuilder(root)
    rng = np.random.default_rng(0)
    for image_id in range(1, count + 1):
        builder.add_image(image_id, rng.integers(0, 256, (320, 320, 3), dtype=np.uint8),
                          image_format="PNG")
        mask = np.zeros((320, 320), np.uint8)
        mask[rng.integers(0, 320, 2000), rng.integers(0, 320, 2000)] = 1
        annotation = builder.add_annotation(image_id, _compressed_rle(mask))
        builder.add_ref(image_id, annotation, "train", [f"thing number {image_id}"])
    return builder.write()


@pytest.mark.slow
def test_killed_conversion_with_a_changed_input_resumes_to_the_fresh_output(tmp_path):
    """Kill a conversion after its first shards, fix the corrupt image of shard 0, re-run.

    Before: shard 0 (written while the image was corrupt, so without it) was kept.
    """
    builder = _big_dataset(tmp_path / "data", 40)
    first_image = os.path.join(builder.image_root, "img_0001.png")
    good = open(first_image, "rb").read()
    open(first_image, "wb").write(b"\x89PNG broken")
    output_dir = tmp_path / "out"
    process = subprocess.Popen(
        _cli_conversion(builder, output_dir), cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while len(glob.glob(str(output_dir / ".shards" / "*.json"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the conversion ended before it was killed"
    assert not (output_dir / schema.METADATA_FILENAME).exists()
    open(first_image, "wb").write(good)

    resumed = subprocess.run(_cli_conversion(builder, output_dir), cwd=REPO_ROOT,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    fresh_dir = tmp_path / "fresh"
    subprocess.run(_cli_conversion(builder, fresh_dir), cwd=REPO_ROOT,
                   check=True, capture_output=True)
    resumed_metadata = _without_checksums(json.loads((output_dir / "metadata.json").read_text()))
    fresh_metadata = _without_checksums(json.loads((fresh_dir / "metadata.json").read_text()))
    assert resumed_metadata == fresh_metadata
    assert resumed_metadata["splits"]["train"]["images"] == 40
    for path in sorted(fresh_dir.glob("*.tfrecord")):
        assert _examples(output_dir / path.name) == _examples(path), path.name


def _without_checksums(metadata):
    """The metadata without CRC-32s: protobuf orders a feature map differently in each process,
    so equal examples need not be equal bytes."""
    for entry in metadata["splits"].values():
        for stats in entry["shard_files"].values():
            stats.pop("crc32")
    return metadata


def _examples(path):
    import tensorflow as tf

    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


# ======================================================== 9, 10. hostile JSON and pickle files
def _deep_json(depth=100_000):
    return "[" * depth + "]" * depth


def test_deeply_nested_instances_json_is_a_clear_error(tmp_path):
    """Before: RecursionError with a traceback."""
    builder = _happy_dataset(tmp_path / "data")
    with open(builder.reader().instances_path, "w") as file:
        file.write(_deep_json())
    with pytest.raises(ConversionError, match="instances.json: JSON nested too deeply"):
        builder.reader().plan(ConversionReport())


def _shared_reference_bomb(levels=20):
    """`a = [a, a]` `levels` times: ~150 bytes that expand into 2**levels lists."""
    value = []
    for _ in range(levels):
        value = [value, value]
    return pickle.dumps(value, protocol=2)


def _recursive_pickle():
    value = []
    value.append(value)
    return pickle.dumps(value, protocol=2)


def _deeply_nested_pickle(depth=20_000):
    """`depth` lists each inside the previous: EMPTY_LIST depth+1 times, then APPEND depth times."""
    return b"\x80\x02" + b"]" * (depth + 1) + b"a" * depth + b"."


PICKLE_CASES = {
    "shared-reference bomb": (_shared_reference_bomb, "expands to 2097151 objects"),
    "recursive list": (_recursive_pickle, "recursive structure"),
    "deeply nested lists": (_deeply_nested_pickle, "nested too deeply"),
}


@pytest.mark.parametrize("name", sorted(PICKLE_CASES))
def test_expanding_pickle_is_refused_fast(tmp_path, name):
    """Before: the 20-level bomb took 14 s and 830 MB; the recursive list a RecursionError."""
    make, expected = PICKLE_CASES[name]
    path = tmp_path / "refs(unc).p"
    path.write_bytes(make())
    start = time.perf_counter()
    with pytest.raises(safe_pickle.UnsafePickleError) as raised:
        safe_pickle.load_pickle(path)
    # Refused before expanding (the 20-level bomb took 14 s and 830 MB); the bound only has to
    # separate that from a refusal, with room for a loaded CI machine.
    assert time.perf_counter() - start < 5.0
    assert str(path) in str(raised.value) and expected in str(raised.value)


def test_pickle_object_limit_is_a_flag(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(_shared_reference_bomb(levels=8))  # 511 objects
    assert len(safe_pickle.load_pickle(path)) == 2
    with pytest.raises(safe_pickle.UnsafePickleError, match="limit of 100"):
        safe_pickle.load_pickle(path, max_objects=100)
    flags = types.SimpleNamespace(
        data_root=str(tmp_path), dataset="d", split_by="unc", max_pickle_objects=100
    )
    assert refer.make_reader(flags).max_pickle_objects == 100


# ============================================================== 4, 6, 9, 12. model directories
def _model_dir_config(data_dir, **changes):
    from refseg_tf.training import config as config_lib

    config = config_lib.base_config()
    config.data.dir = str(data_dir)
    config.model.vocabulary_size = 7
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return config


@pytest.fixture()
def trained_dir(tmp_path):
    """A model directory as refseg-train leaves it (config.json, vocab.txt), and its data dir."""
    from refseg_tf.training import config as config_lib

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "vocab.txt").write_text("\n".join(["<pad>", "<go>", "<eos>", "<unk>", "a", "b",
                                                   "c"]) + "\n")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    config_lib.save_config(_model_dir_config(data_dir), str(model_dir))
    shutil.copyfile(data_dir / "vocab.txt", model_dir / "vocab.txt")
    return data_dir, model_dir


CONFIG_CHANGES = {
    # dotted key: (new value, refused)
    "data.normalization": ("unit", True),
    "data.image_size": (64, True),
    "model.name": ("lstm_cnn", True),
    "model.threshold": (0.4, True),
    "train.steps": (5000, False),
    "train.optimizer.learning_rate": (1e-3, False),
    "eval.batch_size": (2, False),
}


@pytest.mark.parametrize("key", sorted(CONFIG_CHANGES))
def test_changed_config_is_refused_before_anything_is_written(trained_dir, key):
    """Before: config.json was rewritten first (a changed normalisation even trained on)."""
    from refseg_tf.training import trainer

    data_dir, model_dir = trained_dir
    value, refused = CONFIG_CHANGES[key]
    before = (model_dir / "config.json").read_bytes()
    config = _model_dir_config(data_dir, **{key: value})
    if not refused:
        trainer.check_resumable(trainer.resolve_config(config), str(model_dir))
        return
    with pytest.raises(ValueError) as raised:
        trainer.train(config, str(model_dir))
    assert key in str(raised.value) and "nothing was written" in str(raised.value)
    assert (model_dir / "config.json").read_bytes() == before


def test_changed_vocabulary_is_refused(trained_dir):
    from refseg_tf.training import trainer

    data_dir, model_dir = trained_dir
    (data_dir / "vocab.txt").write_text("<pad>\n<go>\n<eos>\n<unk>\nx\ny\nz\n")
    with pytest.raises(ValueError, match="the vocabulary"):
        trainer.train(_model_dir_config(data_dir), str(model_dir))
    assert (model_dir / "vocab.txt").read_text().splitlines()[4] == "a"


NOT_A_CONFIG = {
    "empty object": ("{}", "lacks data.dir"),
    "a list": ("[1, 2]", "must hold a JSON object"),
    "deeply nested": (_deep_json(), "nested too deeply"),
    "invalid JSON": ("{", "not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(NOT_A_CONFIG))
def test_config_json_that_is_not_a_config_is_a_clear_error(tmp_path, name):
    """Before: `{}` gave an AttributeError later, deep nesting a RecursionError."""
    from refseg_tf.training import config as config_lib

    text, expected = NOT_A_CONFIG[name]
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError) as raised:
        config_lib.load_config(str(tmp_path))
    assert str(tmp_path / "config.json") in str(raised.value) and expected in str(raised.value)


def _small_manager(directory):
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    return tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=3)


def _cut_in_half(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _flip_near_end(path):
    data = bytearray(open(path, "rb").read())
    data[-20] ^= 0xFF
    open(path, "wb").write(bytes(data))


CHECKPOINT_DAMAGE = {
    "data file cut": (".data-00000-of-00001", _cut_in_half),
    "data file with a flipped byte": (".data-00000-of-00001", _flip_near_end),
    "index file missing": (".index", os.remove),
}


@pytest.mark.parametrize("name", sorted(CHECKPOINT_DAMAGE))
def test_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path, name, caplog):
    """Before: the restore raised (IndexError "Read less bytes than requested" and others)."""
    from refseg_tf.training import trainer

    suffix, damage = CHECKPOINT_DAMAGE[name]
    manager = _small_manager(tmp_path)
    for step in (5, 9):
        manager.checkpoint.optimizer.iterations.assign(step)
        manager.save(checkpoint_number=step)
    damage(str(tmp_path / f"ckpt-9{suffix}"))
    manager.checkpoint.optimizer.iterations.assign(0)
    with caplog.at_level("WARNING"):
        assert trainer.restore_newest_readable(_small_manager(tmp_path)) == 5
    assert str(tmp_path / "ckpt-9") in caplog.text


def test_no_readable_checkpoint_names_each(tmp_path):
    from refseg_tf.training import trainer

    manager = _small_manager(tmp_path)
    manager.save(checkpoint_number=3)
    _cut_in_half(str(tmp_path / "ckpt-3.data-00000-of-00001"))
    with pytest.raises(ValueError, match="ckpt-3"):
        trainer.restore_newest_readable(_small_manager(tmp_path))


def test_leftover_temporary_checkpoint_folders_are_removed(tmp_path):
    from refseg_tf.training import callbacks, trainer

    leftover = tmp_path / callbacks.CHECKPOINT_SUBDIR / "ckpt-12_temp"
    leftover.mkdir(parents=True)
    (leftover / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
    assert trainer.remove_temporary_checkpoints(str(tmp_path)) == [str(leftover)]
    assert not leftover.exists()


def test_every_output_has_the_same_mode(tmp_path):
    """Before: model.keras and the model directory's vocab.txt were 0600."""
    import keras

    from refseg_tf.training import trainer

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    trainer.save_model_atomic(model, str(tmp_path / "model.keras"))
    (tmp_path / "source.txt").write_text("a\n")
    files.atomic_copy(tmp_path / "source.txt", tmp_path / "vocab.txt")
    files.atomic_write_text(tmp_path / "config.json", "{}")
    for name in ("model.keras", "vocab.txt", "config.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == files.FILE_MODE, name


def test_shards_have_the_output_mode(converted):
    _, output_dir = converted
    for path in output_dir.glob("*.tfrecord"):
        assert os.stat(path).st_mode & 0o777 == files.FILE_MODE


# ============================================================= 7. unwritable output directories
def test_unwritable_conversion_output_is_one_line(tmp_path, capsys):
    """Before: a traceback (the OSError escaped convert_with_flags). In process: the flags
    parsed as the command line gives them, then what `refseg-convert`'s main runs."""
    from absl import flags

    from refseg_tf import convert

    builder = _happy_dataset(tmp_path / "data")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    flag_values = flags.FlagValues()
    convert.define_flags(flag_values)
    flag_values(["refseg-convert", *_cli_conversion(builder, blocker / "out")[3:]])
    assert convert.convert_with_flags(flag_values) == 1
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.startswith("refseg-convert:")]
    assert len(lines) == 1 and str(blocker) in lines[0] and "Not a directory" in lines[0]
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_unwritable_conversion_output_is_one_line_on_the_command_line(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = subprocess.run(
        _cli_conversion(builder, blocker / "out"), cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("refseg-convert:")]
    assert len(lines) == 1 and str(blocker) in lines[0] and "Not a directory" in lines[0]
    assert "Traceback" not in result.stderr


def test_unwritable_model_dir_is_one_line(converted, tmp_path, capsys):
    """Before: a PermissionError / NotADirectoryError traceback from refseg-train."""
    from refseg_tf.training import trainer

    _, data_dir = converted
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")

    @user_errors_as_messages("refseg-train")
    def main(argv):
        trainer.train(_model_dir_config(data_dir, **{"model.vocabulary_size": 0}),
                      str(blocker / "model"))

    assert main([]) == 1
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and str(blocker) in message


def test_full_disk_is_one_line(capsys):
    import errno

    @user_errors_as_messages("refseg-export")
    def main(argv):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/exports/model/saved_model.pb")

    assert main([]) == 1
    message = capsys.readouterr().err.strip()
    assert message.startswith("refseg-export: error:") and "saved_model.pb" in message
    assert "No space left on device" in message


# =============================================================== 8. decompression-bomb images
def test_image_over_the_pixel_limit_is_a_clear_error(tmp_path, monkeypatch):
    """Before: PIL.Image.DecompressionBombError escaped refseg-predict as a traceback."""
    from refseg_tf.inference import read_image

    path = tmp_path / "huge.png"
    Image.fromarray(np.zeros((60, 40, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 2400 pixels > 2 * 1000
    with pytest.raises(ValueError) as raised:
        read_image(str(path))
    message = str(raised.value)
    assert str(path) in message and "2000" in message and "MAX_IMAGE_PIXELS" in message


# ============================================= 13. the authors' checkpoints (refseg-import, issue 18)
@pytest.fixture(scope="module")
def hu_checkpoint(tmp_path_factory):
    """A tiny Hu low-resolution checkpoint (V1 single file, TF 1.0 names) and its vocabulary."""
    from tests.test_interop_text_objseg import TINY, make_checkpoint

    directory = tmp_path_factory.mktemp("hu_bad")
    checkpoint, vocabulary, _, _, _ = make_checkpoint(directory, TINY, high_res=False)
    return checkpoint, vocabulary


def _hu_config(stage="low"):
    from refseg_tf import interop

    config = interop.load_experiment_config(
        os.path.join(REPO_ROOT, "experiments", f"lstm_cnn_{stage}_referit.py")
    )
    config.model.size = "tiny"
    config.data.image_size = 64
    return config


def _rewrite_checkpoint(source, target, rename=None, drop=(), change=None, version=2):
    """Copies a checkpoint's variables into a new one, renaming / dropping / replacing some."""
    import tensorflow as tf

    from refseg_tf.interop import read_checkpoint

    variables = read_checkpoint(source)
    graph = tf.Graph()
    with graph.as_default():
        for name in variables.names:
            if name in drop:
                continue
            value = (change or {}).get(name, variables.read(name))
            tf.compat.v1.get_variable((rename or {}).get(name, name), initializer=value)
        saver = tf.compat.v1.train.Saver(
            write_version=tf.compat.v1.train.SaverDef.V1 if version == 1 else tf.compat.v1.train.SaverDef.V2
        )
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, str(target), write_meta_graph=False)


def _import_fails(checkpoint, vocabulary, model_dir, stage="low"):
    from refseg_tf import interop

    with pytest.raises(ValueError) as raised:
        interop.import_checkpoint("text_objseg", checkpoint, vocabulary, _hu_config(stage), model_dir)
    assert not os.path.exists(model_dir)  # nothing written to --model_dir
    parent = os.path.dirname(model_dir)
    assert not [name for name in os.listdir(parent) if ".import-" in name]  # no temporary left
    return " ".join(str(raised.value).split())


def test_truncated_v1_checkpoint_is_named(hu_checkpoint, tmp_path):
    checkpoint, vocabulary = hu_checkpoint
    truncated = tmp_path / "truncated.tfmodel"
    data = open(checkpoint, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    message = _import_fails(str(truncated), vocabulary, str(tmp_path / "model"))
    assert str(truncated) in message and "truncated" in message


def test_corrupted_checkpoint_is_named(hu_checkpoint, tmp_path):
    _, vocabulary = hu_checkpoint
    corrupted = tmp_path / "garbage.tfmodel"
    corrupted.write_bytes(np.random.default_rng(0).bytes(4096))
    message = _import_fails(str(corrupted), vocabulary, str(tmp_path / "model"))
    assert str(corrupted) in message


def test_missing_checkpoint_is_named(hu_checkpoint, tmp_path):
    _, vocabulary = hu_checkpoint
    missing = str(tmp_path / "referit_fc8_seg_lowres_iter_30000.tfmodel")
    message = _import_fails(missing, vocabulary, str(tmp_path / "model"))
    assert missing in message and "no checkpoint" in message


def test_v2_checkpoint_with_truncated_data_names_the_variable(hu_checkpoint, tmp_path):
    checkpoint, vocabulary = hu_checkpoint
    prefix = _rewrite_checkpoint(checkpoint, tmp_path / "v2.ckpt")
    data_file = prefix + ".data-00000-of-00001"
    data = open(data_file, "rb").read()
    with open(data_file, "wb") as stream:
        stream.write(data[: len(data) // 3])
    message = _import_fails(prefix, vocabulary, str(tmp_path / "model"))
    assert prefix in message and "cannot be read" in message and "variable '" in message


def test_renamed_variable_is_named_as_missing_and_unexpected(hu_checkpoint, tmp_path):
    checkpoint, vocabulary = hu_checkpoint
    renamed = _rewrite_checkpoint(
        checkpoint, tmp_path / "renamed.ckpt",
        rename={"vgg_local/fc7/weights": "vgg_local/fc7_renamed/weights"},
    )
    message = _import_fails(renamed, vocabulary, str(tmp_path / "model"))
    assert "missing variable 'vgg_local/fc7/weights' (for layer 'fc7')" in message
    assert "unexpected variable 'vgg_local/fc7_renamed/weights'" in message
    assert renamed in message


def test_mismatched_vocabulary_names_the_embedding(hu_checkpoint, tmp_path):
    checkpoint, _ = hu_checkpoint
    from tests.test_interop_text_objseg import write_vocabulary

    vocabulary = tmp_path / "vocabulary_other.txt"
    write_vocabulary(vocabulary, 50)  # the checkpoint's embedding has 40 rows
    message = _import_fails(checkpoint, str(vocabulary), str(tmp_path / "model"))
    assert "'word_embedding/embedding' has shape (40, 8)" in message
    assert "layer 'embedding' needs (50, 8)" in message


def test_mis_shaped_variable_names_variable_and_layer_and_assigns_nothing(hu_checkpoint, tmp_path):
    checkpoint, vocabulary = hu_checkpoint
    from refseg_tf.interop import read_checkpoint

    shape = read_checkpoint(checkpoint).shapes["classifier/mlp_l1/biases"]
    changed = _rewrite_checkpoint(
        checkpoint, tmp_path / "shape.ckpt",
        change={"classifier/mlp_l1/biases": np.zeros(shape[0] + 1, np.float32)},
    )
    message = _import_fails(changed, vocabulary, str(tmp_path / "model"))
    assert f"'classifier/mlp_l1/biases' has shape ({shape[0] + 1},)" in message
    assert "'fusion/fusion_conv'" in message and "nothing assigned" in message


def test_low_resolution_checkpoint_into_the_high_resolution_row(hu_checkpoint, tmp_path):
    checkpoint, vocabulary = hu_checkpoint
    message = _import_fails(checkpoint, vocabulary, str(tmp_path / "model"), stage="high")
    assert "missing variable 'classifier/upsample32s/weights' (for layer 'upsample')" in message


def test_checkpoint_of_another_format_is_refused_for_the_config(hu_checkpoint, tmp_path):
    """The text_objseg format on a row of another model family: refused before any work."""
    from refseg_tf import interop

    checkpoint, vocabulary = hu_checkpoint
    config = interop.load_experiment_config(os.path.join(REPO_ROOT, "experiments", "r_lstm_unc.py"))
    with pytest.raises(ValueError, match="fills the lstm_cnn model"):
        interop.import_checkpoint("text_objseg", checkpoint, vocabulary, config, str(tmp_path / "m"))
    with pytest.raises(ValueError, match="unknown checkpoint format 'hu'"):
        interop.import_checkpoint("hu", checkpoint, vocabulary, config, str(tmp_path / "m"))
    assert not os.path.exists(tmp_path / "m")


def test_non_empty_model_dir_is_refused_before_reading(hu_checkpoint, tmp_path):
    from refseg_tf import interop

    checkpoint, vocabulary = hu_checkpoint
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        interop.import_checkpoint("text_objseg", checkpoint, vocabulary, _hu_config(), str(model_dir))
    assert os.listdir(model_dir) == ["notes.txt"]


def test_vgg_params_with_a_code_running_pickle_is_refused(tmp_path):
    """Hu's vgg_params.npz holds pickled dicts; one whose pickle calls a function is refused
    (naming the file and the global) before it runs."""
    import io
    import zipfile

    from refseg_tf.backbones import get_backbone

    marker = tmp_path / "ran"

    class Hostile:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "vgg_params.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for member in ("processed_W", "processed_B"):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray([Hostile()], dtype=object), allow_pickle=True)
            archive.writestr(f"{member}.npy", buffer.getvalue())
    with pytest.raises(ValueError) as raised:
        get_backbone("vgg16_fcn", tiny=True, weights=str(path))
    assert str(path) in str(raised.value) and "posix.mkdir" in str(raised.value)
    assert not marker.exists()


def test_truncated_vgg_params_is_named(tmp_path):
    from refseg_tf.backbones import get_backbone
    from tests.test_interop_vgg_params import TINY, write_vgg_params

    path = tmp_path / "vgg_params.npz"
    write_vgg_params(str(path), TINY)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(ValueError) as raised:
        get_backbone("vgg16_fcn", tiny=True, weights=str(path))
    assert str(path) in str(raised.value)


# ================================ 14. TF-phrasecut-public checkpoints (refseg-import, issue 18)
@pytest.fixture(scope="module")
def phrasecut_checkpoints(tmp_path_factory):
    """Tiny R+LSTM and D+RMI snapshots of the authors' graphs (tests/tf1_phrasecut.py), the
    ones tests/test_interop_phrasecut.py imports (built once per run; read only here)."""
    from tests import tf1_phrasecut as graphs
    from tests.test_interop_phrasecut import TINY, tiny_authors_checkpoint

    root = tmp_path_factory.mktemp("phrasecut")
    paths = {}
    for model, weights in (("LSTM", "resnet"), ("RMI", "deeplab")):
        paths[model], _ = tiny_authors_checkpoint(tmp_path_factory, model, weights)
    paths["vocabulary"] = graphs.write_vocabulary(str(root / "vocabulary.txt"), TINY["vocab"])
    return paths


def _phrasecut_import(paths, checkpoint, model_dir, format_name="phrasecut_lstm", row="r_lstm_unc"):
    from refseg_tf.interop import import_checkpoint
    from tests.test_interop_phrasecut import _tiny_config

    with pytest.raises(ValueError) as raised:
        import_checkpoint(format_name, checkpoint, paths["vocabulary"], _tiny_config(row), model_dir)
    assert not os.path.exists(model_dir)  # nothing written to --model_dir
    assert not glob.glob(str(model_dir) + "*")  # no temporary directory left beside it
    return str(raised.value)


@pytest.mark.parametrize(
    "edit,expected",
    [
        # mis-shaped: the fusion conv's kernel one input channel short
        (lambda v: {**v, "text_objseg/conv1/DW": v["text_objseg/conv1/DW"][:, :, 1:]},
         ["text_objseg/conv1/DW", "fusion/fusion_conv"]),
        # missing: the text LSTM's cell (no naming of it present)
        (lambda v: {k: x for k, x in v.items() if "basic_lstm_cell" not in k},
         ["text_objseg/RNN/multi_rnn_cell/cell_0/basic_lstm_cell/weights", "fusion/text_encoder/lstm"]),
        # unexpected: a variable no layer of R+LSTM takes
        (lambda v: {**v, "text_objseg/conv3/DW": np.zeros((1, 1, 8, 1), np.float32)},
         ["text_objseg/conv3/DW", "unexpected"]),
        # missing backbone batch-norm statistics
        (lambda v: {k: x for k, x in v.items() if k != "ResNet/group_3_1/block_2/bn/variance"},
         ["ResNet/group_3_1/block_2/bn/variance", "conv3_block2_2_bn"]),
    ],
    ids=["mis-shaped", "missing-lstm", "unexpected", "missing-bn"],
)
def test_phrasecut_bad_checkpoint_names_the_variable(phrasecut_checkpoints, tmp_path, edit, expected):
    from tests import tf1_phrasecut as graphs

    bad = graphs.rewrite_checkpoint(phrasecut_checkpoints["LSTM"], str(tmp_path / "bad.tfmodel"), edit)
    message = _phrasecut_import(phrasecut_checkpoints, bad, tmp_path / "model")
    for part in expected:
        assert part in message, message


def test_phrasecut_truncated_checkpoint_names_the_file(phrasecut_checkpoints, tmp_path):
    source = phrasecut_checkpoints["RMI"]
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(source + suffix, str(tmp_path / "cut.tfmodel") + suffix)
    data = str(tmp_path / "cut.tfmodel.data-00000-of-00001")
    with open(data, "r+b") as handle:
        handle.truncate(os.path.getsize(data) // 2)
    message = _phrasecut_import(phrasecut_checkpoints, str(tmp_path / "cut.tfmodel"),
                                tmp_path / "model", "phrasecut_rmi", "d_rmi_unc")
    assert "cut.tfmodel" in message


def test_phrasecut_checkpoint_of_the_other_backbone_is_refused(phrasecut_checkpoints, tmp_path):
    # A -w deeplab RMI snapshot with the R+RMI config (fc1000, no projection).
    message = _phrasecut_import(phrasecut_checkpoints, phrasecut_checkpoints["RMI"],
                                tmp_path / "model", "phrasecut_rmi", "r_rmi_unc")
    assert "-w deeplab" in message and "experiments/d_rmi_" in message


def test_phrasecut_format_refuses_another_model_family(phrasecut_checkpoints, tmp_path):
    message = _phrasecut_import(phrasecut_checkpoints, phrasecut_checkpoints["LSTM"],
                                tmp_path / "model", "phrasecut_lstm", "r_rmi_unc")
    assert "phrasecut_lstm" in message and "r_rmi" in message


# --------------------------------------------------------------------------- the exported model
# One tiny exported RRN for this section (`default_exported` of tests/test_export.py, module
# scoped): its SavedModel signatures, its TFLite file and the `refseg-serve` server below.

from tests.test_export import IMAGES, SENTENCES, default_exported  # noqa: E402,F401


def _segment_inputs(exported):
    size, length = exported.contract["image_size"], exported.contract["max_length"]
    return np.zeros((1, size, size, 3), np.float32), np.ones((1, length), np.int32)


def _signature_bad_inputs(exported):
    image, word_ids = _segment_inputs(exported)
    size = image.shape[1]
    return {
        "image of another size": (dict(image=np.zeros([1, size // 2, size // 2, 3], np.float32),
                                       word_ids=word_ids), "image"),
        "image without the batch axis": (dict(image=image[0], word_ids=word_ids), "image"),
        "word_ids too long": (dict(image=image, word_ids=np.ones([1, word_ids.shape[1] + 3],
                                                                  np.int32)), "word_ids"),
        "image of uint8": (dict(image=image.astype(np.uint8), word_ids=word_ids), "image"),
        "word_ids of float": (dict(image=image, word_ids=word_ids.astype(np.float32)),
                              "word_ids"),
    }


SHAPE_CASES = ["image of another size", "image without the batch axis", "word_ids too long"]
DTYPE_CASES = ["image of uint8", "word_ids of float"]


def _assert_segment_still_answers(exported):
    import tensorflow as tf

    image, word_ids = _segment_inputs(exported)
    outputs = exported.segment(image=tf.constant(image), word_ids=tf.constant(word_ids))
    assert all(np.isfinite(value.numpy()).all() for value in outputs.values())


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_saved_model_signature_with_a_wrong_shape_names_the_input(default_exported, case):
    """Outcome: the raw signature (as TF Serving runs it) fails with an error naming the input
    and the shape received. Before the fix a loaded signature did not check shapes: a smaller
    image failed deep in the network ("Specified a list with shape [?,8,8,32] from a tensor
    with shape [1,4,4,32]" at a ConvLSTM node)."""
    import tensorflow as tf

    inputs, name = _signature_bad_inputs(default_exported)[case]
    tensors = {key: tf.constant(value) for key, value in inputs.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"`{name}` must have shape"):
        default_exported.segment(**tensors)
    _assert_segment_still_answers(default_exported)


@pytest.mark.parametrize("case", DTYPE_CASES)
def test_saved_model_signature_with_a_wrong_dtype_is_refused(default_exported, case):
    """Outcome: TensorFlow's own check refuses the dtype, by position and expected dtype (the
    loaded signature wrapper runs before any exported code); `call_signature` names the input."""
    import tensorflow as tf

    from refseg_tf.export import call_signature

    inputs, name = _signature_bad_inputs(default_exported)[case]
    tensors = {key: tf.constant(value) for key, value in inputs.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match="was expected to be a"):
        default_exported.segment(**tensors)
    with pytest.raises(ValueError, match=f"`{name}` must be"):
        call_signature(default_exported.segment, **inputs)
    _assert_segment_still_answers(default_exported)


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_call_signature_names_a_wrong_shape_before_running(default_exported, case):
    from refseg_tf.export import call_signature

    inputs, name = _signature_bad_inputs(default_exported)[case]
    with pytest.raises(ValueError, match=f"`{name}` must have shape"):
        call_signature(default_exported.segment, **inputs)


def test_call_signature_names_missing_and_unexpected_inputs(default_exported):
    from refseg_tf.export import call_signature

    image, _ = _segment_inputs(default_exported)
    with pytest.raises(ValueError, match=r"missing \['word_ids'\], unexpected \['words'\]"):
        call_signature(default_exported.segment, image=image, words=[[1]])
    outputs = call_signature(default_exported.serve, image_bytes=[IMAGES["rgb.png"]],
                             expression=[SENTENCES[0]])
    assert set(outputs) == {"mask", "probability", "image_size"}  # it ran the signature


def test_serving_signature_with_wrong_dtypes_is_refused(default_exported):
    """Outcome: numbers where `serving_default` takes strings: TensorFlow refuses them (by
    position and dtype); `call_signature` names `image_bytes` / `expression`."""
    import tensorflow as tf

    from refseg_tf.export import call_signature

    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a string tensor"):
        default_exported.serve(image_bytes=tf.constant([1, 2]), expression=tf.constant(["a", "b"]))
    with pytest.raises(ValueError, match="`image_bytes` must be string"):
        call_signature(default_exported.serve, image_bytes=[1, 2], expression=["a", "b"])
    with pytest.raises(ValueError, match="`expression` must be"):
        call_signature(default_exported.serve, image_bytes=[IMAGES["rgb.png"]],
                       expression=[[1.0]])


def _tflite_bad_inputs(exported):
    image, word_ids = _segment_inputs(exported)
    size = image.shape[1]
    return {
        "image of another size": (np.zeros((1, size // 2, size // 2, 3), np.float32), word_ids,
                                  r"`image` must have shape \[B, %d, %d, 3\]" % (size, size)),
        "image with 1 channel": (image[..., :1], word_ids, "`image` must have shape"),
        "image of uint8": (image.astype(np.uint8), word_ids, "`image` must be a float array"),
        "image of strings": (np.full(image.shape, "x"), word_ids, "`image` must be a float"),
        "word_ids too long": (image, np.ones((1, word_ids.shape[1] + 3), np.int32),
                              "`word_ids` must have shape"),
        "word_ids of float": (image, word_ids.astype(np.float32),
                              "`word_ids` must be a integer array"),
        "batches differ": (np.concatenate([image] * 2), word_ids, "the same B"),
    }


TFLITE_CASES = ["image of another size", "image with 1 channel", "image of uint8",
                "image of strings", "word_ids too long", "word_ids of float", "batches differ"]


@pytest.fixture(scope="module")
def tflite_segmenter(default_exported):
    from refseg_tf.export import TFLiteSegmenter

    return TFLiteSegmenter(os.path.join(default_exported.output_dir, "model.tflite"))


@pytest.mark.parametrize("case", TFLITE_CASES)
def test_tflite_with_a_wrong_shape_or_dtype_names_the_input(default_exported, tflite_segmenter,
                                                            case):
    """Outcome: a ValueError naming `image` / `word_ids`, expected and received. Before the
    fix the arrays were cast silently (uint8 pixels, float ids) or LiteRT failed on a tensor
    index; the interpreter still answers afterwards."""
    image, word_ids, message = _tflite_bad_inputs(default_exported)[case]
    with pytest.raises(ValueError, match=message):
        tflite_segmenter(image, word_ids)
    good_image, good_ids = _segment_inputs(default_exported)
    assert np.isfinite(tflite_segmenter(good_image, good_ids)).all()


# --------------------------------------------------------------------------- refseg-serve
# The exported model served by `refseg_tf.webdemo` on a free loopback port (one server for the
# module), with a small upload limit and a 1 s read timeout so that the stalled-body case ends
# fast. Every bad request is followed by a good one: the server keeps serving.

import base64  # noqa: E402
import contextlib  # noqa: E402
import http.client  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

SERVE_TIMEOUT = 60  # seconds any one request may take on a loaded two-core machine
# The server's socket timeout is SERVE_TIMEOUT, except inside `_short_read_timeout` (the
# half-way body test): with 1 s for every test, a client thread starved for a second on a
# loaded machine (20 concurrent requests) had its connection closed before it sent anything.
READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def bad_input_server(default_exported):
    from refseg_tf.webdemo import DemoService, make_server

    service = DemoService.from_saved_model(default_exported.saved_model_dir,
                                           max_upload_bytes=32 * 1024, max_pixels=200 * 200)
    server = make_server(service, "127.0.0.1", 0, read_timeout=SERVE_TIMEOUT)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


@contextlib.contextmanager
def _short_read_timeout(server, seconds=READ_TIMEOUT):
    """The server's read timeout set to `seconds` for the connections opened inside."""
    before = server.read_timeout
    server.read_timeout = seconds
    try:
        yield
    finally:
        server.read_timeout = before


def _request(server, method, path, body=None, headers=None):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=SERVE_TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _post_json(server, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, answer = _request(server, "POST", "/api/segment", data,
                                 {"Content-Type": "application/json"})
    return status, json.loads(answer)


def _good_body(expression="the red circle"):
    return {"image": base64.b64encode(IMAGES["rgb.png"]).decode("ascii"),
            "expression": expression}


def _assert_still_serving(server):
    status, answer = _post_json(server, _good_body())
    assert status == 200, answer
    assert answer["width"] == 33 and answer["height"] == 97  # rgb.png's own size
    return answer


IMAGE_TEXT = base64.b64encode(IMAGES["rgb.png"]).decode("ascii")
# case: (body, status, words the error must contain)
BAD_REQUESTS = {
    "malformed json": (b'{"image": "abc", "expression": ', 400, "must be JSON"),
    "not utf-8": (b'{"image": "\xff\xfe"}', 400, "must be JSON"),
    "json list": ([IMAGE_TEXT, "a phrase"], 400, "JSON object"),
    "json string": ("hello", 400, "JSON object"),
    "missing image": ({"expression": "a cat"}, 400, "`image`"),
    "missing expression": ({"image": IMAGE_TEXT}, 400, "phrase is empty"),
    "empty body": (b"", 400, "must be JSON"),
    "image a number": ({"image": 12, "expression": "a cat"}, 400, "`image` must be"),
    "image a list": ({"image": [IMAGE_TEXT], "expression": "a cat"}, 400, "`image` must be"),
    "image not base64": ({"image": "%%%", "expression": "a cat"}, 400, "base64"),
    "expression a number": ({"image": IMAGE_TEXT, "expression": 3}, 400, "`expression` must be"),
    "expression a list": ({"image": IMAGE_TEXT, "expression": ["a", "cat"]}, 400,
                          "`expression` must be"),
    "explain a string": ({"image": IMAGE_TEXT, "expression": "a cat", "explain": "yes"}, 400,
                         "`explain` must be"),
    "explain on a SavedModel": ({"image": IMAGE_TEXT, "expression": "a cat", "explain": True},
                                400, "no per-word maps"),
    "not an image": ({"image": base64.b64encode(b"GIF? no").decode(), "expression": "a cat"},
                     415, "not an image"),
    "upload over max_upload_mb": ({"image": base64.b64encode(bytes(40 * 1024)).decode(),
                                   "expression": "a cat"}, 413, "--max_upload_mb"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_serve_bad_request_names_the_field_and_the_next_request_is_served(bad_input_server, case):
    body, status, words = BAD_REQUESTS[case]
    got, answer = _post_json(bad_input_server, body)
    assert got == status and words in answer["error"], (got, answer)
    _assert_still_serving(bad_input_server)


def test_serve_body_over_the_limit_is_refused_before_it_is_read(bad_input_server):
    """Outcome: 413 from the Content-Length alone (the body is never sent); then served."""
    host, port = bad_input_server.server_address[:2]
    length = bad_input_server.service.max_request_bytes + 1
    with socket.create_connection((host, port), timeout=SERVE_TIMEOUT) as raw:
        raw.sendall(b"POST /api/segment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % length)
        reply = _read_reply(raw)
    assert reply.startswith(b"HTTP/1.1 413") and b"--max_upload_mb" in reply
    _assert_still_serving(bad_input_server)


def _read_reply(raw):
    """Everything the server sends until it closes the connection (bounded by the socket's
    timeout: a server that holds the connection open fails the test instead of hanging)."""
    chunks = []
    while True:
        chunk = raw.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_serve_body_that_stops_half_way_is_answered_and_closed(bad_input_server):
    """Outcome: a Content-Length larger than what is sent gets 408 after the read timeout
    and the connection is closed. Before the fix the handler read with no socket timeout and
    held its thread (and the connection) forever; here `recv` would time out."""
    host, port = bad_input_server.server_address[:2]
    body = json.dumps(_good_body()).encode()
    start = time.monotonic()
    with _short_read_timeout(bad_input_server), socket.create_connection(
            (host, port), timeout=READ_TIMEOUT + 20) as raw:
        raw.sendall(b"POST /api/segment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
        reply = _read_reply(raw)  # the server closes it
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"stopped before its Content-Length" in reply
    assert time.monotonic() - start < READ_TIMEOUT + 20
    _assert_still_serving(bad_input_server)


def test_serve_body_whose_client_hangs_up_half_way_keeps_serving(bad_input_server):
    """Outcome: the client closes its side after half the body: the server answers 400 (or
    finds the socket gone) and keeps serving."""
    host, port = bad_input_server.server_address[:2]
    body = json.dumps(_good_body()).encode()
    with socket.create_connection((host, port), timeout=SERVE_TIMEOUT) as raw:
        raw.sendall(b"POST /api/segment HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                    % len(body) + body[:100])
        raw.shutdown(socket.SHUT_WR)
        reply = _read_reply(raw)
    assert reply.startswith(b"HTTP/1.1 400") and b"stopped before" in reply
    _assert_still_serving(bad_input_server)


DOTTED_PATHS = ["/../__init__.py", "/static/../__init__.py", "/..%2f__init__.py",
                "/%2e%2e/%2e%2e/serve.py", "/../../../../etc/passwd", "/static/app.js",
                "//etc/passwd", "/app.js/../../__init__.py"]


@pytest.mark.parametrize("path", DOTTED_PATHS)
def test_serve_get_with_dots_serves_no_file_outside_static(bad_input_server, path):
    """Outcome: 404 naming the path; only the three page files are ever served."""
    host, port = bad_input_server.server_address[:2]
    with socket.create_connection((host, port), timeout=SERVE_TIMEOUT) as raw:
        # raw: http.client would keep the path as is too, but a socket cannot normalise it
        raw.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        reply = _read_reply(raw)
    assert reply.startswith(b"HTTP/1.1 404"), reply[:200]
    assert b"DemoService" not in reply and b"root:" not in reply and b"refseg" not in reply.split(
        b"\r\n\r\n", 1)[1].replace(b"refseg-serve", b"")
    _assert_still_serving(bad_input_server)


def test_serve_expression_with_html_is_text_on_the_page(bad_input_server):
    """Outcome: the phrase comes back as a JSON string (application/json, nosniff) and the
    page inserts server text with `textContent` only, under a CSP without inline scripts."""
    expression = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    status, headers, body = _request(bad_input_server, "POST", "/api/segment",
                                     json.dumps(_good_body(expression)).encode(),
                                     {"Content-Type": "application/json"})
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert json.loads(body)["expression"] == expression
    status, headers, page = _request(bad_input_server, "GET", "/")
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert b"<script>" not in page.replace(b" ", b"")  # only <script src=...>
    status, _, script = _request(bad_input_server, "GET", "/app.js")
    script = script.decode("utf-8")
    assert status == 200 and "textContent" in script
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):
        assert sink not in script, f"app.js uses {sink}: server text could run as HTML"


def test_serve_twenty_concurrent_requests_are_all_answered(bad_input_server):
    """Outcome: 20 requests at once (good, malformed and GETs mixed) all answered, correctly,
    within a bounded time; the model runs one at a time behind the service's lock."""
    def one(index):
        if index % 4 == 1:
            return _post_json(bad_input_server, b"{broken")[0]
        if index % 4 == 2:
            return _request(bad_input_server, "GET", "/api/info")[0]
        status, answer = _post_json(bad_input_server, _good_body(f"phrase number {index}"))
        assert answer.get("expression") == f"phrase number {index}", answer
        return status

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(one, range(20), timeout=SERVE_TIMEOUT * 2))
    assert statuses == [400 if i % 4 == 1 else 200 for i in range(20)]
    assert time.monotonic() - start < SERVE_TIMEOUT * 2
    _assert_still_serving(bad_input_server)


def test_serve_read_timeout_must_be_positive(bad_input_server):
    from refseg_tf.webdemo import make_server

    for value in (0, -1.0, "5", True):
        with pytest.raises(ValueError, match="`read_timeout` must be a positive number"):
            make_server(bad_input_server.service, "127.0.0.1", 0, read_timeout=value)

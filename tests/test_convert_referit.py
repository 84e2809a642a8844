"""Tests of the ReferIt converter on a tiny generated text_objseg layout."""

import json
import pickle
import types

import numpy as np
import pytest
import scipy.io
from PIL import Image

from refseg_tf.data import schema
from refseg_tf.data.converters import referit
from refseg_tf.data.converters.report import ConversionError, ConversionReport
from tests.helpers import materialize_all

IMAGE_SIZES = {"7": (40, 48), "12": (32, 36), "30": (36, 40)}  # name -> (height, width)


def _segimg(height, width, box):
    """A SAIAPR-like label image: region 0 inside `box` (top, left, bottom, right), 5 elsewhere."""
    segimg = np.full((height, width), 5, dtype=np.uint8)
    top, left, bottom, right = box
    segimg[top:bottom, left:right] = 0
    return segimg


def _write_json(path, value):
    path.write_text(json.dumps(value), encoding="utf-8")


@pytest.fixture
def layout(tmp_path):
    """data/ images/ mask/ with 3 images, 2 trainval images and 1 test image."""
    data, image_dir, mask_dir = tmp_path / "data", tmp_path / "images", tmp_path / "mask"
    for directory in (data, image_dir, mask_dir):
        directory.mkdir()
    rng = np.random.default_rng(0)
    for name, (height, width) in IMAGE_SIZES.items():
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image_dir / f"{name}.jpg", quality=90)
    boxes = {
        "7_1": (2, 3, 10, 12),
        "7_2": (20, 20, 30, 40),
        "12_3": (0, 0, 5, 6),
        "30_1": (4, 4, 8, 9),
    }
    for crop, box in boxes.items():
        height, width = IMAGE_SIZES[crop.split("_")[0]]
        scipy.io.savemat(mask_dir / f"{crop}.mat", {"segimg_t": _segimg(height, width, box)})
    _write_json(
        data / "referit_imcrop.json",
        {"7": ["7_1", "7_2", "7_9"], "12": ["12_3"], "30": ["30_1"]},
    )
    _write_json(data / "referit_bbox.json", {"7_1": [3, 2, 11, 9], "12_3": [0, 0, 5, 4]})
    _write_json(
        data / "referit_query_trainval.json",
        {"7_1": ["the red thing", "left box"], "7_2": ["sky"], "12_3": ["corner"]},
    )
    _write_json(data / "referit_query_test.json", {"30_1": ["small square"]})
    return types.SimpleNamespace(
        root=tmp_path, data=data, images=image_dir, masks=mask_dir, boxes=boxes
    )


def _reader(layout):
    return referit.ReferItReader(layout.data, layout.images, layout.masks)


def test_plan_splits_ids_and_order(layout):
    report = ConversionReport()
    plan = _reader(layout).plan(report)
    assert sorted(plan) == ["test", "trainval"]
    assert [item.image_id for item in plan["trainval"]] == [7, 12]
    assert [item.image_id for item in plan["test"]] == [30]
    seven = plan["trainval"][0]
    assert seven.file_name == "7.jpg"
    assert [region.ref_id for region in seven.regions] == [7001, 7002]
    assert seven.regions[0].sentences == ((7001000, "the red thing"), (7001001, "left box"))
    assert seven.regions[0].bbox == (3.0, 2.0, 9.0, 8.0)  # inclusive corners [3, 2, 11, 9]
    assert seven.regions[1].bbox is None  # not in referit_bbox.json
    assert report.skip_count("trainval") == 0 and report.skip_count("test") == 0


def test_records_masks_are_segimg_zero(layout):
    reader = _reader(layout)
    report = ConversionReport()
    records = materialize_all(reader, reader.plan(report), report)
    record = records["trainval"][0]
    assert (record.image_id, record.height, record.width) == (7, 40, 48)
    assert record.image_format == "jpeg"
    assert record.encoded == (layout.images / "7.jpg").read_bytes()  # RGB JPEG kept as is
    for ref, crop in zip(record.refs, ["7_1", "7_2"]):
        segimg = scipy.io.loadmat(layout.masks / f"{crop}.mat")["segimg_t"]
        np.testing.assert_array_equal(ref.mask, (segimg == 0).astype(np.uint8))
        assert ref.ann_id == -1 and ref.category_id == -1
    top, left, bottom, right = layout.boxes["7_2"]
    assert record.refs[1].bbox == (left, top, right - left, bottom - top)  # box of the mask
    assert report.convert_count("trainval", "ref") == 1
    assert [s.text for s in records["test"][0].refs[0].sentences] == ["small square"]


def test_record_round_trips_through_the_schema(layout):
    reader = _reader(layout)
    report = ConversionReport()
    plan = reader.plan(report)
    report.set_split("trainval")
    record = reader.materialize(plan["trainval"][0], report)
    decoded = schema.decode_example_numpy(schema.encode_example(record))
    assert decoded["ref/id"] == [7001, 7002]
    assert decoded["sentence/id"] == [7001000, 7001001, 7002000]
    assert decoded["sentence/ref_index"] == [0, 0, 1]
    mask = schema.decode_mask_png(decoded["ref/mask"][0])
    np.testing.assert_array_equal(mask, record.refs[0].mask)
    assert mask.sum() == 8 * 9


def test_empty_query_is_a_counted_sentence_skip(layout):
    _write_json(layout.data / "referit_query_test.json", {"30_1": ["  ", "small square", ""]})
    report = ConversionReport()
    plan = _reader(layout).plan(report)
    assert report.skipped("test") == {"sentence": {"empty sentence": 2}}
    assert plan["test"][0].regions[0].sentences == ((30001001, "small square"),)


def test_region_with_only_empty_queries_and_its_image_are_skipped(layout):
    _write_json(layout.data / "referit_query_test.json", {"30_1": [""]})
    report = ConversionReport()
    plan = _reader(layout).plan(report)
    assert plan["test"] == []
    assert report.skipped("test") == {
        "image": {"no refs": 1},
        "ref": {"no sentences": 1},
        "sentence": {"empty sentence": 1},
    }


def test_region_missing_from_imcrop_file_is_skipped(layout):
    queries = {"7_1": ["a"], "99_1": ["not listed"]}
    _write_json(layout.data / "referit_query_trainval.json", queries)
    report = ConversionReport()
    plan = _reader(layout).plan(report)
    assert [item.image_id for item in plan["trainval"]] == [7]
    assert report.skipped("trainval") == {"ref": {"not in referit_imcrop.json": 1}}
    assert "99_1" in report.examples("trainval")[0]["where"]


def test_missing_mat_file_is_a_counted_ref_skip(layout):
    (layout.masks / "7_2.mat").unlink()
    reader = _reader(layout)
    report = ConversionReport()
    records = materialize_all(reader, reader.plan(report), report)
    assert [ref.ref_id for ref in records["trainval"][0].refs] == [7001]
    assert report.skipped("trainval") == {"ref": {"missing mask file": 1}}
    assert "7_2.mat" in report.examples("trainval")[0]["where"]


def test_mat_without_segimg_t_is_skipped(layout):
    scipy.io.savemat(layout.masks / "7_2.mat", {"other": np.zeros((40, 48))})
    reader = _reader(layout)
    report = ConversionReport()
    materialize_all(reader, reader.plan(report), report)
    assert report.skipped("trainval") == {"ref": {"no segimg_t": 1}}


def test_corrupt_mat_is_skipped(layout):
    (layout.masks / "7_2.mat").write_bytes(b"not a matlab file at all" * 10)
    reader = _reader(layout)
    report = ConversionReport()
    materialize_all(reader, reader.plan(report), report)
    assert report.skipped("trainval") == {"ref": {"unreadable mask file": 1}}


def test_mask_shape_mismatch_names_both_shapes(layout):
    scipy.io.savemat(layout.masks / "7_2.mat", {"segimg_t": np.zeros((20, 24), np.uint8)})
    reader = _reader(layout)
    report = ConversionReport()
    records = materialize_all(reader, reader.plan(report), report)
    assert len(records["trainval"][0].refs) == 1
    assert report.skipped("trainval") == {"ref": {"mask shape mismatch": 1}}
    where = report.examples("trainval")[0]["where"]
    assert "(20, 24)" in where and "(40, 48)" in where


def test_image_without_any_usable_region_is_skipped(layout):
    (layout.masks / "30_1.mat").unlink()
    reader = _reader(layout)
    report = ConversionReport()
    records = materialize_all(reader, reader.plan(report), report)
    assert records["test"] == [None]
    assert report.skipped("test") == {"image": {"no refs left": 1}, "ref": {"missing mask file": 1}}


def test_missing_image_is_skipped_by_the_image_loader(layout):
    (layout.images / "12.jpg").unlink()
    reader = _reader(layout)
    report = ConversionReport()
    records = materialize_all(reader, reader.plan(report), report)
    assert records["trainval"][1] is None
    assert report.skipped("trainval") == {"image": {"missing file": 1}}


def test_suffixed_json_spelling_is_accepted(layout):
    _write_json(layout.data / "referit_imcrop.json", {"30.jpg": ["30_1.png"]})
    _write_json(layout.data / "referit_bbox.json", {"30_1.png": [4, 4, 8, 7]})
    _write_json(layout.data / "referit_query_trainval.json", {})
    _write_json(layout.data / "referit_query_test.json", {"30_1.png": ["small square"]})
    reader = _reader(layout)
    report = ConversionReport()
    plan = reader.plan(report)
    region = plan["test"][0].regions[0]
    assert (region.imcrop_name, region.ref_id, region.bbox) == ("30_1", 30001, (4.0, 4.0, 5.0, 4.0))
    report.set_split("test")
    assert reader.materialize(plan["test"][0], report).refs[0].mask.sum() == 4 * 5


def test_items_pickle_and_have_a_deterministic_repr(layout):
    plan_a = _reader(layout).plan(ConversionReport())
    plan_b = _reader(layout).plan(ConversionReport())
    assert repr(plan_a) == repr(plan_b)
    assert "object at 0x" not in repr(plan_a)
    assert pickle.loads(pickle.dumps(plan_a)) == plan_a


@pytest.mark.parametrize("bad_name", ["../7_1", "sub/7_1", "/abs"])
def test_names_leaving_the_roots_are_refused(layout, bad_name):
    _write_json(layout.data / "referit_query_test.json", {bad_name: ["x"]})
    with pytest.raises(ConversionError, match="referit_query_test.json"):
        _reader(layout).plan(ConversionReport())


def test_malformed_and_missing_files_raise_naming_the_file(layout):
    (layout.data / "referit_query_test.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConversionError, match="referit_query_test.json"):
        _reader(layout).plan(ConversionReport())
    _write_json(layout.data / "referit_query_test.json", {"30_1": "not a list"})
    with pytest.raises(ConversionError, match="30_1"):
        _reader(layout).plan(ConversionReport())
    (layout.data / "referit_imcrop.json").unlink()
    with pytest.raises(ConversionError, match="referit_imcrop.json"):
        _reader(layout).plan(ConversionReport())


def test_bad_box_raises_naming_the_entry(layout):
    _write_json(layout.data / "referit_bbox.json", {"7_1": [3, 2, 1]})
    with pytest.raises(ConversionError, match="7_1"):
        _reader(layout).plan(ConversionReport())


def test_ids():
    assert referit.image_id_for("8756") == 8756
    assert referit.ref_id_for("8756_2") == 8756002
    assert referit.sent_id_for(8756002, 3) == 8756002003
    hashed = referit.ref_id_for("odd-name_x")
    assert 2**51 <= hashed < 2**52 and hashed == referit.ref_id_for("odd-name_x")
    assert referit.ref_id_for("1_1000") >= 2**51  # region numbers >= 1000 leave the scheme
    with pytest.raises(ConversionError):
        referit.sent_id_for(1, 1000)


def test_make_reader_checks_flags(layout):
    flags = types.SimpleNamespace(
        data_root=str(layout.data), image_root=str(layout.images), mask_root=str(layout.masks)
    )
    reader = referit.make_reader(flags)
    assert reader.name == "referit" and reader.vocabulary_split == "trainval"
    assert reader.options()["mask_root"] == str(layout.masks)
    with pytest.raises(ValueError, match="--mask_root"):
        referit.make_reader(types.SimpleNamespace(data_root="a", image_root="b", mask_root=None))
    flags.image_root = str(layout.root / "nowhere")
    with pytest.raises(ValueError, match="--image_root"):
        referit.make_reader(flags)


def test_write_dataset_end_to_end(layout, tmp_path):
    import tensorflow as tf

    from refseg_tf.data.converters import writer

    output = tmp_path / "out"
    metadata = writer.write_dataset(_reader(layout), output, show_progress=False)
    assert metadata["splits"]["trainval"]["images"] == 2
    assert metadata["splits"]["trainval"]["sentences"] == 4
    assert metadata["splits"]["test"]["refs"] == 1
    words = (output / schema.VOCAB_FILENAME).read_text(encoding="utf-8").split()
    assert "corner" in words and "small" not in words  # vocabulary from trainval only
    files = sorted(str(path) for path in output.glob("test-*.tfrecord"))
    examples = [schema.decode_example_numpy(raw.numpy()) for raw in tf.data.TFRecordDataset(files)]
    assert [example["image/id"] for example in examples] == [[30]]
    mask = schema.decode_mask_png(examples[0]["ref/mask"][0])
    assert mask.shape == (36, 40) and mask.sum() == 4 * 5

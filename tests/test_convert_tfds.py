"""Tests of the TFDS `ref_coco` converter on data_dirs prepared by TFDS itself.

The main fixture runs the real `ref_coco` builder (`download_and_prepare` with a `manual_dir`
holding a tiny `refcoco.json` and COCO-named JPEGs, the layout its manual instructions ask
for). A second, mask-less data_dir (as `ref_coco` 1.0.0 had) is written with
`store_as_tfds_dataset` and the builder's own features minus `objects/mask`.
"""

import io
import json
import pickle
import sys
import types

import numpy as np
import pytest
from PIL import Image

from refseg_tf.data import schema
from refseg_tf.data.converters import tfds_refcoco
from refseg_tf.data.converters.report import ConversionError, ConversionReport
from tests.helpers import materialize_all

tfds = pytest.importorskip("tensorflow_datasets")

# image id -> (height, width, split of its refs, grayscale?)
IMAGES = {
    11: (40, 48, "train", False),
    12: (32, 36, "train", False),
    13: (36, 40, "val", False),
    14: (30, 30, "testA", True),
    15: (28, 32, "testB", False),
}
# annotation id -> (image id, category, polygons); rectangles as [x1,y1, x2,y1, x2,y2, x1,y2]
ANNOTATIONS = {
    101: (11, 1, [[2, 3, 12, 3, 12, 13, 2, 13]]),
    102: (11, 2, [[20, 20, 30, 20, 30, 26, 20, 26], [26, 22, 40, 22, 40, 30, 26, 30]]),
    103: (12, 1, [[0, 0, 8, 0, 8, 8, 0, 8]]),
    104: (12, 3, [[10, 10, 20, 10, 20, 20, 10, 20]]),
    105: (13, 1, [[5, 5, 25, 5, 25, 15, 5, 15]]),
    106: (14, 4, [[1, 1, 9, 1, 9, 9, 1, 9]]),
    107: (15, 1, [[3, 4, 13, 4, 13, 14, 3, 14]]),
}
# ref id -> (annotation id, [(sent_id, raw), ...])
REFS = {
    1: (101, [(10, "The left thing"), (11, "   ")]),
    2: (102, [(12, "right one")]),
    3: (103, [(13, "small square")]),
    4: (104, [(14, "the other square")]),
    5: (105, [(15, "a wide box")]),
    6: (106, [(16, "grey corner")]),
    7: (107, [(17, "test b thing")]),
    8: (105, [(18, "the wide box again")]),  # a second ref on annotation 105
}
MISSING_FROM_INSTANCES = 104


def _file_name(image_id):
    return f"COCO_train2014_{image_id:012d}.jpg"


def _coco_annotation(ann_id):
    image_id, category, polygons = ANNOTATIONS[ann_id]
    xs = [v for polygon in polygons for v in polygon[0::2]]
    ys = [v for polygon in polygons for v in polygon[1::2]]
    box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "area": float(box[2] * box[3]),
        "bbox": box,
        "iscrowd": 0,
        "segmentation": polygons,
    }


def _coco_image(image_id):
    height, width, _, _ = IMAGES[image_id]
    return {"id": image_id, "file_name": _file_name(image_id), "height": height, "width": width}


def _write_images(folder):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for image_id, (height, width, _, grayscale) in IMAGES.items():
        shape = (height, width) if grayscale else (height, width, 3)
        pixels = rng.integers(0, 255, shape, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / _file_name(image_id), quality=90)


def _refcoco_json():
    """What TFDS's manual_download_process.py writes: refs with their ann, and coco_anns."""
    refs = []
    for ref_id, (ann_id, sentences) in REFS.items():
        image_id = ANNOTATIONS[ann_id][0]
        refs.append(
            {
                "ref_id": ref_id,
                "ann_id": ann_id,
                "image_id": image_id,
                "split": IMAGES[image_id][2],
                "sentences": [{"sent_id": s, "raw": raw} for s, raw in sentences],
                "ann": _coco_annotation(ann_id),
                "dataset": "refcoco",
                "dataset_partition": "unc",
            }
        )
    coco_anns = {
        str(image_id): {
            "info": _coco_image(image_id),
            "anns": [_coco_annotation(a) for a, v in ANNOTATIONS.items() if v[0] == image_id],
        }
        for image_id in IMAGES
    }
    return {"ref": refs, "coco_anns": coco_anns}


def _instances(exclude=(MISSING_FROM_INSTANCES,)):
    return {
        "images": [_coco_image(image_id) for image_id in IMAGES],
        "annotations": [_coco_annotation(a) for a in ANNOTATIONS if a not in exclude],
        "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3, 4)],
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A ref_coco/refcoco_unc data_dir built by the real TFDS builder, plus instances.json."""
    root = tmp_path_factory.mktemp("ref_coco")
    manual = root / "manual"
    _write_images(manual / "coco_train2014")
    (manual / "refcoco.json").write_text(json.dumps(_refcoco_json()), encoding="utf-8")
    data_dir = root / "tfds"
    builder = tfds.builder("ref_coco/refcoco_unc", data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    instances = root / "instances_train2014.json"
    instances.write_text(json.dumps(_instances()), encoding="utf-8")
    return types.SimpleNamespace(
        root=root,
        data_dir=str(data_dir),
        images=manual / "coco_train2014",
        instances=str(instances),
        builder=builder,
    )


def _reader(prepared, **kwargs):
    options = {"coco_instances": prepared.instances, "image_root": str(prepared.images)}
    options.update(kwargs)
    return tfds_refcoco.TfdsRefCocoReader(prepared.data_dir, "refcoco_unc", **options)


def _materialize_all(reader, report):
    plan = reader.plan(report)
    return plan, materialize_all(reader, plan, report)


def _tfds_masks(builder):
    """image id -> {annotation id: TFDS's own mask (decoded by TFDS) > 0}."""
    masks = {}
    for split_info in builder.info.splits.values():
        for _, serialized in tfds_refcoco.iterate_records("tfrecord", split_info):
            example = builder.info.features.deserialize_example_np(serialized)
            objects = example["objects"]
            masks[int(example["image/id"])] = {
                int(ann): (mask.max(axis=-1) > 0).astype(np.uint8)
                for ann, mask in zip(objects["id"], objects["mask"])
            }
    return masks


def test_plan_splits_ids_and_skips(prepared):
    report = ConversionReport()
    plan = _reader(prepared).plan(report)
    assert list(plan) == ["train", "val", "testA", "testB"]  # "validation" -> "val"
    assert [item.image_id for item in plan["train"]] == [11, 12]
    first = plan["train"][0]
    assert first.file_name == _file_name(11) and (first.height, first.width) == (40, 48)
    assert [ref.ref_id for ref in first.refs] == [101, 102]  # ref id = annotation id
    assert first.refs[0].sentences == ((10, "The left thing"),)
    assert first.refs[1].category_id == 2
    assert first.refs[0].bbox == (2.0, 3.0, 10.0, 10.0) and not first.refs[0].bbox_is_normalized
    assert [ref.ref_id for ref in plan["train"][1].refs] == [103]
    assert report.skipped("train") == {
        "ref": {"annotation missing": 1},
        "sentence": {"empty sentence": 1},
    }
    where = [e["where"] for e in report.examples("train")]
    assert any("ann 104" in w and "instances_train2014.json" in w for w in where)
    assert any("refexp 11" in w for w in where)


def test_masks_join_instances_and_match_tfds(prepared):
    report = ConversionReport()
    _, records = _materialize_all(_reader(prepared), report)
    reference = _tfds_masks(prepared.builder)
    for split_records in records.values():
        for record in split_records:
            for ref in record.refs:
                assert ref.mask.dtype == np.uint8 and set(np.unique(ref.mask)) <= {0, 1}
                np.testing.assert_array_equal(ref.mask, reference[record.image_id][ref.ann_id])
    union = records["train"][0].refs[1].mask  # two overlapping polygons of annotation 102
    x, y, w, h = records["train"][0].refs[1].bbox
    assert union[22:26, 20:40].all() and union[26:30, 26:40].all()
    assert union.sum() <= w * h and union[:, : int(x)].sum() == 0 and union[: int(y)].sum() == 0


def test_image_bytes_come_from_the_coco_files(prepared):
    report = ConversionReport()
    _, records = _materialize_all(_reader(prepared), report)
    record = records["train"][0]
    assert record.encoded == (prepared.images / _file_name(11)).read_bytes()
    assert (record.image_format, record.height, record.width) == ("jpeg", 40, 48)
    assert report.converted("testA") == {"image": {"L JPEG -> RGB JPEG": 1}}  # grayscale file


def test_without_image_root_the_tfds_bytes_are_the_original_jpeg(prepared):
    report = ConversionReport()
    reader = _reader(prepared, image_root=None)
    _, records = _materialize_all(reader, report)
    for split_records in records.values():
        for record in split_records:
            if record.image_id != 14:  # the grayscale one is converted to RGB
                assert record.encoded == (prepared.images / record.file_name).read_bytes()
    assert reader.options()["image_source"] == "tfds image"


def test_without_instances_the_tfds_masks_and_boxes_are_used(prepared):
    joined = _materialize_all(_reader(prepared), ConversionReport())[1]
    report = ConversionReport()
    plan, records = _materialize_all(_reader(prepared, coco_instances=None), report)
    assert [ref.ref_id for ref in plan["train"][1].refs] == [103, 104]  # no join, no skip
    assert report.skipped("train") == {"sentence": {"empty sentence": 1}}
    for split, split_records in joined.items():
        for with_instances, from_tfds in zip(split_records, records[split]):
            pairs = zip(with_instances.refs, from_tfds.refs)
            for ref_a, ref_b in pairs:
                np.testing.assert_array_equal(ref_a.mask, ref_b.mask)
                np.testing.assert_allclose(ref_a.bbox, ref_b.bbox, atol=0.01)
                assert ref_a.category_id == ref_b.category_id


def test_records_round_trip_through_the_schema(prepared):
    reader = _reader(prepared)
    report = ConversionReport()
    plan = reader.plan(report)
    report.set_split("train")
    record = reader.materialize(plan["train"][0], report)
    decoded = schema.decode_example_numpy(schema.encode_example(record))
    assert decoded["image/id"] == [11]
    assert decoded["ref/id"] == decoded["ref/ann_id"] == [101, 102]
    assert decoded["ref/category_id"] == [1, 2]
    assert decoded["sentence/id"] == [10, 12]
    assert decoded["sentence/text"] == [b"The left thing", b"right one"]
    assert decoded["sentence/ref_index"] == [0, 1]
    np.testing.assert_allclose(decoded["ref/bbox"][:4], [2, 3, 10, 10])


def test_image_whose_refs_are_all_dropped_is_a_counted_image_skip(prepared, tmp_path):
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps(_instances(exclude=(103, 104))), encoding="utf-8")
    report = ConversionReport()
    plan = _reader(prepared, coco_instances=str(instances)).plan(report)
    assert [item.image_id for item in plan["train"]] == [11]
    assert report.skipped("train")["image"] == {"no refs": 1}
    assert report.skipped("train")["ref"] == {"annotation missing": 2}


def test_two_refs_on_one_annotation_are_merged(prepared):
    report = ConversionReport()
    plan = _reader(prepared).plan(report)
    (ref,) = plan["val"][0].refs
    assert ref.ref_id == 105 and ref.sentences == ((15, "a wide box"), (18, "the wide box again"))
    assert report.converted("val") == {"ref": {"merged duplicate annotation": 1}}


def test_annotation_on_another_image_or_without_segmentation_is_skipped(prepared, tmp_path):
    data = _instances()
    for annotation in data["annotations"]:
        if annotation["id"] == 105:
            annotation["image_id"] = 11
        if annotation["id"] == 107:
            annotation["segmentation"] = []
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps(data), encoding="utf-8")
    report = ConversionReport()
    plan = _reader(prepared, coco_instances=str(instances)).plan(report)
    assert plan["val"] == [] and plan["testB"] == []
    assert report.skipped("val")["ref"] == {"annotation of another image": 2}  # refs 5 and 8
    assert report.skipped("testB") == {"image": {"no refs": 1}, "ref": {"no segmentation": 1}}


def test_image_missing_from_instances_and_size_mismatch(prepared, tmp_path):
    data = _instances()
    data["images"] = [image for image in data["images"] if image["id"] != 13]
    data["images"][0]["height"] = 41  # image 11 is 40 pixels high
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps(data), encoding="utf-8")
    report = ConversionReport()
    plan, records = _materialize_all(_reader(prepared, coco_instances=str(instances)), report)
    assert plan["val"] == []
    assert report.skipped("val") == {"image": {"image missing from instances": 1}}
    assert records["train"][0] is None
    assert report.skipped("train")["image"] == {"image size mismatch": 1}
    where = [e["where"] for e in report.examples("train") if e["kind"] == "image"][0]
    assert "(41, 48)" in where and "(40, 48)" in where


def test_missing_image_file_is_skipped(prepared, tmp_path):
    images = tmp_path / "train2014"
    images.mkdir()
    for image_id in (11, 13, 14, 15):
        source = prepared.images / _file_name(image_id)
        (images / _file_name(image_id)).write_bytes(source.read_bytes())
    report = ConversionReport()
    _, records = _materialize_all(_reader(prepared, image_root=str(images)), report)
    assert records["train"][1] is None
    assert report.skipped("train")["image"] == {"missing file": 1}


def test_items_pickle_and_have_a_deterministic_repr(prepared):
    reader = _reader(prepared)
    plan_a, plan_b = reader.plan(ConversionReport()), _reader(prepared).plan(ConversionReport())
    assert repr(plan_a) == repr(plan_b) and "object at 0x" not in repr(plan_a)
    assert pickle.loads(pickle.dumps(plan_a)) == plan_a
    clone = pickle.loads(pickle.dumps(reader))  # a worker's copy rebuilds the feature spec
    report = ConversionReport()
    report.set_split("val")
    assert clone.materialize(plan_a["val"][0], report).refs[0].ann_id == 105


def test_record_locations_read_back_the_same_example(prepared):
    split_info = prepared.builder.info.splits["train"]
    for location, serialized in tfds_refcoco.iterate_records("tfrecord", split_info):
        assert tfds_refcoco.read_record(location) == serialized
    truncated = tfds_refcoco.RecordLocation("tfrecord", location.path, location.position, 10**9)
    with pytest.raises(ConversionError, match="Truncated"):
        tfds_refcoco.read_record(truncated)


def test_write_dataset_end_to_end(prepared, tmp_path):
    import tensorflow as tf

    from refseg_tf.data.converters import writer

    output = tmp_path / "out"
    metadata = writer.write_dataset(_reader(prepared), output, show_progress=False)
    assert metadata["dataset"] == "refcoco_unc"
    assert {split: entry["images"] for split, entry in metadata["splits"].items()} == {
        "train": 2,
        "val": 1,
        "testA": 1,
        "testB": 1,
    }
    assert metadata["splits"]["train"]["skipped"]["ref"] == {"annotation missing": 1}
    words = (output / schema.VOCAB_FILENAME).read_text(encoding="utf-8").split()
    assert "square" in words and "wide" not in words  # vocabulary from train only
    files = sorted(str(path) for path in output.glob("val-*.tfrecord"))
    example = schema.decode_example_numpy(next(iter(tf.data.TFRecordDataset(files))).numpy())
    mask = schema.decode_mask_png(example["ref/mask"][0])
    assert mask.shape == (36, 40) and mask[5:15, 5:25].all()


def test_worker_processes_write_the_same_shards(prepared, tmp_path):
    from refseg_tf.data.converters import writer

    for workers in (0, 2):
        writer.write_dataset(
            _reader(prepared, image_root=None),
            tmp_path / f"w{workers}",
            num_workers=workers,
            show_progress=False,
        )
    shards = sorted((tmp_path / "w0").glob("*.tfrecord"))
    assert len(shards) == 4
    for path in shards:
        assert path.read_bytes() == (tmp_path / "w2" / path.name).read_bytes()


def test_rle_segmentations_decode_like_the_mask_they_encode():
    from pycocotools import mask as mask_utils

    mask = np.zeros((7, 5), np.uint8)
    mask[1:4, 2:5] = 1
    mask[6, 0] = 1
    compressed = mask_utils.encode(np.asfortranarray(mask))
    frozen = tfds_refcoco.freeze_segmentation(
        {"size": [7, 5], "counts": compressed["counts"].decode("ascii")}, "test"
    )
    np.testing.assert_array_equal(tfds_refcoco.decode_segmentation(frozen, 7, 5), mask)
    # uncompressed RLE: alternating run lengths of 0s and 1s in column-major order
    flat = mask.flatten(order="F")
    runs, value, count = [], 0, 0
    for pixel in flat:
        if pixel != value:
            runs.append(count)
            value, count = pixel, 0
        count += 1
    runs.append(count)
    frozen = tfds_refcoco.freeze_segmentation({"size": [7, 5], "counts": runs}, "test")
    np.testing.assert_array_equal(tfds_refcoco.decode_segmentation(frozen, 7, 5), mask)


def test_degenerate_and_malformed_segmentations():
    assert tfds_refcoco.freeze_segmentation([], "x") is None
    assert tfds_refcoco.freeze_segmentation([[1, 2, 3, 4]], "x") is None  # < 3 points
    with pytest.raises(ConversionError, match="instances.json ann 9"):
        tfds_refcoco.freeze_segmentation("polygon", "instances.json ann 9")
    with pytest.raises(ConversionError):
        tfds_refcoco.freeze_segmentation([["a", "b", "c", "d", "e", "f"]], "x")


def test_malformed_instances_file_raises_naming_it(prepared, tmp_path):
    bad = tmp_path / "instances.json"
    bad.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}), encoding="utf-8")
    with pytest.raises(ConversionError, match="images\\[0\\].*file_name"):
        _reader(prepared, coco_instances=str(bad)).plan(ConversionReport())
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(ConversionError, match="instances.json"):
        _reader(prepared, coco_instances=str(bad)).plan(ConversionReport())


def test_unprepared_data_dir_raises(tmp_path):
    reader = tfds_refcoco.TfdsRefCocoReader(str(tmp_path), "refcocog_umd")
    with pytest.raises(ConversionError, match="No prepared TFDS dataset ref_coco/refcocog_umd"):
        reader.plan(ConversionReport())


def test_maskless_dataset_needs_instances_and_older_versions_are_found(prepared, tmp_path):
    """A data_dir holding only a mask-less 1.0.0 (as prepared by older TFDS releases)."""
    features = prepared.builder.info.features
    objects = dict(features["objects"].feature)
    objects.pop("mask")
    maskless = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(encoding_format="jpeg"),
            "image/id": np.int64,
            "objects": tfds.features.Sequence(objects),
            "coco_annotations": features["coco_annotations"],
        }
    )
    examples = [(image_id, _maskless_example(prepared, image_id)) for image_id in (11, 13)]
    data_dir = tmp_path / "old_tfds"
    tfds.dataset_builders.store_as_tfds_dataset(
        name="ref_coco",
        version="1.0.0",
        features=maskless,
        split_datasets={"train": examples, "validation": examples},
        config="refcoco_unc",
        data_dir=str(data_dir),
    )
    reader = tfds_refcoco.TfdsRefCocoReader(str(data_dir), "refcoco_unc")
    with pytest.raises(ConversionError, match="--coco_instances"):
        reader.plan(ConversionReport())
    reader = tfds_refcoco.TfdsRefCocoReader(
        str(data_dir), "refcoco_unc", coco_instances=prepared.instances
    )
    report = ConversionReport()
    plan = reader.plan(report)
    assert sorted(plan) == ["train", "val"]
    assert [item.image_id for item in plan["val"]] == [11, 13]
    assert plan["val"][0].record.path.endswith("1.0.0/ref_coco-validation.tfrecord-00000-of-00001")
    report.set_split("val")
    record = reader.materialize(plan["val"][1], report)
    assert record.image_id == 13 and record.refs[0].mask[5:15, 5:25].all()
    assert record.refs[0].mask.sum() == 10 * 20


def _maskless_example(prepared, image_id):
    height, width, _, _ = IMAGES[image_id]

    def box(ann_id):
        x, y, w, h = _coco_annotation(ann_id)["bbox"]
        return tfds.features.BBox(y / height, x / width, (y + h) / height, (x + w) / width)

    annotations = [a for a, value in ANNOTATIONS.items() if value[0] == image_id]
    objects = []
    for ann_id, sentences in REFS.values():
        if ann_id in annotations:
            refexp = [{"refexp_id": sent_id, "raw": raw} for sent_id, raw in sentences]
            objects.append(
                {
                    "id": ann_id,
                    "area": 1,
                    "bbox": box(ann_id),
                    "label": ANNOTATIONS[ann_id][1],
                    "gt_box_index": annotations.index(ann_id),
                    "refexp": refexp,
                }
            )
    coco = [{"id": a, "area": 1, "bbox": box(a), "label": ANNOTATIONS[a][1]} for a in annotations]
    return {
        "image": (prepared.images / _file_name(image_id)).read_bytes(),
        "image/id": image_id,
        "objects": objects,
        "coco_annotations": coco,
    }


def test_array_record_data_dir(prepared, tmp_path):
    data_dir = tmp_path / "array_record"
    builder = tfds.builder(
        "ref_coco/refcoco_unc", data_dir=str(data_dir), file_format="array_record"
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(prepared.root / "manual"))
    )
    reader = tfds_refcoco.TfdsRefCocoReader(str(data_dir), "refcoco_unc", prepared.instances)
    plan = reader.plan(ConversionReport())
    assert plan["train"][0].record.file_format == "array_record"
    report = ConversionReport()
    report.set_split("train")
    record = reader.materialize(plan["train"][0], report)
    assert record.encoded == (prepared.images / _file_name(11)).read_bytes()
    assert [ref.ann_id for ref in record.refs] == [101, 102]


def test_make_reader_checks_flags(prepared, tmp_path):
    flags = types.SimpleNamespace(
        tfds_data_dir=prepared.data_dir,
        tfds_config="refcocog_umd",
        coco_instances=prepared.instances,
        image_root=None,
    )
    reader = tfds_refcoco.make_reader(flags)
    assert reader.name == "refcocog_umd" and reader.vocabulary_split == "train"
    assert reader.options()["coco_instances"] == prepared.instances
    with pytest.raises(ValueError, match="--tfds_config"):
        tfds_refcoco.make_reader(types.SimpleNamespace(tfds_data_dir=prepared.data_dir))
    flags.tfds_config = "refcoco_umd"
    with pytest.raises(ValueError, match="Unknown ref_coco config"):
        tfds_refcoco.make_reader(flags)
    flags.tfds_config, flags.coco_instances = "refcoco_unc", str(tmp_path / "none.json")
    with pytest.raises(ValueError, match="--coco_instances"):
        tfds_refcoco.make_reader(flags)


def test_missing_tensorflow_datasets_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"refseg-tf\[tfds\]") as error:
        tfds_refcoco.import_tfds()
    assert isinstance(error.value, ConversionError)  # the CLI prints it as a clean error


def test_tfds_mask_png_decoding():
    grey = np.zeros((4, 5), np.uint8)
    grey[1:3, 2:4] = 255
    for pixels in (grey, np.stack([grey] * 3, axis=-1), grey > 0):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        np.testing.assert_array_equal(
            tfds_refcoco.decode_tfds_mask(buffer.getvalue()), (grey > 0).astype(np.uint8)
        )

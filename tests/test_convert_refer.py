"""Tests of the conversion framework (report, images, safe_pickle, writer), refer reader, CLI.

Every test builds its own tiny refer-format dataset: a COCO instances.json, a refs(unc).p
pickle and small JPEG/PNG images, written to tmp_path.
"""

import glob
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from refseg_tf.data import schema
from refseg_tf.data.converters import images, refer, report as report_lib, safe_pickle, writer
from refseg_tf.data.converters.report import ConversionError, ConversionReport, SkipBudgetExceeded

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEIGHT, WIDTH = 48, 64


# ===================================================================================== fixtures
def _textured_image(seed, height=HEIGHT, width=WIDTH):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 3 + seed * 7, yy * 4, (xx + yy) * 2], axis=-1) % 256
    noise = rng.integers(0, 40, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _save(array_or_image, path, image_format="JPEG", **kwargs):
    image = (
        array_or_image
        if isinstance(array_or_image, Image.Image)
        else Image.fromarray(array_or_image)
    )
    image.save(path, format=image_format, **kwargs)


def _rectangle(x0, y0, x1, y1):
    return [float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]


def _compressed_rle(mask):
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask):
    """COCO's iscrowd format: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": [mask.shape[0], mask.shape[1]], "counts": counts}


def _sentence(sent_id, text):
    return {"sent_id": sent_id, "sent": text, "raw": text.upper(), "tokens": text.split()}


class ReferBuilder:
    """Builds DATA_ROOT/<dataset>/instances.json + refs(unc).p and IMAGE_ROOT images."""

    def __init__(self, root, dataset="tiny"):
        self.root = str(root)
        self.dataset = dataset
        self.image_root = os.path.join(self.root, "images")
        os.makedirs(self.image_root, exist_ok=True)
        os.makedirs(os.path.join(self.root, dataset), exist_ok=True)
        self.images, self.annotations, self.refs = [], [], []
        self._next_ann = 100
        self._next_ref = 1
        self._next_sent = 1000

    def add_image(
        self, image_id, array=None, file_name=None, write=True, image_format="JPEG", **kw
    ):
        file_name = file_name or f"img_{image_id:04d}.{'png' if image_format == 'PNG' else 'jpg'}"
        array = _textured_image(image_id) if array is None else array
        if write:
            _save(array, os.path.join(self.image_root, file_name), image_format, **kw)
        height, width = (
            (array.size[1], array.size[0]) if isinstance(array, Image.Image) else array.shape[:2]
        )
        self.images.append(
            {"id": image_id, "file_name": file_name, "height": height, "width": width}
        )
        return file_name

    def add_annotation(self, image_id, segmentation, bbox=(1.0, 2.0, 10.0, 12.0), category_id=1):
        ann_id = self._next_ann
        self._next_ann += 1
        annotation = {
            "id": ann_id,
            "image_id": image_id,
            "bbox": list(bbox),
            "category_id": category_id,
        }
        if segmentation is not None:
            annotation["segmentation"] = segmentation
        self.annotations.append(annotation)
        return ann_id

    def add_ref(self, image_id, ann_id, split, texts):
        ref_id = self._next_ref
        self._next_ref += 1
        sentences = []
        for text in texts:
            sentences.append(_sentence(self._next_sent, text))
            self._next_sent += 1
        self.refs.append(
            {
                "ref_id": ref_id,
                "ann_id": ann_id,
                "image_id": image_id,
                "split": split,
                "category_id": 1,
                "file_name": f"ignored_{ref_id}.jpg",
                "sent_ids": [s["sent_id"] for s in sentences],
                "sentences": sentences,
            }
        )
        return ref_id

    def write(self, protocol=2):
        instances = {
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": 1, "name": "thing"}],
        }
        folder = os.path.join(self.root, self.dataset)
        with open(os.path.join(folder, "instances.json"), "w") as file:
            json.dump(instances, file)
        with open(os.path.join(folder, "refs(unc).p"), "wb") as file:
            pickle.dump(self.refs, file, protocol=protocol)
        return self

    def reader(self, **kwargs):
        return refer.ReferReader(
            self.root, self.dataset, "unc", image_root=self.image_root, **kwargs
        )


def _happy_dataset(root):
    """3 splits, 5 images; polygons, compressed and uncompressed RLE; 2 refs on one image."""
    builder = ReferBuilder(root)
    for image_id in (1, 2, 3, 4, 5):
        builder.add_image(image_id)
    circle = np.zeros((HEIGHT, WIDTH), np.uint8)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    circle[(yy - 20) ** 2 + (xx - 30) ** 2 < 100] = 1
    # two overlapping polygons: the union must be binary, not a count of 2
    a1 = builder.add_annotation(1, [_rectangle(5, 5, 30, 25), _rectangle(20, 10, 40, 40)])
    a2 = builder.add_annotation(1, [_rectangle(40, 2, 60, 20)], category_id=7)
    a3 = builder.add_annotation(2, _compressed_rle(circle))
    a4 = builder.add_annotation(3, _uncompressed_rle(circle))
    a5 = builder.add_annotation(4, [_rectangle(0, 0, 63, 47)])
    a6 = builder.add_annotation(5, [_rectangle(10, 10, 20, 20)])
    builder.add_ref(1, a1, "train", ["the left man", "man in red shirt"])
    builder.add_ref(1, a2, "train", ["small box on the right"])
    builder.add_ref(2, a3, "train", ["round thing"])
    builder.add_ref(3, a4, "val", ["circle zebra"])  # "zebra" only outside train
    builder.add_ref(4, a5, "testA", ["everything"])
    builder.add_ref(5, a6, "testA", ["little square"])
    builder.add_ref(1, a2, "testA", ["box again"])  # same image in another split
    return builder.write()


def _read_split(output_dir, split):
    records = []
    for path in sorted(glob.glob(os.path.join(output_dir, schema.SHARD_GLOB.format(split=split)))):
        import tensorflow as tf

        for serialized in tf.data.TFRecordDataset(path).as_numpy_iterator():
            records.append(schema.decode_example_numpy(serialized))
    return records


def _convert(reader, output_dir, **kwargs):
    kwargs.setdefault("show_progress", False)
    return writer.write_dataset(reader, str(output_dir), **kwargs)


@pytest.fixture(scope="module")
def happy(tmp_path_factory):
    root = tmp_path_factory.mktemp("refer_happy")
    builder = _happy_dataset(root / "data")
    output_dir = root / "out"
    metadata = _convert(builder.reader(), output_dir, num_shards=2)
    return types.SimpleNamespace(builder=builder, output_dir=str(output_dir), metadata=metadata)


# ===================================================================================== happy path
def test_counts_per_split(happy):
    splits = happy.metadata["splits"]
    assert list(splits) == ["train", "val", "testA"]
    assert (splits["train"]["images"], splits["train"]["refs"], splits["train"]["sentences"]) == (
        2,
        3,
        4,
    )
    assert (splits["val"]["images"], splits["val"]["refs"], splits["val"]["sentences"]) == (1, 1, 1)
    assert (splits["testA"]["images"], splits["testA"]["refs"], splits["testA"]["sentences"]) == (
        3,
        3,
        3,
    )
    for split, entry in splits.items():
        assert len(_read_split(happy.output_dir, split)) == entry["images"]
        assert entry["skipped"] == {}


def test_shards_follow_the_pattern(happy):
    train = happy.metadata["splits"]["train"]
    assert train["shards"] == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    # a split with a single image gets a single shard although num_shards=2
    assert happy.metadata["splits"]["val"]["shards"] == ["val-00000-of-00001.tfrecord"]
    for entry in happy.metadata["splits"].values():
        for name in entry["shards"]:
            assert os.path.isfile(os.path.join(happy.output_dir, name))
    leftovers = [p for p in os.listdir(happy.output_dir) if ".tmp-" in p]
    assert leftovers == []


def test_masks_equal_pycocotools_decoding(happy):
    from pycocotools.coco import COCO

    coco = COCO(os.path.join(happy.builder.root, "tiny", "instances.json"))
    checked = 0
    for split in ("train", "val", "testA"):
        for record in _read_split(happy.output_dir, split):
            for ann_id, png in zip(record["ref/ann_id"], record["ref/mask"]):
                expected = (coco.annToMask(coco.anns[ann_id]) > 0).astype(np.uint8)
                np.testing.assert_array_equal(schema.decode_mask_png(png), expected)
                checked += 1
    assert checked == 7


def test_overlapping_polygons_are_united_and_binary(happy):
    record = next(r for r in _read_split(happy.output_dir, "train") if r["image/id"][0] == 1)
    mask = schema.decode_mask_png(record["ref/mask"][0])
    assert set(np.unique(mask)) == {0, 1}
    assert mask[15, 25] == 1  # inside both rectangles
    assert mask[35, 35] == 1 and mask[6, 6] == 1 and mask[45, 2] == 0


def test_sentences_and_ids_round_trip(happy):
    expected = {}
    for ref in happy.builder.refs:
        for sentence in ref["sentences"]:
            expected[(ref["split"], sentence["sent_id"])] = (ref["ref_id"], sentence["sent"])
    found = {}
    for split in ("train", "val", "testA"):
        for record in _read_split(happy.output_dir, split):
            ref_ids = record["ref/id"]
            for sent_id, text, index in zip(
                record["sentence/id"], record["sentence/text"], record["sentence/ref_index"]
            ):
                found[(split, sent_id)] = (ref_ids[index], text.decode("utf-8"))
    assert found == expected


def test_image_fields_and_rgb_jpeg_bytes_unchanged(happy):
    for record in _read_split(happy.output_dir, "train"):
        file_name = record["image/filename"][0].decode()
        with open(os.path.join(happy.builder.image_root, file_name), "rb") as file:
            assert record["image/encoded"][0] == file.read()
        assert record["image/format"][0] == b"jpeg"
        assert (record["image/height"][0], record["image/width"][0]) == (HEIGHT, WIDTH)
    first = next(r for r in _read_split(happy.output_dir, "train") if r["image/id"][0] == 1)
    assert list(first["ref/category_id"]) == [1, 7]
    np.testing.assert_allclose(first["ref/bbox"][:4], [1.0, 2.0, 10.0, 12.0])


def test_metadata_contents(happy):
    with open(os.path.join(happy.output_dir, schema.METADATA_FILENAME)) as file:
        metadata = json.load(file)
    assert metadata == json.loads(json.dumps(happy.metadata))
    assert metadata["schema_version"] == schema.SCHEMA_VERSION
    assert metadata["dataset"] == "tiny_unc"
    assert metadata["options"]["format"] == "refer"
    assert metadata["options"]["split_by"] == "unc"
    assert metadata["options"]["image_root"] == happy.builder.image_root
    assert metadata["writer"]["num_shards"] == 2
    assert metadata["vocabulary"]["split"] == "train"
    for entry in metadata["splits"].values():
        assert entry["bytes"] == sum(
            os.path.getsize(os.path.join(happy.output_dir, name)) for name in entry["shards"]
        )


def test_vocabulary_from_train_only(happy):
    from refseg_tf.text import Vocabulary

    vocabulary = Vocabulary.load(os.path.join(happy.output_dir, schema.VOCAB_FILENAME))
    assert vocabulary.words[:4] == ("<pad>", "<go>", "<eos>", "<unk>")
    assert {"left", "man", "red", "round", "box"} <= set(vocabulary.words)
    assert "zebra" not in vocabulary.words and "everything" not in vocabulary.words
    assert len(vocabulary) == happy.metadata["vocabulary"]["size"]


def test_min_count_filters_rare_words(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    metadata = _convert(builder.reader(), tmp_path / "out", min_count=2)
    from refseg_tf.text import Vocabulary

    vocabulary = Vocabulary.load(str(tmp_path / "out" / schema.VOCAB_FILENAME))
    # in train only "man" and "the" occur twice
    assert set(vocabulary.words[4:]) == {"man", "the"}
    assert metadata["vocabulary"]["min_count"] == 2


def test_output_size_within_budget(tmp_path):
    builder = ReferBuilder(tmp_path / "data")
    source_bytes = 0
    for image_id in range(1, 9):
        file_name = builder.add_image(image_id, _textured_image(image_id, 96, 128), quality=90)
        source_bytes += os.path.getsize(os.path.join(builder.image_root, file_name))
        for k in range(3):  # several refs per image: the image must still be stored once
            polygon = [_rectangle(5 + 10 * k, 5, 40 + 10 * k, 60)]
            ann_id = builder.add_annotation(image_id, polygon)
            builder.add_ref(
                image_id, ann_id, "train", [f"object {k} of image {image_id}", "another one"]
            )
            from pycocotools import mask as coco_mask

            rle = coco_mask.merge(coco_mask.frPyObjects(polygon, 96, 128))
            source_bytes += len(schema.encode_mask_png(coco_mask.decode(rle)))
    builder.write()
    metadata = _convert(builder.reader(), tmp_path / "out")
    assert metadata["splits"]["train"]["refs"] == 24
    assert metadata["splits"]["train"]["bytes"] <= 1.3 * source_bytes


# ===================================================================================== bad input
@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """One dataset with every kind of defect that must become a counted skip or conversion."""
    root = tmp_path_factory.mktemp("refer_faulty")
    builder = ReferBuilder(root / "data")
    good = [_rectangle(2, 2, 30, 30)]
    # 1: fine; 2: missing file; 3: corrupt; 4: grayscale JPEG; 5: RGBA PNG; 6: CMYK JPEG;
    # 7: palette PNG; 8: RGB PNG; 9: 16-bit grayscale PNG
    builder.add_image(1)
    builder.add_image(2, write=False)
    corrupt = builder.add_image(3)
    path = os.path.join(builder.image_root, corrupt)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    builder.add_image(4, _textured_image(4)[..., 0])
    rgba = np.dstack([_textured_image(5), np.full((HEIGHT, WIDTH), 128, np.uint8)])
    builder.add_image(5, rgba, image_format="PNG")
    builder.add_image(6, Image.fromarray(_textured_image(6)).convert("CMYK"))
    builder.add_image(7, Image.fromarray(_textured_image(7)).convert("P"), image_format="PNG")
    builder.add_image(8, _textured_image(8), image_format="PNG")
    sixteen = (np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) * 20).astype(np.uint16)
    builder.add_image(9, Image.fromarray(sixteen), image_format="PNG")
    for image_id in range(1, 10):
        builder.add_ref(
            image_id, builder.add_annotation(image_id, good), "train", [f"thing {image_id}"]
        )
    # ref-level defects on image 1
    builder.add_ref(1, builder.add_annotation(1, None), "train", ["no segmentation"])
    builder.add_ref(1, builder.add_annotation(1, []), "train", ["empty segmentation"])
    builder.add_ref(1, builder.add_annotation(1, [[1.0, 2.0, 3.0, 4.0]]), "train", ["two points"])
    builder.add_ref(1, 99999, "train", ["missing annotation"])
    builder.add_ref(1, builder.add_annotation(1, good), "train", ["  ", "kept sentence", ""])
    builder.add_ref(1, builder.add_annotation(1, good), "train", ["", "   \t"])
    # an image whose only ref is unusable is a skipped image
    builder.add_image(10)
    builder.add_ref(10, builder.add_annotation(10, None), "train", ["nothing to segment"])
    # a ref whose image is not in instances.json (its annotation points there too)
    builder.add_ref(555, builder.add_annotation(555, good), "val", ["ghost image"])
    builder.add_ref(1, builder.add_annotation(1, good), "val", ["valid val ref"])
    builder.add_ref(556, builder.add_annotation(556, good), "ghost", ["lost split"])
    builder.write()
    output_dir = root / "out"
    metadata = _convert(builder.reader(), output_dir, max_skip_fraction=1.0)
    return types.SimpleNamespace(builder=builder, output_dir=str(output_dir), metadata=metadata)


def test_skips_are_counted_with_reasons(faulty):
    train = faulty.metadata["splits"]["train"]
    assert train["skipped"]["image"] == {"corrupt image": 1, "missing file": 1, "no usable refs": 1}
    assert train["skipped"]["ref"] == {
        "annotation missing": 1,
        "degenerate polygons": 1,
        "no segmentation": 3,
        "no sentences": 1,
    }
    assert train["skipped"]["sentence"] == {"empty sentence": 4}
    assert train["images"] == 7
    assert train["refs"] == 7 + 1  # the one-per-image refs + the ref with one kept sentence
    val = faulty.metadata["splits"]["val"]
    assert val["skipped"]["ref"] == {"image missing from instances.json": 1}
    ghost = faulty.metadata["splits"]["ghost"]  # every image of this split was lost
    assert ghost["images"] == 0 and ghost["shards"] == []
    assert ghost["skipped"]["image"] == {"image missing from instances.json": 1}
    assert val["skipped"]["image"] == {"image missing from instances.json": 1}
    assert val["images"] == 1


def test_skip_examples_name_file_and_record(faulty):
    examples = faulty.metadata["splits"]["train"]["examples"]["skipped"]
    missing = next(e for e in examples if e["reason"] == "missing file")
    assert "img_0002.jpg" in missing["where"] and "image_id 2" in missing["where"]
    no_annotation = next(e for e in examples if e["reason"] == "annotation missing")
    assert "refs(unc).p" in no_annotation["where"] and "ann_id 99999" in no_annotation["where"]


def test_kept_sentence_of_a_partly_empty_ref(faulty):
    texts = [
        t.decode() for r in _read_split(faulty.output_dir, "train") for t in r["sentence/text"]
    ]
    assert "kept sentence" in texts
    assert not any(not t.strip() for t in texts)


def _decoded_image(record):
    return np.asarray(Image.open(io.BytesIO(record["image/encoded"][0])))


def test_non_rgb_images_are_converted(faulty):
    converted = faulty.metadata["splits"]["train"]["converted"]["image"]
    assert converted == {
        "CMYK JPEG -> RGB JPEG": 1,
        "I;16 PNG -> RGB PNG": 1,
        "L JPEG -> RGB JPEG": 1,
        "P PNG -> RGB PNG": 1,
        "RGB PNG -> RGB PNG": 1,
        "RGBA PNG -> RGB PNG": 1,
    }
    by_id = {r["image/id"][0]: r for r in _read_split(faulty.output_dir, "train")}
    expected_formats = {4: b"jpeg", 5: b"png", 6: b"jpeg", 7: b"png", 8: b"png", 9: b"png"}
    for image_id, image_format in expected_formats.items():
        pixels = _decoded_image(by_id[image_id])
        assert by_id[image_id]["image/format"][0] == image_format
        assert pixels.shape == (HEIGHT, WIDTH, 3) and pixels.dtype == np.uint8
    # lossless sources stay lossless; alpha is dropped, not composited
    np.testing.assert_array_equal(_decoded_image(by_id[5]), _textured_image(5))
    np.testing.assert_array_equal(_decoded_image(by_id[8]), _textured_image(8))
    gray = _decoded_image(by_id[4]).astype(int)
    source = np.asarray(Image.open(os.path.join(faulty.builder.image_root, "img_0004.jpg")))
    assert np.abs(gray[..., 0] - source).mean() < 2  # one JPEG q95 generation
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    sixteen = (np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) * 20).astype(np.float64)
    np.testing.assert_array_equal(_decoded_image(by_id[9])[..., 1], np.rint(sixteen / 257))


def test_decodable_by_tensorflow(faulty):
    import tensorflow as tf

    for record in _read_split(faulty.output_dir, "train"):
        decoded = tf.io.decode_image(record["image/encoded"][0], channels=0)
        assert decoded.shape[-1] == 3 and decoded.dtype == tf.uint8


def test_file_name_escaping_the_root_is_an_error(tmp_path):
    builder = ReferBuilder(tmp_path / "data")
    outside = _textured_image(1)
    _save(outside, str(tmp_path / "data" / "secret.jpg"))
    builder.add_image(1, outside, file_name="../secret.jpg", write=False)
    builder.add_ref(1, builder.add_annotation(1, [_rectangle(1, 1, 9, 9)]), "train", ["x"])
    builder.write()
    with pytest.raises(ConversionError, match=r"\.\./secret\.jpg.*image_id 1"):
        _convert(builder.reader(), tmp_path / "out", max_skip_fraction=1.0)
    assert not glob.glob(str(tmp_path / "out" / "*.tfrecord"))


@pytest.mark.parametrize("name", ["/etc/passwd", "a/../../x.jpg", "..", "C:/x.jpg", ""])
def test_resolve_image_path_refuses_escapes(tmp_path, name):
    with pytest.raises(ConversionError, match="record 7"):
        images.resolve_image_path(tmp_path, name, where="record 7")


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    _save(_textured_image(1), str(tmp_path / "outside.jpg"))
    os.symlink(tmp_path / "outside.jpg", root / "link.jpg")
    _save(_textured_image(2), str(root / "real.jpg"))
    os.symlink(root / "real.jpg", root / "inner_link.jpg")
    with pytest.raises(ConversionError, match="outside the image root"):
        images.load_image(root, "link.jpg", ConversionReport(), where="image_id 3")
    loaded = images.load_image(root, "inner_link.jpg", ConversionReport(), where="image_id 4")
    assert loaded.encoded == (root / "real.jpg").read_bytes()


def test_exif_orientation_is_not_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    array = _textured_image(3, 20, 40)
    _save(array, str(tmp_path / "rotated.jpg"), exif=exif.tobytes())
    report = ConversionReport()
    report.set_split("train")
    loaded = images.load_image(tmp_path, "rotated.jpg", report)
    assert (loaded.height, loaded.width) == (20, 40)
    assert loaded.encoded == (tmp_path / "rotated.jpg").read_bytes()
    assert report.convert_count("train") == 0


def test_wrong_image_root_exceeds_the_skip_budget(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    _convert(builder.reader(), tmp_path / "out")
    reader = refer.ReferReader(builder.root, "tiny", "unc", image_root=str(tmp_path / "nowhere"))
    with pytest.raises(SkipBudgetExceeded, match=r"(?s)train.*missing file.*img_0001\.jpg"):
        _convert(reader, tmp_path / "out", num_workers=2)
    # a failed run leaves no metadata.json: the folder is not a complete dataset
    assert not (tmp_path / "out" / schema.METADATA_FILENAME).exists()
    assert not glob.glob(str(tmp_path / "out" / ".*.tmp-*"))


def test_skip_budget_allows_a_small_share(tmp_path):
    builder = ReferBuilder(tmp_path / "data")
    for image_id in range(1, 11):
        builder.add_image(image_id, write=image_id != 5)
        builder.add_ref(
            image_id, builder.add_annotation(image_id, [_rectangle(1, 1, 9, 9)]), "train", ["a"]
        )
    builder.write()
    with pytest.raises(SkipBudgetExceeded, match="1 of 10 images"):
        _convert(builder.reader(), tmp_path / "strict", max_skip_fraction=0.05)
    metadata = _convert(builder.reader(), tmp_path / "lenient", max_skip_fraction=0.1)
    assert metadata["splits"]["train"]["images"] == 9


def test_instances_json_of_another_dataset_fails_while_planning(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    builder.images = [{"id": 999, "file_name": "other.jpg", "height": 4, "width": 4}]
    builder.write()
    with pytest.raises(SkipBudgetExceeded, match="image missing from instances.json"):
        _convert(builder.reader(), tmp_path / "out")
    assert not glob.glob(str(tmp_path / "out" / "*.tfrecord"))


def test_malformed_instances_json_names_file_and_field(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    path = os.path.join(builder.root, "tiny", "instances.json")
    data = json.load(open(path))
    del data["images"][2]["height"]
    json.dump(data, open(path, "w"))
    with pytest.raises(
        ConversionError, match=r"instances\.json images\[2\]: missing the field 'height'"
    ):
        builder.reader().plan(ConversionReport())
    open(path, "w").write("{not json")
    with pytest.raises(ConversionError, match=r"instances\.json: invalid JSON"):
        builder.reader().plan(ConversionReport())


def test_ref_missing_a_field_names_it(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    del builder.refs[1]["split"]
    builder.write()
    with pytest.raises(
        ConversionError, match=r"refs\(unc\)\.p ref_id 2: missing the field 'split'"
    ):
        builder.reader().plan(ConversionReport())


def test_missing_refs_file_lists_the_available_ones(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    reader = refer.ReferReader(builder.root, "tiny", "google", image_root=builder.image_root)
    with pytest.raises(ConversionError, match=r"refs\(google\)\.p does not exist.*refs\(unc\)\.p"):
        reader.plan(ConversionReport())


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    marker = tmp_path / "pwned"
    refs_path = os.path.join(builder.root, "tiny", "refs(unc).p")
    with open(refs_path, "wb") as file:
        pickle.dump([{"ref_id": 1, "payload": _RunsCode(marker)}], file, protocol=2)
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"refs\(unc\)\.p.*(posix|os)\.system"):
        _convert(builder.reader(), tmp_path / "out")
    assert not marker.exists()


# ===================================================================================== safe pickle
def _python2_pickle(value):
    """Protocol-2 bytes as Python 2 cPickle writes them: `str` as (SHORT_)BINSTRING byte strings."""
    out = bytearray(b"\x80\x02")

    def emit(v):
        if isinstance(v, bool):
            out.extend(b"\x88" if v else b"\x89")
        elif isinstance(v, int):
            out.extend(b"J" + struct.pack("<i", v))
        elif isinstance(v, float):
            out.extend(b"G" + struct.pack(">d", v))
        elif isinstance(v, str):
            data = v.encode("utf-8")
            out.extend(
                (b"U" + bytes([len(data)]))
                if len(data) < 256
                else (b"T" + struct.pack("<i", len(data)))
            )
            out.extend(data)
        elif isinstance(v, list):
            out.extend(b"](")
            for x in v:
                emit(x)
            out.extend(b"e")
        elif isinstance(v, dict):
            out.extend(b"}(")
            for k, x in v.items():
                emit(k)
                emit(x)
            out.extend(b"u")
        else:
            raise TypeError(type(v))

    emit(value)
    out.extend(b".")
    return bytes(out)


REFS_SAMPLE = [
    {
        "ref_id": 3,
        "ann_id": 70,
        "image_id": 9,
        "split": "testB",
        "sentences": [
            {
                "sent_id": 5,
                "sent": "café on the left",
                "raw": "Café on the left.",
                "tokens": ["café"],
            }
        ],
    }
]


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_safe_pickle_loads_plain_refs(tmp_path, protocol):
    path = tmp_path / f"refs_{protocol}.p"
    path.write_bytes(pickle.dumps(REFS_SAMPLE, protocol=protocol))
    assert safe_pickle.load_pickle(path) == REFS_SAMPLE


def test_safe_pickle_decodes_python2_byte_strings():
    data = _python2_pickle(REFS_SAMPLE)
    assert pickle.loads(data, encoding="latin1") != REFS_SAMPLE  # latin1 garbles the UTF-8 "é"
    assert safe_pickle.loads_restricted(data, "refs(unc).p") == REFS_SAMPLE
    latin1_only = b"\x80\x02]U\x04caf\xe9a."  # a Python 2 str that is not valid UTF-8
    assert safe_pickle.loads_restricted(latin1_only) == ["caf\xe9"]


def test_safe_pickle_allows_sets_but_no_other_global(tmp_path):
    for protocol in (0, 2, 4):
        assert safe_pickle.loads_restricted(pickle.dumps([{1, 2}], protocol=protocol)) == [{1, 2}]
    import collections

    data = pickle.dumps(collections.OrderedDict(a=1), protocol=2)
    with pytest.raises(safe_pickle.UnsafePickleError, match="collections.OrderedDict"):
        safe_pickle.loads_restricted(data, "x.p")
    with pytest.raises(safe_pickle.UnsafePickleError, match="x.p: not a valid pickle"):
        safe_pickle.loads_restricted(b"\x80\x02]q\x00(K\x01", "x.p")


# ===================================================================================== resume
def _shard_stats(output_dir):
    return {
        name: os.stat(os.path.join(output_dir, name)).st_mtime_ns
        for name in os.listdir(output_dir)
        if name.endswith(".tfrecord")
    }


def test_resume_keeps_finished_shards_and_metadata(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    # a skipped sentence, so the resumed metadata must take skips from the sidecars
    builder.add_ref(2, builder.annotations[2]["id"], "train", ["   "])
    builder.write()
    output_dir = str(tmp_path / "out")
    first = _convert(builder.reader(), output_dir, num_shards=2)
    before = _shard_stats(output_dir)
    removed = "train-00001-of-00002.tfrecord"
    os.remove(os.path.join(output_dir, removed))
    leftover = os.path.join(output_dir, ".train-00000-of-00002.tfrecord.tmp-999")
    open(leftover, "wb").write(b"half a shard")
    os.utime(os.path.join(output_dir, "val-00000-of-00001.tfrecord"), ns=(1, 1))
    before["val-00000-of-00001.tfrecord"] = 1

    second = _convert(builder.reader(), output_dir, num_shards=2)
    after = _shard_stats(output_dir)
    assert second == first
    assert {name for name in after if after[name] == before.get(name)} == set(before) - {removed}
    assert removed in after
    assert len(_read_split(output_dir, "train")) == 2


def test_changed_plan_rewrites_and_removes_stale_shards(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    output_dir = str(tmp_path / "out")
    _convert(builder.reader(), output_dir, num_shards=2)
    metadata = _convert(builder.reader(), output_dir, num_shards=1)
    names = sorted(n for n in os.listdir(output_dir) if n.endswith(".tfrecord"))
    assert names == [
        "testA-00000-of-00001.tfrecord",
        "train-00000-of-00001.tfrecord",
        "val-00000-of-00001.tfrecord",
    ]
    assert metadata["splits"]["train"]["images"] == 2
    # the sentence field is an option: changing it rewrites every shard
    before = _shard_stats(output_dir)
    _convert(builder.reader(sentence_field="raw"), output_dir, num_shards=1)
    after = _shard_stats(output_dir)
    assert all(after[name] != before[name] for name in names)
    texts = [t.decode() for r in _read_split(output_dir, "val") for t in r["sentence/text"]]
    assert texts == ["CIRCLE ZEBRA"]


def test_parallel_workers_give_identical_output(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    serial = _convert(builder.reader(), tmp_path / "serial", num_shards=2)
    parallel = _convert(builder.reader(), tmp_path / "parallel", num_shards=2, num_workers=2)
    assert parallel["splits"] == serial["splits"]
    for name in os.listdir(tmp_path / "serial"):
        if name.endswith(".tfrecord") or name == schema.VOCAB_FILENAME:
            assert (tmp_path / "serial" / name).read_bytes() == (
                tmp_path / "parallel" / name
            ).read_bytes()


# ===================================================================================== protocol
class _ListReader:
    """The smallest reader following the protocol: items are (image_id, text) tuples."""

    name = "list"
    vocabulary_split = "train"

    def __init__(self, root, plan, returns=None):
        self.root, self._plan, self.returns = str(root), plan, returns or {}

    def options(self):
        return {"root": self.root}

    def plan(self, report):
        return self._plan

    def materialize(self, item, report):
        image_id, text = item
        if image_id in self.returns:
            return self.returns[image_id]
        loaded = images.load_image(self.root, f"img_{image_id:04d}.jpg", report, f"item {image_id}")
        if loaded is None:
            return None
        mask = np.zeros((loaded.height, loaded.width), np.uint8)
        mask[: image_id + 1] = 1
        ref = schema.RefRecord(image_id * 10, mask, [schema.Sentence(image_id * 100, text)])
        return schema.ImageRecord(
            image_id,
            f"img_{image_id:04d}.jpg",
            loaded.encoded,
            loaded.image_format,
            loaded.height,
            loaded.width,
            [ref],
        )


def test_writer_counts_a_none_without_a_reported_skip(tmp_path):
    builder = ReferBuilder(tmp_path)
    for image_id in (1, 2, 3):
        builder.add_image(image_id)
    plan = {"train": [(1, "one"), (2, "two")], "val": [(3, "three")]}
    reader = _ListReader(builder.image_root, plan, returns={2: None})
    metadata = _convert(reader, tmp_path / "out", max_skip_fraction=1.0)
    assert metadata["splits"]["train"]["skipped"] == {"image": {"reader returned no record": 1}}
    assert "(2, 'two')" in metadata["splits"]["train"]["examples"]["skipped"][0]["where"]
    assert [r["sentence/text"] for r in _read_split(str(tmp_path / "out"), "train")] == [[b"one"]]
    assert metadata["vocabulary"]["size"] == 5  # specials + "one"


def test_writer_rejects_protocol_violations(tmp_path):
    builder = ReferBuilder(tmp_path)
    builder.add_image(1)
    wrong_type = _ListReader(builder.image_root, {"train": [(1, "x")]}, returns={1: {"image": 1}})
    with pytest.raises(ValueError, match="must return a schema.ImageRecord or None; received dict"):
        _convert(wrong_type, tmp_path / "a")
    no_vocabulary_split = _ListReader(builder.image_root, {"test": [(1, "x")]})
    with pytest.raises(ConversionError, match="vocabulary split 'train'"):
        _convert(no_vocabulary_split, tmp_path / "b")


def test_synthetic_generator_output_converts(tmp_path):
    from pycocotools.coco import COCO

    from refseg_tf.synthetic_data import shapes as synthetic

    summary = synthetic.generate(str(tmp_path / "synth"), num_images=8, seed=3, image_size=48)
    reader = refer.make_reader(
        types.SimpleNamespace(
            data_root=str(tmp_path / "synth"), dataset="synthetic", split_by="unc"
        )
    )
    assert reader.image_root == str(tmp_path / "synth" / "images")  # the default image root
    metadata = _convert(reader, tmp_path / "out")
    for split, counts in summary["splits"].items():
        entry = metadata["splits"][split]
        assert (entry["images"], entry["refs"], entry["sentences"]) == (
            counts["images"],
            counts["refs"],
            counts["sentences"],
        )
        assert entry["skipped"] == {} and entry["converted"] == {}
    coco = COCO(str(tmp_path / "synth" / "synthetic" / "instances.json"))
    for record in _read_split(str(tmp_path / "out"), "train"):
        for ann_id, png in zip(record["ref/ann_id"], record["ref/mask"]):
            expected = coco.annToMask(coco.anns[ann_id]) > 0
            np.testing.assert_array_equal(schema.decode_mask_png(png), expected.astype(np.uint8))


# ===================================================================================== units
def test_report_budget_merge_and_round_trip():
    report = ConversionReport(max_skip_fraction=0.25, max_examples=2)
    report.set_split("train")
    for index in range(3):
        report.skip("image", "missing file", f"a{index}.jpg")
    report.convert("image", "L JPEG -> RGB JPEG", "b.jpg", split="val")
    report.check_skip_budget("train", total_images=12)
    with pytest.raises(SkipBudgetExceeded, match=r"(?s)3 of 11 images.*a0\.jpg"):
        report.check_skip_budget("train", total_images=11)
    assert report.examples("train") == [
        {"kind": "image", "reason": "missing file", "where": "a0.jpg"},
        {"kind": "image", "reason": "missing file", "where": "a1.jpg"},
    ]
    copy = ConversionReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert copy.to_dict() == report.to_dict()
    copy.merge(report)
    assert copy.skip_count("train", "image") == 6 and copy.convert_count("val") == 2
    with pytest.raises(ValueError, match="no current split"):
        ConversionReport().skip("ref", "x", "y")


def test_shard_helpers():
    assert writer.shard_count(0, num_shards=4) == 0
    assert writer.shard_count(3, num_shards=4) == 3
    assert writer.shard_count(2001, images_per_shard=1000) == 3
    chunks = writer.split_into_shards(list(range(10)), 3)
    assert chunks == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="not both"):
        writer.write_dataset(None, "/tmp/unused", num_shards=1, images_per_shard=1)


def test_decode_segmentation_rejects_size_mismatch():
    rle = _compressed_rle(np.ones((4, 5), np.uint8))
    with pytest.raises(ValueError, match="differs from the image size"):
        refer.decode_segmentation(rle, 5, 4)
    assert refer.segmentation_problem({"counts": "x"}) == "invalid segmentation"
    assert refer.segmentation_problem([[1, 2, "a", 4, 5, 6]]) == "invalid segmentation"
    mask = refer.decode_segmentation([_rectangle(1, 1, 3, 2), [0.0, 0.0, 1.0, 1.0]], 5, 6)
    assert mask.dtype == np.uint8 and mask.sum() > 0


def test_report_module_constants():
    assert (report_lib.IMAGE, report_lib.REF, report_lib.SENTENCE) == ("image", "ref", "sentence")


# ===================================================================================== CLI
@pytest.mark.slow
def test_cli_converts_through_python_m(tmp_path):
    builder = _happy_dataset(tmp_path / "data")
    output_dir = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "refseg_tf.convert",
        "--format=refer",
        f"--data_root={builder.root}",
        "--dataset=tiny",
        "--split_by=unc",
        f"--output_dir={output_dir}",
        "--noprogress",
    ]  # --image_root defaults to DATA_ROOT/images
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "train: 2 images, 3 refs, 4 sentences" in done.stdout
    metadata = json.loads((output_dir / schema.METADATA_FILENAME).read_text())
    assert metadata["splits"]["testA"]["images"] == 3


def _parsed_flags(*arguments):
    from absl import flags

    from refseg_tf import convert

    flag_values = flags.FlagValues()
    flags.DEFINE_string("output_dir", None, "defined by another tool", flag_values=flag_values)
    convert.define_flags(flag_values)
    flag_values(["refseg-convert", *arguments])
    return flag_values


def test_cli_bad_data_and_bad_flags_in_process(tmp_path, capsys):
    from absl import app

    from refseg_tf import convert

    builder = _happy_dataset(tmp_path / "data")
    bad_data = _parsed_flags(
        f"--data_root={builder.root}", "--dataset=absent", f"--output_dir={tmp_path / 'out'}"
    )
    assert convert.convert_with_flags(bad_data) == 1
    assert "refseg-convert: error:" in capsys.readouterr().err
    with pytest.raises(app.UsageError, match="--output_dir is required"):
        convert.convert_with_flags(_parsed_flags(f"--data_root={builder.root}"))
    with pytest.raises(app.UsageError, match="needs --data_root"):
        convert.convert_with_flags(_parsed_flags(f"--output_dir={tmp_path / 'out'}"))
    good = _parsed_flags(
        f"--data_root={builder.root}",
        "--dataset=tiny",
        "--sentence_field=raw",
        "--num_shards=1",
        "--noprogress",
        f"--output_dir={tmp_path / 'out'}",
    )
    assert convert.convert_with_flags(good) == 0
    metadata = json.loads((tmp_path / "out" / schema.METADATA_FILENAME).read_text())
    assert metadata["options"]["sentence_field"] == "raw"
    assert metadata["writer"]["num_shards"] == 1


# ============================================================== given vocabulary, tokeniser mode
def test_given_vocabulary_file_is_used_with_its_ids(tmp_path):
    """`refseg-convert --vocabulary=FILE`: vocab.txt is that file; word ids are its line numbers."""
    from refseg_tf import convert
    from refseg_tf.data import load
    from refseg_tf.preprocessing import ReferringPreprocessor

    builder = _happy_dataset(tmp_path / "data")
    words = ["<pad>", "<go>", "<eos>", "<unk>", "zebra", "red", "man", ". .", "left", "the"]
    vocabulary_file = tmp_path / "vocabulary_fixed.txt"
    vocabulary_file.write_text("".join(w + "\n" for w in words), encoding="utf-8")
    flag_values = _parsed_flags(
        f"--data_root={builder.root}", "--dataset=tiny", "--noprogress",
        f"--vocabulary={vocabulary_file}", "--tokenizer=authors",
        f"--output_dir={tmp_path / 'out'}",
    )
    assert convert.convert_with_flags(flag_values) == 0
    out = tmp_path / "out"
    assert (out / schema.VOCAB_FILENAME).read_bytes() == vocabulary_file.read_bytes()
    metadata = json.loads((out / schema.METADATA_FILENAME).read_text())
    # train: "the left man" (0 unknown), "man in red shirt" (2), "small box on the right" (4),
    # "round thing" (2): 8 of 14 tokens are out of vocabulary.
    assert metadata["vocabulary"]["source"] == "given"
    assert metadata["vocabulary"]["tokenizer"] == "authors"
    assert (metadata["vocabulary"]["out_of_vocabulary_tokens"], metadata["vocabulary"]["tokens"]) \
        == (8, 14)
    # The data directory's preprocessor tokenises as its vocabulary was built (authors).
    preprocessor = ReferringPreprocessor.from_data_dir(str(out), max_length=4)
    assert preprocessor.tokenizer_mode == "authors"
    batch = next(iter(load(str(out), "train", mode="eval", batch_size=8,
                           preprocessor=preprocessor)))
    by_sentence = dict(zip([s.decode() for s in batch["sentence"].numpy()],
                           batch["word_ids"].numpy().tolist()))
    assert by_sentence["the left man"] == [0, 9, 8, 6]
    assert by_sentence["man in red shirt"] == [6, 3, 5, 3]


def test_given_vocabulary_errors_name_the_file(tmp_path):
    from absl import app

    from refseg_tf import convert

    bad = tmp_path / "bad_vocabulary.txt"
    bad.write_text("the\nman\n", encoding="utf-8")
    flag_values = _parsed_flags(
        f"--data_root={tmp_path}", f"--vocabulary={bad}", f"--output_dir={tmp_path / 'out'}"
    )
    with pytest.raises(app.UsageError, match="bad_vocabulary.txt"):
        convert.convert_with_flags(flag_values)


@pytest.mark.parametrize("tokenizer", ["refseg", "authors"])
def test_sentences_without_words_are_counted_skips(tmp_path, tokenizer):
    """Only control characters, or a lone "." (dropped as the final token): no word, a skip."""
    builder = ReferBuilder(tmp_path / "data")
    builder.add_image(1)
    builder.add_image(2)
    good = [_rectangle(2, 2, 30, 30)]
    builder.add_ref(1, builder.add_annotation(1, good), "train", ["the dog", "\x00\x07", "."])
    builder.add_ref(2, builder.add_annotation(2, good), "train", ["\x1b\x1b"])
    builder.write()
    metadata = _convert(builder.reader(), tmp_path / "out", max_skip_fraction=1.0,
                        tokenizer=tokenizer)
    train = metadata["splits"]["train"]
    assert train["skipped"]["sentence"] == {"sentence tokenises to no word": 3}
    assert train["skipped"]["ref"] == {"no sentence with a word": 1}
    assert train["skipped"]["image"] == {"no ref with a sentence": 1}
    assert (train["images"], train["refs"], train["sentences"]) == (1, 1, 1)
    examples = train["examples"]["skipped"]
    assert any("sent" in e["where"] and "image 1" in e["where"] for e in examples)
    texts = [t.decode() for r in _read_split(str(tmp_path / "out"), "train")
             for t in r["sentence/text"]]
    assert texts == ["the dog"]
    from refseg_tf.text import Vocabulary

    words = Vocabulary.load(str(tmp_path / "out" / schema.VOCAB_FILENAME)).words[4:]
    assert set(words) == {"the", "dog"}

"""TFDS `ref_coco` (a prepared data_dir) joined with COCO instances -> refseg-tf records.

Source: `tfds.builder("ref_coco/<config>", data_dir=--tfds_data_dir)` with configs
refcoco_unc, refcoco_google, refcocoplus_unc, refcocog_google, refcocog_umd (a version may be
appended: "refcoco_unc:1.0.0"). Nothing is downloaded: the dataset must have been prepared
(its manual download instructions need the refer data and COCO train2014). Without an explicit
version, the newest prepared version found in the data_dir is used, so a data_dir prepared by
an older TFDS release still converts.

TFDS stores one example per image: `image/id`, `image` (the COCO JPEG), and `objects`, one per
ref, with the COCO annotation `id`, `label` (category), `bbox` (normalised
[ymin, xmin, ymax, xmax]) and `refexp` (`refexp_id`, `raw`). What it lacks, and how it is filled:

- **Masks.** `ref_coco` 1.0.0 has none; 1.1.0 added `objects/mask`. With `--coco_instances`
  (instances_train2014.json) masks are joined by annotation id and decoded with pycocotools
  (polygons merged into their union, or RLE), binarised: the same source the refer API uses.
  Without it, the `objects/mask` PNGs of a 1.1.0 dataset are used (non-zero = foreground); a
  dataset without masks then stops with an error asking for `--coco_instances`.
- **Ref ids.** TFDS drops the refer `ref_id`; `ref/id` is the COCO annotation id (in the refer
  data an annotation carries at most one ref per dataset and split scheme, so it identifies the
  ref). Two objects of one image with the same annotation are merged (counted conversion).
  Sentence ids are the original refer `sent_id`s (`refexp_id`).
- **Image bytes.** With `--image_root` the original COCO file is read
  (`<image_root>/<file_name>`, file name from the instances file, else
  `COCO_train2014_<id:012d>.jpg`). Without it the image comes from the TFDS record, where it
  is stored undecoded: the bytes are the original COCO JPEG as well, never re-encoded (unless
  it is not an RGB JPEG; see `images.normalize_image_bytes`).
- **Split names.** TFDS "validation" becomes "val" (as in the refer files); train, testA,
  testB and test keep their names. The vocabulary comes from "train".

Planning reads every record once (annotations only; pixels stay encoded) and remembers where
each record lies (byte offset in a TFRecord shard, or index in an ArrayRecord shard), so
`materialize` reads one record directly, in any order and in any worker process.

Skips (counted): an object whose annotation id is not in the instances file ("annotation
missing"), an annotation without a usable segmentation, an empty refexp (that sentence only),
an image missing from the instances file, a mask or image whose size disagrees (both sizes in
the message), and an image with no ref left.
"""

import dataclasses
import functools
import io
import json
import os
import pathlib
from typing import Optional

import numpy as np

from refseg_tf.data import schema
from refseg_tf.data.converters import images
from refseg_tf.data.converters import coco_masks
from refseg_tf.data.converters.report import (
    IMAGE,
    REF,
    SENTENCE,
    ConversionError,
    ConversionReport,
)

TFDS_NAME = "ref_coco"
CONFIGS = ("refcoco_unc", "refcoco_google", "refcocoplus_unc", "refcocog_google", "refcocog_umd")
SPLIT_NAMES = {
    "train": "train",
    "validation": "val",
    "testA": "testA",
    "testB": "testB",
    "test": "test",
}
VOCABULARY_SPLIT = "train"
COCO_FILE_NAME = "COCO_train2014_{image_id:012d}.jpg"
INSTALL_HINT = "pip install 'refseg-tf[tfds]'"
TFRECORD = "tfrecord"
ARRAY_RECORD = "array_record"
# TFRecord framing: uint64 length, uint32 masked CRC of the length, data, uint32 CRC of the data.
_TFRECORD_HEADER = 12
_ARRAY_RECORD_BATCH = 256


class TfdsUnavailableError(ConversionError, ImportError):
    """tensorflow-datasets (the optional `[tfds]` extra) is not installed."""


def import_tfds():
    """Imports tensorflow_datasets, or raises `TfdsUnavailableError` saying how to install it."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise TfdsUnavailableError(
            f"The tfds format needs tensorflow-datasets, which is not installed ({error}). "
            f"Install the optional extra: {INSTALL_HINT}"
        ) from error
    return tfds


@dataclasses.dataclass(frozen=True)
class RecordLocation:
    """Where one serialized TFDS example lies.

    Args:
        file_format: "tfrecord" or "array_record".
        path: the shard file.
        position: byte offset of the serialized example (tfrecord) or record index (array_record).
        length: size in bytes of the serialized example (tfrecord; -1 for array_record).
    """

    file_format: str
    path: str
    position: int
    length: int


@dataclasses.dataclass(frozen=True)
class TfdsRef:
    """One referred object as planned.

    Args:
        ref_id: the COCO annotation id (see the module docstring).
        category_id: the COCO category id.
        object_index: index of the object in the TFDS example (selects its `objects/mask`).
        bbox: (x, y, width, height) in pixels, or the TFDS (ymin, xmin, ymax, xmax) in [0, 1]
            when `bbox_is_normalized`.
        bbox_is_normalized: see `bbox`.
        segmentation: from the instances file: ("polygons", ((x, y, ...), ...)) or
            ("rle", (height, width), counts); None to use the TFDS mask.
        sentences: ((sent_id, text), ...).
    """

    ref_id: int
    category_id: int
    object_index: int
    bbox: tuple
    bbox_is_normalized: bool
    segmentation: Optional[tuple]
    sentences: tuple


@dataclasses.dataclass(frozen=True)
class TfdsImage:
    """One image with its refs of one split: the item `materialize` turns into a record.

    Args:
        split: the output split name ("train", "val", "testA", ...).
        image_id: the COCO image id.
        file_name: the COCO file name (relative to `--image_root`).
        height: height from the instances file, -1 when there is none.
        width: width from the instances file, -1 when there is none.
        record: where the TFDS example lies.
        refs: the `TfdsRef`s in TFDS object order.
    """

    split: str
    image_id: int
    file_name: str
    height: int
    width: int
    record: RecordLocation
    refs: tuple


@dataclasses.dataclass
class _CocoIndex:
    path: str
    images: dict  # image id -> (file_name, height, width)
    annotations: dict  # annotation id -> annotation dict


class TfdsRefCocoReader:
    """Reads a prepared TFDS `ref_coco` config for `writer.write_dataset`.

    Follows the reader protocol of `refseg_tf.data.converters`.

    Args:
        data_dir: the TFDS data_dir in which `ref_coco/<config>` was prepared.
        config: one of `CONFIGS`, optionally with ":<version>".
        coco_instances: COCO instances_train2014.json, the source of the masks (optional for
            `ref_coco` >= 1.1.0, which stores masks itself).
        image_root: COCO train2014 folder; images are read from the TFDS records when None.

    Example:
        >>> reader = TfdsRefCocoReader("~/tensorflow_datasets", "refcoco_unc",
        ...                            coco_instances="annotations/instances_train2014.json")
        >>> report = ConversionReport()
        >>> plan = reader.plan(report)          # {"train": [...], "val": [...], "testA": ...}
        >>> report.set_split("val")
        >>> record = reader.materialize(plan["val"][0], report)

    Reference:
        Yu et al. 2016 (RefCOCO, RefCOCO+), Mao et al. 2016 and Nagaraja et al. 2016 (RefCOCOg
        Google / UMD splits); TFDS catalogue entry `ref_coco`. Masks are the COCO instance
        segmentations, as in every paper of this library.
    """

    vocabulary_split = VOCABULARY_SPLIT

    def __init__(self, data_dir, config: str, coco_instances=None, image_root=None):
        config_name, _, version = str(config).partition(":")
        if config_name not in CONFIGS:
            raise ValueError(f"Unknown ref_coco config {config!r}; expected one of {CONFIGS}.")
        self.data_dir = str(data_dir)
        self.config = str(config)
        self.config_name = config_name
        self.version = version or None
        self.coco_instances = str(coco_instances) if coco_instances else None
        self.image_root = str(image_root) if image_root else None
        self.name = config_name
        self._features = None  # per-process cache of the TFDS feature spec

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_features"] = None  # rebuilt on demand in a worker process
        return state

    def source_files(self, item: TfdsImage) -> list:
        """The image file `materialize` reads for `item` with `--image_root` (resume fingerprint)."""
        return [os.path.join(self.image_root, item.file_name)] if self.image_root else []

    def options(self) -> dict:
        return {
            "format": "tfds",
            "tfds_data_dir": self.data_dir,
            "tfds_config": self.config,
            "coco_instances": self.coco_instances,
            "image_root": self.image_root,
            "mask_source": "coco_instances" if self.coco_instances else "tfds objects/mask",
            "image_source": "image_root" if self.image_root else "tfds image",
            "ref_id": "COCO annotation id",
        }

    # ----------------------------------------------------------------------------- plan
    def plan(self, report: ConversionReport) -> dict:
        """Reads every TFDS record (annotations only) and returns {split: [TfdsImage, ...]}."""
        tfds = import_tfds()
        builder = load_prepared_builder(tfds, self.data_dir, self.config)
        self._features = builder.info.features
        coco = load_coco_index(self.coco_instances) if self.coco_instances else None
        if coco is None and not has_tfds_masks(self._features):
            raise ConversionError(
                f"{builder.info.full_name} in {self.data_dir} stores no masks (added in "
                f"ref_coco 1.1.0); pass --coco_instances=<instances_train2014.json> to join them."
            )
        file_format = _file_format_name(builder)
        plan = {}
        for tfds_split, split_info in _ordered_splits(builder):
            split = SPLIT_NAMES.get(tfds_split, tfds_split)
            items = []
            for location, serialized in iterate_records(file_format, split_info):
                example = self._deserialize(serialized, location)
                item = self._plan_image(split, tfds_split, example, location, coco, report)
                if item is not None:
                    items.append(item)
            plan[split] = sorted(items, key=lambda item: item.image_id)
        return plan

    def _plan_image(self, split, tfds_split, example, location, coco, report):
        image_id = int(example["image/id"])
        where = f"{TFDS_NAME}/{self.config_name} {tfds_split} image {image_id}"
        file_name, height, width = COCO_FILE_NAME.format(image_id=image_id), -1, -1
        if coco is not None:
            if image_id not in coco.images:
                report.skip(IMAGE, "image missing from instances", f"{where}, {coco.path}", split)
                return None
            file_name, height, width = coco.images[image_id]
        refs = {}
        objects = example["objects"]
        for index in range(len(objects["id"])):
            ref = self._plan_ref(objects, index, image_id, where, coco, split, report)
            if ref is None:
                continue
            if ref.ref_id in refs:
                duplicate = f"{where} ann {ref.ref_id}"
                report.convert(REF, "merged duplicate annotation", duplicate, split)
                first = refs[ref.ref_id]
                ref = dataclasses.replace(first, sentences=first.sentences + ref.sentences)
            refs[ref.ref_id] = ref
        if not refs:
            report.skip(IMAGE, "no refs", where, split)
            return None
        return TfdsImage(split, image_id, file_name, height, width, location, tuple(refs.values()))

    def _plan_ref(self, objects, index, image_id, where, coco, split, report):
        ann_id = int(objects["id"][index])
        where = f"{where} ann {ann_id}"
        if coco is None:
            bbox = tuple(float(v) for v in objects["bbox"][index])
            source = (None, int(objects["label"][index]), bbox)
        else:
            source = _joined_annotation(coco, ann_id, image_id, where, split, report)
            if source is None:
                return None
        segmentation, category_id, bbox = source
        sentences = _plan_sentences(objects["refexp"], index, where, split, report)
        if not sentences:
            report.skip(REF, "no sentences", where, split)
            return None
        return TfdsRef(ann_id, category_id, index, bbox, coco is None, segmentation, sentences)

    # ----------------------------------------------------------------------------- materialize
    def materialize(self, item: TfdsImage, report: ConversionReport):
        """Loads the image and decodes the masks of one planned item; None if nothing is left."""
        where = f"{TFDS_NAME}/{self.config_name} {item.split} image {item.image_id}"
        example = None
        if self.image_root:
            image = images.load_image(self.image_root, item.file_name, report, where)
        else:
            example = self._read_example(item.record)
            image = images.normalize_image_bytes(
                example["image"], _describe(item.record), report, where
            )
        if image is None:
            return None
        if item.height > 0 and (image.height, image.width) != (item.height, item.width):
            report.skip(
                IMAGE,
                "image size mismatch",
                f"{where}: the instances file says (height, width) = {(item.height, item.width)}, "
                f"the image is {(image.height, image.width)}",
            )
            return None
        refs = []
        for ref in item.refs:
            if ref.segmentation is None and example is None:
                example = self._read_example(item.record)
            mask = self._ref_mask(ref, example, image, where, report)
            if mask is not None:
                refs.append(_ref_record(ref, mask, image))
        if not refs:
            report.skip(IMAGE, "no refs left", where)
            return None
        return image.to_record(item.image_id, item.file_name, refs)

    def _ref_mask(self, ref, example, image, where, report) -> Optional[np.ndarray]:
        where = f"{where} ann {ref.ref_id}"
        try:
            if ref.segmentation is not None:
                mask = decode_segmentation(ref.segmentation, image.height, image.width)
            else:
                mask = decode_tfds_mask(example["objects"]["mask"][ref.object_index])
        except (OSError, ValueError, TypeError, IndexError) as error:
            report.skip(REF, "undecodable mask", f"{where}: {error}")
            return None
        if mask.shape != (image.height, image.width):
            report.skip(
                REF,
                "mask shape mismatch",
                f"{where}: mask shape {mask.shape}, image shape {(image.height, image.width)}",
            )
            return None
        return mask

    # ----------------------------------------------------------------------------- records
    def _feature_spec(self):
        if self._features is None:
            tfds = import_tfds()
            self._features = load_prepared_builder(tfds, self.data_dir, self.config).info.features
        return self._features

    def _deserialize(self, serialized: bytes, location: RecordLocation) -> dict:
        features = self._feature_spec()
        decoders = _raw_decoders(features)
        try:
            return features.deserialize_example_np(serialized, decoders=decoders)
        except Exception as error:  # TFDS raises assorted types for a damaged record
            raise ConversionError(
                f"Cannot parse the TFDS example {_describe(location)}: {error}"
            ) from error

    def _read_example(self, location: RecordLocation) -> dict:
        return self._deserialize(read_record(location), location)


def make_reader(flags) -> TfdsRefCocoReader:
    """Builds a `TfdsRefCocoReader` from the `refseg_tf.convert` flags.

    Uses `--tfds_data_dir`, `--tfds_config` (required), `--coco_instances` and `--image_root`.
    """
    data_dir = getattr(flags, "tfds_data_dir", None)
    config = getattr(flags, "tfds_config", None)
    given = {"--tfds_data_dir": data_dir, "--tfds_config": config}
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        raise ValueError(f"--format=tfds needs {', '.join(missing)}.")
    if not os.path.isdir(data_dir):
        raise ValueError(f"--tfds_data_dir={data_dir!r} is not a directory.")
    instances = getattr(flags, "coco_instances", None)
    if instances and not os.path.isfile(instances):
        raise ValueError(f"--coco_instances={instances!r} is not a file.")
    image_root = getattr(flags, "image_root", None)
    if image_root and not os.path.isdir(image_root):
        raise ValueError(f"--image_root={image_root!r} is not a directory.")
    import_tfds()  # fail early, before any work, when the extra is missing
    return TfdsRefCocoReader(data_dir, config, coco_instances=instances, image_root=image_root)


# --------------------------------------------------------------------------------- TFDS access
def load_prepared_builder(tfds, data_dir: str, config: str):
    """The TFDS builder of a prepared `ref_coco/<config>` in `data_dir` (never downloads).

    Without a version in `config`, falls back to the newest prepared version in the data_dir
    when the installed TFDS code's default version was not prepared there.
    """
    config_name, _, version = config.partition(":")
    try:
        builder = tfds.builder(f"{TFDS_NAME}/{config}", data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError, version errors, ... vary across TFDS
        raise ConversionError(
            f"Cannot open the TFDS dataset {TFDS_NAME}/{config} in {data_dir}: {error}"
        ) from error
    if builder.is_prepared():
        return builder
    config_dir = pathlib.Path(data_dir) / TFDS_NAME / config_name
    prepared = _prepared_versions(tfds, config_dir) if not version else []
    if prepared:
        return tfds.builder_from_directory(str(config_dir / str(max(prepared))))
    raise ConversionError(
        f"No prepared TFDS dataset {TFDS_NAME}/{config} in {data_dir} (looked in "
        f"{builder.data_dir}). Prepare it first with tfds.builder('{TFDS_NAME}/{config_name}', "
        f"data_dir=...).download_and_prepare(download_config=tfds.download.DownloadConfig("
        f"manual_dir=...)), following the builder's manual download instructions."
    )


def _prepared_versions(tfds, config_dir: pathlib.Path) -> list:
    if not config_dir.is_dir():
        return []
    versions = []
    for child in config_dir.iterdir():
        if (child / "dataset_info.json").is_file() and tfds.core.Version.is_valid(child.name):
            versions.append(tfds.core.Version(child.name))
    return versions


def has_tfds_masks(features) -> bool:
    """Whether the TFDS feature spec has `objects/mask` (ref_coco >= 1.1.0)."""
    return "mask" in features["objects"].feature.keys()


def _raw_decoders(features) -> dict:
    # Keep image and mask bytes encoded: planning never needs pixels, and materialize decodes
    # them itself (the image bytes go into the record unchanged).
    decoders = {"image": _raw_bytes_decoder()}
    if has_tfds_masks(features):
        decoders["objects"] = {"mask": _raw_bytes_decoder()}
    return decoders


@functools.lru_cache(maxsize=None)
def _raw_bytes_decoder():
    tfds = import_tfds()

    class RawBytes(tfds.decode.Decoder):
        """Returns the serialized feature (encoded image bytes) as is."""

        def decode_example(self, serialized_example):
            return serialized_example

        def decode_example_np(self, serialized_example):
            return serialized_example

        def decode_batch_example_np(self, serialized_example):
            return serialized_example

    return RawBytes()


def _ordered_splits(builder) -> list:
    splits = builder.info.splits
    known = [name for name in SPLIT_NAMES if name in splits]
    others = sorted(name for name in splits.keys() if name not in SPLIT_NAMES)
    return [(name, splits[name]) for name in known + others]


def _file_format_name(builder) -> str:
    file_format = builder.info.file_format
    name = getattr(file_format, "value", file_format) or TFRECORD
    if name not in (TFRECORD, ARRAY_RECORD):
        raise ConversionError(
            f"{builder.info.full_name} in {builder.data_dir} is stored as {name!r}; only "
            f"{TFRECORD} and {ARRAY_RECORD} can be read."
        )
    return name


def iterate_records(file_format: str, split_info):
    """Yields (RecordLocation, serialized example) for every example of a TFDS split."""
    paths = [os.fspath(path) for path in split_info.filepaths]
    expected = list(split_info.shard_lengths)
    for index, path in enumerate(paths):
        count = 0
        records = scan_tfrecord(path) if file_format == TFRECORD else _scan_array_record(path)
        for location, serialized in records:
            count += 1
            yield location, serialized
        if index < len(expected) and count != expected[index]:
            raise ConversionError(
                f"{path} holds {count} records; the TFDS dataset_info.json says {expected[index]} "
                f"(an incomplete or replaced shard)."
            )


def scan_tfrecord(path: str):
    """Yields (RecordLocation, serialized example) for each record of a TFRecord file
    (`schema.read_record_frames`, the library's one framing reader)."""
    with open(path, "rb") as file:
        try:
            for frame in schema.read_record_frames(file, os.fstat(file.fileno()).st_size):
                location = RecordLocation(TFRECORD, path, frame.start + _TFRECORD_HEADER, frame.length)
                yield location, frame.data
        except schema.TruncatedRecordError as error:
            part = "record header" if error.in_header else "record"
            raise ConversionError(f"{path}: truncated {part} at byte {error.start}.") from error


def _scan_array_record(path: str):
    reader = _open_array_record(path)
    try:
        total = reader.num_records()
        for start in range(0, total, _ARRAY_RECORD_BATCH):
            indices = list(range(start, min(total, start + _ARRAY_RECORD_BATCH)))
            for index, data in zip(indices, reader.read(indices)):
                yield RecordLocation(ARRAY_RECORD, path, index, -1), data
    finally:
        reader.close()


def read_record(location: RecordLocation) -> bytes:
    """Reads the serialized example at `location`."""
    if location.file_format == ARRAY_RECORD:
        reader = _open_array_record(location.path)
        try:
            return reader.read([location.position])[0]
        finally:
            reader.close()
    try:
        with open(location.path, "rb") as file:
            file.seek(location.position)
            data = file.read(location.length)
    except OSError as error:
        raise ConversionError(f"Cannot read {_describe(location)}: {error}") from error
    if len(data) != location.length:
        raise ConversionError(f"Truncated TFDS record {_describe(location)}.")
    return data


def _open_array_record(path: str):
    try:
        from array_record.python import array_record_module
    except ImportError as error:
        raise TfdsUnavailableError(
            f"{path} is an ArrayRecord file and the array_record package is missing ({error}). "
            f"Install the optional extra: {INSTALL_HINT}"
        ) from error
    return array_record_module.ArrayRecordReader(path)


def _describe(location: RecordLocation) -> str:
    unit = "byte" if location.file_format == TFRECORD else "index"
    return f"{location.path} ({unit} {location.position})"


# --------------------------------------------------------------------------------- COCO
def load_coco_index(path: str) -> _CocoIndex:
    """Reads a COCO instances file into image and annotation tables (checked fields)."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ConversionError(f"Cannot read the COCO instances file {path}: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ConversionError(f"{path} is not a COCO instances file: no 'images' list.")
    if not isinstance(data.get("annotations"), list):
        raise ConversionError(f"{path} is not a COCO instances file: no 'annotations' list.")
    image_table = {}
    for position, entry in enumerate(data["images"]):
        fields = _required(entry, ("id", "file_name", "height", "width"), path, "images", position)
        image_table[int(fields["id"])] = (
            str(fields["file_name"]),
            int(fields["height"]),
            int(fields["width"]),
        )
    annotations = {}
    for position, entry in enumerate(data["annotations"]):
        keys = ("id", "image_id", "category_id", "bbox", "segmentation")
        _required(entry, keys, path, "annotations", position)
        annotations[int(entry["id"])] = entry
    return _CocoIndex(path=str(path), images=image_table, annotations=annotations)


def _joined_annotation(coco: _CocoIndex, ann_id, image_id, where, split, report):
    """(segmentation, category id, pixel box) of an annotation, or None after a counted skip."""
    annotation = coco.annotations.get(ann_id)
    if annotation is None:
        report.skip(REF, "annotation missing", f"{where} not in {coco.path}", split)
        return None
    if int(annotation["image_id"]) != image_id:
        placed = f"{where}: {coco.path} places it on image {annotation['image_id']}"
        report.skip(REF, "annotation of another image", placed, split)
        return None
    segmentation = freeze_segmentation(annotation["segmentation"], f"{coco.path} {where}")
    if segmentation is None:
        report.skip(REF, "no segmentation", f"{where} in {coco.path}", split)
        return None
    bbox = _coco_box(annotation["bbox"], f"{coco.path} {where}")
    return segmentation, int(annotation["category_id"]), bbox


def _required(entry, keys, path, table, position) -> dict:
    if not isinstance(entry, dict):
        raise ConversionError(f"{path}: {table}[{position}] is not an object.")
    missing = [key for key in keys if key not in entry]
    if missing:
        raise ConversionError(
            f"{path}: {table}[{position}] (id {entry.get('id')!r}) lacks the field(s) {missing}."
        )
    return entry


def freeze_segmentation(segmentation, where: str) -> Optional[tuple]:
    """A COCO segmentation as a hashable, deterministic tuple, or None when it holds no region.

    Polygons with fewer than three points are dropped (pycocotools would read a 4-number list
    as a box). Raises `ConversionError` for a value that is neither polygons nor RLE.
    """
    if isinstance(segmentation, list):
        polygons = []
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
                raise ConversionError(f"{where}: a polygon must be a list of numbers.")
            if len(polygon) >= 6 and len(polygon) % 2 == 0:
                polygons.append(tuple(float(v) for v in polygon))
        return ("polygons", tuple(polygons)) if polygons else None
    if isinstance(segmentation, dict) and "size" in segmentation and "counts" in segmentation:
        size, counts = segmentation["size"], segmentation["counts"]
        if not (isinstance(size, list) and len(size) == 2 and all(_is_number(v) for v in size)):
            raise ConversionError(f"{where}: RLE 'size' must be [height, width].")
        if isinstance(counts, list):
            counts = tuple(int(v) for v in counts)
        elif not isinstance(counts, str):
            raise ConversionError(f"{where}: RLE 'counts' must be a string or a list of ints.")
        return ("rle", (int(size[0]), int(size[1])), counts) if counts else None
    raise ConversionError(f"{where}: 'segmentation' is neither polygons nor RLE.")


def decode_segmentation(segmentation: tuple, height: int, width: int) -> np.ndarray:
    """Decodes a frozen segmentation into a uint8 {0, 1} mask (union of the polygons), by the
    converters' one COCO decoder (`coco_masks.decode_segmentation`).

    Raises:
        ValueError: an RLE whose size differs from (height, width) or whose runs do not cover
            exactly height*width pixels (`rle.rle_problem`).
    """
    return coco_masks.decode_segmentation(thaw_segmentation(segmentation), height, width)


def thaw_segmentation(segmentation: tuple):
    """The COCO form (polygon lists, or an RLE dict) of a `freeze_segmentation` tuple."""
    if segmentation[0] == "polygons":
        return [list(polygon) for polygon in segmentation[1]]
    _, (rle_height, rle_width), counts = segmentation
    return {"size": [rle_height, rle_width], "counts": counts if isinstance(counts, str) else list(counts)}


def decode_tfds_mask(data: bytes) -> np.ndarray:
    """Decodes a TFDS `objects/mask` PNG (1-bit, grey or RGB) into a uint8 {0, 1} mask."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(data)))
    if pixels.ndim == 3:
        pixels = pixels.any(axis=-1)
    return (pixels > 0).astype(np.uint8)


# --------------------------------------------------------------------------------- helpers
def _plan_sentences(refexp, index, where, split, report) -> tuple:
    sentences = []
    for sent_id, raw in zip(refexp["refexp_id"][index], refexp["raw"][index]):
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        if not text.strip():
            report.skip(SENTENCE, "empty sentence", f"{where} refexp {int(sent_id)}", split)
            continue
        sentences.append((int(sent_id), text))
    return tuple(sentences)


def _ref_record(ref: TfdsRef, mask: np.ndarray, image) -> schema.RefRecord:
    return schema.RefRecord(
        ref_id=ref.ref_id,
        mask=mask,
        sentences=[schema.Sentence(sent_id, text) for sent_id, text in ref.sentences],
        ann_id=ref.ref_id,
        category_id=ref.category_id,
        bbox=_pixel_box(ref, image.height, image.width),
    )


def _pixel_box(ref: TfdsRef, height: int, width: int) -> tuple:
    if not ref.bbox_is_normalized:
        return ref.bbox
    ymin, xmin, ymax, xmax = ref.bbox
    # float32 storage: round to the 1/100 pixel COCO boxes carry.
    return tuple(
        round(value, 2)
        for value in (xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height)
    )


def _coco_box(value, where: str) -> tuple:
    if not isinstance(value, list) or len(value) != 4 or not all(_is_number(v) for v in value):
        raise ConversionError(f"{where}: 'bbox' must be [x, y, width, height]; received {value!r}.")
    return tuple(float(v) for v in value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

"""ReferIt (ReferItGame) in Hu et al.'s layout (text_objseg) -> refseg-tf records.

Layout (`--data_root`, `--image_root`, `--mask_root`):

    DATA_ROOT/referit_query_trainval.json   {imcrop name: [query, ...]}   (Hu's trainval split)
    DATA_ROOT/referit_query_test.json       {imcrop name: [query, ...]}   (Hu's test split)
    DATA_ROOT/referit_imcrop.json           {image name: [imcrop name, ...]}
    DATA_ROOT/referit_bbox.json             {imcrop name: [x1, y1, x2, y2]}  (optional)
    IMAGE_ROOT/<image name>.jpg             the IAPR TC-12 photographs
    MASK_ROOT/<imcrop name>.mat             SAIAPR-12 region masks: variable `segimg_t`,
                                            the region is where `segimg_t == 0`

An imcrop name is "<image>_<region>" ("8756_2": region 2 of image 8756). The published json
files exist in two spellings, with and without file suffixes ("8756.jpg" / "8756_2.png" as
keys); both are accepted and the suffixes dropped. The bounding boxes are inclusive pixel
corners (a 480-pixel-wide image has x2 <= 479), stored as [x1, y1, x2 - x1 + 1, y2 - y1 + 1].
A region without a box gets the tight box of its mask (counted as a conversion).

As in the authors' evaluation code, an image's regions are reached through
`referit_imcrop.json`, and a region belongs to the split whose query file lists it.

Identifiers (stable under any change to the other files, so results can be compared across
conversions):
- image id: the image name as an integer ("8756" -> 8756);
- ref id: image number * 1000 + region number ("8756_2" -> 8756002);
- sentence id: ref id * 1000 + position of the query in the region's list (8756002000, ...).
Names that do not follow the numeric pattern (or regions >= 1000) get a stable 52-bit hash
id in [2**51, 2**52) instead; two names mapping to one id stop the conversion.

Skips (counted in the report, never silent): a region missing from `referit_imcrop.json`, a
missing or unreadable `.mat` file, a `.mat` without `segimg_t`, a mask whose shape differs from
the image (the message names both shapes), an empty query (that sentence only), and a region
or image left with nothing to write.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import Optional, Sequence

import numpy as np

from refseg_tf.data import schema
from refseg_tf.data.converters import images
from refseg_tf.data.converters.report import (
    IMAGE,
    REF,
    SENTENCE,
    ConversionError,
    ConversionReport,
)

DATASET_NAME = "referit"
SPLITS = ("trainval", "test")
VOCABULARY_SPLIT = "trainval"
QUERY_FILE = "referit_query_{split}.json"
IMCROP_FILE = "referit_imcrop.json"
BBOX_FILE = "referit_bbox.json"
MASK_VARIABLE = "segimg_t"
IMAGE_SUFFIX = ".jpg"
MASK_SUFFIX = ".mat"
# Ids of the numeric scheme stay far below the hashed range [2**51, 2**52), and
# sentence ids (ref id * 1000 + index) stay below 2**62.
MAX_REGION_NUMBER = 1000
MAX_QUERIES_PER_REGION = 1000
_HASH_BASE = 2**51
_NUMERIC_LIMIT = 2**40
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


@dataclasses.dataclass(frozen=True)
class ReferItRegion:
    """One region (imcrop) of a ReferIt image with its queries, as planned.

    Args:
        imcrop_name: "<image>_<region>", without suffix; the mask is `<imcrop_name>.mat`.
        ref_id: see the module docstring.
        bbox: [x, y, width, height] in pixels, or None to take the box of the mask.
        sentences: ((sent_id, text), ...) of the non-empty queries, in file order.
    """

    imcrop_name: str
    ref_id: int
    bbox: Optional[tuple]
    sentences: tuple


@dataclasses.dataclass(frozen=True)
class ReferItImage:
    """One image and its regions of one split: the item `materialize` turns into a record.

    Args:
        split: "trainval" or "test".
        image_name: the image name without suffix ("8756").
        image_id: see the module docstring.
        file_name: the image file relative to the image root ("8756.jpg").
        regions: the `ReferItRegion`s, sorted by ref id.
    """

    split: str
    image_name: str
    image_id: int
    file_name: str
    regions: tuple


class ReferItReader:
    """Reads Hu et al.'s ReferIt split (text_objseg layout) for `writer.write_dataset`.

    Follows the reader protocol of `refseg_tf.data.converters`: `plan` reads the json files
    only; `materialize` loads one image and its region masks.

    Args:
        data_root: directory with the `referit_*.json` files.
        image_root: directory with `<image name>.jpg`.
        mask_root: directory with `<imcrop name>.mat`.
        splits: which query files to convert (`referit_query_<split>.json` each).
        vocabulary_split: the split whose sentences build the vocabulary (must be in `splits`).

    Example:
        >>> reader = ReferItReader("referit/data", "referit/images", "referit/mask")
        >>> report = ConversionReport()
        >>> plan = reader.plan(report)          # {"trainval": [...], "test": [...]}
        >>> report.set_split("test")
        >>> record = reader.materialize(plan["test"][0], report)

    Reference:
        Hu, Rohrbach, Darrell 2016, "Segmentation from Natural Language Expressions", Sec. 4
        (ReferIt: 10k trainval / 10k test images; ground truth = SAIAPR-12 region masks).
    """

    name = DATASET_NAME

    def __init__(
        self,
        data_root,
        image_root,
        mask_root,
        splits: Sequence[str] = SPLITS,
        vocabulary_split: str = VOCABULARY_SPLIT,
    ):
        if vocabulary_split not in splits:
            raise ValueError(
                f"vocabulary_split {vocabulary_split!r} must be one of the splits {list(splits)}."
            )
        self.data_root = pathlib.Path(data_root)
        self.image_root = pathlib.Path(image_root)
        self.mask_root = pathlib.Path(mask_root)
        self.splits = tuple(splits)
        self.vocabulary_split = vocabulary_split

    def source_files(self, item: ReferItImage) -> list:
        """The image and mask files `materialize` reads for `item` (for the resume fingerprint)."""
        masks = [self.mask_root / (region.imcrop_name + MASK_SUFFIX) for region in item.regions]
        return [self.image_root / item.file_name, *masks]

    def options(self) -> dict:
        return {
            "format": DATASET_NAME,
            "data_root": str(self.data_root),
            "image_root": str(self.image_root),
            "mask_root": str(self.mask_root),
            "splits": list(self.splits),
            "id_scheme": "ref_id = image * 1000 + region; sent_id = ref_id * 1000 + index",
        }

    # ----------------------------------------------------------------------------- plan
    def plan(self, report: ConversionReport) -> dict:
        """Reads the json files and returns {split: [ReferItImage, ...]} sorted by image id."""
        region_to_image = self._load_region_to_image()
        boxes = self._load_boxes()
        assigned_ids = {}
        plan = {}
        for split in self.splits:
            queries = self._load_queries(split)
            plan[split] = self._plan_split(
                split, queries, region_to_image, boxes, assigned_ids, report
            )
        return plan

    def _load_region_to_image(self) -> dict:
        path = self.data_root / IMCROP_FILE
        table = _load_json_dict(path)
        region_to_image = {}
        for image_key, crops in table.items():
            image_name = _checked_name(_strip_suffix(image_key, IMAGE_SUFFIX), path, image_key)
            if not isinstance(crops, list) or not all(isinstance(c, str) for c in crops):
                raise ConversionError(
                    f"{path}: the entry of image {image_key!r} must be a list of imcrop names; "
                    f"received {crops!r}."
                )
            for crop in crops:
                crop_name = _checked_name(_strip_suffix(crop, ".png"), path, crop)
                region_to_image[crop_name] = image_name
        return region_to_image

    def _load_boxes(self) -> dict:
        path = self.data_root / BBOX_FILE
        if not path.is_file():
            return {}
        table = _load_json_dict(path)
        return {_strip_suffix(key, ".png"): (value, key) for key, value in table.items()}

    def _load_queries(self, split: str) -> dict:
        path = self.data_root / QUERY_FILE.format(split=split)
        table = _load_json_dict(path)
        queries = {}
        for key, texts in table.items():
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ConversionError(
                    f"{path}: the queries of imcrop {key!r} must be a list of strings; "
                    f"received {texts!r}."
                )
            queries[_checked_name(_strip_suffix(key, ".png"), path, key)] = texts
        return queries

    def _plan_split(self, split, queries, region_to_image, boxes, assigned_ids, report):
        query_file = QUERY_FILE.format(split=split)
        regions_by_image = {}
        images_with_queries = set()
        for crop_name in sorted(queries, key=_natural_key):
            where = f"{query_file} imcrop {crop_name}"
            image_name = region_to_image.get(crop_name)
            if image_name is None:
                report.skip(REF, "not in referit_imcrop.json", where, split=split)
                continue
            images_with_queries.add(image_name)
            ref_id = ref_id_for(crop_name)
            _claim_id(assigned_ids, ref_id, crop_name)
            sentences = _plan_sentences(ref_id, queries[crop_name], where, split, report)
            if not sentences:
                report.skip(REF, "no sentences", where, split=split)
                continue
            bbox = self._planned_box(boxes, crop_name)
            region = ReferItRegion(crop_name, ref_id, bbox, sentences)
            regions_by_image.setdefault(image_name, []).append(region)
        for image_name in sorted(images_with_queries - set(regions_by_image), key=_natural_key):
            report.skip(IMAGE, "no refs", f"{query_file} image {image_name}", split=split)
        items = [
            ReferItImage(
                split=split,
                image_name=image_name,
                image_id=image_id_for(image_name),
                file_name=image_name + IMAGE_SUFFIX,
                regions=tuple(sorted(regions, key=lambda region: region.ref_id)),
            )
            for image_name, regions in regions_by_image.items()
        ]
        return sorted(items, key=lambda item: (item.image_id, item.image_name))

    def _planned_box(self, boxes, crop_name):
        if crop_name not in boxes:
            return None
        value, key = boxes[crop_name]
        return corners_to_xywh(value, f"{self.data_root / BBOX_FILE} entry {key!r}")

    # ----------------------------------------------------------------------------- materialize
    def materialize(self, item: ReferItImage, report: ConversionReport):
        """Loads the image and the region masks of one planned item; None if nothing is left."""
        where = f"ReferIt image {item.image_name} ({item.split})"
        image = images.load_image(self.image_root, item.file_name, report, where)
        if image is None:
            return None
        refs = []
        for region in item.regions:
            mask = self._load_mask(region, image, report)
            if mask is None:
                continue
            refs.append(_ref_record(region, mask, report))
        if not refs:
            report.skip(IMAGE, "no refs left", f"{self.image_root / item.file_name} ({where})")
            return None
        return image.to_record(item.image_id, item.file_name, refs)

    def _load_mask(self, region: ReferItRegion, image, report) -> Optional[np.ndarray]:
        where = f"imcrop {region.imcrop_name}"
        path = images.resolve_image_path(self.mask_root, region.imcrop_name + MASK_SUFFIX, where)
        location = f"{path} ({where})"
        if not path.is_file():
            report.skip(REF, "missing mask file", location)
            return None
        segmentation = _read_mask_variable(path, location, report)
        if segmentation is None:
            return None
        image_shape = (image.height, image.width)
        if segmentation.shape != image_shape:
            report.skip(
                REF,
                "mask shape mismatch",
                f"{location}: {MASK_VARIABLE} has shape {segmentation.shape}, the image "
                f"has shape {image_shape} (height, width)",
            )
            return None
        return (segmentation == 0).astype(np.uint8)


def make_reader(flags) -> ReferItReader:
    """Builds a `ReferItReader` from the `refseg_tf.convert` flags.

    Uses `--data_root`, `--image_root` and `--mask_root`; each must name an existing directory.
    """
    names = ("data_root", "image_root", "mask_root")
    roots = {flag: getattr(flags, flag, None) for flag in names}
    missing = [f"--{flag}" for flag in names if not roots[flag]]
    if missing:
        raise ValueError(f"--format=referit needs {', '.join(missing)}.")
    for flag, value in roots.items():
        if not os.path.isdir(value):
            raise ValueError(f"--{flag}={value!r} is not a directory.")
    return ReferItReader(**roots)


# --------------------------------------------------------------------------------- ids
def image_id_for(image_name: str) -> int:
    """The image id: the image name as an integer, or a stable hash id for other names."""
    if image_name.isdigit() and int(image_name) < _NUMERIC_LIMIT:
        return int(image_name)
    return _hash_id(image_name)


def ref_id_for(imcrop_name: str) -> int:
    """The ref id of an imcrop: image * 1000 + region ("8756_2" -> 8756002), else a hash id."""
    match = re.fullmatch(r"(\d+)_(\d+)", imcrop_name)
    if match:
        image_number, region_number = int(match.group(1)), int(match.group(2))
        if region_number < MAX_REGION_NUMBER and image_number < _NUMERIC_LIMIT:
            return image_number * MAX_REGION_NUMBER + region_number
    return _hash_id(imcrop_name)


def sent_id_for(ref_id: int, query_index: int) -> int:
    """The sentence id of the `query_index`-th query of a region: ref id * 1000 + index."""
    if not 0 <= query_index < MAX_QUERIES_PER_REGION:
        raise ConversionError(
            f"Ref {ref_id} has a query at position {query_index}; at most "
            f"{MAX_QUERIES_PER_REGION} queries per region fit the sentence id scheme."
        )
    return ref_id * MAX_QUERIES_PER_REGION + query_index


def _hash_id(name: str) -> int:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return _HASH_BASE + int.from_bytes(digest[:8], "big") % _HASH_BASE


def _claim_id(assigned_ids: dict, ref_id: int, crop_name: str) -> None:
    owner = assigned_ids.setdefault(ref_id, crop_name)
    if owner != crop_name:
        raise ConversionError(
            f"Imcrops {owner!r} and {crop_name!r} map to the same ref id {ref_id}; rename one."
        )


# --------------------------------------------------------------------------------- helpers
def corners_to_xywh(value, where: str) -> tuple:
    """[x1, y1, x2, y2] with inclusive corners -> (x, y, width, height) in pixels."""
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ConversionError(f"{where}: a box must be [x1, y1, x2, y2]; received {value!r}.")
    x1, y1, x2, y2 = (float(v) for v in value)
    if x2 < x1 or y2 < y1:
        raise ConversionError(f"{where}: box corners out of order: {value!r}.")
    return (x1, y1, x2 - x1 + 1.0, y2 - y1 + 1.0)


def mask_box(mask: np.ndarray) -> tuple:
    """The tight (x, y, width, height) box of the non-zero pixels (zeros for an empty mask)."""
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    x, y = float(columns[0]), float(rows[0])
    return (x, y, float(columns[-1]) - x + 1.0, float(rows[-1]) - y + 1.0)


def _ref_record(region: ReferItRegion, mask: np.ndarray, report) -> schema.RefRecord:
    bbox = region.bbox
    if bbox is None:
        bbox = mask_box(mask)
        report.convert(REF, "bbox from mask", f"imcrop {region.imcrop_name} not in {BBOX_FILE}")
    return schema.RefRecord(
        ref_id=region.ref_id,
        mask=mask,
        sentences=[schema.Sentence(sent_id, text) for sent_id, text in region.sentences],
        bbox=bbox,
    )


def _plan_sentences(ref_id, texts, where, split, report) -> tuple:
    sentences = []
    for index, text in enumerate(texts):
        if not text.strip():
            report.skip(SENTENCE, "empty sentence", f"{where} query {index}", split=split)
            continue
        sentences.append((sent_id_for(ref_id, index), text))
    return tuple(sentences)


def _read_mask_variable(path, location, report) -> Optional[np.ndarray]:
    import scipy.io
    from scipy.io.matlab import MatReadError

    try:
        contents = scipy.io.loadmat(str(path), variable_names=[MASK_VARIABLE])
    except (OSError, ValueError, TypeError, EOFError, NotImplementedError, MatReadError) as error:
        report.skip(REF, "unreadable mask file", f"{location}: {error}")
        return None
    if MASK_VARIABLE not in contents:
        report.skip(REF, "no segimg_t", f"{location}: the file holds no variable {MASK_VARIABLE}")
        return None
    segmentation = np.asarray(contents[MASK_VARIABLE])
    if segmentation.ndim != 2 or not np.issubdtype(segmentation.dtype, np.number):
        report.skip(
            REF,
            "mask not a 2-D array",
            f"{location}: {MASK_VARIABLE} has shape {segmentation.shape}, "
            f"dtype {segmentation.dtype}",
        )
        return None
    return segmentation


def _load_json_dict(path: pathlib.Path) -> dict:
    if not path.is_file():
        raise ConversionError(f"Missing ReferIt annotation file {path}.")
    try:
        with open(path, encoding="utf-8") as file:
            table = json.load(file)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ConversionError(f"Cannot read {path} as JSON: {error}") from error
    if not isinstance(table, dict):
        raise ConversionError(
            f"{path} must hold a JSON object (name -> list); received {type(table).__name__}."
        )
    return table


def _strip_suffix(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.lower().endswith(suffix) else name


def _checked_name(name: str, path, key) -> str:
    # Names become file names under the roots: refuse anything that could leave them.
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ConversionError(
            f"{path}: {key!r} is not a valid ReferIt name (letters, digits, '_', '-', '.'; "
            f"no path separators or '..')."
        )
    return name


def _natural_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))

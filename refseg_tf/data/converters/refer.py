"""Reader for the refer format: RefCOCO, RefCOCO+, RefCOCOg (and the synthetic generator's output).

Input layout (as the `refer` API of lichengunc/refer expects it):

    DATA_ROOT/<dataset>/instances.json      COCO images, annotations (segmentation), categories
    DATA_ROOT/<dataset>/refs(<split_by>).p  pickled list of refs (ref_id, ann_id, image_id,
                                            split, sentences [{sent_id, sent, raw, tokens}])
    IMAGE_ROOT/<file_name of instances.json>

`IMAGE_ROOT` defaults to `DATA_ROOT/images` (where `refseg-synthetic` writes its images). For
the COCO datasets pass the COCO train2014 folder, e.g. `--image_root=/data/coco/train2014`.

One planned item is one image of one split with all its refs of that split. Masks are decoded
with pycocotools from the annotation the ref points to (polygons, compressed or uncompressed RLE;
the union of all parts, binarised: the refer API's `getMask` sums overlapping polygons).

Sentence text: the `sent` field by default (the cleaned, lower-cased text the refer API and the
authors' batch builders used), `raw` (the annotators' original text) with
`sentence_field="raw"`; when the chosen field is absent the other one is used.

Bad input, as counted skips (see `report.py`): an annotation without (usable) segmentation, a
sentence that is empty or only whitespace, a ref whose annotation or image is missing, a ref
whose annotation lies on another image, a duplicate ref id, an RLE whose runs do not cover
exactly height*width pixels (`rle.py`), a mask that decodes empty; a
missing, corrupt or wrongly sized image file. Malformed files (invalid JSON, a missing key, a
wrong type) raise `ConversionError` naming the file and field.
"""

import dataclasses
import json
import os
import pathlib
from typing import Optional

import numpy as np

from refseg_tf.data import schema
from refseg_tf.data.converters import images
from refseg_tf.data.converters.report import IMAGE, REF, SENTENCE, ConversionError
from refseg_tf.data.converters.coco_masks import (  # noqa: F401  (re-exported)
    decode_segmentation,
    segmentation_problem,
    usable_polygons,
)
from refseg_tf.data.converters.safe_pickle import load_pickle

KNOWN_DATASETS = {
    "refcoco": ("unc", "google"),
    "refcoco+": ("unc",),
    "refcocog": ("google", "umd"),
    "refclef": ("unc", "berkeley"),
    "synthetic": ("unc",),
}
SENTENCE_FIELDS = ("sent", "raw")
# Known split names first, in this order; any others follow alphabetically.
SPLIT_ORDER = ("train", "val", "test", "testA", "testB", "testC")


@dataclasses.dataclass(frozen=True)
class ReferSentence:
    sent_id: int
    text: str


@dataclasses.dataclass(frozen=True)
class ReferRef:
    """A planned ref: everything needed to decode its mask, without pixels."""

    ref_id: int
    ann_id: int
    category_id: int
    bbox: tuple
    segmentation: object  # COCO polygons (list of lists) or RLE (dict), as in instances.json
    sentences: tuple
    where: str  # names the refs file and record, for messages


@dataclasses.dataclass(frozen=True)
class ReferImageItem:
    """A planned image of one split with every ref of that split on it."""

    split: str
    image_id: int
    file_name: str
    height: int
    width: int
    refs: tuple


class ReferReader:
    """Reads a refer-format dataset (see the module docstring) for `writer.write_dataset`.

    Args:
        data_root: the folder holding `<dataset>/instances.json` and `<dataset>/refs(<split_by>).p`.
        dataset: "refcoco", "refcoco+", "refcocog", "synthetic" (any folder name works).
        split_by: "unc", "google" or "umd" (selects `refs(<split_by>).p`).
        image_root: folder of the images named in instances.json; default `data_root/images`.
        sentence_field: "sent" (default) or "raw".
        max_pickle_objects: the objects the refs pickle may expand to (None: the default of
            `safe_pickle.PickleBudget.for_data`).

    Example:
        >>> reader = ReferReader("/data/refer", "refcoco", "unc", image_root="/data/coco/train2014")
        >>> write_dataset(reader, "/data/tfrecords/refcoco_unc")  # doctest: +SKIP

    Reference:
        Yu et al. 2016 (RefCOCO, RefCOCO+), Mao et al. 2016 / Nagaraja et al. 2016 (RefCOCOg);
        data layout of lichengunc/refer; the expected counts are those of the dataset papers
        (Yu et al. 2016 Sec. 3, Mao et al. 2016 Sec. 3).
    """

    vocabulary_split = "train"

    def __init__(
        self,
        data_root,
        dataset: str,
        split_by: str,
        image_root=None,
        sentence_field: str = "sent",
        max_pickle_objects: Optional[int] = None,
    ):
        if sentence_field not in SENTENCE_FIELDS:
            raise ValueError(
                f"sentence_field must be one of {SENTENCE_FIELDS}; received {sentence_field!r}."
            )
        if not dataset or not split_by:
            raise ValueError(
                f"dataset and split_by are required; received {dataset!r}, {split_by!r}."
            )
        self.data_root = os.fspath(data_root)
        self.dataset = dataset
        self.split_by = split_by
        self.image_root = (
            os.fspath(image_root) if image_root else os.path.join(self.data_root, "images")
        )
        self.sentence_field = sentence_field
        self.max_pickle_objects = max_pickle_objects
        self.name = f"{dataset}_{split_by}"

    @property
    def instances_path(self) -> str:
        return os.path.join(self.data_root, self.dataset, "instances.json")

    @property
    def refs_path(self) -> str:
        return os.path.join(self.data_root, self.dataset, f"refs({self.split_by}).p")

    def source_files(self, item: ReferImageItem) -> list:
        """The image file `materialize` reads for `item` (for the resume fingerprint).

        The annotations need no stamp: the item itself holds every segmentation and sentence.
        """
        return [os.path.join(self.image_root, item.file_name)]

    def options(self) -> dict:
        return {
            "format": "refer",
            "data_root": self.data_root,
            "dataset": self.dataset,
            "split_by": self.split_by,
            "image_root": self.image_root,
            "sentence_field": self.sentence_field,
        }

    # ----------------------------------------------------------------------------- plan
    def plan(self, report) -> dict:
        """Groups the refs by (split, image); see the reader protocol."""
        self._check_inputs_exist()
        image_table, annotations = _load_instances(self.instances_path)
        refs = load_pickle(self.refs_path, max_objects=self.max_pickle_objects)
        if not isinstance(refs, list):
            raise ConversionError(
                f"{self.refs_path}: expected a list of refs, found {type(refs).__name__}."
            )
        refs_name = os.path.basename(self.refs_path)
        grouped, seen_ref_ids, named_images = {}, set(), set()
        for index, ref in enumerate(refs):
            split, image_id, planned = self._plan_ref(ref, index, refs_name, annotations, report)
            named_images.add((split, image_id))
            if planned is None:
                continue
            if planned.ref_id in seen_ref_ids:
                report.skip(REF, "duplicate ref_id", planned.where, split=split)
            elif image_id not in image_table:
                report.skip(REF, "image missing from instances.json", planned.where, split=split)
            else:
                seen_ref_ids.add(planned.ref_id)
                grouped.setdefault(split, {}).setdefault(image_id, []).append(planned)
        _report_lost_images(named_images, grouped, image_table, refs_name, report)
        return {
            split: [
                ReferImageItem(split, image_id, *image_table[image_id], refs=tuple(image_refs))
                for image_id, image_refs in sorted(grouped[split].items())
            ]
            for split in sorted(grouped, key=_split_sort_key)
        }

    def _check_inputs_exist(self):
        folder = os.path.join(self.data_root, self.dataset)
        if not os.path.isdir(folder):
            raise ConversionError(
                f"Dataset folder {folder} does not exist (--data_root={self.data_root}, "
                f"--dataset={self.dataset})."
            )
        if not os.path.isfile(self.instances_path):
            raise ConversionError(f"{self.instances_path} does not exist.")
        if not os.path.isfile(self.refs_path):
            available = sorted(p.name for p in pathlib.Path(folder).glob("refs(*).p"))
            raise ConversionError(
                f"{self.refs_path} does not exist (--split_by={self.split_by}); refs files in "
                f"{folder}: {available or 'none'}."
            )

    def _plan_ref(self, ref, index, refs_name, annotations, report):
        """Validates one ref: (split, image_id, ReferRef), or a None ref after a counted skip."""
        record = f"{refs_name} ref #{index}"
        if not isinstance(ref, dict):
            raise ConversionError(f"{record}: expected a dict, found {type(ref).__name__}.")
        ref_id = _int_field(ref, "ref_id", record)
        record = f"{refs_name} ref_id {ref_id}"
        ann_id = _int_field(ref, "ann_id", record)
        image_id = _int_field(ref, "image_id", record)
        split = _field(ref, "split", record, str)
        where = f"{record} (ann_id {ann_id}, image_id {image_id})"
        sentences = self._plan_sentences(
            _field(ref, "sentences", record, list), where, split, report
        )
        annotation = annotations.get(ann_id)
        problem = "no sentences" if not sentences else _annotation_problem(annotation, image_id)
        if problem is not None:
            report.skip(REF, problem, where, split=split)
            return split, image_id, None
        category_id = annotation.get("category_id")
        if category_id is None:
            category_id = ref.get("category_id", -1)
        planned = ReferRef(
            ref_id=ref_id,
            ann_id=ann_id,
            category_id=int(category_id),
            bbox=_bbox(annotation.get("bbox")),
            segmentation=annotation["segmentation"],
            sentences=tuple(sentences),
            where=where,
        )
        return split, image_id, planned

    def _plan_sentences(self, sentences, where, split, report):
        kept = []
        for position, sentence in enumerate(sentences):
            record = f"{where} sentence #{position}"
            if not isinstance(sentence, dict):
                raise ConversionError(
                    f"{record}: expected a dict, found {type(sentence).__name__}."
                )
            sent_id = _int_field(sentence, "sent_id", record)
            text = self._sentence_text(sentence, record)
            if not text.strip():
                report.skip(SENTENCE, "empty sentence", f"{where} sent_id {sent_id}", split=split)
                continue
            kept.append(ReferSentence(sent_id, text.strip()))
        return kept

    def _sentence_text(self, sentence, record):
        preferred_first = sorted(SENTENCE_FIELDS, key=lambda field: field != self.sentence_field)
        for field in preferred_first:
            if field in sentence:
                text = sentence[field]
                if not isinstance(text, str):
                    raise ConversionError(
                        f"{record}: field '{field}' must be text, found {type(text).__name__}."
                    )
                return text
        raise ConversionError(f"{record}: has neither of the fields {SENTENCE_FIELDS}.")

    # ----------------------------------------------------------------------------- materialize
    def materialize(self, item: ReferImageItem, report) -> Optional[schema.ImageRecord]:
        """Loads the image and decodes every ref's mask; see the reader protocol."""
        where = f"instances.json image_id {item.image_id}"
        loaded = images.load_image(self.image_root, item.file_name, report, where)
        if loaded is None:
            return None
        if (loaded.height, loaded.width) != (item.height, item.width):
            report.skip(
                IMAGE,
                "image size differs from instances.json",
                f"{item.file_name} ({where}): file {loaded.height}x{loaded.width}, "
                f"instances.json {item.height}x{item.width}",
            )
            return None
        refs = [self._materialize_ref(ref, item, report) for ref in item.refs]
        refs = [ref for ref in refs if ref is not None]
        if not refs:
            report.skip(IMAGE, "no usable refs", f"{item.file_name} ({where})")
            return None
        return loaded.to_record(item.image_id, item.file_name, refs)

    def _materialize_ref(self, ref: ReferRef, item: ReferImageItem, report):
        try:
            mask = decode_segmentation(ref.segmentation, item.height, item.width)
        except ValueError as error:
            report.skip(REF, "undecodable segmentation", f"{ref.where}: {error}")
            return None
        if not mask.any():
            report.skip(REF, "empty mask", ref.where)
            return None
        bbox = ref.bbox if ref.bbox is not None else mask_bbox(mask)
        return schema.RefRecord(
            ref_id=ref.ref_id,
            mask=mask,
            sentences=[schema.Sentence(s.sent_id, s.text) for s in ref.sentences],
            ann_id=ref.ann_id,
            category_id=ref.category_id,
            bbox=bbox,
        )


def make_reader(flags) -> ReferReader:
    """The CLI factory: `--data_root --dataset --split_by [--image_root] [--sentence_field]`."""
    if not getattr(flags, "data_root", None):
        raise ValueError(
            "--format=refer needs --data_root (the folder holding <dataset>/instances.json)."
        )
    return ReferReader(
        data_root=flags.data_root,
        dataset=flags.dataset,
        split_by=flags.split_by,
        image_root=getattr(flags, "image_root", None),
        sentence_field=getattr(flags, "sentence_field", None) or "sent",
        max_pickle_objects=getattr(flags, "max_pickle_objects", None) or None,
    )


def _annotation_problem(annotation, image_id) -> Optional[str]:
    if annotation is None:
        return "annotation missing"
    if annotation["image_id"] != image_id:
        return "annotation on another image"
    return segmentation_problem(annotation.get("segmentation"))


def _report_lost_images(named_images, grouped, image_table, refs_name, report):
    """Counts each image the refs name but that ends with no ref as one skipped image.

    These count towards the skip budget, so a wrong instances.json (images or segmentations
    missing) stops the run instead of yielding an empty split.
    """
    for split, image_id in sorted(named_images, key=lambda key: (key[0], key[1])):
        if image_id in grouped.get(split, {}):
            continue
        reason = (
            "image missing from instances.json" if image_id not in image_table else "no usable refs"
        )
        report.skip(IMAGE, reason, f"{refs_name} image_id {image_id}", split=split)


def mask_bbox(mask: np.ndarray) -> tuple:
    """[x, y, w, h] of the foreground of a non-empty mask, in pixels."""
    rows, cols = np.nonzero(mask)
    x0, y0 = int(cols.min()), int(rows.min())
    return (float(x0), float(y0), float(cols.max() - x0 + 1), float(rows.max() - y0 + 1))


# --------------------------------------------------------------------------------- parsing
def _load_instances(path):
    """Returns ({image_id: (file_name, height, width)}, {ann_id: annotation})."""
    try:
        with open(path, "rb") as file:
            data = json.load(file)
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path}: invalid JSON ({error}).") from error
    except RecursionError:
        raise ConversionError(f"{path}: JSON nested too deeply to be COCO instances.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConversionError(f"{path}: cannot be read ({error}).") from error
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object, found {type(data).__name__}.")
    image_table = {}
    for index, image in enumerate(_field(data, "images", path, list)):
        record = f"{path} images[{index}]"
        image_id = _int_field(image, "id", record)
        image_table[image_id] = (
            _field(image, "file_name", record, str),
            _int_field(image, "height", record),
            _int_field(image, "width", record),
        )
    annotations = {}
    for index, annotation in enumerate(_field(data, "annotations", path, list)):
        record = f"{path} annotations[{index}]"
        ann_id = _int_field(annotation, "id", record)
        annotations[ann_id] = {
            "image_id": _int_field(annotation, "image_id", record),
            "segmentation": annotation.get("segmentation"),
            "bbox": annotation.get("bbox"),
            "category_id": annotation.get("category_id"),
        }
    return image_table, annotations


def _field(record, key, where, expected_type):
    if not isinstance(record, dict):
        raise ConversionError(
            f"{where}: expected an object with the field '{key}', found {type(record).__name__}."
        )
    if key not in record:
        raise ConversionError(f"{where}: missing the field '{key}'.")
    value = record[key]
    if expected_type is int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConversionError(f"{where}: field '{key}' must be an integer, found {value!r}.")
    elif not isinstance(value, expected_type):
        raise ConversionError(
            f"{where}: field '{key}' must be {expected_type.__name__}, "
            f"found {type(value).__name__}."
        )
    return value


def _int_field(record, key, where) -> int:
    return int(_field(record, key, where, int))


def _bbox(value) -> Optional[tuple]:
    if isinstance(value, (list, tuple)) and len(value) == 4:
        try:
            return tuple(float(v) for v in value)
        except (TypeError, ValueError):
            return None
    return None


def _split_sort_key(split: str):
    if split in SPLIT_ORDER:
        return (0, SPLIT_ORDER.index(split), split)
    return (1, 0, split)

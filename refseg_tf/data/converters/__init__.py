"""Converters from the public referring-segmentation formats to the refseg-tf TFRecord schema.

Modules:
    report:       `ConversionReport` (counted skips and conversions, skip budget),
                  `ConversionError`, `SkipBudgetExceeded`.
    images:       `load_image(root, file_name, report, where) -> LoadedImage | None` (path
                  safety, RGB normalisation; `LoadedImage(encoded, image_format, height, width)`),
                  `normalize_image_bytes(data, source, report, where)` for bytes already in memory,
                  `resolve_image_path(root, file_name, where)` for other files under a root.
    safe_pickle:  `load_pickle(path)`: a restricted unpickler for the refs(<split_by>).p files.
    writer:       `write_dataset(reader, output_dir, ...)`: shards, vocab.txt, metadata.json.
    refer:        the refer format (RefCOCO, RefCOCO+, RefCOCOg, synthetic); also
                  `decode_segmentation(segmentation, height, width)` (COCO polygons / RLE ->
                  binary mask) and `segmentation_problem(segmentation)` for other COCO readers.
    referit:      ReferIt / ReferItGame (Hu et al.'s layout, SAIAPR-12 masks).
    tfds_refcoco: TFDS `ref_coco` joined with COCO instances for the masks.

The `refseg-convert` command (`refseg_tf/convert.py`) imports
`refseg_tf.data.converters.<format module>`, calls its `make_reader(flags)` and hands the reader
to `writer.write_dataset`.

Reader protocol
---------------
A format module defines a reader class and a module-level factory:

`make_reader(flags) -> reader`
    `flags` is the parsed absl `FLAGS` of `refseg_tf/convert.py` (any object with the same
    attributes works, e.g. `types.SimpleNamespace` in tests). Check the flags the format needs
    and raise `ValueError` naming the flag when one is missing or wrong. All flags are defined in
    `convert.py`; a format needing a new flag asks for it there.

A reader has:

`name: str`
    The dataset name written to metadata.json, e.g. "refcoco_unc", "referit".

`vocabulary_split: str`
    The split whose sentences build `vocab.txt` ("train" for the refer datasets, "trainval"
    for ReferIt). It must be one of the keys `plan` returns.

`plan(report) -> dict[str, list[item]]`
    Light and deterministic: reads annotation files only (ids, file names, polygons, sentence
    text), never pixels. Returns the items of each split in a fixed order (sort by image id).
    One item becomes one `tf.train.Example`: one image with every ref of one split on it.
    Requirements on items:
      * picklable, and self-contained: an item carries everything `materialize` needs except
        the pixels (file names, segmentation polygons/RLE or mask file names, sentences), so
        `materialize` never needs state from `plan` and worker processes receive items by pickling;
      * `repr(item)` is deterministic (plain tuples, dicts, dataclasses or namedtuples of ints,
        floats and strings; no object addresses): the writer fingerprints shards with it to
        decide whether a finished shard from an earlier run can be kept.
    Problems found while planning are reported with the split given explicitly:
    `report.skip("ref", "annotation missing", "refs(unc).p ref_id 7 (ann_id 99)", split="val")`.
    An image dropped while planning is reported as kind "image" so the skip budget counts it.
    Malformed files (bad JSON, missing keys, wrong types) raise `report.ConversionError` naming
    the file and the field.

`materialize(item, report) -> schema.ImageRecord | None`
    Loads the image with `images.load_image` (or `images.normalize_image_bytes`), decodes the
    masks (binarised, shape [height, width] of the stored image) and builds the
    `schema.ImageRecord`. `report.split` is already set to the item's split. If the item must
    be skipped, call `report.skip("image", reason, where)` and return None (`load_image` already
    does this for missing or corrupt files). Refs or sentences dropped here are reported as
    kinds "ref" / "sentence"; if no ref is left, report the image skip and return None.
    Path escapes and other unsafe input raise `ConversionError` (never a skip).

`source_files(item) -> list of paths` (optional)
    The files `materialize` reads for `item` besides what the item holds (image, mask files).
    Their sizes and modification times go into the shard fingerprint, so a re-run rebuilds the
    shards whose source files changed (a corrupt image fixed, a mask file replaced).

`options() -> dict`
    JSON-serialisable options the conversion depended on (dataset, split_by, roots as given,
    ...). They go into metadata.json and into the shard fingerprint.

Kinds and reasons: use `report.IMAGE`, `report.REF`, `report.SENTENCE`; reasons are short stable
phrases ("missing file", "corrupt image", "no segmentation", "empty sentence", "annotation missing")
because the counts are grouped by them; put ids and file names in `where`, never in the reason.
"""

from refseg_tf.data.converters.report import (
    ConversionError,
    ConversionReport,
    SkipBudgetExceeded,
)

__all__ = ["ConversionError", "ConversionReport", "SkipBudgetExceeded"]

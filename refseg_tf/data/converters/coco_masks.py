"""The COCO segmentation decoder of every converter: polygons or RLE -> a binary mask.

`segmentation_problem` says why a segmentation cannot be decoded (a counted skip reason);
`decode_segmentation` decodes one, checking its size against the image and its RLE runs
(`rle.rle_problem`) before pycocotools reads them. The refer converter reads COCO
`instances.json` segmentations directly, the TFDS converter its frozen form
(`tfds_refcoco.freeze_segmentation`) through `thaw`.
"""

from typing import Optional

import numpy as np

from refseg_tf.data.converters.rle import rle_problem

_MIN_POLYGON_COORDINATES = 6  # three points; pycocotools reads a 4-number list as a box


def segmentation_problem(segmentation) -> Optional[str]:
    """None if `segmentation` looks decodable, else a short skip reason."""
    if segmentation is None or (isinstance(segmentation, (list, dict)) and not segmentation):
        return "no segmentation"
    if isinstance(segmentation, dict):
        counts, size = segmentation.get("counts"), segmentation.get("size")
        if not isinstance(counts, (str, bytes, list)) or not _is_size(size):
            return "invalid segmentation"
        return None
    if isinstance(segmentation, list):
        if not all(_is_number_list(p) for p in segmentation):
            return "invalid segmentation"
        if not usable_polygons(segmentation):
            return "degenerate polygons"
        return None
    return "invalid segmentation"


def usable_polygons(polygons) -> list:
    """The polygons with at least three points (COCO data has a few two-point ones)."""
    return [
        list(map(float, p))
        for p in polygons
        if len(p) >= _MIN_POLYGON_COORDINATES and len(p) % 2 == 0
    ]


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """Decodes COCO polygons or RLE into a binary uint8 mask [height, width].

    All parts are united (a pixel covered by several polygons is 1, not their count).

    Raises:
        ValueError: the segmentation is malformed, its size differs from (height, width), or
            its RLE runs do not cover exactly height*width pixels (`rle.rle_problem`).
    """
    from pycocotools import mask as coco_mask

    problem = segmentation_problem(segmentation)
    if problem is not None:
        raise ValueError(problem)
    if isinstance(segmentation, list):
        rles = coco_mask.frPyObjects(usable_polygons(segmentation), height, width)
        rle = coco_mask.merge(rles)
    else:
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image size {[height, width]}")
        counts = segmentation["counts"]
        problem = rle_problem(counts, height, width)
        if problem is not None:  # pycocotools would decode it from uninitialised memory
            raise ValueError(problem)
        if isinstance(counts, list):
            rle = coco_mask.frPyObjects({"size": size, "counts": counts}, height, width)
        else:
            rle = {
                "size": size,
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
            }
    try:
        mask = coco_mask.decode(rle)
    except Exception as error:  # pycocotools raises bare Exceptions for bad RLE strings
        raise ValueError(f"pycocotools could not decode it ({error})") from error
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != (height, width):
        raise ValueError(f"decoded mask shape {mask.shape} differs from {(height, width)}")
    return (mask > 0).astype(np.uint8)


def _is_number_list(values) -> bool:
    return isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    )


def _is_size(size) -> bool:
    return (
        isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size)
    )

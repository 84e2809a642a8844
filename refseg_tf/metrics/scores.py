"""Referring-segmentation scores in plain numpy, computed at the original image resolution.

The three numbers every paper of this family reports (Hu et al. 2016 Sec. 4; Liu et al. 2017
Sec. 4; Li et al. 2018 Sec. 4):

- **overall IoU**: the sum of intersections over the sum of unions across the whole split (what
  Hu, RMI and RRN put in their tables); large objects weigh more.
- **mean IoU**: the per-sample IoU averaged over samples (what MCN/LTS report); every sample
  weighs the same. The two differ, so both are always printed, named unambiguously.
- **precision@X**: the share of samples whose IoU is at least X (IoU >= X counts, as in the
  authors' evaluation code), for X in 0.5 .. 0.9.

Convention for degenerate samples: a sample whose prediction **and** ground truth are both empty
has intersection 0 and union 0; its IoU is defined as 1.0 (the prediction is exactly right). The
published datasets always have a non-empty ground truth, so this only matters for synthetic or
filtered data. Such a sample adds nothing to the overall IoU sums.

No TensorFlow here: this module must stay importable without it.
"""

import math
import os
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

from refseg_tf.files import atomic_write_json

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)

# Inclusive (low, high) word-count ranges of RMI (Liu et al. 2017) Tables 2-5. Lengths above the
# last upper bound are counted in the last bucket, lengths below the first lower bound in the first.
LENGTH_BUCKETS = {
    "refcocog": ((1, 5), (6, 7), (8, 10), (11, 20)),
    "unc": ((1, 2), (3, 3), (4, 5), (6, 20)),
    "referit": ((1, 1), (2, 2), (3, 4), (5, 20)),
}

# Name prefixes (after lower-casing and dropping "-", "_", " ") mapped to a LENGTH_BUCKETS key.
# Order matters: "refcocog" must be tried before "refcoco".
_DATASET_PREFIXES = (
    ("refcocog", "refcocog"),
    ("gref", "refcocog"),
    ("google", "refcocog"),
    ("referit", "referit"),
    ("refcoco", "unc"),
    ("unc", "unc"),
    ("synthetic", "unc"),
)


def precision_key(threshold: float) -> str:
    """The score name of one IoU threshold, e.g. `precision_key(0.5) == "precision@0.5"`."""
    return f"precision@{float(threshold):g}"


def _as_binary(array: Any, name: str) -> np.ndarray:
    """Boolean view of a mask; rejects values other than 0/1 (e.g. probabilities or 0/255)."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.number)):
        raise ValueError(f"{name} must be a numeric or boolean array, got dtype {array.dtype}")
    if np.any((array != 0) & (array != 1)):
        bad = array[(array != 0) & (array != 1)].flat[0]
        raise ValueError(
            f"{name} must be binary (values 0 and 1 only); found the value {bad!r}. "
            "Threshold probabilities or logits first, and divide 0/255 masks by 255."
        )
    return array.astype(bool)


def intersection_union(pred: Any, gt: Any) -> tuple[int, int]:
    """Pixel counts of `pred AND gt` and `pred OR gt` for one sample.

    Args:
        pred: binary prediction (bool, or numbers in {0, 1}), at the ground truth's resolution
            (the original image size, after undoing the letterbox).
        gt: binary ground-truth mask of the same shape.

    Returns:
        `(intersection, union)` as Python ints.

    Raises:
        ValueError: the shapes differ (both are named) or a value is not 0/1.

    Example:
        >>> intersection_union([[1, 1], [0, 0]], [[1, 0], [1, 0]])
        (1, 3)
    """
    pred_bool = _as_binary(pred, "pred")
    gt_bool = _as_binary(gt, "gt")
    if pred_bool.shape != gt_bool.shape:
        raise ValueError(
            f"pred and gt must have the same shape; got pred {pred_bool.shape} and gt "
            f"{gt_bool.shape}. Resize the prediction to the ground truth's size first."
        )
    intersection = int(np.count_nonzero(pred_bool & gt_bool))
    union = int(np.count_nonzero(pred_bool | gt_bool))
    return intersection, union


def _validated_counts(intersections: Any, unions: Any) -> tuple[np.ndarray, np.ndarray]:
    intersections = np.asarray(intersections, dtype=np.float64).reshape(-1)
    unions = np.asarray(unions, dtype=np.float64).reshape(-1)
    if intersections.shape != unions.shape:
        raise ValueError(
            f"intersections and unions must have the same length; got {intersections.size} "
            f"and {unions.size}"
        )
    if not (np.all(np.isfinite(intersections)) and np.all(np.isfinite(unions))):
        raise ValueError("intersections and unions must be finite")
    if np.any(intersections < 0):
        raise ValueError("intersections must be non-negative")
    bad = np.flatnonzero(intersections > unions)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"an intersection cannot exceed its union; sample {i} has intersection "
            f"{intersections[i]:g} and union {unions[i]:g}"
        )
    return intersections, unions


def per_sample_iou(intersections: Any, unions: Any) -> np.ndarray:
    """Per-sample IoU `I / U`, with 1.0 where the union is empty (empty prediction and GT)."""
    intersections, unions = _validated_counts(intersections, unions)
    return np.divide(
        intersections, unions, out=np.ones_like(intersections), where=unions > 0
    )


def scores_from_iou(
    intersections: Any, unions: Any, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[str, float]:
    """Overall IoU, mean IoU and precision@X from per-sample intersections and unions.

    Args:
        intersections: per-sample intersection pixel counts, shape [N].
        unions: per-sample union pixel counts, shape [N].
        thresholds: IoU thresholds X for "precision@X" (a sample counts when IoU >= X).

    Returns:
        `{"overall_iou": sum I / sum U, "mean_iou": mean of I / U, "precision@0.5": ..., ...,
        "count": N}` with fractions in [0, 1]. With N = 0 every score is NaN (e.g. an empty
        length bucket). A sample with I = U = 0 has IoU 1.0 (see the module docstring); if every
        union is 0 the overall IoU is 1.0 too.

    Example:
        >>> scores_from_iou([3, 0], [4, 2])["overall_iou"]
        0.5
    """
    intersections, unions = _validated_counts(intersections, unions)
    for threshold in thresholds:
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"IoU thresholds must lie in [0, 1]; got {threshold}")
    count = int(intersections.size)
    if count == 0:
        scores = {"overall_iou": math.nan, "mean_iou": math.nan}
        scores.update({precision_key(t): math.nan for t in thresholds})
        scores["count"] = 0
        return scores
    ious = per_sample_iou(intersections, unions)
    total_union = float(unions.sum())
    overall = float(intersections.sum()) / total_union if total_union > 0 else 1.0
    scores = {"overall_iou": overall, "mean_iou": float(ious.mean())}
    for threshold in thresholds:
        scores[precision_key(threshold)] = float(np.mean(ious >= float(threshold)))
    scores["count"] = count
    return scores


def _validated_buckets(buckets: Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """Checks that buckets are inclusive (low, high) int ranges, sorted and contiguous."""
    result = tuple((int(low), int(high)) for low, high in buckets)
    if not result:
        raise ValueError("buckets must not be empty")
    for (low, high), following in zip(result, result[1:] + (None,)):
        if low > high:
            raise ValueError(f"bucket ({low}, {high}) has low > high")
        if following is not None and following[0] != high + 1:
            raise ValueError(
                f"buckets must be sorted and contiguous; ({low}, {high}) is followed by "
                f"{following}"
            )
    return result


def bucket_label(bucket: Sequence[int]) -> str:
    """Table label of an inclusive bucket: (3, 3) -> "3", (4, 5) -> "4-5"."""
    low, high = int(bucket[0]), int(bucket[1])
    return str(low) if low == high else f"{low}-{high}"


def bucket_index(length: int, buckets: Sequence[Sequence[int]]) -> int:
    """Index of the bucket holding `length`; beyond the ends, the first or last bucket."""
    return int(_bucket_indices([length], _validated_buckets(buckets))[0])


def _bucket_indices(lengths: Sequence[int], buckets: tuple[tuple[int, int], ...]) -> np.ndarray:
    highs = np.asarray([high for _, high in buckets], dtype=np.int64)
    indices = np.searchsorted(highs, np.asarray(lengths, dtype=np.int64), side="left")
    return np.minimum(indices, len(buckets) - 1)


def buckets_for_dataset(dataset: str) -> tuple[tuple[int, int], ...]:
    """The RMI length buckets of a dataset name.

    refcoco, refcoco+, unc, unc+, synthetic (and TFDS names like "refcoco_unc",
    "refcocoplus_unc") -> UNC buckets; refcocog, g-ref, "refcocog_umd", "refcocog_google" ->
    G-Ref buckets; referit, referitgame -> ReferIt buckets. Case and "-", "_", " " are ignored.

    Raises:
        ValueError: the name matches none of these (the known names are listed).
    """
    normalized = "".join(ch for ch in str(dataset).lower() if ch not in "-_ ")
    for prefix, key in _DATASET_PREFIXES:
        if normalized.startswith(prefix):
            return LENGTH_BUCKETS[key]
    known = ", ".join(prefix for prefix, _ in _DATASET_PREFIXES)
    raise ValueError(f"no length buckets for dataset {dataset!r}; known name prefixes: {known}")


class SegmentationEvaluator:
    """Accumulates per-sample intersection, union and expression length over a split.

    Feed one binary prediction and ground truth per referring expression, both at the original
    image resolution; read the split's scores with `result()` and the IoU broken down by
    expression length (RMI Tables 2-5) with `by_length()`.

    Args:
        buckets: default length buckets for `by_length()`: inclusive (low, high) word-count
            ranges, sorted and contiguous, e.g. `LENGTH_BUCKETS["unc"]` or
            `buckets_for_dataset("refcoco")`.
        thresholds: IoU thresholds for the precision@X scores.

    Example:
        >>> evaluator = SegmentationEvaluator(buckets=LENGTH_BUCKETS["unc"])
        >>> evaluator.update([[1, 0]], [[1, 1]], length=3, sample_id=17)
        (1, 2)
        >>> evaluator.result()["overall_iou"]
        0.5

    Reference:
        Liu et al. 2017 (RMI) Sec. 4.3, Tables 2-5 for the length breakdown; the scores as in
        the module docstring.
    """

    def __init__(
        self,
        buckets: Sequence[Sequence[int]] | None = None,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    ):
        self.buckets = None if buckets is None else _validated_buckets(buckets)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.reset()

    def reset(self) -> None:
        """Forgets every sample."""
        self._intersections: list[int] = []
        self._unions: list[int] = []
        self._lengths: list[int | None] = []
        self._sample_ids: list[Hashable | None] = []
        self._seen_ids: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._intersections)

    @property
    def count(self) -> int:
        """Number of recorded samples."""
        return len(self._intersections)

    def add(
        self,
        intersection: int,
        union: int,
        length: int | None = None,
        sample_id: Hashable | None = None,
    ) -> None:
        """Records one sample from already computed pixel counts.

        Raises:
            ValueError: counts are inconsistent (negative, I > U), the length is negative, or
                `sample_id` was already recorded (a sample counted twice skews every score).
        """
        _validated_counts([intersection], [union])
        if length is not None and int(length) < 0:
            raise ValueError(f"length must be non-negative; got {length} for sample {sample_id}")
        if sample_id is not None:
            if sample_id in self._seen_ids:
                raise ValueError(f"sample_id {sample_id!r} was already recorded")
            self._seen_ids.add(sample_id)
        self._intersections.append(int(intersection))
        self._unions.append(int(union))
        self._lengths.append(None if length is None else int(length))
        self._sample_ids.append(sample_id)

    def update(
        self,
        pred: Any,
        gt: Any,
        length: int | None = None,
        sample_id: Hashable | None = None,
    ) -> tuple[int, int]:
        """Scores one sample (binary pred and gt of the same shape) and records it.

        Args:
            pred: binary prediction at the original image resolution.
            gt: binary ground truth of the same shape.
            length: number of words of the expression (untruncated), for `by_length()`.
            sample_id: optional unique id (e.g. the sentence id); duplicates raise ValueError.

        Returns:
            The sample's `(intersection, union)`.
        """
        try:
            intersection, union = intersection_union(pred, gt)
        except ValueError as error:
            raise ValueError(f"sample {sample_id!r}: {error}") from error
        self.add(intersection, union, length=length, sample_id=sample_id)
        return intersection, union

    def update_batch(
        self,
        preds: Iterable[Any],
        gts: Iterable[Any],
        lengths: Iterable[int | None] | None = None,
        sample_ids: Iterable[Hashable | None] | None = None,
    ) -> None:
        """`update()` for each sample of a batch (arrays or lists of differently sized masks)."""
        preds, gts = list(preds), list(gts)
        if len(preds) != len(gts):
            raise ValueError(f"got {len(preds)} predictions but {len(gts)} ground truths")
        lengths = [None] * len(preds) if lengths is None else list(lengths)
        sample_ids = [None] * len(preds) if sample_ids is None else list(sample_ids)
        if not len(lengths) == len(sample_ids) == len(preds):
            raise ValueError(
                f"batch sizes differ: {len(preds)} predictions, {len(lengths)} lengths, "
                f"{len(sample_ids)} sample ids"
            )
        for pred, gt, length, sample_id in zip(preds, gts, lengths, sample_ids):
            self.update(pred, gt, length=length, sample_id=sample_id)

    @property
    def intersections(self) -> np.ndarray:
        return np.asarray(self._intersections, dtype=np.int64)

    @property
    def unions(self) -> np.ndarray:
        return np.asarray(self._unions, dtype=np.int64)

    @property
    def ious(self) -> np.ndarray:
        """Per-sample IoU in update order (1.0 for empty prediction and ground truth)."""
        return per_sample_iou(self._intersections, self._unions)

    @property
    def lengths(self) -> list[int | None]:
        return list(self._lengths)

    @property
    def sample_ids(self) -> list[Hashable | None]:
        return list(self._sample_ids)

    def result(self) -> dict[str, float]:
        """Scores of every recorded sample (see `scores_from_iou`)."""
        return scores_from_iou(self._intersections, self._unions, self.thresholds)

    def by_length(
        self, buckets: Sequence[Sequence[int]] | None = None
    ) -> dict[str, dict[str, float]]:
        """Scores per expression-length bucket, in bucket order, keyed by label ("1-2", "3").

        Args:
            buckets: inclusive (low, high) ranges; defaults to the constructor's `buckets`.
                Lengths above the last range count in the last bucket (RMI's "6-20" etc.),
                lengths below the first in the first. An empty bucket has NaN scores, count 0.

        Raises:
            ValueError: no buckets were given, or some sample was recorded without a length.
        """
        buckets = self.buckets if buckets is None else _validated_buckets(buckets)
        if buckets is None:
            raise ValueError("by_length needs buckets (here or in the constructor)")
        missing = sum(length is None for length in self._lengths)
        if missing:
            raise ValueError(
                f"by_length needs a length for every sample; {missing} of {len(self)} samples "
                "were recorded without one"
            )
        indices = _bucket_indices(self._lengths, buckets)
        intersections, unions = self.intersections, self.unions
        breakdown = {}
        for index, bucket in enumerate(buckets):
            selected = indices == index
            breakdown[bucket_label(bucket)] = scores_from_iou(
                intersections[selected], unions[selected], self.thresholds
            )
        return breakdown


def _heatmap_batch(values: Any, name: str) -> list[np.ndarray]:
    """A batch as a list of 2-D arrays: [N, H, W], [N, H, W, 1] or a sequence of 2-D maps."""
    if isinstance(values, np.ndarray) or not isinstance(values, (list, tuple)):
        values = np.asarray(values)
        if values.ndim == 4 and values.shape[-1] == 1:
            values = values[..., 0]
        if values.ndim != 3:
            raise ValueError(
                f"{name} must be a batch [N, H, W] or [N, H, W, 1]; got shape {values.shape}"
            )
        return list(values)
    maps = []
    for index, value in enumerate(values):
        value = np.asarray(value)
        if value.ndim == 3 and value.shape[-1] == 1:
            value = value[..., 0]
        if value.ndim != 2:
            raise ValueError(f"{name}[{index}] must be 2-D [H, W]; got shape {value.shape}")
        maps.append(value)
    return maps


def localization_hit(heatmap: Any, mask: Any) -> bool:
    """Whether the heatmap's maximum falls inside the ground-truth mask (one sample).

    The heatmap may have a different (usually lower) resolution than the mask; both must cover
    the same image extent (e.g. both the letterboxed square, or both the original image). The
    argmax cell (r, c) of an h x w heatmap has its centre at ((r + 0.5) H / h, (c + 0.5) W / w)
    in the continuous coordinates of the H x W mask; the mask pixel containing that point is
    tested (on a pixel boundary, the lower/right pixel). Ties go to the first maximum in
    row-major order (numpy's argmax).
    """
    heatmap, mask, (row, col) = _heatmap_argmax(heatmap, mask)
    mask_row = _cell_centre_to_pixel(row, heatmap.shape[0], mask.shape[0])
    mask_col = _cell_centre_to_pixel(col, heatmap.shape[1], mask.shape[1])
    return bool(mask[mask_row, mask_col])


def _heatmap_argmax(heatmap: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """`(heatmap, binary mask, (row, col) of the heatmap's first maximum)`, both maps checked.

    Raises:
        ValueError: either is not a non-empty 2-D array, or the heatmap is not finite.
    """
    heatmap = np.asarray(heatmap)
    mask = _as_binary(mask, "mask")
    if heatmap.ndim != 2 or mask.ndim != 2 or heatmap.size == 0 or mask.size == 0:
        raise ValueError(
            f"heatmap and mask must be non-empty 2-D arrays; got shapes {heatmap.shape} and "
            f"{mask.shape}"
        )
    if not np.all(np.isfinite(heatmap)):
        raise ValueError("heatmap contains NaN or infinite values")
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return heatmap, mask, (int(row), int(col))


def _cell_centre_to_pixel(cell: int, cells: int, pixels: int) -> int:
    return min(int(math.floor((cell + 0.5) * pixels / cells)), pixels - 1)


def letterbox_localization_hit(
    heatmap: Any, mask: Any, image_window: Any, image_size: int
) -> bool:
    """`localization_hit` for a heatmap over the letterboxed square and a mask at original size.

    The argmax cell's centre is placed in the `image_size` square (cell (r, c) of an h x w map
    at ((r + 0.5) S / h, (c + 0.5) S / w)), mapped through the letterbox inverse
    (`image_window` = (top, left, height, width) of the image inside the square, as the data
    pipeline gives it) to the original H x W mask, and the pixel containing it is tested. An
    argmax in the padding is a miss.

    Reference:
        Jing et al. 2021 (LTS) Sec. 4.3 (localisation accuracy); SPEC_RMI_LTS_ASGN 2.9 (native
        H/8 heatmap, cell centre through the letterbox inverse).
    """
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim == 3 and heatmap.shape[-1] == 1:
        heatmap = heatmap[..., 0]
    heatmap, mask, (row, col) = _heatmap_argmax(heatmap, mask)
    top, left, height, width = (float(v) for v in np.asarray(image_window).reshape(4))
    if height <= 0 or width <= 0:
        raise ValueError(f"image_window must have a positive size; got {image_window}")
    y = (row + 0.5) * image_size / heatmap.shape[0] - top
    x = (col + 0.5) * image_size / heatmap.shape[1] - left
    if not (0.0 <= y < height and 0.0 <= x < width):
        return False
    mask_row = min(int(math.floor(y * mask.shape[0] / height)), mask.shape[0] - 1)
    mask_col = min(int(math.floor(x * mask.shape[1] / width)), mask.shape[1] - 1)
    return bool(mask[mask_row, mask_col])


def localization_accuracy(heatmaps: Any, masks: Any) -> float:
    """Share of samples whose heatmap argmax lies inside the ground-truth mask (LTS).

    Args:
        heatmaps: [N, h, w] or [N, h, w, 1] array, or a sequence of 2-D maps (scores or logits;
            only the argmax matters).
        masks: [N, H, W] or [N, H, W, 1] binary array, or a sequence of 2-D masks. Sizes may
            differ from the heatmaps; see `localization_hit` for the coordinate mapping.

    Returns:
        The fraction in [0, 1].

    Reference:
        Jing et al. 2021 (LTS) Sec. 4.4: "the probability that the maximum value of heatmap
        lies in the ground truth mask" (81.74% on RefCOCO val).
    """
    heatmap_list = _heatmap_batch(heatmaps, "heatmaps")
    mask_list = _heatmap_batch(masks, "masks")
    if len(heatmap_list) != len(mask_list):
        raise ValueError(f"got {len(heatmap_list)} heatmaps but {len(mask_list)} masks")
    if not heatmap_list:
        raise ValueError("localization_accuracy needs at least one sample")
    hits = []
    for index, (heatmap, mask) in enumerate(zip(heatmap_list, mask_list)):
        try:
            hits.append(localization_hit(heatmap, mask))
        except ValueError as error:
            raise ValueError(f"sample {index}: {error}") from error
    return float(np.mean(hits))


def _percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100.0 * float(value):.2f}"


def _precision_keys(scores: Mapping[str, Any]) -> list[str]:
    keys = [key for key in scores if key.startswith("precision@")]
    return sorted(keys, key=lambda key: float(key.split("@", 1)[1]))


def format_table(
    scores: Mapping[str, Any], by_length: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """A plain-text table of the scores (percentages) and, if given, the length breakdown.

    Args:
        scores: a `scores_from_iou` / `SegmentationEvaluator.result()` dict; an optional
            "localization_accuracy" entry is printed too.
        by_length: a `SegmentationEvaluator.by_length()` dict.

    Example output:
        samples            1000
        overall IoU       45.57
        mean IoU          44.10
        prec@0.5          34.02
        ...
    """
    precision_keys = _precision_keys(scores)
    rows = [("samples", str(int(scores.get("count", 0))))]
    rows.append(("overall IoU", _percent(scores.get("overall_iou"))))
    rows.append(("mean IoU", _percent(scores.get("mean_iou"))))
    rows += [(key.replace("precision", "prec"), _percent(scores[key])) for key in precision_keys]
    if "localization_accuracy" in scores:
        rows.append(("localization acc.", _percent(scores["localization_accuracy"])))
    label_width = max(len(label) for label, _ in rows)
    value_width = max(len(value) for _, value in rows)
    lines = [f"{label:<{label_width}}  {value:>{value_width}}" for label, value in rows]
    if by_length:
        lines += ["", "IoU by expression length (words)", _length_table(by_length)]
    return "\n".join(lines)


def _length_table(by_length: Mapping[str, Mapping[str, Any]]) -> str:
    first = next(iter(by_length.values()))
    precision_keys = _precision_keys(first)
    header = ["length", "samples", "overall IoU", "mean IoU"]
    header += [key.replace("precision", "prec") for key in precision_keys]
    table = [header]
    for label, scores in by_length.items():
        row = [label, str(int(scores.get("count", 0)))]
        row += [_percent(scores.get("overall_iou")), _percent(scores.get("mean_iou"))]
        row += [_percent(scores.get(key)) for key in precision_keys]
        table.append(row)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _json_ready(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become null (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def save_scores_json(
    path: str | os.PathLike,
    scores: Mapping[str, Any],
    by_length: Mapping[str, Mapping[str, Any]] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Writes `{"scores", "by_length", "metadata"}` as JSON atomically (temp file + os.replace).

    Scores stay fractions in [0, 1]; NaN (empty buckets) is written as null. Parent folders are
    created. Returns the path written.
    """
    path = os.fspath(path)
    document = {
        "scores": _json_ready(scores),
        "by_length": _json_ready(by_length) if by_length is not None else None,
        "metadata": _json_ready(metadata) if metadata is not None else {},
    }
    atomic_write_json(path, document)
    return path

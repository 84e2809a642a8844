"""The scoring rule: a model's logits -> the binary mask that is scored, in one place.

Two rules, chosen with the config key `eval.scoring_rule`:

- "upsample_logits" (default; RMI and RRN as their public code scores, and Hu et al. 2016's
  high-resolution model, whose deconvolved scores are already at S so that step 1 is the
  identity; text_objseg `exp_test_referit_seg.py`):
  1. upsample the logits to the input size S with TF1 `resize_bilinear` (align_corners=False,
     no half-pixel centres: input coordinate = output index * in / out);
  2. foreground where the upsampled logit >= 1e-9 (probability >= 0.5; for another model
     threshold t the cut is log(t / (1 - t)));
  3. map the binary S x S map back to the original (h, w) image as the authors'
     `resize_and_crop`: resize the whole square bilinearly (half-pixel centres) to M x M with
     M = max(h, w), crop the centred h x w window;
  4. any non-zero value is foreground (a slight dilation of the binary map).
  DenseCRF's unary is the sigmoid of the upsampled logits of step 1 (`foreground_probability`).
- "resize_probability" (MCN / LTS; Hu's low-resolution rows): sigmoid first, probabilities
  resized (half-pixel bilinear) to S, the letterbox window cropped and resized to (h, w),
  foreground where the probability >= the model's threshold. Hu's low-resolution row
  (Sec. 4.2) upsamples the 16x16 scores bilinearly, i.e. as the high-resolution model's
  64x64, stride-32 SAME deconvolution at its bilinear initialisation, which centres cell i on
  pixel 32i + 15.5: the half-pixel grid of his 32x32-block labels, not TF1's 32i. (His code
  has no low-resolution test script; thresholding the upsampled logits before
  `resize_and_crop` would differ from this rule only along mask edges.)

Training and scoring share one pixel grid: TF1 corners with "point" labels or a loss at image
resolution with `upsampling="tf1"` (`refseg_tf.losses`); the half-pixel grid with block labels.

Three entry points share these steps: `score_masks` (numpy masks at the original size; used by
`inference.Predictor`, `refseg-predict`, the demo and export; `score_mask_batch_tf` is its
one-graph batch form, which `refseg-evaluate` runs),
`input_resolution_masks` (keras.ops masks at the input size; used by the Keras metrics,
`ReferringSegmenter.predict_masks` and the TensorBoard pictures) and `restore_binary_mask`
(a binary S x S map, e.g. DenseCRF's output, to the original size).

Reference:
    chenxi116/TF-phrasecut-public `main.py` (test: `tf.image.resize_bilinear` of the scores to
    320, `>= 1e-9`, `im_processing.resize_and_crop`, IoU of `np.logical_and/or` on the float
    map) and `util/im_processing.py`; the same steps in ronghanghu/text_objseg
    `exp-referit/exp_test_referit_seg.py` and liruiyu/referseg_rrn `main_convlstm_p543.py`.
    Liu et al. 2017 (RMI) Sec. 4.2 (DenseCRF).
"""

import math

import numpy as np
from keras import ops

from refseg_tf.layers.spatial import resize_bilinear

SCORING_RULES = ("upsample_logits", "resize_probability")
DEFAULT_SCORING_RULE = "upsample_logits"
# The authors' cut on the upsampled logit (`score >= 1e-9` in their test code).
AUTHORS_LOGIT_THRESHOLD = 1e-9


def check_scoring_rule(rule) -> str:
    """Returns `rule` if it is one of `SCORING_RULES`, else raises a ValueError naming it."""
    if isinstance(rule, str) and rule in SCORING_RULES:
        return rule
    raise ValueError(f"`scoring_rule` must be one of {SCORING_RULES}; received {rule!r}.")


def check_threshold(threshold) -> float:
    """The probability threshold as a float in [0, 1] (0: everything, 1: nothing), else a
    ValueError."""
    value = float(threshold)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`threshold` must lie in [0, 1]; received {threshold!r}.")
    return value


def logit_threshold(threshold: float = 0.5) -> float:
    """The logit cut of a probability threshold: the authors' 1e-9 for 0.5, else logit(t)."""
    threshold = check_threshold(threshold)
    if threshold == 0.5:
        return AUTHORS_LOGIT_THRESHOLD
    if threshold in (0.0, 1.0):
        return -math.inf if threshold == 0.0 else math.inf
    return math.log(threshold / (1.0 - threshold))


def resize_tf1_bilinear(maps, size):
    """TF1 `resize_bilinear(align_corners=False)` (no half-pixel centres) with keras.ops.

    `refseg_tf.layers.spatial.resize_bilinear(..., half_pixel_centers=False)`, the one
    definition the image-resolution losses share.

    Args:
        maps: float [B, h, w, C].
        size: (H, W) output size.

    Returns:
        float32 [B, H, W, C]; equal (to float rounding) to
        `tf.compat.v1.image.resize_bilinear(maps, size, half_pixel_centers=False)`.
    """
    return resize_bilinear(maps, tuple(int(v) for v in size), half_pixel_centers=False)


def upsample_logits_tf(logits, image_size: int):
    """Step 1 of "upsample_logits" in TensorFlow: TF1 bilinear resize to S x S (float32)."""
    import tensorflow as tf

    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    if logits.shape.rank == 3:
        logits = logits[..., tf.newaxis]
    # The kernel of TF1 `tf.compat.v1.image.resize_bilinear`, called directly: the same
    # arithmetic without that wrapper's deprecation warning in the user's terminal (issue 21).
    return tf.raw_ops.ResizeBilinear(
        images=logits, size=[int(image_size), int(image_size)], align_corners=False,
        half_pixel_centers=False,
    )


def foreground_probability(logits, image_size: int):
    """sigmoid of the TF1-upsampled logits, float32 [B, S, S, 1]: DenseCRF's unary, export."""
    import tensorflow as tf

    return tf.sigmoid(upsample_logits_tf(logits, image_size))


# ----------------------------------------------------------------------- input resolution
def input_resolution_masks(scores, size, rule=DEFAULT_SCORING_RULE, threshold=0.5,
                           from_logits=True):
    """Binary float32 {0, 1} masks [B, H, W, 1] at the input resolution (keras.ops only).

    Args:
        scores: [B, h, w, 1] logits (or probabilities with `from_logits=False`), static h, w.
        size: (H, W) of the masks they are compared with (the network input).
        rule: one of `SCORING_RULES`.
        threshold: the model's probability threshold.
        from_logits: whether `scores` are logits.

    Returns:
        float32 [B, H, W, 1] with 1.0 for foreground.
    """
    check_scoring_rule(rule)
    threshold = check_threshold(threshold)
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    size = tuple(int(v) for v in size)
    if rule == "upsample_logits":
        cut = logit_threshold(threshold) if from_logits else threshold
        return ops.cast(ops.greater_equal(resize_tf1_bilinear(scores, size), cut), "float32")
    probabilities = ops.sigmoid(scores) if from_logits else scores
    if tuple(probabilities.shape[1:3]) != size:
        probabilities = ops.image.resize(probabilities, size, interpolation="bilinear")
    return ops.cast(ops.greater_equal(probabilities, threshold), "float32")


# ----------------------------------------------------------------------- original resolution
# Graph (TensorFlow) forms: one example at a time, dynamic original size, usable inside a
# `tf.function` / SavedModel signature. The numpy entry points below call these, so the
# evaluation, `Predictor` and the exported graph run the same ops.
def _as_square_map(values, name: str):
    import tensorflow as tf

    values = tf.cast(tf.convert_to_tensor(values), tf.float32)
    if values.shape.rank == 2:
        values = values[..., tf.newaxis]
    if values.shape.rank != 3 or values.shape[-1] != 1:
        raise ValueError(f"`{name}` must be [s, s] or [s, s, 1]; received shape {values.shape}.")
    if values.shape[0] is not None and values.shape[0] != values.shape[1]:
        raise ValueError(f"`{name}` must be square [S, S] or [S, S, 1]; received {values.shape}.")
    return values


def _window_or_letterbox(image_window, original_size, image_size):
    import tensorflow as tf

    from refseg_tf.data.transforms import letterbox_geometry

    if image_window is None:
        return letterbox_geometry(original_size[0], original_size[1], image_size)
    return tf.reshape(tf.cast(image_window, tf.int32), [4])


def resize_and_crop_tf(binary_map, original_size):
    """The authors' `resize_and_crop` of an S x S map to (h, w), float32 [h, w] (graph-safe).

    The whole square is resized bilinearly (half-pixel centres) to M x M, M = max(h, w), and
    the centred h x w window is cropped (`util/im_processing.py` of the Hu/RMI/RRN code).
    """
    import tensorflow as tf

    binary = _as_square_map(binary_map, "binary_map")
    original_size = tf.reshape(tf.cast(original_size, tf.int32), [2])
    height, width = original_size[0], original_size[1]
    side = tf.maximum(height, width)
    resized = tf.image.resize(binary, tf.stack([side, side]), method="bilinear")
    top, left = (side - height) // 2, (side - width) // 2
    return resized[top : top + height, left : left + width, 0]


def restore_binary_mask_tf(binary_map, original_size, rule=DEFAULT_SCORING_RULE,
                           image_window=None):
    """Graph form of `restore_binary_mask`: a binary S x S map -> bool [h, w].

    "upsample_logits": `resize_and_crop_tf`, then `> 0`; "resize_probability": crop the
    letterbox window (`image_window`, default the letterbox of (h, w)), resize bilinearly to
    (h, w), `>= 0.5`.
    """
    import tensorflow as tf

    from refseg_tf.data.transforms import crop_window_and_resize

    check_scoring_rule(rule)
    binary = _as_square_map(binary_map, "binary_map")
    original_size = tf.reshape(tf.cast(original_size, tf.int32), [2])
    if rule == "upsample_logits":
        return resize_and_crop_tf(binary, original_size) > 0
    window = _window_or_letterbox(image_window, original_size, int(binary.shape[0]))
    return crop_window_and_resize(binary, window, original_size)[..., 0] >= 0.5


def _input_size_probability_tf(logits, image_size: int, rule: str):
    """The probability map [S, S, 1] of one example's logits [g, g, 1] under `rule`."""
    import tensorflow as tf

    logits = _as_square_map(logits, "logits")
    if rule == "upsample_logits":
        return tf.sigmoid(upsample_logits_tf(logits[tf.newaxis], image_size))[0]
    probability = tf.sigmoid(logits)
    if tuple(probability.shape[:2]) == (int(image_size), int(image_size)):
        return probability
    return tf.image.resize(probability, [int(image_size), int(image_size)], method="bilinear")


def probability_map_tf(logits, original_size, image_size: int, rule=DEFAULT_SCORING_RULE,
                       image_window=None):
    """Graph form of `probability_maps` for one example: logits [g, g, 1] -> float32 [h, w]."""
    import tensorflow as tf

    from refseg_tf.data.transforms import crop_window_and_resize

    check_scoring_rule(rule)
    original_size = tf.reshape(tf.cast(original_size, tf.int32), [2])
    probability = _input_size_probability_tf(logits, image_size, rule)
    window = _window_or_letterbox(image_window, original_size, int(image_size))
    return crop_window_and_resize(probability, window, original_size)[..., 0]


def _threshold_and_cut(threshold):
    """(probability threshold, logit cut): `logit_threshold` for a number; the same rule in
    graph form for a float32 tensor (the export's `serving_threshold` input)."""
    import tensorflow as tf

    if not tf.is_tensor(threshold):
        threshold = check_threshold(threshold)
        return threshold, logit_threshold(threshold)
    threshold = tf.cast(threshold, tf.float32)
    checked = tf.debugging.assert_less_equal(
        tf.abs(threshold - 0.5), 0.5, message="`threshold` must lie in [0, 1]"
    )
    with tf.control_dependencies([checked]):
        logit = tf.math.log(threshold) - tf.math.log1p(-threshold)
        return threshold, tf.where(tf.equal(threshold, 0.5), tf.constant(1e-9, tf.float32), logit)


def score_mask_tf(logits, original_size, image_size: int, rule=DEFAULT_SCORING_RULE,
                  threshold=0.5, image_window=None):
    """THE scoring rule in graph form, one example: logits [g, g, 1] -> bool mask [h, w].

    "upsample_logits": `upsample_logits_tf` to S, `>= logit_threshold(threshold)`, then
    `restore_binary_mask_tf` (the authors' resize-to-the-larger-side and centre crop, `> 0`).
    "resize_probability": `probability_map_tf(...) >= threshold`.
    `score_masks` (numpy) runs exactly this per example; the export's `serving_default` calls
    it inside the SavedModel.
    """
    import tensorflow as tf

    check_scoring_rule(rule)
    threshold, cut = _threshold_and_cut(threshold)
    if rule == "upsample_logits":
        logits = _as_square_map(logits, "logits")
        upsampled = upsample_logits_tf(logits[tf.newaxis], image_size)[0]
        binary = tf.cast(upsampled >= cut, tf.float32)
        return restore_binary_mask_tf(binary, original_size, rule)
    probability = probability_map_tf(logits, original_size, image_size, rule, image_window)
    return probability >= threshold


def score_mask_batch_tf(logits, image_window, original_size, image_size: int,
                        rule=DEFAULT_SCORING_RULE, threshold=0.5, padded_size=None):
    """`score_mask_tf` of every example of a batch in one graph: bool [B, H, W], zero-padded.

    Example i's mask [h_i, w_i] sits in the top-left corner of its [H, W] slice, as
    `padded_batch` pads the eval pipeline's `original_mask`, so counts over the padded batch
    equal counts over each mask. Used by `refseg-evaluate` inside a `tf.function`.

    Args:
        logits: [B, g, g, 1] (or [B, g, g]) logits of the letterboxed inputs.
        image_window: int [B, 4] letterbox windows (used by "resize_probability").
        original_size: int [B, 2] (height, width) of each original image.
        image_size: side S of the network input.
        rule, threshold: as `score_mask_tf`.
        padded_size: (H, W) of the output (each at least the largest original size); None
            means the largest original size of the batch.
    """
    import tensorflow as tf

    check_scoring_rule(rule)
    threshold = check_threshold(threshold)
    logits = _as_logit_batch(logits)
    original_size = tf.reshape(tf.cast(original_size, tf.int32), [-1, 2])
    image_window = tf.reshape(tf.cast(image_window, tf.int32), [-1, 4])
    if padded_size is None:
        padded_size = tf.reduce_max(original_size, axis=0)
    padded_size = tf.reshape(tf.cast(padded_size, tf.int32), [2])

    if rule == "upsample_logits":
        binary = upsample_logits_tf(logits, image_size)[..., 0] >= logit_threshold(threshold)
        return _resize_and_crop_support_batch(binary, original_size, padded_size)

    def score_one(example):
        example_logits, size, window = example
        mask = score_mask_tf(example_logits, size, int(image_size), rule, threshold, window)
        return tf.pad(mask, [[0, padded_size[0] - size[0]], [0, padded_size[1] - size[1]]])

    return tf.map_fn(
        score_one, (logits, original_size, image_window),
        fn_output_signature=tf.TensorSpec([None, None], tf.bool),
    )


def _bilinear_neighbours(in_size, out_size, first, count, padded):
    """The two source indices of the half-pixel bilinear resize of each output index.

    For output indices first .. first + count - 1 (padded to `padded`: [B, padded]) of a
    resize from `in_size` to `out_size` (int32 [B]), as TF's `ResizeBilinear` kernel with
    half-pixel centres computes them in float32: in = (i + 0.5) * (in_size / out_size) - 0.5,
    lower = max(floor(in), 0), upper = min(ceil(in), in_size - 1). Returns (lower, upper,
    index < count).
    """
    import tensorflow as tf

    index = tf.range(padded)[tf.newaxis]
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    position = (tf.cast(first[:, tf.newaxis] + index, tf.float32) + 0.5) * scale[:, None] - 0.5
    last = in_size[:, tf.newaxis] - 1
    lower = tf.minimum(tf.maximum(tf.cast(tf.floor(position), tf.int32), 0), last)
    upper = tf.maximum(tf.minimum(tf.cast(tf.math.ceil(position), tf.int32), last), 0)
    return lower, upper, index < count[:, tf.newaxis]


def _resize_and_crop_support_batch(binary, original_size, padded_size):
    """`resize_and_crop_tf(...) > 0` of every binary map of a batch, without the float resize.

    A half-pixel bilinear resize of a {0, 1} map is > 0 exactly where one of the (up to four)
    neighbours it interpolates is 1. The kernel computes `top = tl + (tr - tl) * x_lerp` and
    `top + (bottom - top) * y_lerp` with lerp in [0, 1): where lerp = 0 the two neighbours
    are the same pixel (ceil = floor), else both weights lerp and 1 - lerp are positive, and
    with values in {0, 1} neither sum can round to 0 (a non-zero term is at least 2^-24 of
    the value it is subtracted from, which float32 resolves). The resize to M x M (M =
    max(h, w)) and the centred crop are therefore two gathers of boolean rows and columns at
    the kernel's own float32 source coordinates: one op each per batch instead of a float
    resize per example (`score_mask_batch_tf`; `tests/test_scoring_batch.py`).

    Args:
        binary: bool [B, S, S].
        original_size: int32 [B, 2].
        padded_size: int32 [2], each at least the batch's largest size.

    Returns:
        bool [B, H, W]: example i's mask in the top-left [h_i, w_i] corner, False elsewhere.
    """
    import tensorflow as tf

    height, width = original_size[:, 0], original_size[:, 1]
    longest = tf.maximum(height, width)
    sides = tf.fill(tf.shape(height), tf.shape(binary)[1])
    top, left = (longest - height) // 2, (longest - width) // 2
    row_lower, row_upper, row_valid = _bilinear_neighbours(
        sides, longest, top, height, padded_size[0])
    col_lower, col_upper, col_valid = _bilinear_neighbours(
        sides, longest, left, width, padded_size[1])
    # Plain row gathers of the flattened batch (a `batch_dims` gather, or one along the last
    # axis, costs several times more): columns first on the transposed S x S maps, then rows.
    count = tf.shape(binary)[0]
    offset = (tf.range(count) * tf.shape(binary)[1])[:, tf.newaxis]

    def gather_rows(maps, lower, upper):  # maps [B, n, m] -> [B, len(lower), m]
        flat = tf.reshape(maps, [-1, tf.shape(maps)[2]])
        picked = tf.gather(flat, lower + offset) | tf.gather(flat, upper + offset)
        return picked

    columns = gather_rows(tf.transpose(binary, [0, 2, 1]), col_lower, col_upper)
    columns &= col_valid[..., tf.newaxis]
    masks = gather_rows(tf.transpose(columns, [0, 2, 1]), row_lower, row_upper)
    return masks & row_valid[..., tf.newaxis]


def restore_binary_mask(binary_map, original_size, rule=DEFAULT_SCORING_RULE, image_window=None):
    """A binary S x S map of the letterboxed input -> bool [h, w] at the original size (numpy).

    "upsample_logits": the authors' `resize_and_crop` of the binary map, then `> 0`.
    "resize_probability": crop `image_window` (default: the letterbox window of (h, w)), resize
    bilinearly to (h, w), foreground where >= 0.5. Runs `restore_binary_mask_tf`.
    """
    import tensorflow as tf

    check_scoring_rule(rule)
    binary = tf.cast(tf.convert_to_tensor(binary_map), tf.float32)
    if binary.shape.rank == 3:
        binary = binary[..., 0]
    if binary.shape.rank != 2 or binary.shape[0] != binary.shape[1]:
        raise ValueError(f"`binary_map` must be square [S, S] or [S, S, 1]; received {binary.shape}.")
    size = [int(v) for v in np.asarray(original_size).reshape(2)]
    return restore_binary_mask_tf(binary, size, rule, image_window).numpy()


def _batch_geometry(image_window, original_size):
    sizes = np.asarray(original_size, dtype=np.int64).reshape(-1, 2)
    windows = np.asarray(image_window, dtype=np.int64).reshape(-1, 4)
    if len(windows) != len(sizes):
        raise ValueError(
            f"`image_window` and `original_size` must describe the same examples; received "
            f"{len(windows)} windows and {len(sizes)} sizes."
        )
    return windows, sizes


def _as_logit_batch(logits):
    import tensorflow as tf

    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    return logits[..., tf.newaxis] if logits.shape.rank == 3 else logits


def score_masks(logits, image_window, original_size, image_size, rule=DEFAULT_SCORING_RULE,
                threshold=0.5):
    """THE scoring rule: logits of a batch -> bool masks at each image's original size.

    Runs `score_mask_tf` (the graph form the export uses) on each example.

    Args:
        logits: [B, g, g, 1] (or [B, g, g]) logits of the letterboxed inputs.
        image_window: int [B, 4] (top, left, height, width) of each image inside the S x S input
            (the `image_window` of `refseg_tf.data.load`; used by "resize_probability").
        original_size: int [B, 2] (height, width) of each original image.
        image_size: side S of the network input.
        rule: one of `SCORING_RULES` (module docstring).
        threshold: the model's probability threshold (0.5: the authors' logit >= 1e-9).

    Returns:
        list of B bool numpy arrays [height_i, width_i].

    Example:
        >>> masks = score_masks(logits, batch["image_window"], batch["original_size"], 320)
    """
    check_scoring_rule(rule)
    threshold = check_threshold(threshold)
    windows, sizes = _batch_geometry(image_window, original_size)
    logits = _as_logit_batch(logits)
    return [
        score_mask_tf(logits[i], sizes[i], int(image_size), rule, threshold, windows[i]).numpy()
        for i in range(len(sizes))
    ]


def probability_maps(logits, image_window, original_size, image_size,
                     rule=DEFAULT_SCORING_RULE):
    """Foreground probabilities at each original size, for display and `--probabilities`.

    "upsample_logits": the sigmoid of the TF1-upsampled logits, window cropped and resized;
    "resize_probability": the probabilities that rule thresholds. Under "upsample_logits" the
    scored mask is `score_masks`, not a threshold of this map. Runs `probability_map_tf`.
    """
    check_scoring_rule(rule)
    windows, sizes = _batch_geometry(image_window, original_size)
    logits = _as_logit_batch(logits)
    return [
        probability_map_tf(logits[i], sizes[i], int(image_size), rule, windows[i]).numpy()
        for i in range(len(sizes))
    ]

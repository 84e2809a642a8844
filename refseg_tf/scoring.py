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
`refseg-evaluate`, `inference.Predictor`, `refseg-predict`, the demo and export),
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
    return tf.compat.v1.image.resize_bilinear(
        logits, [int(image_size), int(image_size)], align_corners=False, half_pixel_centers=False
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
def restore_binary_mask(binary_map, original_size, rule=DEFAULT_SCORING_RULE, image_window=None):
    """A binary S x S map of the letterboxed input -> bool [h, w] at the original size.

    "upsample_logits": the authors' `resize_and_crop` of the binary map, then `> 0`.
    "resize_probability": crop `image_window` (default: the letterbox window of (h, w)), resize
    bilinearly to (h, w), foreground where >= 0.5.
    """
    import tensorflow as tf

    from refseg_tf.data.transforms import letterbox_geometry, restore_batch_to_original

    check_scoring_rule(rule)
    binary = tf.cast(tf.convert_to_tensor(binary_map), tf.float32)
    if binary.shape.rank == 3:
        binary = binary[..., 0]
    if binary.shape.rank != 2 or binary.shape[0] != binary.shape[1]:
        raise ValueError(f"`binary_map` must be square [S, S] or [S, S, 1]; received {binary.shape}.")
    height, width = (int(v) for v in original_size)
    if rule == "upsample_logits":
        side = max(height, width)
        resized = tf.image.resize(binary[..., tf.newaxis], [side, side], method="bilinear")
        top, left = (side - height) // 2, (side - width) // 2
        return resized[top : top + height, left : left + width, 0].numpy() > 0
    if image_window is None:
        image_window = letterbox_geometry(height, width, int(binary.shape[0]))
    restored = restore_batch_to_original(
        binary[tf.newaxis], np.reshape(np.asarray(image_window), (1, 4)), [[height, width]]
    )[0]
    return restored >= 0.5


def score_masks(logits, image_window, original_size, image_size, rule=DEFAULT_SCORING_RULE,
                threshold=0.5):
    """THE scoring rule: logits of a batch -> bool masks at each image's original size.

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
    import tensorflow as tf

    from refseg_tf.data.transforms import restore_batch_to_original

    check_scoring_rule(rule)
    threshold = check_threshold(threshold)
    sizes = np.asarray(original_size, dtype=np.int64).reshape(-1, 2)
    windows = np.asarray(image_window, dtype=np.int64).reshape(-1, 4)
    if rule == "upsample_logits":
        upsampled = upsample_logits_tf(logits, image_size).numpy()[..., 0]
        binary = upsampled >= logit_threshold(threshold)
        return [restore_binary_mask(binary[i], sizes[i], rule) for i in range(len(sizes))]
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    if logits.shape.rank == 3:
        logits = logits[..., tf.newaxis]
    probabilities = tf.sigmoid(logits)
    maps = restore_batch_to_original(probabilities, windows, sizes, image_size=int(image_size))
    return [restored >= threshold for restored in maps]


def probability_maps(logits, image_window, original_size, image_size,
                     rule=DEFAULT_SCORING_RULE):
    """Foreground probabilities at each original size, for display and `--probabilities`.

    "upsample_logits": the sigmoid of the TF1-upsampled logits, window cropped and resized;
    "resize_probability": the probabilities that rule thresholds. Under "upsample_logits" the
    scored mask is `score_masks`, not a threshold of this map.
    """
    import tensorflow as tf

    from refseg_tf.data.transforms import restore_batch_to_original

    check_scoring_rule(rule)
    if rule == "upsample_logits":
        probabilities = foreground_probability(logits, image_size)
    else:
        logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
        probabilities = tf.sigmoid(logits if logits.shape.rank == 4 else logits[..., tf.newaxis])
    return restore_batch_to_original(
        probabilities,
        np.asarray(image_window, np.int64).reshape(-1, 4),
        np.asarray(original_size, np.int64).reshape(-1, 2),
        image_size=int(image_size),
    )


"""THE rule that turns a full-size mask into a coarse training label (one place, `keras.ops`).

Both the losses (`refseg_tf.losses`, inside the model's training step) and the input pipeline
(`refseg_tf.data.transforms.downsample_label`, inside `tf.data`) call `downsample_mask`, so a
label mode means the same thing wherever a label is made. It uses only `keras.ops`, which run
as TensorFlow ops under the TensorFlow backend, in a model as well as in a `tf.data` map.

Modes (`LABEL_MODES`):
- "binary": 1 where at least half of the cell is foreground.
- "soft": the share of foreground pixels in the cell (area average).
- "any": a cell is 1 if any of its pixels is (max pooling): Hu et al.'s 16x16 coarse label
  (`downscale_local_mean(mask, 32) > 0` in the authors' `build_training_batches_seg.py`).
- "point": `label[i, j] = mask[floor(i * H / h), floor(j * W / w)]`, what TF1
  `tf.image.resize_bilinear(mask, [h, w])` (align_corners=False, no half-pixel centres)
  computes for an integer factor: the RMI code's 40x40 target (`RMI_model.py` / `LSTM_model.py`
  `train_op`, 320 -> 40 samples pixel (8i, 8j)), binary, not soft. For a non-integer factor
  TF1 would also blend the next pixel; here the sample stays binary (the floor pixel).
"""

import numpy as np
from keras import ops

LABEL_MODES = ("binary", "soft", "any", "point")
# The pixel grid on which each label mode's cells sit, i.e. how a map on the label grid is
# brought back to the image so that it lines up with the mask it was made from: "point"
# labels sample pixel (s i, s j), TF1's corner grid (`resize_bilinear(..., half_pixel_centers=
# False)`, the "upsample_logits" scoring rule); the block modes pool the s x s block whose
# centre is s i + (s - 1) / 2, the half-pixel grid.
LABEL_GRIDS = {"point": "tf1", "binary": "half_pixel", "soft": "half_pixel", "any": "half_pixel"}


def _check_mode(mode):
    if mode not in LABEL_MODES:
        raise ValueError(f"label mode must be one of {LABEL_MODES}; received {mode!r}.")


def label_grid(mode) -> str:
    """The pixel grid of `mode`'s label cells: "tf1" ("point") or "half_pixel" (block modes).

    The one rule that puts a map on a label grid back onto the image (e.g. ASGN's fake and real
    masks for the discriminator); `refseg_tf.scoring` upsamples logits on the same grids.
    """
    _check_mode(mode)
    return LABEL_GRIDS[mode]


def _static_int(value):
    """A Python int for a static size (int, numpy int), the tensor itself otherwise."""
    return int(value) if isinstance(value, (int, np.integer)) else value


def _is_static(*values):
    return all(isinstance(value, int) for value in values)


def point_sample_indices(source, target):
    """`floor(i * source / target)` for `i < target`: the pixel each of `target` cells samples."""
    if _is_static(source, target):
        return np.arange(target, dtype=np.int64) * source // target
    source = ops.cast(source, "int32")
    return (ops.arange(target, dtype="int32") * source) // ops.cast(target, "int32")


def _point_sample(mask, height, width):
    shape = ops.shape(mask)  # ints where static, tensors otherwise
    rows = point_sample_indices(shape[1], height)
    cols = point_sample_indices(shape[2], width)
    return ops.take(ops.take(mask, rows, axis=1), cols, axis=2)


def _cell_share(mask, height, width, reduce_max=False):
    """Area average (or max) of each cell: exact block pooling when the sizes divide (or are
    only known at run time, where they must divide), area-resize footprints otherwise."""
    shape = ops.shape(mask)
    static = _is_static(shape[1], shape[2], height, width)
    if static and (shape[1] % height or shape[2] % width):
        share = ops.image.resize(mask, (height, width), interpolation="area")
        return ops.cast(share > 0.0, "float32") if reduce_max else share
    block = (shape[1] // height, shape[2] // width) if static else None
    if block and not reduce_max and (block[0] * block[1]) & (block[0] * block[1] - 1) == 0:
        # A power-of-two block (S/8 grids: 320 -> 40, 416 -> 52): the same means as one pooling
        # op, equal to the reshape-and-mean for masks in {0, 1} (integer sums divided by a
        # power of two are exact however the pooling orders or scales them), about half its
        # CPU (0.27 vs 0.5 ms for a 416 px mask on a 2-core EPYC; the training input's soft
        # label, issue 22).
        return ops.average_pool(mask, block, strides=block, padding="valid")
    blocks = ops.reshape(
        mask, (shape[0], height, shape[1] // height, width, shape[2] // width, shape[3])
    )
    return ops.max(blocks, axis=(2, 4)) if reduce_max else ops.mean(blocks, axis=(2, 4))


def downsample_mask(mask, size, mode="binary"):
    """Downsamples a `[B, H, W, C]` mask in {0, 1} onto a `size = (h, w)` label grid.

    Args:
        mask: float `[B, H, W, C]` (usually C = 1) with values in {0, 1}.
        size: `(h, w)`, the label grid (`h <= H`, `w <= W`). When H, W are multiples of h, w
            the cells are whole pixel blocks; otherwise "soft"/"binary"/"any" use the
            footprints of an area resize and "point" samples the floor pixel.
        mode: one of `LABEL_MODES` (see the module docstring).

    Returns:
        float32 `[B, h, w, C]`.

    Example:
        >>> mask = np.eye(4, dtype=np.float32)[None, ..., None]
        >>> downsample_mask(mask, (2, 2), "soft")[0, ..., 0]    # [[0.5, 0], [0, 0.5]]
        >>> downsample_mask(mask, (2, 2), "point")[0, ..., 0]   # mask[0::2, 0::2] = [[1, 0], [0, 1]]

    Reference:
        Hu et al. 2016, Sec. 3.3 (coarse label of the low-resolution stage); Liu et al. 2017
        (RMI), Eq. 6 (loss at the 40x40 feature grid) with the target of the authors' code.
    """
    _check_mode(mode)
    mask = ops.cast(mask, "float32")
    if len(mask.shape) != 4:
        raise ValueError(f"mask must be [B, H, W, C]; received shape {tuple(mask.shape)}.")
    height, width = (_static_int(value) for value in size)
    if _is_static(height, width) and (height <= 0 or width <= 0):
        raise ValueError(f"size must be two positive ints; received {tuple(size)!r}.")
    if mode == "point":
        return _point_sample(mask, height, width)
    if mode == "any":
        return _cell_share(mask, height, width, reduce_max=True)
    share = _cell_share(mask, height, width)
    if mode == "soft":
        return share
    return ops.cast(share >= 0.5, "float32")

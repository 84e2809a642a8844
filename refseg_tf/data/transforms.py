"""Image and label transforms of the input pipeline, and their inverse for predictions.

Every function here is graph-safe (TensorFlow ops only), so the same code runs inside
`tf.data` maps (`refseg_tf.data.load`), in eager mode for a user's own picture
(`preprocess_image`) and when mapping predictions back to the original image
(`restore_to_original`, `restore_batch_to_original`).

Geometry ("letterbox"), as in the public code of Hu et al. 2016, RMI and RRN: an image of
size (h, w) is scaled by `min(S / h, S / w)`, its new size is rounded, and it is centred on an
S x S canvas (offsets rounded down). The window `(top, left, height, width)` of the image inside
the square is what the inverse transform crops out again. With the "bicubic" resize (MCN /
LTS) the new size is floored (`int(iw * scale)` in MCN's `letterbox_image`) and a downscale is
antialiased, as PIL's `Image.BICUBIC` is (`letterbox_rounding` ties the rounding to the method).
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from refseg_tf.labels import LABEL_MODES, downsample_mask

RESIZE_METHODS = ("bilinear", "bicubic")
PAD_VALUES = {"zero": 0.0, "grey": 128.0}
NORMALIZATIONS = ("vgg_rgb", "caffe_bgr", "unit", "none")

VGG_RGB_MEAN = (123.68, 116.779, 103.939)
CAFFE_BGR_MEAN = (104.008, 116.669, 122.679)


def check_choice(name: str, value, allowed: Sequence) -> None:
    """Raises a ValueError naming the argument and its allowed values if `value` is not one."""
    if isinstance(value, str) and value in tuple(allowed):
        return
    choices = ", ".join(repr(a) for a in allowed)
    raise ValueError(f"`{name}` must be one of {choices}; received {value!r}.")


def check_positive_int(name: str, value) -> None:
    """Raises a ValueError naming the argument unless `value` is a positive Python/numpy int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; received {value!r}.")


# The new size of the letterbox per resize method: Hu / RMI / RRN round, MCN / LTS floor.
LETTERBOX_ROUNDINGS = ("round", "floor")
_ROUNDING_OF_METHOD = {"bilinear": "round", "bicubic": "floor"}


def letterbox_rounding(method: str) -> str:
    """The new-size rounding that goes with a resize method ("bicubic" = MCN's letterbox: floor)."""
    check_choice("method", method, RESIZE_METHODS)
    return _ROUNDING_OF_METHOD[method]


def letterbox_geometry(height, width, size, rounding: str = "round"):
    """The window of an (height, width) image letterboxed into a size x size square.

    Args:
        height, width: original image size (Python ints or scalar integer tensors).
        size: side S of the square canvas.
        rounding: "round" the new size (Hu, RMI, RRN) or "floor" it (MCN / LTS,
            `letterbox_rounding("bicubic")`).

    Returns:
        int32 tensor [4] = (top, left, new_height, new_width): the resized image occupies rows
        `top:top + new_height` and columns `left:left + new_width` of the canvas.

    Example:
        >>> letterbox_geometry(240, 320, 64).numpy()
        array([ 8,  0, 48, 64], dtype=int32)

    Reference: resize-and-pad of the public code of Hu et al. 2016 (ECCV), reused by RMI
    (Liu et al. 2017) and RRN (Li et al. 2018): scale = min(S/h, S/w), rounded new size,
    offsets floor((S - new) / 2). MCN (Luo et al. 2020) `letterbox_image`: int(iw * scale).
    """
    check_choice("rounding", rounding, LETTERBOX_ROUNDINGS)
    # float64 so that the rounding matches numpy's on the authors' side.
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    side = tf.cast(size, tf.float64)
    scale = tf.minimum(side / height, side / width)
    scaled = tf.stack([height, width]) * scale
    # floor: a tiny tolerance so that e.g. 416 / 640 * 640 is 416, not 415.999...
    rounded = tf.round(scaled) if rounding == "round" else tf.floor(scaled + 1e-9)
    new_size = tf.clip_by_value(rounded, 1.0, side)
    new_size = tf.cast(new_size, tf.int32)
    offsets = (tf.cast(size, tf.int32) - new_size) // 2
    return tf.concat([offsets, new_size], axis=0)


def _pad_to_square(resized, window, size, constant):
    top, left, new_height, new_width = tf.unstack(window)
    paddings = [[top, size - top - new_height], [left, size - left - new_width], [0, 0]]
    return tf.pad(resized, paddings, constant_values=constant)


def resize_and_pad(image, size: int, method: str = "bilinear", pad_value: str = "zero"):
    """Letterboxes an RGB image into a size x size float32 canvas (pixel values, not normalised).

    Args:
        image: [h, w, C] image, any numeric dtype with pixel values in [0, 255].
        size: side S of the output.
        method: "bilinear" (Hu, RMI, RRN) or "bicubic" (MCN/LTS: as PIL's `Image.BICUBIC`,
            antialiased when downscaling, the new size floored; clipped to [0, 255]).
        pad_value: "zero" (Hu, RMI, RRN) or "grey" (128, MCN/LTS) for the canvas outside the image.

    Returns:
        float32 [S, S, C].

    Example:
        >>> resize_and_pad(tf.zeros([30, 60, 3], tf.uint8), 32, "bicubic", "grey").shape
        TensorShape([32, 32, 3])

    Reference: Hu et al. 2016 public code (zero canvas, bilinear); MCN (Luo et al. 2020), the base
    of LTS (Jing et al. 2021, Sec. 4.2): 416 letterbox, grey 128 padding, bicubic.
    """
    check_choice("method", method, RESIZE_METHODS)
    check_choice("pad_value", pad_value, tuple(PAD_VALUES))
    check_positive_int("size", size)
    image = tf.convert_to_tensor(image)
    if image.shape.rank != 3:
        raise ValueError(f"An image must be [h, w, channels]; received shape {image.shape}.")
    shape = tf.shape(image)
    window = letterbox_geometry(shape[0], shape[1], size, letterbox_rounding(method))
    # PIL's BICUBIC (MCN) widens its kernel when downscaling; tf.image.resize does so only with
    # antialias=True (which never changes an upscale).
    resized = tf.image.resize(
        tf.cast(image, tf.float32), window[2:], method=method, antialias=method == "bicubic"
    )
    if method == "bicubic":
        resized = tf.clip_by_value(resized, 0.0, 255.0)
    padded = _pad_to_square(resized, window, size, PAD_VALUES[pad_value])
    return tf.ensure_shape(padded, [size, size, image.shape[-1]])


def binarize_mask(mask):
    """Any [h, w] or [h, w, 1] mask as float32 [h, w, 1] in {0, 1} (non-zero = foreground)."""
    mask = tf.convert_to_tensor(mask)
    if mask.shape.rank == 2:
        mask = mask[..., tf.newaxis]
    if mask.shape.rank != 3:
        raise ValueError(f"A mask must be [h, w] or [h, w, 1]; received shape {mask.shape}.")
    return tf.cast(tf.not_equal(mask, tf.zeros_like(mask)), tf.float32)


def resize_and_pad_mask(mask, size: int, rounding: str = "round"):
    """Letterboxes a mask like `resize_and_pad` does the image: binary float32 [S, S, 1].

    The mask is resized bilinearly and every pixel with a value > 0 is foreground, as the
    authors' code did (so thin objects never vanish); the padding is background.

    Args:
        mask: [h, w] or [h, w, 1] mask, non-zero = foreground.
        size: side S of the output.
        rounding: the letterbox's new-size rounding, that of the image's resize method
            (`letterbox_rounding`).

    Example:
        >>> m = resize_and_pad_mask(np.ones([10, 20], np.uint8), 8)
        >>> m[..., 0].numpy().sum(axis=1)  # rows 2..5 hold the image
        array([0., 0., 8., 8., 8., 8., 0., 0.], dtype=float32)

    Reference: Hu et al. 2016 / RMI public code: bilinear resize of the mask, then `> 0`.
    """
    check_positive_int("size", size)
    mask = binarize_mask(mask)
    shape = tf.shape(mask)
    window = letterbox_geometry(shape[0], shape[1], size, rounding)
    resized = tf.image.resize(mask, window[2:], method="bilinear")
    resized = tf.cast(resized > 0.0, tf.float32)
    return tf.ensure_shape(_pad_to_square(resized, window, size, 0.0), [size, size, 1])


def _as_batched(mask):
    mask = tf.convert_to_tensor(mask)
    rank = mask.shape.rank
    if rank not in (3, 4):
        raise ValueError(f"A label mask must be [H, W, 1] or [B, H, W, 1]; received {mask.shape}.")
    return (mask[tf.newaxis] if rank == 3 else mask), rank == 3


def downsample_label(mask, grid: int, mode: str = "binary"):
    """Downsamples an input-size binary mask to a grid x grid training label.

    The rule is `refseg_tf.labels.downsample_mask`, the one the losses use too; this function
    only accepts an unbatched `[S, S, 1]` mask and a square grid.

    Args:
        mask: float [S, S, 1] or [B, S, S, 1] in {0, 1} (the output of `resize_and_pad_mask`).
        grid: side g of the label.
        mode: one of `LABEL_MODES`: "soft" (area average of the pixels of each cell), "any"
            (a cell is positive if any of its pixels is: Hu's 16x16 coarse label), "binary"
            (soft >= 0.5) or "point" (`label[i, j] = mask[i*S//g, j*S//g]`, TF1
            `resize_bilinear` without half-pixel centres: the RMI code's 40x40 target).

    Returns:
        float32 [g, g, 1] (or [B, g, g, 1]).

    Example:
        >>> downsample_label(np.eye(4, dtype=np.float32)[..., None], 2, "soft")[..., 0].numpy()
        array([[0.5, 0. ],
               [0. , 0.5]], dtype=float32)

    When S is not a multiple of g, cells are the area-resize footprints (`tf.image.resize` with
    method "area"): "soft" is the area-weighted average and "any" is that average > 0.

    Reference: Hu et al. 2016, Sec. 3.3 (low-resolution stage, label downsampled to the
    16x16 score map); Liu et al. 2017 (RMI), Sec. 4.1 (loss at feature resolution, 40x40).
    """
    check_positive_int("grid", grid)
    check_choice("mode", mode, LABEL_MODES)
    batched, was_single = _as_batched(mask)
    label = downsample_mask(tf.cast(batched, tf.float32), (grid, grid), mode)
    return label[0] if was_single else label


def normalize_image(image, preset: str = "vgg_rgb"):
    """Maps RGB pixel values in [0, 255] to the network's input convention.

    Args:
        image: [..., 3] RGB, any numeric dtype.
        preset: "vgg_rgb" (subtract the ImageNet RGB mean, Hu et al. 2016), "caffe_bgr" (flip to
            BGR and subtract the Caffe DeepLab mean, RMI / RRN), "unit" (divide by 255, MCN / LTS)
            or "none" (float32 pixel values).

    Returns:
        float32 tensor of the same shape.

    Example:
        >>> normalize_image(tf.fill([1, 1, 3], 255.0), "unit").numpy().ravel()
        array([1., 1., 1.], dtype=float32)

    Reference: means from the public code of Hu et al. 2016 (VGG, RGB
    [123.68, 116.779, 103.939]) and of RMI / RRN (BGR (104.008, 116.669, 122.679)).
    """
    check_choice("normalization", preset, NORMALIZATIONS)
    image = tf.cast(image, tf.float32)
    if preset == "vgg_rgb":
        return image - _channel_plane(VGG_RGB_MEAN, image)
    if preset == "caffe_bgr":
        return tf.reverse(image, axis=[-1]) - _channel_plane(CAFFE_BGR_MEAN, image)
    if preset == "unit":
        return image / 255.0
    return image


def _channel_plane(mean, image):
    """The per-channel `mean` broadcast to the shape of `image` ([..., 3]).

    Subtracting this full-size tensor gives the same float32 values as subtracting the [3]
    vector, but runs as a plain element-wise op: TF's implicit broadcast of a [3] vector over an
    [S, S, 3] image costs about 0.3 ms per 320 px image on one CPU core, the
    `tf.broadcast_to` copy plus the subtraction about 0.06 ms (measured on a 2-core EPYC with
    TF 2.21; `benchmarks/run_all.py`, figure 1, ablates the normalisation).
    """
    return tf.broadcast_to(tf.constant(mean, tf.float32), tf.shape(image))


def denormalize_image(image, preset: str = "vgg_rgb"):
    """Inverse of `normalize_image`: float32 RGB pixel values (in [0, 255] for a real picture).

    Example:
        >>> x = tf.constant([[[10.0, 20.0, 30.0]]])
        >>> denormalize_image(normalize_image(x, "caffe_bgr"), "caffe_bgr").numpy().ravel()
        array([10., 20., 30.], dtype=float32)
    """
    check_choice("normalization", preset, NORMALIZATIONS)
    image = tf.cast(image, tf.float32)
    if preset == "vgg_rgb":
        return image + tf.constant(VGG_RGB_MEAN, tf.float32)
    if preset == "caffe_bgr":
        return tf.reverse(image + tf.constant(CAFFE_BGR_MEAN, tf.float32), axis=[-1])
    if preset == "unit":
        return image * 255.0
    return image


def _as_rgb(image):
    """[h, w], [h, w, 1], [h, w, 3] or [h, w, 4] (alpha dropped) -> [h, w, 3]."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    channels = image.shape[-1] if image.shape.rank == 3 else None
    if channels not in (1, 3, 4):
        raise ValueError(
            "An image must be [h, w], [h, w, 1], [h, w, 3] or [h, w, 4] with a known channel "
            f"count; received shape {image.shape}."
        )
    if channels == 1:
        return tf.tile(image, [1, 1, 3])
    return image[..., :3]


def preprocess_image(
    image,
    image_size: int = 320,
    *,
    resize_method: str = "bilinear",
    pad_value: str = "zero",
    normalization: str = "vgg_rgb",
):
    """Prepares one image exactly as `refseg_tf.data.load` does: letterbox, then normalise.

    Args:
        image: [h, w, 3] uint8 RGB, numpy or tensor (grey [h, w] / [h, w, 1] and RGBA converted).
        image_size: side S of the network input.
        resize_method, pad_value, normalization: as in `load` (see `resize_and_pad`,
            `normalize_image`).

    Returns:
        (image float32 [S, S, 3], window int32 [4] = (top, left, height, width)); pass the window
        and the original (h, w) to `restore_to_original` / `restore_batch_to_original`.

    Example:
        >>> picture = np.zeros([240, 320, 3], np.uint8)
        >>> x, window = preprocess_image(picture, 64, normalization="unit")
        >>> x.shape, window.numpy()
        (TensorShape([64, 64, 3]), array([ 8,  0, 48, 64], dtype=int32))
    """
    rgb = _as_rgb(image)
    resized = resize_and_pad(rgb, image_size, resize_method, pad_value)
    shape = tf.shape(rgb)
    window = letterbox_geometry(shape[0], shape[1], image_size, letterbox_rounding(resize_method))
    return normalize_image(resized, normalization), window


def _as_map3d(score_map):
    score_map = tf.cast(tf.convert_to_tensor(score_map), tf.float32)
    rank = score_map.shape.rank
    if rank == 2:
        return score_map[..., tf.newaxis], True
    if rank == 3 and score_map.shape[-1] == 1:
        return score_map, False
    raise ValueError(f"A score map must be [S, S] or [S, S, 1]; received shape {score_map.shape}.")


def _to_image_size(maps, image_size):
    """Resizes [..., s, s, 1] maps to image_size unless they already are (static check)."""
    height, width = maps.shape[-3], maps.shape[-2]
    if height == image_size and width == image_size:
        return maps
    return tf.image.resize(maps, [image_size, image_size], method="bilinear")


def crop_window_and_resize(map3d, window, original_size, method: str = "bilinear"):
    """Crops the letterbox `window` (top, left, height, width) out of an S x S map [S, S, C]
    and resizes it to `original_size` (h, w): the inverse letterbox step (graph-safe)."""
    window = tf.cast(window, tf.int32)
    cropped = map3d[window[0] : window[0] + window[2], window[1] : window[1] + window[3]]
    return tf.image.resize(cropped, tf.cast(original_size, tf.int32), method=method)


def restore_to_original(score_map, original_size, image_size: int, method: str = "bilinear",
                        rounding: str = "round"):
    """Maps a square score map back onto the original image: inverse of the letterbox.

    Args:
        score_map: float [s, s] or [s, s, 1] scores (logits or probabilities) of the letterboxed
            input; when s != image_size the map is first resized bilinearly to image_size, so
            stride-8 logits can be passed directly.
        original_size: (height, width) of the original image (ints or an int tensor [2]).
        image_size: side S of the network input the map belongs to.
        method: resize method of the final step ("bilinear" for scores, "nearest" for labels).
        rounding: the letterbox's new-size rounding (`letterbox_rounding` of the input's resize).

    Returns:
        float32 [height, width] (or [height, width, 1], following the input's rank).

    Example:
        >>> scores = tf.random.normal([64, 64])
        >>> restore_to_original(scores, (240, 320), 64).shape
        TensorShape([240, 320])

    Reference: evaluation of Hu et al. 2016 / RMI / RRN: predictions are scored at the original
    resolution after undoing the resize-and-pad.
    """
    check_positive_int("image_size", image_size)
    map3d, was_2d = _as_map3d(score_map)
    map3d = _to_image_size(map3d, image_size)
    original_size = tf.cast(original_size, tf.int32)
    window = letterbox_geometry(original_size[0], original_size[1], image_size, rounding)
    restored = crop_window_and_resize(map3d, window, original_size, method)
    return restored[..., 0] if was_2d else restored


def restore_batch_to_original(
    score_maps, image_window, original_size, image_size=None, method: str = "bilinear"
):
    """Batched inverse transform for evaluators: one numpy map per example at its original size.

    Args:
        score_maps: [B, s, s] or [B, s, s, 1] scores (numpy or tensor).
        image_window: int [B, 4] = (top, left, height, width), the `image_window` of a batch of
            `load`, in image_size coordinates.
        original_size: int [B, 2] = (height, width), the `original_size` of the batch.
        image_size: side S the windows refer to; None means the maps' own size. Maps of another
            size are resized bilinearly to S first.
        method: resize method of the final step.

    Returns:
        list of B float32 numpy arrays [height_i, width_i].

    Example:
        for batch in load(data_dir, "val", mode="eval"):  # the default S = 320
            logits = model(batch)  # [B, 40, 40, 1]
            scores = restore_batch_to_original(
                logits, batch["image_window"], batch["original_size"], image_size=320)
    """
    maps = tf.cast(tf.convert_to_tensor(score_maps), tf.float32)
    if maps.shape.rank == 3:
        maps = maps[..., tf.newaxis]
    if maps.shape.rank != 4 or maps.shape[-1] != 1:
        raise ValueError(
            f"`score_maps` must be [B, s, s] or [B, s, s, 1]; received shape {maps.shape}."
        )
    windows = np.asarray(image_window, dtype=np.int32)
    sizes = np.asarray(original_size, dtype=np.int32)
    count = maps.shape[0]
    if windows.shape != (count, 4) or sizes.shape != (count, 2):
        raise ValueError(
            f"`image_window` must be [{count}, 4] and `original_size` [{count}, 2] for {count} "
            f"score maps; received {windows.shape} and {sizes.shape}."
        )
    if image_size is not None:
        check_positive_int("image_size", image_size)
        maps = _to_image_size(maps, image_size)
    return [
        crop_window_and_resize(maps[i], windows[i], sizes[i], method)[..., 0].numpy()
        for i in range(count)
    ]

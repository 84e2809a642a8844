"""Tests of refseg_tf.data.transforms: letterbox geometry, labels, normalisation, inverse."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from refseg_tf.data import transforms
from refseg_tf.data.transforms import (
    denormalize_image,
    downsample_label,
    letterbox_geometry,
    normalize_image,
    preprocess_image,
    resize_and_pad,
    resize_and_pad_mask,
    restore_batch_to_original,
    restore_to_original,
)


def numpy_letterbox(height, width, size):
    """The authors' rule written independently in numpy: (top, left, new_h, new_w)."""
    scale = min(size / height, size / width)
    new_h, new_w = int(np.round(height * scale)), int(np.round(width * scale))
    return (size - new_h) // 2, (size - new_w) // 2, new_h, new_w


def rectangle_mask(height, width, top, left, bottom, right):
    mask = np.zeros([height, width], np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "height, width, size, expected",
    [
        (240, 320, 64, (8, 0, 48, 64)),
        (40, 64, 32, (6, 0, 20, 32)),
        (64, 32, 32, (0, 8, 32, 16)),
        (50, 50, 32, (0, 0, 32, 32)),
        (30, 90, 32, (10, 0, 11, 32)),  # 32 * 30 / 90 = 10.67 -> 11, top = (32 - 11) // 2
        (3, 1000, 32, (15, 0, 1, 32)),  # 0.096 rounds to 0: kept at one row
    ],
)
def test_letterbox_geometry_known_cases(height, width, size, expected):
    np.testing.assert_array_equal(letterbox_geometry(height, width, size).numpy(), expected)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(4, 2000),
    width=st.integers(4, 2000),
    size=st.sampled_from([32, 64, 320, 416, 512]),
)
def test_letterbox_geometry_matches_numpy_rule(height, width, size):
    window = letterbox_geometry(height, width, size).numpy()
    expected = numpy_letterbox(height, width, size)
    if min(expected[2:]) >= 1:
        np.testing.assert_array_equal(window, expected)
    assert max(window[2], window[3]) == size
    assert window[0] + window[2] <= size and window[1] + window[3] <= size


def test_letterbox_geometry_accepts_tensors_in_a_graph():
    geometry = tf.function(
        lambda height, width: letterbox_geometry(height, width, 32),
        input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int64)],
    )
    np.testing.assert_array_equal(geometry(40, 64).numpy(), (6, 0, 20, 32))
    np.testing.assert_array_equal(geometry(64, 32).numpy(), (0, 8, 32, 16))


# ---------------------------------------------------------------- image


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("pad_value, fill", [("zero", 0.0), ("grey", 128.0)])
def test_resize_and_pad_keeps_colour_and_pads(method, pad_value, fill):
    colour = np.array([200, 17, 90], np.uint8)
    image = np.broadcast_to(colour, [40, 64, 3])
    out = resize_and_pad(image, 32, method, pad_value).numpy()
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[6:26], np.broadcast_to(colour, [20, 32, 3]), atol=1e-3)
    np.testing.assert_array_equal(out[:6], fill)
    np.testing.assert_array_equal(out[26:], fill)


def test_bicubic_is_clipped_to_pixel_range():
    checker = (np.indices([24, 40]).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = np.stack([checker] * 3, axis=-1)
    raw = tf.image.resize(tf.cast(image, tf.float32), [51, 85], method="bicubic").numpy()
    assert raw.min() < 0.0 or raw.max() > 255.0  # what the clip is for
    out = resize_and_pad(image, 85, "bicubic").numpy()
    assert out.min() >= 0.0 and out.max() <= 255.0


def test_resize_and_pad_rejects_bad_arguments():
    image = np.zeros([8, 8, 3], np.uint8)
    with pytest.raises(ValueError, match="`method`.*'bilinear', 'bicubic'"):
        resize_and_pad(image, 8, "nearest")
    with pytest.raises(ValueError, match="`pad_value`.*'zero', 'grey'"):
        resize_and_pad(image, 8, "bilinear", "black")
    with pytest.raises(ValueError, match="`size` must be a positive integer"):
        resize_and_pad(image, 0)
    with pytest.raises(ValueError, match=r"\[h, w, channels\]"):
        resize_and_pad(np.zeros([8, 8], np.uint8), 8)


# ---------------------------------------------------------------- masks and labels


def test_resize_and_pad_mask_places_rectangle_exactly():
    # (40, 64) -> (20, 32) at top 6: the factor-2 downsampling maps rows 10..19 -> 5..9.
    mask = rectangle_mask(40, 64, 10, 16, 20, 48)
    out = resize_and_pad_mask(mask, 32).numpy()
    expected = np.zeros([32, 32, 1], np.float32)
    expected[11:16, 8:24] = 1.0
    np.testing.assert_array_equal(out, expected)


def test_resize_and_pad_mask_is_binary_and_keeps_thin_objects():
    mask = np.zeros([90, 30], np.int32)
    mask[:, 13] = 7  # a one-pixel line, non-binary value
    out = resize_and_pad_mask(mask[..., None], 30).numpy()
    assert set(np.unique(out)) == {0.0, 1.0}
    window = letterbox_geometry(90, 30, 30).numpy()
    assert out[window[0] : window[0] + window[2], :, 0].any(axis=1).all()
    assert not out[:, : window[1]].any() and not out[:, window[1] + window[3] :].any()


def numpy_cells(mask, grid):
    size = mask.shape[0]
    k = size // grid
    return mask[:, :, 0].reshape(grid, k, grid, k)


@pytest.mark.parametrize("grid", [4, 8, 16])
def test_downsample_label_matches_numpy(grid):
    rng = np.random.default_rng(grid)
    mask = (rng.random([32, 32, 1]) > 0.7).astype(np.float32)
    mask[4:20, 8:30] = 1.0
    cells = numpy_cells(mask, grid)
    soft = cells.mean(axis=(1, 3))[..., None]
    np.testing.assert_allclose(downsample_label(mask, grid, "soft").numpy(), soft, atol=1e-6)
    np.testing.assert_array_equal(
        downsample_label(mask, grid, "any").numpy(), cells.max(axis=(1, 3))[..., None]
    )
    np.testing.assert_array_equal(
        downsample_label(mask, grid, "binary").numpy(), (soft >= 0.5).astype(np.float32)
    )


def test_downsample_label_half_covered_cell_is_positive_in_binary_mode():
    mask = np.zeros([8, 8, 1], np.float32)
    mask[0:4, 0:2] = 1.0  # exactly half of the top-left 4x4 cell
    mask[4:5, 4:5] = 1.0  # one pixel of the bottom-right cell
    np.testing.assert_array_equal(
        downsample_label(mask, 2, "binary").numpy()[..., 0], [[1.0, 0.0], [0.0, 0.0]]
    )
    np.testing.assert_array_equal(
        downsample_label(mask, 2, "any").numpy()[..., 0], [[1.0, 0.0], [0.0, 1.0]]
    )


def test_downsample_label_batched_equals_single_and_handles_uneven_grids():
    rng = np.random.default_rng(0)
    masks = (rng.random([3, 30, 30, 1]) > 0.5).astype(np.float32)
    batched = downsample_label(masks, 7, "soft").numpy()
    assert batched.shape == (3, 7, 7, 1)
    for index in range(3):
        np.testing.assert_allclose(batched[index], downsample_label(masks[index], 7, "soft"))
    # Area averaging keeps the foreground share; "any" covers everything "binary" does.
    np.testing.assert_allclose(batched.mean(axis=(1, 2, 3)), masks.mean(axis=(1, 2, 3)), atol=1e-5)
    any_label = downsample_label(masks, 7, "any").numpy()
    assert np.all(any_label >= downsample_label(masks, 7, "binary").numpy())
    assert set(np.unique(any_label)) <= {0.0, 1.0}


def test_downsample_label_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`mode`.*'binary', 'soft', 'any'"):
        downsample_label(np.zeros([8, 8, 1]), 2, "max")
    with pytest.raises(ValueError, match="`grid` must be a positive integer"):
        downsample_label(np.zeros([8, 8, 1]), 0)


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("vgg_rgb", [10.0 - 123.68, 20.0 - 116.779, 30.0 - 103.939]),
        ("caffe_bgr", [30.0 - 104.008, 20.0 - 116.669, 10.0 - 122.679]),
        ("unit", [10.0 / 255.0, 20.0 / 255.0, 30.0 / 255.0]),
        ("none", [10.0, 20.0, 30.0]),
    ],
)
def test_normalize_presets_and_inverse(preset, expected):
    pixel = np.array([[[10, 20, 30]]], np.uint8)
    normalized = normalize_image(pixel, preset)
    np.testing.assert_allclose(normalized.numpy().ravel(), expected, rtol=1e-6)
    np.testing.assert_allclose(denormalize_image(normalized, preset).numpy(), pixel, atol=1e-4)


@pytest.mark.parametrize("preset", ["vgg_rgb", "caffe_bgr", "unit", "none"])
def test_normalize_is_bit_identical_to_a_per_channel_float32_subtraction(preset):
    # The mean is broadcast to the image's shape first (a speed-up): values must not move.
    image = np.random.default_rng(3).uniform(0, 255, [24, 40, 3]).astype(np.float32)
    means = {"vgg_rgb": transforms.VGG_RGB_MEAN, "caffe_bgr": transforms.CAFFE_BGR_MEAN}
    expected = image[..., ::-1] if preset == "caffe_bgr" else image
    if preset in means:
        expected = expected - np.asarray(means[preset], np.float32)
    elif preset == "unit":
        expected = expected / np.float32(255.0)
    out = normalize_image(image, preset).numpy()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))


def test_normalize_rejects_unknown_preset():
    with pytest.raises(ValueError, match="`normalization`.*'vgg_rgb', 'caffe_bgr', 'unit', 'none'"):
        normalize_image(np.zeros([1, 1, 3]), "imagenet")
    with pytest.raises(ValueError, match="`normalization`"):
        denormalize_image(np.zeros([1, 1, 3]), "bgr")


# ---------------------------------------------------------------- single-image preprocessing


def test_preprocess_image_is_resize_then_normalize():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, [37, 91, 3], dtype=np.uint8)
    out, window = preprocess_image(
        image, 48, resize_method="bicubic", pad_value="grey", normalization="caffe_bgr"
    )
    expected = normalize_image(resize_and_pad(image, 48, "bicubic", "grey"), "caffe_bgr")
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    # bicubic = MCN's letterbox: 37 * 48 / 91 = 19.5 floored (the rounded rule gives 20).
    np.testing.assert_array_equal(window.numpy(), [14, 0, 19, 48])


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1), (20, 30, 4)])
def test_preprocess_image_converts_grey_and_rgba(shape):
    image = np.full(shape, 77, np.uint8)
    out, _ = preprocess_image(image, 30, normalization="none")
    assert out.shape == (30, 30, 3)
    np.testing.assert_allclose(out.numpy()[5:25], 77.0, atol=1e-4)


def test_preprocess_image_rejects_two_channels():
    with pytest.raises(ValueError, match="image must be"):
        preprocess_image(np.zeros([4, 4, 2], np.uint8), 8)


# ---------------------------------------------------------------- inverse transform


@pytest.mark.parametrize("height, width", [(48, 80), (80, 48), (37, 91), (64, 64), (100, 30)])
def test_mask_forward_then_back_is_almost_identity(height, width):
    mask = np.zeros([height, width], np.uint8)
    mask[height // 5 : height * 3 // 4, width // 3 : width - 2] = 1
    mask[2 : height // 3, 2 : width // 4] = 1
    forward = resize_and_pad_mask(mask, 64)[..., 0]
    restored = restore_to_original(forward, (height, width), 64).numpy()
    assert restored.shape == (height, width)
    predicted = restored >= 0.5
    intersection = np.logical_and(predicted, mask).sum()
    union = np.logical_or(predicted, mask).sum()
    assert intersection / union > 0.85
    # Errors stay on object borders: the training label's "> 0" grows objects by about one
    # input pixel, i.e. up to two original pixels at these scales.
    assert not np.any(predicted & ~ndimage.binary_dilation(mask, iterations=2))
    assert np.all(predicted[ndimage.binary_erosion(mask, iterations=2)])


@pytest.mark.parametrize("height, width", [(48, 80), (80, 48), (37, 91), (100, 30)])
def test_restore_crops_exactly_the_image_window(height, width):
    top, left, new_h, new_w = letterbox_geometry(height, width, 64).numpy()
    inside = np.zeros([64, 64, 1], np.float32)
    inside[top : top + new_h, left : left + new_w] = 1.0
    restored = restore_to_original(inside, (height, width), 64).numpy()
    assert restored.shape == (height, width, 1)
    np.testing.assert_allclose(restored, 1.0, atol=1e-6)
    # The padding never leaks in: a map that is 1 only outside the window restores to 0.
    np.testing.assert_allclose(restore_to_original(1.0 - inside, (height, width), 64), 0.0)


def test_restore_accepts_low_resolution_maps_and_runs_in_a_graph():
    scores = np.zeros([64, 64], np.float32)
    scores[16:48, 16:48] = 5.0
    coarse = scores.reshape(8, 8, 8, 8).mean(axis=(1, 3))  # an 8x8 "stride 8" map
    restore = tf.function(
        lambda m, size: restore_to_original(m, size, 64),
        input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([2], tf.int32)],
    )
    restored = restore(coarse, tf.constant([64, 64])).numpy()
    assert restored.shape == (64, 64)
    assert restored[32, 32] == pytest.approx(5.0) and restored[0, 0] == pytest.approx(0.0)


def test_restore_rejects_non_map_inputs():
    with pytest.raises(ValueError, match=r"\[S, S\] or \[S, S, 1\]"):
        restore_to_original(np.zeros([8, 8, 3]), (4, 4), 8)
    with pytest.raises(ValueError, match="`image_size`"):
        restore_to_original(np.zeros([8, 8]), (4, 4), -1)


def test_restore_batch_matches_single_restores():
    rng = np.random.default_rng(3)
    sizes = np.array([[48, 80], [80, 48], [37, 91]], np.int32)
    windows = np.stack([letterbox_geometry(h, w, 32).numpy() for h, w in sizes])
    maps = rng.normal(size=[3, 32, 32, 1]).astype(np.float32)
    restored = restore_batch_to_original(maps, windows, sizes)
    assert [m.shape for m in restored] == [tuple(s) for s in sizes]
    for index, (height, width) in enumerate(sizes):
        single = restore_to_original(maps[index, ..., 0], (height, width), 32).numpy()
        np.testing.assert_allclose(restored[index], single, atol=1e-6)
        assert isinstance(restored[index], np.ndarray)
    # Maps at a quarter of the input size are first brought to image_size.
    small = restore_batch_to_original(maps[:, ::4, ::4, 0], windows, sizes, image_size=32)
    assert [m.shape for m in small] == [tuple(s) for s in sizes]


def test_restore_batch_checks_shapes():
    with pytest.raises(ValueError, match=r"`image_window` must be \[2, 4\]"):
        restore_batch_to_original(np.zeros([2, 8, 8]), np.zeros([3, 4]), np.zeros([2, 2]))


def test_check_choice_names_argument():
    with pytest.raises(ValueError, match=r"`colour` must be one of 'red', 'blue'; received 3"):
        transforms.check_choice("colour", 3, ("red", "blue"))


def test_bicubic_letterbox_is_mcns_floor_and_antialiased_downscale():
    # Issue 19 §8: MCN's `letterbox_image` (PIL): new size int(iw * scale), Image.BICUBIC, which
    # antialiases a downscale; `tf.image.resize(..., "bicubic")` alone does not.
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(300, 200, 3), dtype=np.uint8)
    # 200 * 64 / 300 = 42.67: rounded 43 (Hu / RMI), floored 42 (MCN).
    window = transforms.letterbox_geometry(300, 200, 64, transforms.letterbox_rounding("bicubic"))
    np.testing.assert_array_equal(window.numpy(), [0, 11, 64, 42])
    assert transforms.letterbox_geometry(300, 200, 64).numpy()[3] == 43
    canvas = transforms.resize_and_pad(image, 64, "bicubic", "grey").numpy()
    inside = canvas[:, 11:53]
    pil = np.asarray(Image.fromarray(image).resize((42, 64), Image.BICUBIC), np.float32)
    unfiltered = tf.clip_by_value(tf.image.resize(tf.cast(image, tf.float32), (64, 42), "bicubic"), 0, 255)
    # PIL and TF differ in their fixed-point / float kernels: a tolerance of a few grey levels,
    # against the tens of levels the aliased (unfiltered) resize is off on random pixels.
    assert np.abs(inside - pil).mean() < 2.0
    assert np.abs(unfiltered.numpy() - pil).mean() > 10.0
    assert (canvas[:, :11] == 128).all() and (canvas[:, 53:] == 128).all()
    # the mask and the window of the preprocessor follow the image's geometry.
    from refseg_tf.preprocessing import ReferringPreprocessor  # noqa: F401 (import check)

    mask = np.ones((300, 200), np.uint8)
    letterboxed = transforms.resize_and_pad_mask(mask, 64, "floor").numpy()[..., 0]
    assert letterboxed.sum(axis=1)[0] == 42
    _, prepared_window = transforms.preprocess_image(image, 64, resize_method="bicubic")
    np.testing.assert_array_equal(prepared_window.numpy(), window.numpy())


@pytest.mark.parametrize("size, grid", [(64, 8), (48, 6), (40, 4)])  # blocks 8x8 (pooled), 8x8, 10x10
def test_soft_label_is_the_exact_block_mean(size, grid):
    """The pooled fast path (power-of-two blocks) and the reshape-and-mean path both give the
    block means of a binary mask exactly (numpy: sum / block area)."""
    from refseg_tf.data.transforms import downsample_label

    mask = (np.random.default_rng(size).random((size, size, 1)) > 0.6).astype(np.float32)
    block = size // grid
    expected = mask.reshape(grid, block, grid, block, 1).sum(axis=(1, 3)) / (block * block)
    np.testing.assert_array_equal(downsample_label(mask, grid, "soft").numpy(), expected)
    np.testing.assert_array_equal(downsample_label(mask, grid, "binary").numpy(),
                                  (expected >= 0.5).astype(np.float32))

"""`score_mask_batch_tf` under "upsample_logits" restores the binary maps by two boolean
gathers (`scoring._resize_and_crop_support_batch`) instead of a float resize per example:
the masks must equal `score_masks` (the per-example rule) pixel for pixel."""

import numpy as np
import pytest
import tensorflow as tf

from refseg_tf import scoring


@pytest.mark.parametrize("side, grid", [(32, 8), (40, 40), (64, 13)])
def test_batched_support_equals_the_per_example_rule(side, grid):
    rng = np.random.default_rng(side + grid)
    # Smaller, equal and larger than the input side; thin; square; one pixel.
    sizes = np.array([[side, side], [1, 1], [side // 2, side * 2], [97, 13], [3 * side, 71],
                      [side - 1, side + 1], [5, 2 * side + 3]], np.int32)
    windows = np.stack([scoring._window_or_letterbox(None, s, side).numpy() for s in sizes])
    # grid == side: a noise map at full resolution, so every pixel's neighbours matter.
    logits = (3 * rng.normal(size=[len(sizes), grid, grid, 1])).astype(np.float32)
    for threshold in (0.5, 0.2):
        batch = tf.function(lambda *a: scoring.score_mask_batch_tf(
            *a, image_size=side, rule="upsample_logits", threshold=threshold))(
                logits, windows, sizes).numpy()
        expected = scoring.score_masks(logits, windows, sizes, side, "upsample_logits",
                                       threshold)
        assert batch.shape == (len(sizes), sizes[:, 0].max(), sizes[:, 1].max())
        for mask, (height, width), padded in zip(expected, sizes, batch):
            np.testing.assert_array_equal(padded[:height, :width], mask)
            assert not padded[height:].any() and not padded[:, width:].any()
        assert any(0 < mask.sum() < mask.size for mask in expected)

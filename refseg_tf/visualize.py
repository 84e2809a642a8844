"""Pictures of masks: overlays, ground-truth outlines, captions and grids (numpy + Pillow).

Images are uint8 RGB arrays [H, W, 3] (grey [H, W] or [H, W, 1] is accepted and expanded); masks
are [H, W] (or [H, W, 1]) arrays of the same height and width. Bool masks (what
`refseg_tf.scoring.score_masks` and `Predictor.predict_mask` return) are drawn as they are; a
numeric map is foreground where the value is at least `threshold` (0.5 by default: fits {0, 1},
{0, 255} and probability maps; `>=`, the comparison of `refseg_tf.scoring`). Pass the scored
mask, not a probability map, to picture what the evaluation counted.

Example:
    from refseg_tf import visualize
    picture = visualize.render_overlay(image, predicted_mask, caption="the red circle",
                                       ground_truth=true_mask)
    visualize.save_overlay("out/0001.png", image, predicted_mask, caption="the red circle",
                           ground_truth=true_mask)
    visualize.save_image("out/grid.jpg", visualize.mask_grid(images, masks, captions))
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np

from refseg_tf.files import atomic_write_bytes

PREDICTION_COLOR = (255, 0, 0)
GROUND_TRUTH_COLOR = (0, 255, 0)
CAPTION_TEXT_COLOR = (255, 255, 255)
CAPTION_BACKGROUND = (0, 0, 0)
GRID_BACKGROUND = (255, 255, 255)


def _check_color(color, name: str = "color") -> tuple[int, int, int]:
    values = tuple(int(v) for v in np.asarray(color).reshape(-1))
    if len(values) != 3 or any(not 0 <= v <= 255 for v in values):
        raise ValueError(f"{name} must be three integers in [0, 255]; received {color!r}.")
    return values


def as_rgb_image(image, name: str = "image") -> np.ndarray:
    """Validates an image and returns it as a uint8 [H, W, 3] array (grey is repeated 3 times)."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(
            f"{name} must be uint8 (0-255); received {array.dtype}. Convert it first, e.g. "
            "np.clip(x, 0, 255).astype(np.uint8)."
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3 or 0 in array.shape:
        raise ValueError(f"{name} must have shape [H, W, 3] (or [H, W]); received {array.shape}.")
    return array


def as_binary_mask(mask, shape: Sequence[int], threshold: float = 0.5, name: str = "mask"):
    """Validates a mask against an image's (H, W) and returns a bool [H, W] array."""
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape != tuple(shape[:2]):
        raise ValueError(
            f"{name} must have the image's height and width {tuple(shape[:2])}; "
            f"received shape {array.shape}."
        )
    if array.dtype == bool:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must be bool or numeric; received {array.dtype}.")
    return array >= threshold


def overlay_mask(
    image, mask, color=PREDICTION_COLOR, alpha: float = 0.5, threshold: float = 0.5
) -> np.ndarray:
    """Blends `color` into the image where the mask is on; pixels elsewhere stay unchanged.

    Returns a new uint8 [H, W, 3] array: `round((1 - alpha) * pixel + alpha * color)` inside.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; received {alpha}.")
    rgb = as_rgb_image(image)
    inside = as_binary_mask(mask, rgb.shape, threshold)
    blended = rgb.copy()
    tint = np.asarray(_check_color(color), np.float32)
    mixed = (1.0 - alpha) * rgb[inside].astype(np.float32) + alpha * tint
    blended[inside] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return blended


def mask_outline(mask, thickness: int = 1) -> np.ndarray:
    """The band of `thickness` pixels inside the mask's border (4-neighbour erosion): bool."""
    inside = np.asarray(mask).astype(bool)
    if inside.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W]; received shape {inside.shape}.")
    if thickness < 1:
        raise ValueError(f"thickness must be at least 1; received {thickness}.")
    eroded = inside
    for _ in range(thickness):
        padded = np.pad(eroded, 1, constant_values=False)
        eroded = (
            padded[1:-1, 1:-1]
            & padded[:-2, 1:-1]
            & padded[2:, 1:-1]
            & padded[1:-1, :-2]
            & padded[1:-1, 2:]
        )
    return inside & ~eroded


def draw_outline(image, mask, color=GROUND_TRUTH_COLOR, thickness: int = 1, threshold=0.5):
    """Paints the mask's outline onto a copy of the image in a solid colour."""
    rgb = as_rgb_image(image)
    outline = mask_outline(as_binary_mask(mask, rgb.shape, threshold), thickness)
    painted = rgb.copy()
    painted[outline] = _check_color(color)
    return painted


def _default_font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _split_long_word(word: str, max_width: float, measure) -> list[str]:
    """Cuts a word wider than `max_width` into pieces that fit (at least one character each)."""
    pieces = []
    while len(word) > 1 and measure(word) > max_width:
        cut = 1
        while cut < len(word) and measure(word[: cut + 1]) <= max_width:
            cut += 1
        pieces.append(word[:cut])
        word = word[cut:]
    return pieces + [word]


def wrap_text(text: str, max_width: float, measure) -> list[str]:
    """Greedy word wrap so that `measure(line) <= max_width`; words too long are split."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if measure(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            *full_pieces, line = _split_long_word(word, max_width, measure)
            lines.extend(full_pieces)
        lines.append(line)
    return lines


def draw_caption(
    image,
    text: str,
    text_color=CAPTION_TEXT_COLOR,
    background=CAPTION_BACKGROUND,
    padding: int = 3,
) -> np.ndarray:
    """Returns the image with a caption band below it (Pillow's default font, wrapped to fit).

    The band is as wide as the image and as tall as the wrapped lines need; the pixels of the
    image itself are unchanged.
    """
    from PIL import Image, ImageDraw

    rgb = as_rgb_image(image)
    font = _default_font()
    height, width = rgb.shape[:2]
    lines = wrap_text(text, max(1, width - 2 * padding), font.getlength)
    line_height = font.getbbox("Ayg")[3] + 2
    band_size = (width, len(lines) * line_height + 2 * padding)
    band = Image.new("RGB", band_size, _check_color(background, "background"))
    draw = ImageDraw.Draw(band)
    fill = _check_color(text_color, "text_color")
    for row, line in enumerate(lines):
        draw.text((padding, padding + row * line_height), line, fill=fill, font=font)
    return np.concatenate([rgb, np.asarray(band, dtype=np.uint8)], axis=0)


def _side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 2) -> np.ndarray:
    spacer = np.full((left.shape[0], gap, 3), GRID_BACKGROUND, np.uint8)
    return np.concatenate([left, spacer, right], axis=1)


def render_overlay(
    image,
    mask,
    caption: str | None = None,
    ground_truth=None,
    *,
    color=PREDICTION_COLOR,
    ground_truth_color=GROUND_TRUTH_COLOR,
    alpha: float = 0.5,
    side_by_side: bool = False,
    threshold: float = 0.5,
) -> np.ndarray:
    """One picture of a prediction: the mask blended in `color`, optional ground truth, caption.

    With `ground_truth`, its outline is drawn over the prediction in `ground_truth_color`, or,
    with `side_by_side=True`, the ground truth is shown filled in a second panel on the right.
    """
    rgb = as_rgb_image(image)
    picture = overlay_mask(rgb, mask, color, alpha, threshold)
    if ground_truth is not None:
        truth = as_binary_mask(ground_truth, rgb.shape, threshold, name="ground_truth")
        if side_by_side:
            picture = _side_by_side(picture, overlay_mask(rgb, truth, ground_truth_color, alpha))
        else:
            picture = draw_outline(picture, truth, ground_truth_color)
    if caption is not None:
        picture = draw_caption(picture, caption)
    return picture


def _image_format(path: str) -> str:
    from PIL import Image

    extension = os.path.splitext(path)[1].lower()
    image_format = Image.registered_extensions().get(extension)
    if image_format is None:
        raise ValueError(
            f"Cannot tell the image format of {path!r} from its extension {extension!r}; "
            "use e.g. .png or .jpg."
        )
    return image_format


def save_image(path, image) -> str:
    """Writes a uint8 RGB image atomically (temp file + os.replace); format from the extension."""
    from PIL import Image

    path = os.fspath(path)
    image_format = _image_format(path)
    buffer = io.BytesIO()
    Image.fromarray(as_rgb_image(image), mode="RGB").save(buffer, format=image_format)
    return atomic_write_bytes(path, buffer.getvalue())


def save_overlay(path, image, mask, caption=None, ground_truth=None, **options) -> str:
    """Renders `render_overlay(image, mask, caption, ground_truth, **options)` and saves it."""
    return save_image(path, render_overlay(image, mask, caption, ground_truth, **options))


def tile_images(
    images, columns: int | None = None, padding: int = 4, background=GRID_BACKGROUND
) -> np.ndarray:
    """Tiles images of any sizes row by row into one uint8 picture (each cell the largest size)."""
    tiles = [as_rgb_image(image, name=f"images[{i}]") for i, image in enumerate(images)]
    if not tiles:
        raise ValueError("tile_images needs at least one image.")
    if (columns is not None and columns < 1) or padding < 0:
        raise ValueError(f"columns must be >= 1 and padding >= 0; got {columns}, {padding}.")
    columns = min(len(tiles), columns or int(np.ceil(np.sqrt(len(tiles)))))
    rows = -(-len(tiles) // columns)
    cell_height = max(tile.shape[0] for tile in tiles)
    cell_width = max(tile.shape[1] for tile in tiles)
    canvas_height = rows * cell_height + (rows + 1) * padding
    canvas_width = columns * cell_width + (columns + 1) * padding
    canvas = np.empty((canvas_height, canvas_width, 3), np.uint8)
    canvas[:] = _check_color(background, "background")
    for index, tile in enumerate(tiles):
        top = padding + (index // columns) * (cell_height + padding)
        left = padding + (index % columns) * (cell_width + padding)
        canvas[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return canvas


def mask_grid(
    images,
    masks,
    captions: Sequence[str | None] | None = None,
    ground_truths=None,
    columns: int | None = None,
    padding: int = 4,
    **options,
) -> np.ndarray:
    """Renders one overlay per (image, mask[, caption, ground truth]) and tiles them.

    `options` go to `render_overlay` (color, alpha, side_by_side, ...).
    """
    images, masks = list(images), list(masks)
    count = len(images)
    captions = [None] * count if captions is None else list(captions)
    ground_truths = [None] * count if ground_truths is None else list(ground_truths)
    if not len(masks) == len(captions) == len(ground_truths) == count:
        raise ValueError(
            f"mask_grid got {count} images, {len(masks)} masks, {len(captions)} captions and "
            f"{len(ground_truths)} ground truths; they must match."
        )
    overlays = [
        render_overlay(image, mask, caption, truth, **options)
        for image, mask, caption, truth in zip(images, masks, captions, ground_truths, strict=True)
    ]
    return tile_images(overlays, columns=columns, padding=padding)


# --------------------------------------------------------------------------- response maps


def heat_colors(values) -> np.ndarray:
    """Maps values in [0, 1] to uint8 RGB, dark blue (0) -> red -> yellow (1)."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)[..., None]
    stops = np.array([[0, 0, 96], [200, 0, 60], [255, 128, 0], [255, 255, 96]], np.float32)
    position = v * (len(stops) - 1)
    lower = np.minimum(np.floor(position).astype(int), len(stops) - 2)
    fraction = position - lower
    colors = stops[lower[..., 0]] * (1.0 - fraction) + stops[lower[..., 0] + 1] * fraction
    return np.clip(np.rint(colors), 0, 255).astype(np.uint8)


def render_step_maps(
    image,
    maps,
    labels: Sequence[str],
    title: str | None = None,
    *,
    alpha: float = 0.6,
    columns: int | None = None,
    padding: int = 4,
) -> np.ndarray:
    """One panel per recurrent step (a word for RMI, a pyramid level for RRN) over the image.

    Every map is shown as a heat map blended over the image, with its label as caption; all
    panels share one colour scale (the min and max over every map), so they can be compared
    step to step as in RMI's Fig. 6.

    Args:
        image: uint8 RGB [H, W, 3].
        maps: [N, H, W] float response maps at the image size (`RMI.explain`, `RRN.explain`
            restored to the original image).
        labels: N captions (the words, or the levels).
        title: optional caption of an extra first panel showing the image alone.
        alpha: weight of the heat map in each panel.
    """
    rgb = as_rgb_image(image)
    maps = np.asarray(maps, np.float32)
    labels = list(labels)
    if maps.ndim != 3 or maps.shape[1:] != rgb.shape[:2]:
        raise ValueError(
            f"maps must have shape [N, {rgb.shape[0]}, {rgb.shape[1]}] (the image's size); "
            f"received {maps.shape}."
        )
    if len(labels) != maps.shape[0] or not labels:
        raise ValueError(
            f"labels must name each of the {maps.shape[0]} maps (at least one); "
            f"received {len(labels)} labels."
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; received {alpha}.")
    low, high = float(maps.min()), float(maps.max())
    scaled = (maps - low) / (high - low) if high > low else np.zeros_like(maps)
    panels = [] if title is None else [draw_caption(rgb, title)]
    for heat, label in zip(scaled, labels):
        blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heat_colors(heat)
        panels.append(draw_caption(np.clip(np.rint(blended), 0, 255).astype(np.uint8), label))
    return tile_images(panels, columns=columns, padding=padding)


def save_step_maps(path, image, maps, labels, title=None, **options) -> str:
    """Renders `render_step_maps(image, maps, labels, title, **options)` and saves it."""
    return save_image(path, render_step_maps(image, maps, labels, title, **options))

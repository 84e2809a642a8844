"""Synthetic referring-segmentation data written in the real refer format.

`generate(output_dir, ...)` draws scenes of coloured shapes on a textured background and writes
them exactly as the `refer` API and the converters expect:

```
OUTPUT_DIR/images/synthetic_000000000001.jpg, ...      (IMAGE_ROOT)
OUTPUT_DIR/synthetic/instances.json                     (COCO instances)
OUTPUT_DIR/synthetic/refs(unc).p                        (pickled list of ref dicts)
```

Every object of a scene is a ref; each ref has 1-3 expressions, and every expression picks out
exactly one object of its scene (see `resolve_expression`, the reference semantics). The words are:

- colour (red, green, blue, yellow) and shape (circle, square, triangle, diamond): exact match;
  "one", "shape" and "object" stand for any shape.
- size: every object is drawn either small (20-26 % of the image's short side) or big (34-42 %);
  "big", "bigger", "biggest", "large", ... all mean the big class, "small", "little", ... the small
  one. Comparatives are only written where the comparison set holds two objects ("the bigger of
  the two red circles"), superlatives where it holds more.
- position is relative: among the objects matching the other words (at least two of them), "left"
  is the one whose centre is left of every other by at least 15 % of the image width ("top" alike
  with the height); "top left" needs both.

Masks: objects are drawn one over the other and may overlap partially (each keeps at least 75 % of
its area visible); an annotation's segmentation is the **visible** part, as COCO annotators outline
it. An unoccluded object is stored as a polygon (the drawn shape is rasterised from that very
polygon with pycocotools, so decoding it gives exactly the painted pixels), an occluded one as a
compressed RLE (`counts` a string, as `pycocotools.mask.encode` gives, decoded to str); a fixed
share of annotations is stored as compressed RLE anyway, and another share as uncompressed RLE
(`counts` a list of run lengths, column-major) with `iscrowd: 1`, as COCO stores crowd regions.
`bbox` and `area` come from the visible mask.

Splits are drawn by image (all refs of an image share one): about 10 % each for val, testA and testB
(at least one image each from 4 images on), the rest train. Output is deterministic: the same
arguments give byte-identical files, and image k depends only on (seed, k, image_size).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from typing import Iterable, Sequence

import numpy as np

from refseg_tf.files import atomic_write_bytes
from refseg_tf.synthetic_data import refer_format
from refseg_tf.synthetic_data.refer_format import (  # noqa: F401  (this module's public names)
    DATASET_NAME,
    EVAL_SPLIT_FRACTION,
    IMAGE_DIRNAME,
    INSTANCES_FILENAME,
    JPEG_QUALITY,
    MIN_IMAGE_SIZE,
    REFS_FILENAME,
    SPLIT_BY,
    SPLITS,
    ExpressionError,
    assign_splits,
    compressed_rle,
    encode_jpeg,
    image_file_name,
    ref_file_name,
    sentence_tokens,
    uncompressed_rle,
)

SHAPES = ("circle", "square", "triangle", "diamond")
CATEGORY_IDS = {shape: index + 1 for index, shape in enumerate(SHAPES)}
COLOURS = {
    "red": (215, 38, 38),
    "green": (36, 168, 58),
    "blue": (40, 84, 222),
    "yellow": (238, 206, 36),
}
SIZE_CLASSES = ("small", "big")
# Extent (side of the bounding square) as a fraction of the image's short side.
SIZE_RANGES = {"small": (0.2, 0.26), "big": (0.34, 0.42)}
POSITION_MARGIN = 0.15
MIN_VISIBLE_FRACTION = 0.75
MIN_OBJECTS, MAX_OBJECTS = 2, 5
SHORT_SIDE_RANGE = (0.6, 1.0)
CIRCLE_VERTICES = 32
MAX_WORDS = 11  # the longest expression the templates write

COLOUR_WORDS = {colour: colour for colour in COLOURS}
SHAPE_WORDS = {**{shape: shape for shape in SHAPES}, **{shape + "s": shape for shape in SHAPES}}
GENERIC_NOUNS = ("one", "shape", "object")
GENERIC_PLURALS = ("ones", "shapes", "objects")
SIZE_WORDS = {
    **dict.fromkeys(("big", "bigger", "biggest", "large", "larger", "largest"), "big"),
    **dict.fromkeys(("small", "smaller", "smallest", "little"), "small"),
}
HORIZONTAL_WORDS = {"left": "left", "leftmost": "left", "right": "right", "rightmost": "right"}
VERTICAL_WORDS = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
FILLER_WORDS = frozenset(
    ("the", "on", "at", "in", "of", "to", "side", "corner", "that", "is", "picture", "image", "two")
)
LEXICON = frozenset(
    itertools.chain(
        COLOUR_WORDS,
        SHAPE_WORDS,
        GENERIC_NOUNS,
        GENERIC_PLURALS,
        SIZE_WORDS,
        HORIZONTAL_WORDS,
        VERTICAL_WORDS,
        FILLER_WORDS,
    )
)

@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One drawn shape: its attributes and geometry in pixels.

    `extent` is the side of the shape's bounding square, `center` its (x, y) centre and `polygon`
    the COCO polygon (x0, y0, x1, y1, ...) it was rasterised from.
    """

    shape: str
    colour: str
    size: str
    center: tuple[float, float]
    extent: float
    polygon: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Description:
    """The meaning of an expression: each field constrains the referent, None leaves it free."""

    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    vertical: str | None = None
    horizontal: str | None = None

    @property
    def has_position(self) -> bool:
        return self.vertical is not None or self.horizontal is not None

    @property
    def word_cost(self) -> int:
        """How many content words the shortest wording needs (the minimality criterion)."""
        fields = (self.colour, self.shape, self.size, self.vertical, self.horizontal)
        return sum(value is not None for value in fields)


@dataclasses.dataclass
class Scene:
    """One synthetic image with its objects, visible masks and referring expressions.

    `visible_masks[i]` is a uint8 {0, 1} [height, width] mask of the part of object i left visible
    by the objects drawn after it (objects are listed in drawing order); `expressions[i]` are the
    raw expressions that refer to object i.
    """

    width: int
    height: int
    image: np.ndarray
    objects: list[SceneObject]
    full_masks: list[np.ndarray]
    visible_masks: list[np.ndarray]
    expressions: list[list[str]]

    def is_occluded(self, index: int) -> bool:
        return not np.array_equal(self.full_masks[index], self.visible_masks[index])


# ---------------------------------------------------------------------------------------------
# Expression semantics: the reference resolver.
# ---------------------------------------------------------------------------------------------


def _set_once(fields: dict, key: str, value: str, word: str, text: str) -> None:
    if fields.get(key) not in (None, value):
        raise ExpressionError(f"Expression {text!r} gives two values for {key}: at {word!r}.")
    fields[key] = value


def parse_expression(text: str) -> Description:
    """Parses an expression into a `Description`; raises `ExpressionError` on unknown words."""
    fields: dict[str, str] = {}
    words = sentence_tokens(text)
    if not words:
        raise ExpressionError(f"Expression {text!r} has no words.")
    for word in words:
        if word in COLOUR_WORDS:
            _set_once(fields, "colour", COLOUR_WORDS[word], word, text)
        elif word in SHAPE_WORDS:
            _set_once(fields, "shape", SHAPE_WORDS[word], word, text)
        elif word in SIZE_WORDS:
            _set_once(fields, "size", SIZE_WORDS[word], word, text)
        elif word in HORIZONTAL_WORDS:
            _set_once(fields, "horizontal", HORIZONTAL_WORDS[word], word, text)
        elif word in VERTICAL_WORDS:
            _set_once(fields, "vertical", VERTICAL_WORDS[word], word, text)
        elif word not in LEXICON:
            raise ExpressionError(f"Expression {text!r} uses the unknown word {word!r}.")
    return Description(**fields)


def _matches_attributes(item: SceneObject, description: Description) -> bool:
    return (
        description.colour in (None, item.colour)
        and description.shape in (None, item.shape)
        and description.size in (None, item.size)
    )


def _is_extreme(
    target: SceneObject, others: Iterable[SceneObject], vertical, horizontal, width, height
) -> bool:
    """Whether `target` is beyond every other object, by the margin, in the given direction."""
    margin_x, margin_y = POSITION_MARGIN * width, POSITION_MARGIN * height
    (tx, ty) = target.center
    for other in others:
        (ox, oy) = other.center
        if horizontal == "left" and not tx + margin_x <= ox:
            return False
        if horizontal == "right" and not tx >= ox + margin_x:
            return False
        if vertical == "top" and not ty + margin_y <= oy:
            return False
        if vertical == "bottom" and not ty >= oy + margin_y:
            return False
    return True


def resolve(
    description: Description, objects: Sequence[SceneObject], width: int, height: int
) -> list[int]:
    """Indices of the objects a description fits (a good expression gives exactly one).

    Colour, shape and size filter the objects; a position then picks, among those (at least two),
    the one that is beyond all the others by `POSITION_MARGIN` of the image side.
    """
    candidates = [i for i, item in enumerate(objects) if _matches_attributes(item, description)]
    if not description.has_position:
        return candidates
    if len(candidates) < 2:
        return []
    return [
        i
        for i in candidates
        if _is_extreme(
            objects[i],
            (objects[j] for j in candidates if j != i),
            description.vertical,
            description.horizontal,
            width,
            height,
        )
    ]


def resolve_expression(text: str, scene: Scene) -> list[int]:
    """Indices of the objects of `scene` that the expression `text` refers to."""
    return resolve(parse_expression(text), scene.objects, scene.width, scene.height)


# ---------------------------------------------------------------------------------------------
# Expression generation.
# ---------------------------------------------------------------------------------------------


def identifying_descriptions(scene_objects, index, width, height) -> list[Description]:
    """All descriptions that single out object `index`, shortest first (stable order).

    A description uses a subset of the target's own colour, shape and size plus any position;
    it is kept when `resolve` gives exactly [index]. Only the target needs checking for a
    position: if it is beyond all others by the margin, no other object can be.
    """
    target = scene_objects[index]
    positions = [(v, h) for v in ("top", "bottom", None) for h in ("left", "right", None)]
    valid = []
    for use_colour, use_shape, use_size in itertools.product((False, True), repeat=3):
        colour = target.colour if use_colour else None
        shape = target.shape if use_shape else None
        size = target.size if use_size else None
        attributes = Description(colour=colour, shape=shape, size=size)
        others = [
            item
            for i, item in enumerate(scene_objects)
            if i != index and _matches_attributes(item, attributes)
        ]
        for vertical, horizontal in positions:
            if vertical or horizontal:
                fits = bool(others) and _is_extreme(
                    target, others, vertical, horizontal, width, height
                )
            else:
                fits = not others and attributes.word_cost > 0
            if fits:
                valid.append(Description(colour, shape, size, vertical, horizontal))
    return sorted(valid, key=lambda description: description.word_cost)


def _choice(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _comparison_count(description: Description, objects: Sequence[SceneObject]) -> int:
    """How many objects share the description's colour and shape (the set a size compares in)."""
    loose = dataclasses.replace(description, size=None, vertical=None, horizontal=None)
    return sum(_matches_attributes(item, loose) for item in objects)


def _size_word(description: Description, count: int, rng) -> str | None:
    """A size adjective; comparative or superlative only where it compares within the set."""
    if description.size is None:
        return None
    big = description.size == "big"
    if description.has_position or count < 2:
        return _choice(rng, ("big", "large") if big else ("small", "little"))
    if count == 2:
        return _choice(rng, ("bigger", "larger") if big else ("smaller",))
    return _choice(rng, ("biggest", "largest") if big else ("smallest",))


def _position_prefix(description: Description, rng) -> str | None:
    vertical, horizontal = description.vertical, description.horizontal
    vertical_word = None
    if vertical:
        vertical_word = _choice(rng, ("top", "upper") if vertical == "top" else ("bottom", "lower"))
    if horizontal and not vertical:
        return _choice(rng, (horizontal, horizontal + "most"))
    return _words(vertical_word, horizontal) or None


def _position_postfix(description: Description, rng, long: bool) -> str | None:
    vertical, horizontal = description.vertical, description.horizontal
    where = _choice(rng, ("picture", "image"))
    if vertical and horizontal:
        options = [f"at the {vertical} {horizontal}", f"in the {vertical} {horizontal} corner"]
        if long:
            options = [f"in the {vertical} {horizontal} corner of the {where}"]
    elif horizontal:
        options = [f"on the {horizontal}", f"on the {horizontal} side", f"to the {horizontal}"]
        if long:
            options = [f"on the {horizontal} side of the {where}"]
    elif vertical:
        options = [f"at the {vertical}"]
        if long:
            options = [f"at the {vertical} of the {where}"]
    else:
        return None
    return _choice(rng, options)


def _noun(description: Description, rng, plural: bool = False) -> str:
    if description.shape:
        return description.shape + ("s" if plural else "")
    if not plural:
        return _choice(rng, GENERIC_NOUNS)
    # "the bigger of the two ones" is not English; "ones" needs an adjective before it.
    return _choice(rng, GENERIC_PLURALS if description.colour else GENERIC_PLURALS[1:])


_words = refer_format.join_words


SHORT_STYLES = ("terse", "plain", "postfix")


def _styles_for(description: Description, count: int) -> list[str]:
    styles = ["terse", "plain", "long"]
    if description.has_position:
        styles.append("postfix")
    if description.size and not description.has_position and count >= 2:
        styles.append("relative")
    return styles


def realize(
    description: Description, objects: Sequence[SceneObject], style: str, rng
) -> tuple[str, str]:
    """Words for a description in one style: (head, tail); the tail is a trailing phrase or ""."""
    count = _comparison_count(description, objects)
    size = _size_word(description, count, rng)
    colour = description.colour
    if style == "terse":
        noun = description.shape
        return _words(_position_prefix(description, rng), size, colour, noun), ""
    if style == "plain":
        position = _position_prefix(description, rng)
        return _words("the", position, size, colour, _noun(description, rng)), ""
    if style == "postfix":
        head = _words("the", size, colour, _noun(description, rng))
        return head, _position_postfix(description, rng, long=False)
    if style == "relative":
        amount = "two" if count == 2 else None
        plural = _noun(description, rng, plural=True)
        return _words("the", size, "of the", amount, colour, plural), ""
    if style == "long":
        head = _words("the", size, colour, _noun(description, rng))
        if not description.has_position:
            return head, f"in the {_choice(rng, ('picture', 'image'))}"
        tail = _position_postfix(description, rng, long=True)
        if len(f"{head} {tail}".split()) > MAX_WORDS:
            tail = _position_postfix(description, rng, long=False)
        if len(f"{head} {tail}".split()) <= MAX_WORDS - 2 and rng.random() < 0.5:
            tail = f"that is {tail}"
        return head, tail
    raise ValueError(f"Unknown expression style {style!r}.")


def _decorate(head: str, tail: str, rng) -> str:
    """Writes words as a person might: some capitals, commas and final punctuation."""
    text = head
    if tail:
        text += (", " if rng.random() < 0.2 else " ") + tail
    draw = rng.random()
    if draw < 0.35:
        text = text[0].upper() + text[1:]
    elif draw < 0.42:
        text = text.title()
    draw = rng.random()
    if draw < 0.25:
        text += "."
    elif draw < 0.3:
        text += "!"
    return text


def describe(
    objects: Sequence[SceneObject],
    index: int,
    width: int,
    height: int,
    count: int,
    rng,
    descriptions: Sequence[Description] | None = None,
) -> list[str]:
    """Up to `count` distinct raw expressions for object `index`, the first one minimal.

    The first expression uses a shortest identifying description; the others paraphrase it in
    another style or add redundant attributes, always still identifying only the target.
    `descriptions` may pass `identifying_descriptions(...)` when already computed.
    """
    valid = descriptions
    if valid is None:
        valid = identifying_descriptions(objects, index, width, height)
    if not valid:
        raise ValueError(f"Object {index} cannot be singled out by any description.")
    cheapest = [d for d in valid if d.word_cost == valid[0].word_cost]
    minimal = _choice(rng, cheapest)
    expressions, seen = [], set()
    for attempt in range(12 * count):
        if len(expressions) == count:
            break
        description = minimal if attempt == 0 or rng.random() < 0.5 else _choice(rng, valid)
        styles = _styles_for(description, _comparison_count(description, objects))
        if attempt == 0:
            styles = [style for style in styles if style in SHORT_STYLES]
        style = _choice(rng, styles)
        raw = _decorate(*realize(description, objects, style, rng), rng)
        key = " ".join(sentence_tokens(raw))
        if key in seen:
            continue
        if resolve(parse_expression(raw), objects, width, height) != [index]:
            raise RuntimeError(f"Generated expression {raw!r} does not single out object {index}.")
        seen.add(key)
        expressions.append(raw)
    return expressions


# ---------------------------------------------------------------------------------------------
# Scene drawing.
# ---------------------------------------------------------------------------------------------


def shape_polygon(shape: str, center: tuple[float, float], extent: float) -> tuple[float, ...]:
    """COCO polygon (x0, y0, x1, y1, ...) of a shape, rounded to 2 decimals as COCO does."""
    cx, cy = center
    half = extent / 2.0
    if shape == "circle":
        angles = np.linspace(0.0, 2.0 * np.pi, CIRCLE_VERTICES, endpoint=False)
        points = np.stack([cx + half * np.cos(angles), cy + half * np.sin(angles)], axis=1)
    elif shape == "square":
        side = 0.9 * half  # a square covers more area than the other shapes at the same extent
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        points = np.array([[cx + dx * side, cy + dy * side] for dx, dy in corners])
    elif shape == "triangle":
        rise = 0.9 * half
        points = np.array([[cx, cy - rise], [cx + half, cy + rise], [cx - half, cy + rise]])
    elif shape == "diamond":
        points = np.array([[cx, cy - half], [cx + half, cy], [cx, cy + half], [cx - half, cy]])
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")
    return tuple(round(float(value), 2) for value in points.reshape(-1))


def rasterize_polygon(polygon: Sequence[float], height: int, width: int) -> np.ndarray:
    """The uint8 {0, 1} mask pycocotools decodes from a COCO polygon (what converters will read)."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects([list(polygon)], height, width)
    return np.ascontiguousarray(mask_utils.decode(mask_utils.merge(rles)), dtype=np.uint8)


def _image_size(rng, image_size: int) -> tuple[int, int]:
    """(height, width): the long side is `image_size`, the short one 60-100 % of it."""
    short = int(round(image_size * rng.uniform(*SHORT_SIDE_RANGE)))
    short = min(max(short, 1), image_size)
    return (short, image_size) if rng.random() < 0.5 else (image_size, short)


def _sample_kinds(rng, count: int) -> list[tuple[str, str, str]]:
    """(colour, shape, size) per object; repeats kinds so that one attribute is rarely enough."""
    kinds = []
    for _ in range(count):
        colour, shape = _choice(rng, tuple(COLOURS)), _choice(rng, SHAPES)
        draw = rng.random()
        if kinds and draw < 0.7:
            previous_colour, previous_shape, _ = _choice(rng, kinds)
            if draw < 0.3:
                colour, shape = previous_colour, previous_shape
            elif draw < 0.5:
                colour = previous_colour
            else:
                shape = previous_shape
        kinds.append((colour, shape, _choice(rng, SIZE_CLASSES)))
    return kinds


def _boxes_apart(center, extent, placed: Sequence[SceneObject], gap: float = 2.0) -> bool:
    for item in placed:
        reach = (extent + item.extent) / 2.0 + gap
        if abs(center[0] - item.center[0]) < reach and abs(center[1] - item.center[1]) < reach:
            return False
    return True


def _occlusion_ok(new_mask: np.ndarray, full_masks, visible_masks) -> bool:
    """Whether every earlier object keeps `MIN_VISIBLE_FRACTION` of its area under `new_mask`."""
    for full, visible in zip(full_masks, visible_masks, strict=True):
        remaining = np.count_nonzero(visible & ~new_mask)
        if remaining < MIN_VISIBLE_FRACTION * np.count_nonzero(full):
            return False
    return True


def _place_objects(rng, height: int, width: int, kinds):
    """Places the kinds one by one (later ones on top); returns objects, full and visible masks."""
    short = min(height, width)
    objects, full_masks, visible_masks = [], [], []
    for colour, shape, size in kinds:
        extent = float(rng.uniform(*SIZE_RANGES[size]) * short)
        allow_overlap = rng.random() < 0.3
        for attempt in range(40):
            center = (
                float(rng.uniform(extent / 2 + 1, width - extent / 2 - 1)),
                float(rng.uniform(extent / 2 + 1, height - extent / 2 - 1)),
            )
            apart = _boxes_apart(center, extent, objects)
            if not apart and not (allow_overlap or attempt >= 20):
                continue
            polygon = shape_polygon(shape, center, extent)
            mask = rasterize_polygon(polygon, height, width).astype(bool)
            if apart or _occlusion_ok(mask, full_masks, visible_masks):
                break
        else:
            continue  # no room for this object: the scene keeps the ones placed so far
        visible_masks = [visible & ~mask for visible in visible_masks]
        objects.append(SceneObject(shape, colour, size, center, extent, polygon))
        full_masks.append(mask)
        visible_masks.append(mask.copy())
    return objects, full_masks, visible_masks


def _smooth_noise(rng, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise, mostly in brightness: a coarse grid upsampled bicubically."""
    from PIL import Image

    brightness = rng.normal(0.0, 20.0, (cells, cells, 1))
    tint = rng.normal(0.0, 5.0, (cells, cells, 3))
    coarse = np.clip(128.0 + brightness + tint, 0, 255).astype(np.uint8)
    resized = Image.fromarray(coarse, mode="RGB").resize((width, height), Image.BICUBIC)
    return np.asarray(resized, dtype=np.float32) - 128.0


def _background(rng, height: int, width: int) -> np.ndarray:
    """A dull, low-saturation textured background that no palette colour resembles."""
    base = rng.uniform(80.0, 170.0) + rng.normal(0.0, 10.0, 3)
    canvas = np.broadcast_to(base.astype(np.float32), (height, width, 3)).copy()
    canvas += _smooth_noise(rng, height, width, cells=int(rng.integers(3, 8)))
    if rng.random() < 0.5:
        angle, period = rng.uniform(0.0, np.pi), rng.uniform(6.0, 16.0)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) * (2.0 * np.pi / period)
        canvas += (rng.uniform(5.0, 12.0) * np.sin(phase))[..., None]
    return canvas


def _paint(rng, canvas: np.ndarray, objects, full_masks) -> np.ndarray:
    """Paints the objects in order with a jittered colour and a soft vertical shading."""
    rows = np.arange(canvas.shape[0], dtype=np.float32)[:, None]
    for item, mask in zip(objects, full_masks, strict=True):
        colour = np.asarray(COLOURS[item.colour], np.float32) + rng.normal(0.0, 8.0, 3)
        shading = 1.0 - 0.15 * (rows - item.center[1]) / item.extent
        shade = np.broadcast_to(shading, mask.shape)[mask]
        canvas[mask] = colour[None, :] * shade[:, None]
    canvas += rng.normal(0.0, 5.0, canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _expression_count(rng) -> int:
    """1, 2 or 3 expressions per ref with probabilities 0.2, 0.4, 0.4."""
    draw = rng.random()
    return 1 if draw < 0.2 else 2 if draw < 0.6 else 3


def make_scene(seed: int, index: int, image_size: int = 128) -> Scene:
    """Draws scene `index` of the data set with `seed` (deterministic, independent of others).

    Scenes whose objects cannot all be singled out by some expression are redrawn.
    """
    rng = np.random.default_rng([seed, index])
    for _ in range(100):
        height, width = _image_size(rng, image_size)
        kinds = _sample_kinds(rng, int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1)))
        objects, full_masks, visible_masks = _place_objects(rng, height, width, kinds)
        if len(objects) < MIN_OBJECTS:
            continue
        valid = []
        for i in range(len(objects)):
            valid.append(identifying_descriptions(objects, i, width, height))
            if not valid[-1]:
                break
        else:
            break
    else:
        raise RuntimeError(f"Could not draw a describable scene for seed {seed}, index {index}.")
    image = _paint(rng, _background(rng, height, width), objects, full_masks)
    expressions = [
        describe(objects, i, width, height, _expression_count(rng), rng, descriptions=valid[i])
        for i in range(len(objects))
    ]
    return Scene(
        width=width,
        height=height,
        image=image,
        objects=objects,
        full_masks=[mask.astype(np.uint8) for mask in full_masks],
        visible_masks=[mask.astype(np.uint8) for mask in visible_masks],
        expressions=expressions,
    )


# ---------------------------------------------------------------------------------------------
# Refer format.
# ---------------------------------------------------------------------------------------------


def segmentation_form(annotation_index: int, occluded: bool) -> str:
    """The form of the n-th annotation: "polygon", "rle" (compressed) or "rle_uncompressed"."""
    if annotation_index % 7 == 3:
        return "rle_uncompressed"
    if occluded or annotation_index % 7 == 5:
        return "rle"
    return "polygon"


def make_annotation(scene: Scene, index: int, ann_id: int, image_id: int, form: str) -> dict:
    """The COCO annotation of object `index` of a scene, segmentation in the given form."""
    visible = scene.visible_masks[index]
    if form == "polygon":
        segmentation = [list(scene.objects[index].polygon)]
    elif form == "rle":
        segmentation = compressed_rle(visible)
    elif form == "rle_uncompressed":
        segmentation = uncompressed_rle(visible)
    else:
        raise ValueError(f"Unknown segmentation form {form!r}.")
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": CATEGORY_IDS[scene.objects[index].shape],
        "segmentation": segmentation,
        "area": float(np.count_nonzero(visible)),
        "bbox": refer_format.mask_bbox(visible),
        "iscrowd": 1 if form == "rle_uncompressed" else 0,
    }


def _make_ref(scene, index, ids: dict, image_id, ann_id, split) -> dict:
    category_id = CATEGORY_IDS[scene.objects[index].shape]
    return refer_format.make_ref(scene.expressions[index], ids, image_id, ann_id, split, category_id)


def generate(
    output_dir: str,
    num_images: int = 200,
    seed: int = 0,
    image_size: int = 128,
) -> dict:
    """Writes a synthetic refer-format data set of style "shapes"; returns a summary dict.

    (`refseg_tf.synthetic_data.generate(..., style=)` chooses between the styles.)

    Args:
        output_dir, num_images, seed, image_size: as `refseg_tf.synthetic_data.generate`.

    Example:
        summary = generate("/tmp/shapes", num_images=300, seed=0, image_size=96)
        # refer data root: /tmp/shapes, dataset "synthetic", split_by "unc",
        # image root: summary["image_root"]
    """
    refer_format.check_arguments(num_images, seed, image_size)
    output_dir, image_dir, dataset_dir = refer_format.prepare_directories(output_dir)

    splits = assign_splits(num_images, seed)
    images, annotations, refs = [], [], []
    forms = {"polygon": 0, "rle": 0, "rle_uncompressed": 0}
    ids = {"ref": 0, "sent": 0}
    for index in range(num_images):
        scene = make_scene(seed, index, image_size)
        image_id = index + 1
        file_name = image_file_name(image_id)
        atomic_write_bytes(os.path.join(image_dir, file_name), encode_jpeg(scene.image))
        images.append(
            {"id": image_id, "file_name": file_name, "height": scene.height, "width": scene.width}
        )
        for object_index in range(len(scene.objects)):
            ann_id = 100001 + len(annotations)
            form = segmentation_form(len(annotations), scene.is_occluded(object_index))
            forms[form] += 1
            annotations.append(make_annotation(scene, object_index, ann_id, image_id, form))
            refs.append(_make_ref(scene, object_index, ids, image_id, ann_id, splits[index]))

    instances = {
        "info": {
            "description": "refseg-tf synthetic shapes",
            "version": "1",
            "seed": seed,
            "image_size": image_size,
            "num_images": num_images,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": CATEGORY_IDS[shape], "name": shape, "supercategory": "shape"} for shape in SHAPES
        ],
    }
    refer_format.write_annotations(dataset_dir, instances, refs)
    summary = refer_format.summary(output_dir, images, annotations, refs, forms, seed, image_size)
    summary["style"] = "shapes"
    logging.info("Synthetic data: %d images, %d refs in %s.", len(images), len(refs), output_dir)
    return summary

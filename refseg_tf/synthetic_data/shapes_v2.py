"""A second, independently drawn synthetic scene style ("shapes_v2"), in the same refer format.

It exists so that the synthetic configs (tuned while looking at `refseg_tf.synthetic_data.shapes`) can
be checked on data they were not tuned on. Everything the model sees differs from the first
style; only the file layout (images/, synthetic/instances.json, synthetic/refs(unc).p) is shared,
so the same `ReferReader` converts it.

| | `shapes` (`shapes.py`) | `shapes_v2` (this module) |
|---|---|---|
| image | long side S, short 60-100 % of it | square S x S |
| background | smooth low-frequency texture, stripes | flat grey plus strong per-pixel noise and speckles |
| objects | 2-5, small 20-26 % or big 34-42 %, overlapping | 2-4, 25-50 % of the side, never overlapping |
| shapes | circle, square, triangle, diamond (upright) | circle, square, triangle, star, cross (rotated) |
| colours | red, green, blue, yellow | red, green, blue, purple, orange |
| drawing | pycocotools polygons | PIL, 4x supersampled, RLE masks only |
| words | sizes, corners, "one"/"object", comparatives | no sizes; "thing"/"figure"; command frames |

Expressions ("the red circle", "the left square", "find the star on the right", "purple
thing", "the cross that is orange") combine an optional colour, an optional shape and an optional
side. Reference semantics (`resolve`): colour and shape filter the objects; with a side, the
referent is the one of those (at least two) whose centre lies beyond every other's by
`POSITION_MARGIN` of the image side on that axis; without a side, the filter must leave exactly
one. Each object gets 1-2 expressions, each checked to pick out exactly that object.

Output is deterministic: image k depends only on (seed, k, image_size).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from typing import Sequence

import numpy as np

from refseg_tf.files import atomic_write_bytes
from refseg_tf.synthetic_data import refer_format as base

STYLE = "shapes_v2"
SHAPES = ("circle", "square", "triangle", "star", "cross")
CATEGORY_IDS = {shape: index + 1 for index, shape in enumerate(SHAPES)}
COLOURS = {
    "red": (200, 30, 40),
    "green": (40, 170, 40),
    "blue": (30, 60, 200),
    "purple": (140, 40, 170),
    "orange": (245, 140, 20),
}
EXTENT_RANGE = (0.25, 0.5)  # bounding-square side as a fraction of the image side
MIN_OBJECTS, MAX_OBJECTS = 2, 4
POSITION_MARGIN = 0.1
SUPERSAMPLING = 4

SIDES = {"left": ("x", -1), "right": ("x", 1), "top": ("y", -1), "bottom": ("y", 1)}
SIDE_WORDS = {
    "left": "left", "leftmost": "left", "right": "right", "rightmost": "right",
    "top": "top", "topmost": "top", "highest": "top",
    "bottom": "bottom", "lowest": "bottom", "bottommost": "bottom",
}  # fmt: skip
SHAPE_WORDS = {**{shape: shape for shape in SHAPES}, "plus": "cross"}
GENERIC_NOUNS = ("shape", "thing", "figure")
FILLER_WORDS = frozenset(
    ("the", "a", "on", "at", "that", "is", "which", "find", "segment", "show", "me", "please",
     "coloured", "colored", "side", "one")
)  # fmt: skip
LEXICON = frozenset(itertools.chain(COLOURS, SHAPE_WORDS, GENERIC_NOUNS, SIDE_WORDS, FILLER_WORDS))
# "the {}" twice: the plain frame is the most common one.
FRAMES = ("{}", "the {}", "the {}", "find the {}", "segment the {}", "show me the {}", "the {} please")


@dataclasses.dataclass(frozen=True)
class Shape:
    """One drawn object: attributes, centre (x, y) and bounding-square side in pixels."""

    shape: str
    colour: str
    center: tuple[float, float]
    extent: float
    angle: float


@dataclasses.dataclass(frozen=True)
class Query:
    """The meaning of an expression; None leaves a field free."""

    colour: str | None = None
    shape: str | None = None
    side: str | None = None


@dataclasses.dataclass
class Scene:
    """A square image with its objects, their masks (uint8 {0, 1}) and expressions per object."""

    size: int
    image: np.ndarray
    objects: list[Shape]
    masks: list[np.ndarray]
    expressions: list[list[str]]


# --- Semantics. -------------------------------------------------------------------------------


def parse(text: str) -> Query:
    """The `Query` of an expression; raises `synthetic.ExpressionError` on unknown words."""
    fields: dict[str, str] = {}
    words = base.sentence_tokens(text)
    if not words:
        raise base.ExpressionError(f"Expression {text!r} has no words.")
    for word in words:
        for key, table in (("colour", COLOURS), ("shape", SHAPE_WORDS), ("side", SIDE_WORDS)):
            if word in table:
                value = word if table is COLOURS else table[word]
                if fields.setdefault(key, value) != value:
                    raise base.ExpressionError(f"Expression {text!r} gives two values for {key}.")
                break
        else:
            if word not in LEXICON:
                raise base.ExpressionError(f"Expression {text!r} uses the unknown word {word!r}.")
    return Query(**fields)


def _beyond(target: Shape, other: Shape, side: str, margin: float) -> bool:
    axis, sign = SIDES[side]
    coordinate = 0 if axis == "x" else 1
    return sign * (target.center[coordinate] - other.center[coordinate]) >= margin


def resolve(query: Query, objects: Sequence[Shape], size: int) -> list[int]:
    """Indices of the objects the query fits (a good expression gives exactly one)."""
    candidates = [
        i
        for i, item in enumerate(objects)
        if query.colour in (None, item.colour) and query.shape in (None, item.shape)
    ]
    if query.side is None:
        return candidates
    if len(candidates) < 2:
        return []
    margin = POSITION_MARGIN * size
    return [
        i
        for i in candidates
        if all(_beyond(objects[i], objects[j], query.side, margin) for j in candidates if j != i)
    ]


def identifying_queries(objects: Sequence[Shape], index: int, size: int) -> list[Query]:
    """Every query built from the target's own colour / shape and any side that picks it alone."""
    target = objects[index]
    found = []
    for colour, shape, side in itertools.product(
        (None, target.colour), (None, target.shape), (None, *SIDES)
    ):
        query = Query(colour, shape, side)
        if (colour or shape or side) and resolve(query, objects, size) == [index]:
            found.append(query)
    return found


def _choice(rng, options: Sequence):
    return options[int(rng.integers(len(options)))]


def realize(query: Query, rng) -> str:
    """Words for a query: adjective or trailing side, shape or generic noun, a command frame."""
    noun = query.shape or _choice(rng, GENERIC_NOUNS)
    if noun == "cross" and rng.random() < 0.3:
        noun = "plus"
    side_word = None
    if query.side:
        side_word = query.side if rng.random() < 0.6 else _choice(
            rng, [word for word, side in SIDE_WORDS.items() if side == query.side]
        )
    draw = rng.random()
    if query.side and draw < 0.35:
        preposition = "on the" if query.side in ("left", "right") else "at the"
        phrase = base.join_words(query.colour, noun, preposition, query.side)
    elif query.colour and query.shape and not query.side and draw < 0.25:
        linker = _choice(rng, ("that is", "which is", "coloured"))
        phrase = base.join_words(noun, linker, query.colour)
    else:
        phrase = base.join_words(side_word, query.colour, noun)
    text = _choice(rng, FRAMES).format(phrase)
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return text


def describe(objects: Sequence[Shape], index: int, size: int, count: int, rng) -> list[str]:
    """Up to `count` distinct expressions that each pick out object `index` alone."""
    queries = identifying_queries(objects, index, size)
    if not queries:
        raise ValueError(f"Object {index} cannot be singled out by any query.")
    expressions, seen = [], set()
    for _ in range(10 * count):
        if len(expressions) == count:
            break
        raw = realize(_choice(rng, queries), rng)
        key = " ".join(base.sentence_tokens(raw))
        if key in seen:
            continue
        if resolve(parse(raw), objects, size) != [index]:
            raise RuntimeError(f"Generated expression {raw!r} does not single out object {index}.")
        seen.add(key)
        expressions.append(raw)
    return expressions


# --- Drawing. ---------------------------------------------------------------------------------


def outline(shape: str, center, extent: float, angle: float) -> np.ndarray:
    """The [N, 2] (x, y) outline of a shape inside a bounding circle of diameter `extent`."""
    radius = extent / 2.0
    if shape == "circle":
        turns = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
        radii = np.full_like(turns, radius)
    elif shape == "square":
        turns = np.arange(4) * np.pi / 2 + np.pi / 4
        radii = np.full(4, radius)
    elif shape == "triangle":
        turns = np.arange(3) * 2 * np.pi / 3 - np.pi / 2
        radii = np.full(3, radius)
    elif shape == "star":
        turns = np.arange(10) * np.pi / 5 - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
    elif shape == "cross":
        arm = 0.36  # half width of an arm, relative to the radius
        corners = [(arm, 1), (arm, arm), (1, arm), (1, -arm), (arm, -arm), (arm, -1)]
        half = np.array(corners + [(-x, -y) for x, y in corners])
        turns = np.arctan2(half[:, 1], half[:, 0])
        radii = np.hypot(half[:, 0], half[:, 1]) * radius / np.sqrt(1 + arm**2)
    else:
        raise ValueError(f"`shape` must be one of {SHAPES}; received {shape!r}.")
    turns = turns + (0.0 if shape == "circle" else angle)
    return np.stack([center[0] + radii * np.cos(turns), center[1] + radii * np.sin(turns)], 1)


def rasterize(points: np.ndarray, size: int) -> np.ndarray:
    """uint8 {0, 1} mask: the polygon drawn by PIL at 4x and kept where over half covered."""
    from PIL import Image, ImageDraw

    big = Image.new("L", (size * SUPERSAMPLING, size * SUPERSAMPLING), 0)
    scaled = [(float(x) * SUPERSAMPLING, float(y) * SUPERSAMPLING) for x, y in points]
    ImageDraw.Draw(big).polygon(scaled, fill=255)
    coverage = np.asarray(big, np.float32).reshape(size, SUPERSAMPLING, size, SUPERSAMPLING)
    return (coverage.mean(axis=(1, 3)) > 127.5).astype(np.uint8)


def _sample_kinds(rng, count: int) -> list[tuple[str, str]]:
    """(colour, shape) per object, repeating a shape or a colour often so that one word rarely does."""
    kinds = []
    for _ in range(count):
        colour, shape = _choice(rng, tuple(COLOURS)), _choice(rng, SHAPES)
        if kinds and rng.random() < 0.6:
            previous_colour, previous_shape = _choice(rng, kinds)
            if rng.random() < 0.6:
                shape = previous_shape
            else:
                colour = previous_colour
        kinds.append((colour, shape))
    return kinds


def _place(rng, size: int, kinds) -> list[Shape]:
    """Non-overlapping placement (bounding circles apart); objects that find no room are dropped."""
    placed: list[Shape] = []
    for colour, shape in kinds:
        for _ in range(60):
            extent = float(rng.uniform(*EXTENT_RANGE)) * size
            x, y = rng.uniform(extent / 2 + 1, size - extent / 2 - 1, 2)
            if all(
                np.hypot(x - o.center[0], y - o.center[1]) > (extent + o.extent) / 2 + 2
                for o in placed
            ):
                angle = float(rng.uniform(0.0, 2 * np.pi))
                placed.append(Shape(shape, colour, (float(x), float(y)), extent, angle))
                break
    return placed


def _paint(rng, size: int, objects, masks) -> np.ndarray:
    grey = rng.uniform(70.0, 190.0)
    canvas = np.full((size, size, 3), grey, np.float32) + rng.normal(0.0, 6.0, 3)
    for item, mask in zip(objects, masks, strict=True):
        colour = np.asarray(COLOURS[item.colour], np.float32) + rng.normal(0.0, 10.0, 3)
        canvas[mask.astype(bool)] = colour
    canvas += rng.normal(0.0, 22.0, canvas.shape)
    speckles = rng.random((size, size)) < 0.02
    canvas[speckles] = rng.uniform(0.0, 255.0, (int(speckles.sum()), 3))
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def make_scene(seed: int, index: int, image_size: int = 128) -> Scene:
    """Scene `index` of the set with `seed` (deterministic; redrawn until every object is describable)."""
    rng = np.random.default_rng([seed, index, 0x5A2])
    for _ in range(100):
        objects = _place(rng, image_size, _sample_kinds(rng, int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))))
        if len(objects) >= MIN_OBJECTS and all(
            identifying_queries(objects, i, image_size) for i in range(len(objects))
        ):
            break
    else:
        raise RuntimeError(f"Could not draw a describable scene for seed {seed}, index {index}.")
    masks = [rasterize(outline(o.shape, o.center, o.extent, o.angle), image_size) for o in objects]
    image = _paint(rng, image_size, objects, masks)
    expressions = [
        describe(objects, i, image_size, 1 + int(rng.random() < 0.5), rng)
        for i in range(len(objects))
    ]
    return Scene(image_size, image, objects, masks, expressions)


# --- Refer format. ----------------------------------------------------------------------------


def _ref(scene: Scene, index: int, ids: dict, image_id: int, ann_id: int, split: str) -> dict:
    category_id = CATEGORY_IDS[scene.objects[index].shape]
    return base.make_ref(scene.expressions[index], ids, image_id, ann_id, split, category_id)


def generate(output_dir: str, num_images: int = 200, seed: int = 0, image_size: int = 128) -> dict:
    """Writes a `shapes_v2` refer-format data set; returns the same summary as `synthetic.generate`."""
    base.check_arguments(num_images, seed, image_size)
    output_dir, image_dir, dataset_dir = base.prepare_directories(output_dir)
    splits = base.assign_splits(num_images, seed)
    images, annotations, refs = [], [], []
    ids = {"ref": 0, "sent": 0}
    for index in range(num_images):
        scene = make_scene(seed, index, image_size)
        image_id = index + 1
        file_name = base.image_file_name(image_id)
        atomic_write_bytes(os.path.join(image_dir, file_name), base.encode_jpeg(scene.image))
        images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
        for object_index, mask in enumerate(scene.masks):
            ann_id = 100001 + len(annotations)
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[scene.objects[object_index].shape],
                    "segmentation": base.compressed_rle(mask),
                    "area": float(np.count_nonzero(mask)),
                    "bbox": base.mask_bbox(mask),
                    "iscrowd": 0,
                }
            )
            refs.append(_ref(scene, object_index, ids, image_id, ann_id, splits[index]))
    instances = {
        "info": {"description": f"refseg-tf synthetic {STYLE}", "version": "1", "seed": seed,
                 "image_size": image_size, "num_images": num_images, "style": STYLE},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": CATEGORY_IDS[s], "name": s, "supercategory": "shape"} for s in SHAPES],
    }  # fmt: skip
    base.write_annotations(dataset_dir, instances, refs)
    forms = {"polygon": 0, "rle": len(annotations), "rle_uncompressed": 0}
    summary = base.summary(output_dir, images, annotations, refs, forms, seed, image_size)
    summary["style"] = STYLE
    logging.info("Synthetic %s data: %d images, %d refs in %s.", STYLE, len(images), len(refs), output_dir)
    return summary

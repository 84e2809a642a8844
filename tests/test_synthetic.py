"""Tests for the synthetic refer-format generator and its command line."""

import json
import os
import pickle
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from absl import flags
from PIL import Image
from pycocotools import mask as mask_utils

from refseg_tf import synthetic as synthetic_cli
from refseg_tf import synthetic_data
from refseg_tf.synthetic_data import shapes as synthetic
from refseg_tf.synthetic_data import shapes_v2

NUM_IMAGES, SEED, IMAGE_SIZE = 24, 3, 64
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- An independent checker: its own reading of the expression language. ---------------------

CHECK_COLOURS = {"red", "green", "blue", "yellow"}
CHECK_SHAPES = {"circle", "square", "triangle", "diamond"}
CHECK_ANY_SHAPE = {"one", "ones", "shape", "shapes", "object", "objects"}
CHECK_BIG = {"big", "bigger", "biggest", "large", "larger", "largest"}
CHECK_SMALL = {"small", "smaller", "smallest", "little"}
CHECK_SIDES = {
    "left": ("x", -1),
    "leftmost": ("x", -1),
    "right": ("x", 1),
    "rightmost": ("x", 1),
    "top": ("y", -1),
    "upper": ("y", -1),
    "bottom": ("y", 1),
    "lower": ("y", 1),
}
CHECK_FUNCTION_WORDS = {"the", "on", "at", "in", "of", "to", "side", "corner", "that", "is"}
CHECK_FUNCTION_WORDS |= {"picture", "image", "two"}
CHECK_MARGIN = 0.15


def check_attributes(sentence):
    """(filters, sides) named by a sentence: filters maps colour/shape/size to a value."""
    filters, sides = {}, {}
    for word in re.findall(r"[a-z]+", sentence.lower()):
        if word in CHECK_COLOURS:
            assert filters.setdefault("colour", word) == word, sentence
        elif word.rstrip("s") in CHECK_SHAPES:
            assert filters.setdefault("shape", word.rstrip("s")) == word.rstrip("s"), sentence
        elif word in CHECK_BIG or word in CHECK_SMALL:
            size = "big" if word in CHECK_BIG else "small"
            assert filters.setdefault("size", size) == size, sentence
        elif word in CHECK_SIDES:
            axis, sign = CHECK_SIDES[word]
            assert sides.setdefault(axis, sign) == sign, sentence
        else:
            assert word in CHECK_ANY_SHAPE | CHECK_FUNCTION_WORDS, f"unknown {word!r}: {sentence}"
    return filters, sides


def check_referents(filters, sides, objects, width, height):
    """Objects a sentence can mean: filter by attributes, then the extreme one in each direction."""
    pool = [i for i, o in enumerate(objects) if all(getattr(o, k) == v for k, v in filters.items())]
    if not sides:
        return pool
    if len(pool) < 2:
        return []
    extent = {"x": width, "y": height}
    coordinate = {"x": 0, "y": 1}

    def beyond(i, j):
        """Whether object i is past object j, by the margin, on every named side."""
        return all(
            sign * (objects[i].center[coordinate[axis]] - objects[j].center[coordinate[axis]])
            >= CHECK_MARGIN * extent[axis]
            for axis, sign in sides.items()
        )

    return [i for i in pool if all(beyond(i, j) for j in pool if j != i)]


def check_sentence(sentence, scene):
    return check_referents(*check_attributes(sentence), scene.objects, scene.width, scene.height)


# --- Fixtures. --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    summary = synthetic.generate(root, num_images=NUM_IMAGES, seed=SEED, image_size=IMAGE_SIZE)
    with open(os.path.join(root, "synthetic", "instances.json"), encoding="utf-8") as stream:
        instances = json.load(stream)
    with open(os.path.join(root, "synthetic", "refs(unc).p"), "rb") as stream:
        refs = RestrictedUnpickler(stream).load()
    scenes = [synthetic.make_scene(SEED, index, IMAGE_SIZE) for index in range(NUM_IMAGES)]
    return {
        "root": root,
        "summary": summary,
        "instances": instances,
        "refs": refs,
        "scenes": scenes,
    }


@pytest.fixture(scope="module")
def many_scenes():
    return [synthetic.make_scene(seed, index, 64) for seed in (0, 11) for index in range(100)]


class RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global: loading proves the pickle holds only plain builtin values."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"global {module}.{name} in the refs pickle")


def decode_segmentation(segmentation, height, width):
    """What a converter does with a COCO segmentation: polygon, uncompressed or compressed RLE."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def annotations_by_image(instances):
    grouped = {}
    for annotation in instances["annotations"]:
        grouped.setdefault(annotation["image_id"], []).append(annotation)
    return grouped


def directory_bytes(root):
    contents = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as stream:
                contents[os.path.relpath(path, root)] = stream.read()
    return contents


# --- Files and format. ------------------------------------------------------------------------


def test_writes_refer_layout_and_summary(dataset):
    root, summary, refs = dataset["root"], dataset["summary"], dataset["refs"]
    images = sorted(os.listdir(os.path.join(root, "images")))
    assert len(images) == NUM_IMAGES and all(name.endswith(".jpg") for name in images)
    assert sorted(os.listdir(os.path.join(root, "synthetic"))) == ["instances.json", "refs(unc).p"]
    assert summary["num_images"] == NUM_IMAGES
    assert summary["num_refs"] == len(refs) == len(dataset["instances"]["annotations"])
    assert summary["num_sentences"] == sum(len(ref["sentences"]) for ref in refs)
    assert summary["refs_path"] == os.path.join(root, "synthetic", "refs(unc).p")
    assert summary["image_root"] == os.path.join(root, "images")
    assert sum(split["refs"] for split in summary["splits"].values()) == len(refs)
    assert not [n for _, _, names in os.walk(root) for n in names if n.startswith(".tmp")]


def test_instances_are_coco(dataset):
    instances = dataset["instances"]
    assert [c["name"] for c in instances["categories"]] == list(synthetic.SHAPES)
    image_ids = [image["id"] for image in instances["images"]]
    ann_ids = [annotation["id"] for annotation in instances["annotations"]]
    assert len(set(image_ids)) == NUM_IMAGES and len(set(ann_ids)) == len(ann_ids)
    for image, scene in zip(instances["images"], dataset["scenes"], strict=True):
        assert (image["height"], image["width"]) == (scene.height, scene.width)
        assert re.fullmatch(r"synthetic_\d{12}\.jpg", image["file_name"])
    for annotation in instances["annotations"]:
        assert set(annotation) == {
            "id",
            "image_id",
            "category_id",
            "segmentation",
            "area",
            "bbox",
            "iscrowd",
        }
        assert annotation["image_id"] in image_ids


def test_segmentations_decode_to_the_visible_masks(dataset):
    instances, scenes = dataset["instances"], dataset["scenes"]
    grouped = annotations_by_image(instances)
    forms = {"polygon": 0, "rle": 0, "rle_uncompressed": 0}
    for image, scene in zip(instances["images"], scenes, strict=True):
        annotations = grouped[image["id"]]
        assert len(annotations) == len(scene.objects)
        for annotation, item, visible in zip(
            annotations, scene.objects, scene.visible_masks, strict=True
        ):
            segmentation = annotation["segmentation"]
            decoded = decode_segmentation(segmentation, image["height"], image["width"])
            np.testing.assert_array_equal(decoded, visible)
            assert annotation["area"] == pytest.approx(float(visible.sum()))
            rle = mask_utils.encode(np.asfortranarray(visible))
            np.testing.assert_allclose(annotation["bbox"], mask_utils.toBbox(rle))
            assert annotation["category_id"] == synthetic.CATEGORY_IDS[item.shape]
            if isinstance(segmentation, list):
                forms["polygon"] += 1
                assert annotation["iscrowd"] == 0
            elif isinstance(segmentation["counts"], list):
                forms["rle_uncompressed"] += 1
                assert annotation["iscrowd"] == 1
            else:
                forms["rle"] += 1
                assert isinstance(segmentation["counts"], str) and annotation["iscrowd"] == 0
    assert all(count > 0 for count in forms.values()), forms
    assert forms == dataset["summary"]["segmentation_forms"]


def test_occluded_objects_keep_most_of_their_area(many_scenes):
    occluded = 0
    for scene in many_scenes:
        for index, (full, visible) in enumerate(
            zip(scene.full_masks, scene.visible_masks, strict=True)
        ):
            assert visible.sum() >= synthetic.MIN_VISIBLE_FRACTION * full.sum()
            assert np.all(visible <= full)
            occluded += scene.is_occluded(index)
    assert occluded > 0, "overlaps should happen in some scenes"


def test_refs_match_the_refer_api(dataset):
    refs, instances = dataset["refs"], dataset["instances"]
    annotations = {a["id"]: a for a in instances["annotations"]}
    images = {image["id"]: image for image in instances["images"]}
    assert [ref["ref_id"] for ref in refs] == list(range(len(refs)))
    all_sent_ids = [sid for ref in refs for sid in ref["sent_ids"]]
    assert len(set(all_sent_ids)) == len(all_sent_ids)
    for ref in refs:
        assert set(ref) == {
            "ref_id",
            "ann_id",
            "image_id",
            "file_name",
            "split",
            "category_id",
            "sent_ids",
            "sentences",
        }
        annotation = annotations[ref["ann_id"]]
        assert annotation["image_id"] == ref["image_id"]
        assert annotation["category_id"] == ref["category_id"]
        stem = os.path.splitext(images[ref["image_id"]]["file_name"])[0]
        assert ref["file_name"] == f"{stem}_{ref['ann_id']}.jpg"
        assert ref["split"] in ("train", "val", "testA", "testB")
        assert 1 <= len(ref["sentences"]) <= 3
        assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
        for sentence in ref["sentences"]:
            assert set(sentence) == {"sent_id", "raw", "sent", "tokens"}
            assert sentence["tokens"] == re.findall(r"[a-z]+", sentence["raw"].lower())
            assert sentence["sent"] == " ".join(sentence["tokens"])


def test_refs_pickle_holds_only_plain_values(dataset):
    def check(value):
        if isinstance(value, dict):
            assert type(value) is dict and all(type(key) is str for key in value)
            for item in value.values():
                check(item)
        elif isinstance(value, list):
            assert type(value) is list
            for item in value:
                check(item)
        else:
            assert type(value) in (str, int), type(value)

    check(dataset["refs"])


def test_splits_are_by_image_and_non_empty(dataset):
    split_of_image = {}
    for ref in dataset["refs"]:
        assert split_of_image.setdefault(ref["image_id"], ref["split"]) == ref["split"]
    counts = {split: list(split_of_image.values()).count(split) for split in synthetic.SPLITS}
    assert all(count >= 1 for count in counts.values()), counts
    assert counts["train"] > counts["val"] + counts["testA"] + counts["testB"]
    for num_images in (20, 37, 100):
        splits = synthetic.assign_splits(num_images, seed=5)
        assert len(splits) == num_images
        for split in ("val", "testA", "testB"):
            assert 1 <= splits.count(split) == max(1, round(0.1 * num_images))
    assert synthetic.assign_splits(3, seed=0) == ["train"] * 3


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    first, second, other = (str(tmp_path / name) for name in ("a", "b", "c"))
    synthetic.generate(first, num_images=6, seed=8, image_size=48)
    synthetic.generate(second, num_images=6, seed=8, image_size=48)
    synthetic.generate(other, num_images=6, seed=9, image_size=48)
    assert directory_bytes(first) == directory_bytes(second)
    assert (
        directory_bytes(first)["synthetic/refs(unc).p"]
        != directory_bytes(other)["synthetic/refs(unc).p"]
    )


def test_images_match_scenes_and_sizes_vary(dataset):
    root, instances = dataset["root"], dataset["instances"]
    shapes = set()
    for image, scene in zip(instances["images"], dataset["scenes"], strict=True):
        with Image.open(os.path.join(root, "images", image["file_name"])) as picture:
            assert picture.format == "JPEG" and picture.mode == "RGB"
            pixels = np.asarray(picture)
        assert pixels.shape == (image["height"], image["width"], 3)
        assert max(pixels.shape[:2]) == IMAGE_SIZE
        assert 0.6 * IMAGE_SIZE - 1 <= min(pixels.shape[:2]) <= IMAGE_SIZE
        assert np.abs(pixels.astype(int) - scene.image.astype(int)).mean() < 8.0  # JPEG loss
        shapes.add(pixels.shape)
    assert len(shapes) > 3, "image sizes should vary so letterboxing is exercised"


# --- Scene content. ---------------------------------------------------------------------------


def test_objects_look_like_their_attributes(many_scenes):
    palette = {name: np.array(rgb, float) for name, rgb in synthetic.COLOURS.items()}
    for scene in many_scenes:
        assert 2 <= len(scene.objects) <= 5
        short = min(scene.height, scene.width)
        for item, full, visible in zip(
            scene.objects, scene.full_masks, scene.visible_masks, strict=True
        ):
            mean = scene.image[visible.astype(bool)].astype(float).mean(axis=0)
            nearest = min(palette, key=lambda name: np.linalg.norm(palette[name] - mean))
            assert nearest == item.colour
            rows, cols = np.nonzero(full)
            extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
            assert extent >= 0.15 * short
            low, high = synthetic.SIZE_RANGES[item.size]
            assert low * short * 0.8 - 2 <= extent <= high * short + 2
            # Pixel i covers [i, i + 1); a triangle's thin apex may lose its last row.
            center = ((cols.max() + cols.min() + 1) / 2, (rows.max() + rows.min() + 1) / 2)
            np.testing.assert_allclose(center, item.center, atol=1.0)


def test_scenes_repeat_kinds(many_scenes):
    repeated = 0
    for scene in many_scenes:
        colours = [o.colour for o in scene.objects]
        shapes = [o.shape for o in scene.objects]
        repeated += len(set(colours)) < len(colours) or len(set(shapes)) < len(shapes)
    assert repeated >= 0.6 * len(many_scenes)


def test_every_expression_identifies_exactly_its_object(dataset, many_scenes):
    for scene in many_scenes:
        for index, expressions in enumerate(scene.expressions):
            assert 1 <= len(expressions) <= 3
            for expression in expressions:
                assert check_sentence(expression, scene) == [index], expression
                assert synthetic.resolve_expression(expression, scene) == [index]
    by_image = annotations_by_image(dataset["instances"])
    annotation_index = {
        a["id"]: n for annotations in by_image.values() for n, a in enumerate(annotations)
    }
    for ref in dataset["refs"]:
        scene = dataset["scenes"][ref["image_id"] - 1]
        for sentence in ref["sentences"]:
            assert check_sentence(sentence["raw"], scene) == [annotation_index[ref["ann_id"]]]


def test_first_expression_is_minimal(many_scenes):
    for scene in many_scenes:
        for index, expressions in enumerate(scene.expressions):
            filters, sides = check_attributes(expressions[0])
            terms = [("filter", key) for key in filters] + [("side", axis) for axis in sides]
            for dropped in terms:
                fewer_filters = {k: v for k, v in filters.items() if ("filter", k) != dropped}
                fewer_sides = {k: v for k, v in sides.items() if ("side", k) != dropped}
                shorter = check_referents(
                    fewer_filters, fewer_sides, scene.objects, scene.width, scene.height
                )
                assert shorter != [index], f"{expressions[0]!r} has a needless word"
            for other in expressions[1:]:
                other_filters, other_sides = check_attributes(other)
                assert len(other_filters) + len(other_sides) >= len(terms)


def test_language_needs_every_kind_of_attribute_and_varies(many_scenes):
    uses = {"colour": 0, "shape": 0, "size": 0, "position": 0}
    lengths, words, raws = [], set(), []
    for scene in many_scenes:
        for expressions in scene.expressions:
            filters, sides = check_attributes(expressions[0])
            for key in filters:
                uses[key] += 1
            uses["position"] += bool(sides)
            for raw in expressions:
                tokens = synthetic.sentence_tokens(raw)
                lengths.append(len(tokens))
                words.update(tokens)
                raws.append(raw)
    total = sum(len(scene.objects) for scene in many_scenes)
    assert all(count >= 0.05 * total for count in uses.values()), uses
    assert min(lengths) == 1 and 8 <= max(lengths) <= synthetic.MAX_WORDS
    assert 20 <= len(words) <= 70
    assert any(raw[0].isupper() for raw in raws) and any(raw[0].islower() for raw in raws)
    assert any(raw.endswith(".") for raw in raws) and any("," in raw for raw in raws)


def test_a_model_ignoring_the_text_does_clearly_worse(many_scenes):
    """Best text-blind guess per image (one object's mask, or all of them) scores well below 1."""

    def iou(a, b):
        return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()

    scores = []
    for scene in many_scenes:
        masks = [mask.astype(bool) for mask in scene.visible_masks]
        weights = [len(expressions) for expressions in scene.expressions]
        guesses = masks + [np.logical_or.reduce(masks)]
        scores.append(
            max(
                sum(w * iou(g, m) for w, m in zip(weights, masks, strict=True)) / sum(weights)
                for g in guesses
            )
        )
    assert np.mean(scores) < 0.5


# --- Library pieces. --------------------------------------------------------------------------


def make_object(shape, colour, size, x, y, extent=10.0):
    polygon = synthetic.shape_polygon(shape, (x, y), extent)
    return synthetic.SceneObject(shape, colour, size, (x, y), extent, polygon)


def test_resolve_follows_the_documented_semantics():
    objects = [
        make_object("circle", "red", "small", 10, 50),
        make_object("circle", "red", "big", 80, 20),
        make_object("square", "blue", "small", 50, 80),
        make_object("square", "blue", "small", 55, 30),
    ]

    def referents(text):
        return synthetic.resolve(synthetic.parse_expression(text), objects, 100, 100)

    assert referents("the bigger red one") == [1]
    assert referents("red") == [0, 1]
    assert referents("the circle on the left") == [0]
    assert referents("Top right red circle.") == [1]
    assert referents("the red circle at the bottom") == [0]
    assert referents("the blue square on the left") == []  # 5 % apart: below the margin
    assert referents("lower blue square") == [2]
    assert referents("the big circle on the left") == []  # a position needs two candidates
    assert referents("the smallest of the blue squares") == [2, 3]


def test_parse_expression_rejects_unknown_and_contradictory_words():
    assert synthetic.parse_expression("The big RED circle, on the left!") == synthetic.Description(
        colour="red", shape="circle", size="big", horizontal="left"
    )
    with pytest.raises(synthetic.ExpressionError, match="unknown word 'purple'"):
        synthetic.parse_expression("the purple circle")
    with pytest.raises(synthetic.ExpressionError, match="two values for colour"):
        synthetic.parse_expression("the red blue circle")
    with pytest.raises(synthetic.ExpressionError, match="no words"):
        synthetic.parse_expression("?!")


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((3, 4), np.uint8),
        np.ones((3, 4), np.uint8),
        np.array([[1, 0, 0], [1, 1, 0]], np.uint8),
        (np.random.default_rng(0).random((17, 23)) > 0.6).astype(np.uint8),
    ],
)
def test_uncompressed_rle_decodes_with_pycocotools(mask):
    rle = synthetic.uncompressed_rle(mask)
    assert rle["size"] == list(mask.shape) and sum(rle["counts"]) == mask.size
    decoded = mask_utils.decode(mask_utils.frPyObjects(rle, *mask.shape))
    np.testing.assert_array_equal(decoded, mask)
    compressed = synthetic.compressed_rle(mask)
    np.testing.assert_array_equal(mask_utils.decode(compressed), mask)


def test_polygon_rasterisation_matches_the_painted_pixels():
    scene = synthetic.make_scene(2, 0, 96)
    for item, full in zip(scene.objects, scene.full_masks, strict=True):
        raster = synthetic.rasterize_polygon(item.polygon, scene.height, scene.width)
        np.testing.assert_array_equal(raster, full)


def test_scene_k_depends_only_on_seed_index_and_size():
    first = synthetic.make_scene(4, 7, 64)
    again = synthetic.make_scene(4, 7, 64)
    np.testing.assert_array_equal(first.image, again.image)
    assert first.expressions == again.expressions
    assert not np.array_equal(first.image, synthetic.make_scene(4, 8, 64).image)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"num_images": 0}, ValueError, "num_images"),
        ({"image_size": 16}, ValueError, "image_size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"num_images": 2.5}, TypeError, "num_images"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        synthetic.generate(str(tmp_path), **kwargs)


# --- Command line. ----------------------------------------------------------------------------


def test_cli_flags_write_the_same_files_as_the_library(tmp_path, capsys):
    flag_values = flags.FlagValues()
    synthetic_cli.define_flags(flag_values)
    synthetic_cli.define_flags(flag_values)  # defining twice is harmless
    cli_dir, library_dir = str(tmp_path / "cli"), str(tmp_path / "lib")
    flag_values(
        ["prog", f"--output_dir={cli_dir}", "--num_images=5", "--seed=2", "--image_size=48"]
    )
    summary = synthetic_cli.run_with_flags(flag_values)
    printed = capsys.readouterr().out
    assert f"Wrote 5 images, {summary['num_refs']} refs" in printed
    assert "testB" in printed and "rle_uncompressed" in printed
    synthetic.generate(library_dir, num_images=5, seed=2, image_size=48)
    assert directory_bytes(cli_dir) == directory_bytes(library_dir)


def test_cli_flags_validate_values():
    flag_values = flags.FlagValues()
    synthetic_cli.define_flags(flag_values)
    with pytest.raises(flags.IllegalFlagValueError):
        flag_values(["prog", "--output_dir=/tmp/x", "--image_size=8"])


@pytest.mark.slow
def test_cli_module_runs_as_a_program(tmp_path):
    output_dir = str(tmp_path / "out")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "refseg_tf.synthetic",
            f"--output_dir={output_dir}",
            "--num_images=4",
            "--image_size=40",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Wrote 4 images" in completed.stdout
    assert os.path.exists(os.path.join(output_dir, "synthetic", "refs(unc).p"))
    missing = subprocess.run(
        [sys.executable, "-m", "refseg_tf.synthetic"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert missing.returncode != 0 and "output_dir" in missing.stderr


@pytest.mark.slow
def test_generates_hundreds_of_images_in_seconds(tmp_path):
    start = time.perf_counter()
    summary = synthetic.generate(str(tmp_path), num_images=500, seed=0, image_size=128)
    elapsed = time.perf_counter() - start
    assert summary["num_images"] == 500
    assert elapsed < 15.0, f"500 images took {elapsed:.1f} s"


# --- The second style, shapes_v2. -------------------------------------------------------------

V2_NUM_IMAGES, V2_SEED, V2_SIZE = 16, 5, 64
# An independent reading of the shapes_v2 language (not the module's tables).
V2_COLOURS = {"red", "green", "blue", "purple", "orange"}
V2_SHAPES = {"circle": "circle", "square": "square", "triangle": "triangle", "star": "star"}
V2_SHAPES |= {"cross": "cross", "plus": "cross"}
V2_SIDES = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}
V2_SIDES |= {"leftmost": (0, -1), "rightmost": (0, 1), "topmost": (1, -1), "highest": (1, -1)}
V2_SIDES |= {"bottommost": (1, 1), "lowest": (1, 1)}


def v2_referents(sentence, objects, size):
    """Indices of the objects a shapes_v2 sentence fits, from the documented semantics."""
    words = re.findall(r"[a-z]+", sentence.lower())
    colour = next((w for w in words if w in V2_COLOURS), None)
    shape = next((V2_SHAPES[w] for w in words if w in V2_SHAPES), None)
    side = next((V2_SIDES[w] for w in words if w in V2_SIDES), None)
    matching = [
        i for i, o in enumerate(objects) if colour in (None, o.colour) and shape in (None, o.shape)
    ]
    if side is None:
        return matching
    axis, sign = side
    return [
        i
        for i in matching
        if len(matching) > 1
        and all(
            sign * (objects[i].center[axis] - objects[j].center[axis]) >= 0.1 * size
            for j in matching
            if j != i
        )
    ]


@pytest.fixture(scope="module")
def v2_dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic_v2"))
    summary = synthetic_data.generate(
        root, num_images=V2_NUM_IMAGES, seed=V2_SEED, image_size=V2_SIZE, style="shapes_v2"
    )
    with open(os.path.join(root, "synthetic", "instances.json"), encoding="utf-8") as stream:
        instances = json.load(stream)
    with open(os.path.join(root, "synthetic", "refs(unc).p"), "rb") as stream:
        refs = RestrictedUnpickler(stream).load()
    scenes = [shapes_v2.make_scene(V2_SEED, i, V2_SIZE) for i in range(V2_NUM_IMAGES)]
    return {"root": root, "summary": summary, "instances": instances, "refs": refs, "scenes": scenes}


def test_v2_writes_the_refer_layout_with_rle_masks_of_the_drawn_shapes(v2_dataset):
    instances, refs = v2_dataset["instances"], v2_dataset["refs"]
    assert v2_dataset["summary"]["style"] == "shapes_v2"
    assert [c["name"] for c in instances["categories"]] == list(shapes_v2.SHAPES)
    assert len(refs) == len(instances["annotations"]) == v2_dataset["summary"]["num_refs"]
    by_image = annotations_by_image(instances)
    for image_id, scene in enumerate(v2_dataset["scenes"], start=1):
        assert 2 <= len(scene.objects) <= 4
        union = np.zeros((V2_SIZE, V2_SIZE), np.int32)
        for annotation, mask in zip(by_image[image_id], scene.masks, strict=True):
            decoded = decode_segmentation(annotation["segmentation"], V2_SIZE, V2_SIZE)
            np.testing.assert_array_equal(decoded, mask)
            assert annotation["area"] == mask.sum() > 0
            union += mask
        assert union.max() == 1  # shapes never overlap
        for item in scene.objects:
            assert 0.25 * V2_SIZE <= item.extent <= 0.5 * V2_SIZE


def test_v2_every_sentence_picks_out_exactly_its_object(v2_dataset):
    scenes = v2_dataset["scenes"]
    for ref in v2_dataset["refs"]:
        scene = scenes[ref["image_id"] - 1]
        index = ref["ann_id"] - min(
            r["ann_id"] for r in v2_dataset["refs"] if r["image_id"] == ref["image_id"]
        )
        for sentence in ref["sentences"]:
            assert v2_referents(sentence["raw"], scene.objects, V2_SIZE) == [index], sentence
            assert sentence["tokens"] == re.findall(r"[a-z]+", sentence["raw"].lower())


def test_v2_differs_from_the_first_style_and_defeats_a_text_blind_guess():
    scenes = [shapes_v2.make_scene(seed, i, 64) for seed in (0, 1) for i in range(60)]
    raws = [raw for scene in scenes for expressions in scene.expressions for raw in expressions]
    words = {word for raw in raws for word in re.findall(r"[a-z]+", raw.lower())}
    assert {"star", "cross", "purple", "orange", "thing"} & words
    assert not {"diamond", "yellow", "big", "small", "corner"} & words
    assert {"left", "right", "top", "bottom"} <= words
    ambiguous = 0
    for scene in scenes:
        kinds = [(o.shape, o.colour) for o in scene.objects]
        ambiguous += len({shape for shape, _ in kinds}) < len(kinds)
        ambiguous += len({colour for _, colour in kinds}) < len(kinds)
    assert ambiguous > len(scenes) // 2  # a shape or a colour is often shared
    assert {"the red circle", "the left square"} & {raw.lower() for raw in raws}
    image = scenes[0].image.astype(np.float32)
    background = image[~np.logical_or.reduce([m.astype(bool) for m in scenes[0].masks])]
    assert background.std(axis=0).min() > 15  # a noisy background


def test_v2_is_deterministic_and_rejects_unknown_words_and_styles(tmp_path):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    for root in (first, second):
        synthetic_data.generate(root, num_images=4, seed=1, image_size=48, style="shapes_v2")
    assert directory_bytes(first) == directory_bytes(second)
    with pytest.raises(synthetic.ExpressionError, match="unknown word 'diamond'"):
        shapes_v2.parse("the red diamond")
    with pytest.raises(synthetic.ExpressionError, match="two values for colour"):
        shapes_v2.parse("the red blue star")
    with pytest.raises(ValueError, match="`style` must be one of"):
        synthetic_data.generate(str(tmp_path / "c"), num_images=2, style="shapes_v3")


def test_v2_converts_with_the_refer_reader(v2_dataset):
    from refseg_tf.data.converters.refer import ReferReader
    from refseg_tf.data.converters.report import ConversionReport

    reader = ReferReader(
        data_root=v2_dataset["root"], dataset="synthetic", split_by="unc",
        image_root=v2_dataset["summary"]["image_root"],
    )  # fmt: skip
    report = ConversionReport()
    plan = reader.plan(report)
    assert set(plan) == set(synthetic.SPLITS)
    item = plan["train"][0]
    record = reader.materialize(item, report)
    scene = v2_dataset["scenes"][record.image_id - 1]
    assert (record.height, record.width) == (V2_SIZE, V2_SIZE)
    assert len(record.refs) == len(scene.objects)
    for ref, mask in zip(sorted(record.refs, key=lambda r: r.ann_id), scene.masks, strict=True):
        np.testing.assert_array_equal(np.asarray(ref.mask) > 0, mask > 0)


def test_cli_style_flag_writes_the_second_style(tmp_path, capsys):
    flag_values = flags.FlagValues()
    synthetic_cli.define_flags(flag_values)
    cli_dir, library_dir = str(tmp_path / "cli"), str(tmp_path / "lib")
    flag_values(["prog", f"--output_dir={cli_dir}", "--num_images=3", "--image_size=48",
                 "--style=shapes_v2"])  # fmt: skip
    synthetic_cli.run_with_flags(flag_values)
    assert "style: shapes_v2" in capsys.readouterr().out
    synthetic_data.generate(library_dir, num_images=3, image_size=48, style="shapes_v2")
    assert directory_bytes(cli_dir) == directory_bytes(library_dir)


def test_benchmark_trains_the_experiment_files_and_lstm_cnn_predicts_on_an_8x8_grid():
    """The synthetic lstm_cnn config is Hu's low-resolution stage at 256 px (stride 32)."""
    import importlib.util

    path = os.path.join(REPO_ROOT, "benchmarks", "synthetic_results.py")
    spec = importlib.util.spec_from_file_location("synthetic_results_under_test", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert set(benchmark.SETS) == {"shapes", "shapes_v2"}
    config = benchmark.synthetic_config("lstm_cnn", "/data/x", blind=True, steps=None)
    assert config.data.dir == "/data/x" and config.data.blind_expression == "object"
    assert config.model.stage == "low" and config.data.image_size // 32 == 8
    assert config.model.loss.label_mode == "binary" and config.model.loss.resolution == "logits"
    assert config.model.loss.background_weight == pytest.approx(1.0 / 3.0)

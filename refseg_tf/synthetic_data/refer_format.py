"""The refer-format writer both synthetic styles share (`shapes`, `shapes_v2`).

Layout, as the `refer` API and `refseg-convert --format=refer` read it:

```
OUTPUT_DIR/images/synthetic_000000000001.jpg, ...      (IMAGE_ROOT)
OUTPUT_DIR/synthetic/instances.json                     (COCO instances)
OUTPUT_DIR/synthetic/refs(unc).p                        (pickled list of ref dicts)
```

Here: the names and layout, the COCO segmentation encodings (polygon masks are the styles'),
image-level splits, the ref records and their tokens, the JPEG encoding, the summary
`generate` returns and the atomic writes. Each style draws its scenes and expressions and calls
these; neither style imports the other.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re

import numpy as np

from refseg_tf.files import atomic_write_bytes

DATASET_NAME = "synthetic"
SPLIT_BY = "unc"
IMAGE_DIRNAME = "images"
INSTANCES_FILENAME = "instances.json"
REFS_FILENAME = f"refs({SPLIT_BY}).p"
SPLITS = ("train", "val", "testA", "testB")
EVAL_SPLIT_FRACTION = 0.1
MIN_IMAGE_SIZE = 32
JPEG_QUALITY = 92

_WORD_PATTERN = re.compile(r"[a-z]+")


class ExpressionError(ValueError):
    """An expression uses a word outside a style's lexicon or contradicts itself ("red blue circle")."""


def sentence_tokens(raw: str) -> list[str]:
    """The refer-style tokens of a raw sentence: lowercase words, punctuation dropped."""
    return _WORD_PATTERN.findall(raw.lower())


def join_words(*parts: str | None) -> str:
    """The non-empty `parts` joined by single spaces."""
    return " ".join(part for part in parts if part)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: column-major run lengths starting with a background run."""
    flat = np.asarray(mask).astype(bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return {"counts": [int(run) for run in runs], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def compressed_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE as stored in JSON: `counts` is the pycocotools string."""
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO `bbox` [x, y, width, height] of a mask's pixels ([0, 0, 0, 0] when empty)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = int(cols.min()), int(rows.min())
    return [float(x0), float(y0), float(cols.max() - x0 + 1), float(rows.max() - y0 + 1)]


def image_file_name(image_id: int) -> str:
    return f"synthetic_{image_id:012d}.jpg"


def ref_file_name(image_id: int, ann_id: int) -> str:
    """COCO-refs style: `<image stem>_<ann_id>.jpg`."""
    return f"{os.path.splitext(image_file_name(image_id))[0]}_{ann_id}.jpg"


def assign_splits(num_images: int, seed: int) -> list[str]:
    """Splits by image: about 10 % each to val, testA, testB (1 each from 4 images), rest train."""
    if num_images < 4:
        return ["train"] * num_images
    per_eval_split = max(1, int(round(EVAL_SPLIT_FRACTION * num_images)))
    labels = ["val", "testA", "testB"]
    splits = [label for label in labels for _ in range(per_eval_split)]
    splits += ["train"] * (num_images - len(splits))
    order = np.random.default_rng([seed, num_images, 0x5EED]).permutation(num_images)
    return [splits[position] for position in np.argsort(order)]


def encode_jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    # 4:4:4 chroma keeps the edges of small coloured shapes sharp.
    Image.fromarray(image, mode="RGB").save(
        buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0
    )
    return buffer.getvalue()


def check_arguments(num_images, seed, image_size) -> None:
    """Raises a TypeError / ValueError naming the first bad argument of `generate`."""
    for name, value in (("num_images", num_images), ("seed", seed), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer; received {value!r}.")
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1; received {num_images}.")
    if seed < 0:
        raise ValueError(f"seed must be non-negative; received {seed}.")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}; received {image_size}.")


def make_ref(raws, ids: dict, image_id: int, ann_id: int, split: str, category_id: int) -> dict:
    """The ref record of one object with its raw expressions `raws`; advances `ids`
    (`{"ref", "sent"}` counters)."""
    sentences = []
    for raw in raws:
        tokens = sentence_tokens(raw)
        sentences.append(
            {"tokens": tokens, "raw": raw, "sent_id": ids["sent"], "sent": " ".join(tokens)}
        )
        ids["sent"] += 1
    ref = {
        "sent_ids": [sentence["sent_id"] for sentence in sentences],
        "file_name": ref_file_name(image_id, ann_id),
        "ann_id": ann_id,
        "ref_id": ids["ref"],
        "image_id": image_id,
        "split": split,
        "sentences": sentences,
        "category_id": category_id,
    }
    ids["ref"] += 1
    return ref


def prepare_directories(output_dir) -> tuple[str, str, str]:
    """Creates `images/` and `synthetic/` below `output_dir`; returns (root, image dir, dataset dir)."""
    output_dir = os.fspath(output_dir)
    image_dir = os.path.join(output_dir, IMAGE_DIRNAME)
    dataset_dir = os.path.join(output_dir, DATASET_NAME)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(dataset_dir, exist_ok=True)
    return output_dir, image_dir, dataset_dir


def write_annotations(dataset_dir: str, instances: dict, refs: list) -> None:
    """Writes `instances.json` (compact JSON) and `refs(unc).p` (pickle protocol 2), atomically."""
    atomic_write_bytes(
        os.path.join(dataset_dir, INSTANCES_FILENAME),
        json.dumps(instances, separators=(",", ":")).encode("utf-8"),
    )
    atomic_write_bytes(os.path.join(dataset_dir, REFS_FILENAME), pickle.dumps(refs, protocol=2))


def summary(output_dir, images, annotations, refs, forms, seed, image_size) -> dict:
    """What `generate` returns: counts, paths, splits, segmentation forms, vocabulary, lengths."""
    splits = {
        split: {
            "images": len({ref["image_id"] for ref in refs if ref["split"] == split}),
            "refs": sum(ref["split"] == split for ref in refs),
            "sentences": sum(len(ref["sentences"]) for ref in refs if ref["split"] == split),
        }
        for split in SPLITS
    }
    lengths = [len(s["tokens"]) for ref in refs for s in ref["sentences"]]
    vocabulary = sorted({token for ref in refs for s in ref["sentences"] for token in s["tokens"]})
    return {
        "data_root": output_dir,
        "dataset": DATASET_NAME,
        "split_by": SPLIT_BY,
        "image_root": os.path.join(output_dir, IMAGE_DIRNAME),
        "instances_path": os.path.join(output_dir, DATASET_NAME, INSTANCES_FILENAME),
        "refs_path": os.path.join(output_dir, DATASET_NAME, REFS_FILENAME),
        "seed": seed,
        "image_size": image_size,
        "num_images": len(images),
        "num_annotations": len(annotations),
        "num_refs": len(refs),
        "num_sentences": len(lengths),
        "splits": splits,
        "segmentation_forms": forms,
        "vocabulary": vocabulary,
        "sentence_length": {
            "min": min(lengths),
            "max": max(lengths),
            "mean": round(float(np.mean(lengths)), 3),
        },
    }

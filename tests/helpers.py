"""Helpers shared by several test files (one definition each; issue 20 item 6).

- `REPO_ROOT`, `subprocess_env`: running the library's commands in a subprocess.
- `default_presets`, `preset_params`: the presets of the default run (one per model family
  and per backbone) and the `-m slow` sweep over the others.
- `FLOAT_NOISE`, `assert_mask_near`: comparing the outputs of two forward passes, which
  are not bit-identical (oneDNN splits the work by thread and load, so sums run in another
  order and the last bits change: 6e-8 on 2% of an RRN map was seen on a loaded machine).
- `strict_json`, `encode_image`, `random_array`, `materialize_all`: small data helpers.
"""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two forward passes of one float32 model on the same input agree to about 1e-7 (a few ULPs of
# values ~1, accumulated over a few layers), not bit for bit: the tolerance used between them.
FLOAT_NOISE = 1e-5


def subprocess_env(**extra):
    """The environment of a library command run by a test: this checkout first on the path,
    TensorFlow's C++ info lines off, the TensorFlow Keras backend; `extra` added."""
    paths = [REPO_ROOT, os.environ.get("PYTHONPATH")]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(path for path in paths if path),
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_BACKEND="tensorflow",
    )
    env.update({key: str(value) for key, value in extra.items()})
    return env


# --------------------------------------------------------------------------- presets


def default_presets():
    """The presets of the default run: one per model family and per backbone.

    Per family the first registered preset whose backbone no chosen preset has yet (else the
    family's first), so every family and every backbone is built by default and the rest of
    `refseg_tf.models.list_presets()` runs with `-m slow`.
    """
    from refseg_tf.models import get_preset, list_presets

    by_family = {}
    for name in list_presets():
        by_family.setdefault(get_preset(name).model_class, []).append(name)
    chosen, backbones = [], set()
    for names in by_family.values():
        fresh = [name for name in names if get_preset(name).backbone not in backbones]
        name = (fresh or names)[0]
        chosen.append(name)
        backbones.add(get_preset(name).backbone)
    missing = {get_preset(name).backbone for name in list_presets()} - backbones
    for backbone in sorted(missing):  # a backbone only a family's second preset uses
        chosen.append(next(n for n in list_presets() if get_preset(n).backbone == backbone))
    return tuple(chosen)


def preset_params(names=None):
    """`pytest.param`s of `names` (default: every preset): `default_presets()` unmarked, the
    others `slow`."""
    from refseg_tf.models import list_presets

    fast = set(default_presets())
    return [
        pytest.param(name, marks=[] if name in fast else [pytest.mark.slow])
        for name in (list_presets() if names is None else names)
    ]


# --------------------------------------------------------------------------- two forward passes


# Probability margin around the threshold of `assert_mask_near`: 100x `FLOAT_NOISE`.
MASK_MARGIN = 1e-3


def assert_mask_near(mask, expected, probability, threshold, radius=2, name="mask"):
    """`mask` and `expected` (two forward passes) agree except near the threshold.

    Near: within `MASK_MARGIN` of `threshold` in `probability` (the map of `expected`'s pass,
    at the masks' resolution), or up to `radius` pixels from such a pixel: under
    `upsample_logits` the mask is thresholded at the model's input size and then resized, so
    one flipped input pixel covers up to (original / input size) pixels; the tests' images are
    under 2x the input size, hence 2.
    """
    mask, expected = np.asarray(mask).astype(bool), np.asarray(expected).astype(bool)
    probability = np.asarray(probability)
    assert mask.shape == expected.shape == probability.shape, (
        mask.shape, expected.shape, probability.shape)
    near = np.abs(probability - float(threshold)) <= MASK_MARGIN
    grown = near.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            grown |= np.roll(np.roll(near, dy, axis=-2), dx, axis=-1)
    differ = mask != expected
    assert not (differ & ~grown).any(), (
        f"{name}: {int((differ & ~grown).sum())} pixels away from the threshold differ "
        f"({int(differ.sum())} in all, of {mask.size})"
    )


# --------------------------------------------------------------------------- data


def strict_json(path):
    """Parses a JSON file, failing on NaN / Infinity tokens (not valid JSON)."""

    def reject(token):
        raise ValueError(f"{path} contains the non-JSON token {token}")

    with open(path, encoding="utf-8") as f:
        return json.loads(f.read(), parse_constant=reject)


def encode_image(array, image_format, mode=None):
    """`array` encoded as an image file's bytes (JPEG at quality 90)."""
    buffer = io.BytesIO()
    options = {"quality": 90} if image_format.upper() in ("JPEG", "JPG") else {}
    image_format = "JPEG" if image_format.upper() == "JPG" else image_format.upper()
    Image.fromarray(array, mode).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def random_array(*shape, seed=0):
    """A float32 standard-normal array of `shape` (the seed offset by the shape's sum)."""
    return np.random.default_rng(seed + sum(shape)).normal(size=shape).astype("float32")


def materialize_all(reader, plan, report):
    """A converter reader's planned items materialised, split by split: {split: [records]}."""
    records = {}
    for split, items in plan.items():
        report.set_split(split)
        records[split] = [reader.materialize(item, report) for item in items]
    return records

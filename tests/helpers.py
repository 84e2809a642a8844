"""Helpers shared by several test files (one definition each; issue 20 item 6).

- `REPO_ROOT`, `subprocess_env`: running the library's commands in a subprocess.
- `default_presets`, `preset_params`: the presets of the default run (one per model family
  and per backbone) and the `-m slow` sweep over the others.
- `FLOAT_NOISE`, `assert_mask_between`: comparing the outputs of two forward passes, which
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


def assert_mask_between(mask, strict, loose, name="mask"):
    """`mask` (bool) from one forward pass lies between the masks of another pass scored at a
    threshold a little above (`strict`) and a little below (`loose`) the model's.

    A pixel whose probability is within float noise of the threshold may go either way between
    two passes (see `FLOAT_NOISE`); every other pixel must agree. Scoring the other pass at
    threshold +- a margin far above the noise (`MASK_MARGIN`) brackets the exact mask whatever
    the scoring rule (thresholding at the input resolution, then resizing, included).
    """
    mask, strict, loose = (np.asarray(m).astype(bool) for m in (mask, strict, loose))
    assert mask.shape == strict.shape == loose.shape, (mask.shape, strict.shape, loose.shape)
    assert not (strict & ~loose).any(), "the strict mask is not inside the loose one"
    missing = strict & ~mask  # sure foreground the mask lacks
    extra = mask & ~loose  # sure background the mask has
    assert not missing.any() and not extra.any(), (
        f"{name}: {int(missing.sum())} foreground and {int(extra.sum())} background pixels "
        f"away from the threshold differ (of {mask.size})"
    )
    ambiguous = int((loose & ~strict).sum())
    assert ambiguous <= max(4, mask.size // 100), (
        f"{name}: {ambiguous} of {mask.size} pixels are near the threshold: the comparison "
        f"would not test much"
    )


# Probability margin around the threshold of `assert_mask_between`: 1e-3 is 100x `FLOAT_NOISE`.
MASK_MARGIN = 1e-3


def predictor_mask_bounds(predictor, image, expression):
    """(strict, loose) masks of `Predictor.predict_mask` at its threshold +- `MASK_MARGIN`."""
    threshold = float(predictor.threshold)
    strict = predictor.predict_mask(image, expression, min(threshold + MASK_MARGIN, 1.0))
    loose = predictor.predict_mask(image, expression, max(threshold - MASK_MARGIN, 0.0))
    return strict, loose


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

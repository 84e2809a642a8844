"""`export_model`: a model directory written by `refseg-train` -> SavedModel, TFLite, contract.

Output layout (`output_dir`):

- `saved_model/<version>/`: the SavedModel (signatures `serving_default` and `segment_tensors`,
  the vocabulary in `assets/vocab.txt`); `saved_model/` is TF Serving's model base path. The
  version folder is written under a temporary name and renamed when complete, so a running TF
  Serving never loads a half-written version.
- `model.tflite`: the network at batch 1, builtin ops only (see `refseg_tf.export.tflite`).
- `export.json`: the contract (`EXPORT_CONTRACT_VERSION`): input size S, text length T, text
  padding, preprocessing, scoring rule and threshold, vocabulary file, every signature's
  tensor names, dtypes and shapes, the model's name and full config.
"""

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from refseg_tf.export.serving import (
    DEFAULT_MAX_PIXELS,
    IMAGE_FORMATS,
    SERVING_SIGNATURE,
    TENSOR_SIGNATURE,
    THRESHOLD_SIGNATURE,
    ServingModule,
)
from refseg_tf.export.tflite import QUANTIZATIONS, TFLiteSegmenter, convert_to_tflite
from refseg_tf.files import atomic_write_bytes, atomic_write_json
from refseg_tf.filenames import VOCABULARY_FILENAME

FORMATS = ("saved_model", "tflite")
EXPORT_CONTRACT = "export.json"
EXPORT_CONTRACT_VERSION = 1
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILENAME = "model.tflite"
VOCABULARY_ASSET = VOCABULARY_FILENAME


def _check_formats(formats) -> tuple:
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise ValueError(
            f"`formats` must be a non-empty subset of {list(FORMATS)}; received {list(formats)}."
        )
    return formats


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ValueError(f"`version` must be a positive integer; received {version!r}.")
    return int(version)


def _spec(spec) -> dict:
    shape = None if spec.shape.rank is None else [d for d in spec.shape.as_list()]
    return {"dtype": spec.dtype.name, "shape": shape}


def describe_signature(function) -> dict:
    """Input and output names, dtypes and shapes (None = any) of a loaded SavedModel signature."""
    _, inputs = function.structured_input_signature
    return {
        "inputs": {name: _spec(spec) for name, spec in sorted(inputs.items())},
        "outputs": {
            name: _spec(spec) for name, spec in sorted(function.structured_outputs.items())
        },
    }


def _write_saved_model(module: ServingModule, base_dir: str, version: int) -> str:
    final = os.path.join(base_dir, str(version))
    if os.path.exists(final):
        raise FileExistsError(
            f"{final} exists: TF Serving versions are immutable; pass another --version."
        )
    os.makedirs(base_dir, exist_ok=True)
    # TF Serving only watches numeric folder names, so the temporary one is invisible to it.
    staging = tempfile.mkdtemp(dir=base_dir, prefix=f".tmp-{version}-")
    try:
        tf.saved_model.save(module, staging, signatures=module.signatures())
        os.rename(staging, final)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return final


def _tflite_contract(path: str, quantization: str) -> dict:
    return {
        "file": TFLITE_FILENAME,
        "quantization": quantization,
        "batch_size": 1,
        "builtin_ops_only": True,
        "signature": TFLiteSegmenter(path).signature(),
    }


def _scoring_contract(rule: str, threshold: float) -> dict:
    """The scoring rule of `serving_default` in words, for clients of `segment_tensors`/TFLite."""
    from refseg_tf.scoring import logit_threshold

    if rule == "upsample_logits":
        steps = (
            "TF1 resize_bilinear (align_corners=False, no half-pixel centres) of the logits to "
            f"S x S; foreground where logit >= {logit_threshold(threshold):g}; the binary S x S "
            "map resized whole (half-pixel bilinear) to M x M, M = max(h, w), the centred "
            "h x w window cropped; any value > 0 is foreground. probability = sigmoid of the "
            "upsampled logits, letterbox window cropped and resized to (h, w) (the mask is not "
            "a threshold of it)"
        )
    else:
        steps = (
            "sigmoid of the logits, resized (half-pixel bilinear) to S x S, letterbox window "
            "cropped and resized to (h, w) = probability; mask = probability >= threshold"
        )
    return {"rule": rule, "threshold": threshold, "steps": steps}


def export_contract(module: ServingModule, config, signatures: dict, tflite: dict, version) -> dict:
    """The `export.json` document (see the module docstring and `export/README.md`)."""
    preprocessor = module.preprocessor
    preset_fixes_size = any(
        isinstance(layer, keras.layers.ConvLSTM2D) for layer in module.model._flatten_layers()
    )
    contract = {
        "format_version": EXPORT_CONTRACT_VERSION,
        "model": {"name": config.model.name, "config": json.loads(config.to_json_best_effort())},
        "image_size": module.image_size,
        "image_size_note": (
            "S is the model's training input size; every exported graph takes S x S inputs"
            + (
                " (fixed: the model's keras.layers.ConvLSTM2D fixed its map size at the first"
                " call)."
                if preset_fixes_size
                else "."
            )
        ),
        "max_length": module.max_length,
        "text_padding": preprocessor.text_padding,
        "tokenizer": preprocessor.tokenizer_mode,
        "blind_expression": preprocessor.blind_expression,
        "vocabulary_file": f"{SAVED_MODEL_DIR}/{version}/assets/{VOCABULARY_ASSET}"
        if signatures
        else None,
        "vocabulary_size": len(module.tokenizer.vocabulary),
        "preprocessing": {
            "image_formats": list(IMAGE_FORMATS),
            **preprocessor.describe(),
            "max_pixels": module.max_pixels,
        },
        "preprocessor": preprocessor.get_config(),
        "scoring": _scoring_contract(preprocessor.scoring_rule, module.threshold),
        "saved_model": None,
        "tflite": tflite,
    }
    if signatures:
        contract["saved_model"] = {
            "base_path": SAVED_MODEL_DIR,
            "version": version,
            "signatures": signatures,
        }
    return contract


def export_model(
    model_dir: str,
    output_dir: str,
    version: int = 1,
    formats=FORMATS,
    tflite_quantization: str = "none",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    checkpoint: str = "auto",
) -> dict:
    """Exports a trained model directory; returns the contract written to `export.json`.

    Args:
        model_dir: a directory written by `refseg-train` (`model.keras` or checkpoints,
            `config.json`, `vocab.txt`).
        output_dir: where `saved_model/<version>/`, `model.tflite` and `export.json` go.
        version: the TF Serving version folder (a positive integer; must not exist yet).
        formats: any of "saved_model", "tflite".
        tflite_quantization: one of `QUANTIZATIONS`.
        max_pixels: largest image `serving_default` accepts (width x height).
        checkpoint: which weights to load (see `refseg_tf.training.model_dir.load_trained_model`).

    Example:
        >>> contract = export_model("runs/rrn", "exported/rrn", formats=["saved_model"])
        >>> contract["saved_model"]["signatures"]["serving_default"]["outputs"]["mask"]
        {'dtype': 'uint8', 'shape': [None, None, None]}
    """
    from refseg_tf.inference import Predictor

    formats = _check_formats(formats)
    version = _check_version(version)
    if tflite_quantization not in QUANTIZATIONS:
        choices = ", ".join(repr(q) for q in QUANTIZATIONS)
        raise ValueError(
            f"`tflite_quantization` must be one of {choices}; received {tflite_quantization!r}."
        )
    predictor = Predictor.from_model_dir(model_dir, checkpoint=checkpoint)
    # The asset is the preprocessor's vocabulary: the words the exported graph tokenises with.
    module = ServingModule(predictor, max_pixels=max_pixels)
    os.makedirs(output_dir, exist_ok=True)

    signatures = {}
    if "saved_model" in formats:
        path = _write_saved_model(module, os.path.join(output_dir, SAVED_MODEL_DIR), version)
        loaded = tf.saved_model.load(path)
        signatures = {
            name: describe_signature(loaded.signatures[name])
            for name in (SERVING_SIGNATURE, TENSOR_SIGNATURE, THRESHOLD_SIGNATURE)
        }
    tflite = None
    if "tflite" in formats:
        flatbuffer = convert_to_tflite(
            module.model_logits, module.model, module.image_size, module.max_length,
            tflite_quantization,
        )
        path = atomic_write_bytes(os.path.join(output_dir, TFLITE_FILENAME), flatbuffer)
        tflite = _tflite_contract(path, tflite_quantization)
    contract = export_contract(module, predictor.config, signatures, tflite, version)
    atomic_write_json(os.path.join(output_dir, EXPORT_CONTRACT), contract)
    return contract

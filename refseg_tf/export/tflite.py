"""The LiteRT (TFLite) model: the network alone at batch 1, builtin ops only.

Only the network goes into the `.tflite` file: string ops and image decoding have no builtin
TFLite kernels and the Flex delegate is not available in Python LiteRT (`ai_edge_litert` 2.3),
so a client preprocesses with the contract in `export.json` (letterbox, normalisation, word ids)
and applies the scoring rule to the logits. The batch is fixed at 1 because a dynamic batch turns
Keras' LSTM loops into TensorList ops that need Flex; with a static batch LSTM and ConvLSTM2D
convert to builtin `WHILE` / unrolled ops.
"""

import tempfile

import numpy as np
import tensorflow as tf

from refseg_tf.export.serving import saved_model_variables

QUANTIZATIONS = ("none", "float16", "dynamic_range")
TFLITE_SIGNATURE = "serving_default"


def _check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        choices = ", ".join(repr(q) for q in QUANTIZATIONS)
        raise ValueError(
            f"`tflite_quantization` must be one of {choices}; received {quantization!r}."
        )


def convert_to_tflite(logits_fn, trackable, image_size: int, max_length: int,
                      quantization: str = "none") -> bytes:
    """Converts `logits_fn(image, word_ids)` at batch 1 to a builtins-only TFLite flatbuffer.

    Args:
        logits_fn: a function of float32 `[1, S, S, 3]` images and int32 `[1, T]` word ids
            returning float32 `[1, h, w, 1]` logits (e.g. `ServingModule.model_logits`).
        trackable: the Keras model whose variables `logits_fn` uses.
        image_size, max_length: S and T.
        quantization: "none" (float32), "float16" (float16 weights, float32 compute) or
            "dynamic_range" (int8 weights, dynamic-range kernels).

    Returns:
        The `.tflite` file contents, with one signature (`serving_default`) whose inputs are
        `image` and `word_ids` and whose output is `logits`.

    Raises:
        tf.lite ConverterError when an op has no builtin kernel (no Flex fallback is allowed).
    """
    _check_quantization(quantization)

    signature = [
        tf.TensorSpec([1, image_size, image_size, 3], tf.float32, name="image"),
        tf.TensorSpec([1, max_length], tf.int32, name="word_ids"),
    ]
    module = _TFLiteModule(logits_fn, trackable, signature)
    # Through a SavedModel that tracks the model's tf.Variables (`saved_model_variables`):
    # `from_concrete_functions` left the variables read inside the LSTM / ConvLSTM2D loops as
    # uninitialised READ_VARIABLE ops (TF 2.21, LiteRT 2.3). Not through
    # `keras.export.ExportArchive`: it traced the network three times (listing the endpoint's
    # variables; walking the Keras model, whose `_default_save_signature` is a new `tf.function`
    # of the whole model; saving).
    with tempfile.TemporaryDirectory(prefix="refseg-tflite-") as staging:
        tf.saved_model.save(module, staging, signatures={TFLITE_SIGNATURE: module.segment})
        converter = tf.lite.TFLiteConverter.from_saved_model(staging, [TFLITE_SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


class _TFLiteModule(tf.Module):
    """`segment(image, word_ids) -> {"logits"}` at batch 1 over the model's tf.Variables."""

    def __init__(self, logits_fn, trackable, signature):
        super().__init__(name="refseg_tflite")
        self._logits_fn = logits_fn
        # The Keras model itself is not tracked, so saving traces no Keras `tf.function`.
        self.model_variables = saved_model_variables(trackable)
        self.segment = tf.function(self._segment, input_signature=signature, autograph=False)

    def _segment(self, image, word_ids):
        return {"logits": self._logits_fn(image, word_ids)}


def _describe(details) -> dict:
    return {
        name: {"dtype": np.dtype(detail["dtype"]).name, "shape": [int(v) for v in detail["shape"]]}
        for name, detail in sorted(details.items())
    }


class TFLiteSegmenter:
    """Runs an exported `model.tflite` with `ai_edge_litert`, any batch size (one at a time).

    Args:
        model_path: path of the `.tflite` file.
        num_threads: interpreter threads (None: LiteRT's default).

    Call args:
        image: float32 `[B, S, S, 3]`, preprocessed as `export.json` says.
        word_ids: int32 `[B, T]`.

    Returns:
        float32 logits `[B, h, w, 1]`.

    Example:
        >>> segmenter = TFLiteSegmenter("out/model.tflite")
        >>> logits = segmenter(images, word_ids)
    """

    def __init__(self, model_path: str, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner(TFLITE_SIGNATURE)

    def signature(self) -> dict:
        """Input and output names, dtypes and shapes of the signature."""
        return {
            "name": TFLITE_SIGNATURE,
            "inputs": _describe(self.runner.get_input_details()),
            "outputs": _describe(self.runner.get_output_details()),
        }

    def _checked(self, name: str, value, kind: str, dtype) -> np.ndarray:
        """`value` as the signature's `dtype`, refused (naming `name`) when its dtype is not of
        `kind` ("f" float, "i" integer) or its shape past the batch is not the model's."""
        value = np.asarray(value)
        allowed = ("f",) if kind == "f" else ("i", "u")
        if value.dtype.kind not in allowed:
            wanted = "float" if kind == "f" else "integer"
            raise ValueError(f"`{name}` must be a {wanted} array ({np.dtype(dtype).name}); "
                             f"received dtype {value.dtype}.")
        expected = [int(v) for v in self.runner.get_input_details()[name]["shape"]][1:]
        if value.ndim != len(expected) + 1 or list(value.shape[1:]) != expected:
            raise ValueError(f"`{name}` must have shape [B, {', '.join(map(str, expected))}]; "
                             f"received {tuple(value.shape)}.")
        return value.astype(dtype)

    def __call__(self, image, word_ids) -> np.ndarray:
        image = self._checked("image", image, "f", np.float32)
        word_ids = self._checked("word_ids", word_ids, "i", np.int32)
        if len(image) != len(word_ids):
            raise ValueError(
                "`image` must be [B, S, S, 3] and `word_ids` [B, T] with the same B; received "
                f"{image.shape} and {word_ids.shape}."
            )
        outputs = [
            self.runner(image=image[i : i + 1], word_ids=word_ids[i : i + 1])["logits"]
            for i in range(len(image))
        ]
        return np.concatenate(outputs, axis=0)

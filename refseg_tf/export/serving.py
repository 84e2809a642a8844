"""The serving graph: raw image bytes and a sentence in, the mask at the image's own size out.

`ServingModule` wraps a trained model with the library's own preprocessing, tokeniser and
scoring rule so that a SavedModel needs no Python code to run:

- `serving_default(image_bytes [B] tf.string, expression [B] tf.string)` ->
  `mask` uint8 `[B, H, W]` (0/1), `probability` float32 `[B, H, W]`, `image_size` int32 `[B, 2]`;
  each map is at its own image's size, zero-padded to the largest height and width of the batch
  (crop `mask[i, :image_size[i, 0], :image_size[i, 1]]`);
- `segment_tensors(image float32 [B, S, S, 3], word_ids int32 [B, T])` -> `logits` float32
  `[B, h, w, 1]`, the model alone (what the TFLite file holds, for clients that preprocess).

The steps are the library's, called rather than re-implemented: `tf.io.decode_image` with the
arguments of the training pipeline (`refseg_tf.data.pipeline`; JPEG with the accurate DCT of
Pillow, which `refseg-predict --model_dir` reads with), then the model directory's
`refseg_tf.preprocessing.ReferringPreprocessor` (letterbox + normalisation, tokeniser with the
text padding and text-blind control) and its scoring rule (`score_for_serving` ->
`ReferringPreprocessor.score_tf` -> `refseg_tf.scoring.score_mask_tf`, following
`eval.scoring_rule`), with the threshold of `refseg_tf.inference.Predictor`.

Bad payloads fail the request with an `InvalidArgumentError` naming the input and its index
(e.g. "image_bytes[2] is empty"); the loaded model stays usable for the next request.
"""

import numpy as np
import tensorflow as tf


SERVING_SIGNATURE = "serving_default"
TENSOR_SIGNATURE = "segment_tensors"
# `serving_default` with a probability threshold input, scored by the same rule.
THRESHOLD_SIGNATURE = "serving_threshold"
DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP")

_MAGIC = {
    "JPEG": b"\xff\xd8\xff",
    "PNG": b"\x89PNG\r\n\x1a\n",
    "GIF": b"GIF8",
    "BMP": b"BM",
}
# Headers are read from the bytes followed by this many zeros, so short inputs never read past
# their end (a too-short image then fails in the decoder, with the input named).
_HEADER_PADDING = 32


def score_for_serving(logits, original_size, preprocessor, threshold: float):
    """The scoring step of the exported graph: one example's logits -> probability and mask.

    `preprocessor.score_tf`, i.e. `refseg_tf.scoring.probability_map_tf` and `score_mask_tf`
    under the model directory's `eval.scoring_rule` (the graph forms that `score_masks` and
    `probability_maps` run for `refseg-evaluate` and `Predictor`), so `serving_default`,
    `refseg-predict --saved_model` and the client score as the Keras path does.

    Args:
        logits: float32 `[h, w, 1]` logits of one example.
        original_size: int32 `[2]` (height, width) of the original image.
        preprocessor: the model's `refseg_tf.preprocessing.ReferringPreprocessor`.
        threshold: probability threshold of the model.

    Returns:
        (probability float32 `[height, width]`, mask uint8 `[height, width]` in {0, 1}).
    """
    probability, mask = preprocessor.score_tf(logits, original_size, threshold)
    return probability, tf.cast(mask, tf.uint8)


def _message(template: str, index):
    return tf.strings.format(template, [index])


def _little_endian(encoded, position: int, length: int, dtype):
    raw = tf.strings.substr(encoded, position, length)
    return tf.cast(tf.io.decode_raw(raw, dtype, little_endian=True)[0], tf.int64)


def _big_endian_uint32(encoded, position: int):
    raw = tf.io.decode_raw(tf.strings.substr(encoded, position, 4), tf.uint8)
    raw = tf.cast(raw, tf.int64)
    return ((raw[0] * 256 + raw[1]) * 256 + raw[2]) * 256 + raw[3]


def image_format_index(encoded):
    """Index into `IMAGE_FORMATS` of the encoded image's format from its magic bytes, else -1."""
    found = tf.constant(-1, tf.int32)
    for index, name in reversed(list(enumerate(IMAGE_FORMATS))):
        magic = _MAGIC[name]
        is_format = tf.equal(tf.strings.substr(encoded, 0, len(magic)), magic)
        found = tf.where(is_format, index, found)
    return found


def header_pixel_count(encoded, format_index):
    """Width x height read from the file header, without decoding the pixels (int64 scalar).

    JPEG: `tf.io.extract_jpeg_shape`; PNG: the IHDR chunk (big-endian width, height at bytes
    16-23); GIF: the logical screen (little-endian uint16 at bytes 6-9); BMP: the DIB header
    (little-endian int32 at bytes 18-25, height negative for top-down files).
    """
    padded = encoded + tf.constant(b"\x00" * _HEADER_PADDING)

    def jpeg():
        shape = tf.io.extract_jpeg_shape(encoded, output_type=tf.int32)
        return tf.cast(shape[0], tf.int64) * tf.cast(shape[1], tf.int64)

    def png():
        return _big_endian_uint32(padded, 16) * _big_endian_uint32(padded, 20)

    def gif():
        return _little_endian(padded, 6, 2, tf.uint16) * _little_endian(padded, 8, 2, tf.uint16)

    def bmp():
        width = _little_endian(padded, 18, 4, tf.int32)
        height = _little_endian(padded, 22, 4, tf.int32)
        return tf.abs(width) * tf.abs(height)

    return tf.switch_case(
        format_index, branch_fns=[jpeg, png, gif, bmp], default=lambda: tf.constant(0, tf.int64)
    )


def _decode_jpeg(encoded):
    # The accurate integer DCT is Pillow's (hence `Predictor`'s) decoder, bit for bit; TF's
    # default ("INTEGER_FAST") differs by up to a few grey levels.
    image = tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")
    return tf.ensure_shape(image, [None, None, 3])


def _decode_other(encoded):
    # As refseg_tf.data.pipeline's decode map: grey -> RGB, alpha dropped, first GIF frame.
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def decode_image_bytes(encoded, index, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Checks and decodes one encoded image as the training pipeline does: uint8 RGB `[h, w, 3]`.

    Args:
        encoded: scalar tf.string, JPEG, PNG, GIF (first frame) or BMP bytes.
        index: int32 scalar, the position of the image in the request (for error messages).
        max_pixels: largest width x height accepted, checked on the header before decoding.

    Raises (at run time):
        InvalidArgumentError naming `image_bytes[index]` when the bytes are empty, are not one of
        the four formats, hold more than `max_pixels` pixels or do not decode.
    """
    length = tf.strings.length(encoded)
    not_empty = tf.debugging.Assert(
        length > 0, [_message("image_bytes[{}] is empty", index)], name="image_bytes_empty"
    )
    with tf.control_dependencies([not_empty]):
        format_index = image_format_index(encoded)
    known_format = tf.debugging.Assert(
        format_index >= 0,
        [_message("image_bytes[{}] is not a JPEG, PNG, GIF or BMP image", index)],
        name="image_bytes_format",
    )
    with tf.control_dependencies([known_format]):
        pixels = header_pixel_count(encoded, format_index)
    small_enough = tf.debugging.Assert(
        pixels <= max_pixels,
        [
            _message("image_bytes[{}] has", index),
            pixels,
            f"pixels, more than the limit of {max_pixels}",
        ],
        name="image_bytes_too_large",
    )
    with tf.control_dependencies([small_enough]):
        image = tf.cond(
            tf.equal(format_index, IMAGE_FORMATS.index("JPEG")),
            lambda: _decode_jpeg(encoded),
            lambda: _decode_other(encoded),
        )
    decoded_pixels = tf.cast(tf.shape(image)[0], tf.int64) * tf.cast(tf.shape(image)[1], tf.int64)
    decoded_ok = tf.debugging.Assert(
        (decoded_pixels > 0) & (decoded_pixels <= max_pixels),
        [_message("image_bytes[{}] decoded to", index), tf.shape(image), "pixels"],
        name="image_bytes_decoded_size",
    )
    with tf.control_dependencies([decoded_ok]):
        return tf.identity(image)


def _batch_checks(image_bytes, expression):
    batch = tf.size(image_bytes)
    same_length = tf.debugging.Assert(
        tf.equal(batch, tf.size(expression)),
        [
            "image_bytes and expression must have the same length; received",
            batch,
            "image_bytes and",
            tf.size(expression),
            "expression",
        ],
        name="batch_lengths",
    )
    not_empty = tf.debugging.Assert(
        batch > 0, ["image_bytes and expression must hold at least one example"], name="batch_size"
    )
    stripped = tf.strings.strip(expression)
    empty = tf.where(tf.equal(tf.strings.length(stripped), 0))[:, 0]
    no_empty_expression = tf.debugging.Assert(
        tf.equal(tf.size(empty), 0),
        ["expression must be non-empty; empty at positions", empty],
        summarize=16,
        name="expression_empty",
    )
    return [same_length, not_empty, no_empty_expression]


# What a SavedModel's `variables/variables` stores besides the model's weights (its
# `count_params()`): the state of Keras random-seed generators (`SeedGenerator`, 2 int values
# each; Dropout layers hold one), captured by the graph even at inference. Nothing else: no
# optimizer slots, no step counter; the tokeniser's lookup table is built from the vocabulary
# asset when the SavedModel loads.
STORED_STATE = ("seed_generator_state",)


def stored_state_size(model) -> int:
    """Values of `model.variables` that are not weights (`STORED_STATE`), as the export stores."""
    weights = {id(variable) for variable in model.weights}
    extra = [variable for variable in model.variables if id(variable) not in weights]
    unknown = [v.path for v in extra if not v.path.endswith(STORED_STATE)]
    if unknown:
        raise ValueError(f"Undocumented non-weight variables in the exported model: {unknown}.")
    return sum(int(np.prod(variable.shape)) for variable in extra)


def saved_model_variables(model) -> list:
    """The tf.Variables a SavedModel of `model` tracks directly, the Keras model left untracked.

    Tracked through the Keras model, some (e.g. BatchNorm moving statistics) were missing from
    the SavedModel's variable list, so TF Serving's TF1 loader and `saved_model_cli` failed with
    "Could not find variable ...", and LiteRT left the variables read inside LSTM / ConvLSTM2D
    loops as uninitialised READ_VARIABLE ops; tracked both ways, each weight was stored twice
    (issue 21). `keras.export.ExportArchive` tracks them the same way. `variables`, not
    `weights`: it includes the random-seed state of Dropout layers (LTS's transformer), which
    the graph captures even at inference, so the SavedModel stores `model.count_params()` values
    plus `stored_state_size(model)` (`STORED_STATE`).
    """
    return [variable.value for variable in model.variables]


class _Untracked:
    """A reference `tf.Module` does not track (the SavedModel does not store what it holds)."""

    def __init__(self, value):
        self.value = value


class ServingModule(tf.Module):
    """A trained model with its preprocessing, tokeniser and scoring, as SavedModel signatures.

    Args:
        predictor: a `refseg_tf.inference.Predictor`: the export takes its model, its
            `ReferringPreprocessor` (preprocessing, tokeniser, text-blind control, scoring rule)
            and its threshold, so the exported graph and the Keras path share every setting.
        vocabulary_path: None (the default): the preprocessor's vocabulary is written as the
            SavedModel asset `vocab.txt`, so the asset is the vocabulary the graph tokenises
            with; or a vocabulary file holding the same words.
        max_pixels: largest image (width x height) `serving_default` accepts.

    Example:
        >>> module = ServingModule(Predictor.from_model_dir("runs/rrn"))
        >>> tf.saved_model.save(module, "out/saved_model/1", signatures=module.signatures())

    Reference: the TF Serving SavedModel conventions (`serving_default`, named tensors).
    """

    def __init__(self, predictor, vocabulary_path=None, max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__(name="refseg_serving")
        max_pixels = int(max_pixels)
        if max_pixels < 1:
            raise ValueError(f"`max_pixels` must be a positive integer; received {max_pixels}.")
        if vocabulary_path is None:
            vocabulary_path = self._write_vocabulary(predictor.preprocessor.vocabulary)
        # A model trained with auxiliary networks (ASGN's discriminator, issue 12) exports only
        # the network inference runs, `inference_model()`.
        model = predictor.model
        model = model.inference_model()
        # The Keras model is held out of the object graph (`_Untracked`); its tf.Variables are
        # tracked directly (`saved_model_variables`).
        self._model = _Untracked(model)
        self.preprocessor = predictor.preprocessor
        self.model_variables = saved_model_variables(model)
        self.tokenizer = self.preprocessor.tokenizer
        self.vocabulary_file = tf.saved_model.Asset(vocabulary_path)
        self.image_size = int(self.preprocessor.image_size)
        self.max_length = int(self.preprocessor.max_length)
        self.threshold = float(predictor.threshold)
        self.scoring_rule = self.preprocessor.scoring_rule
        self.max_pixels = max_pixels
        size, length = self.image_size, self.max_length
        # One trace of the network for the three signatures: each calls this function (one
        # graph in the SavedModel) instead of tracing the model again (issue 21: export time).
        tensor_inputs = [
            tf.TensorSpec([None, size, size, 3], tf.float32, name="image"),
            tf.TensorSpec([None, length], tf.int32, name="word_ids"),
        ]
        self.logits = tf.function(self.model_logits, input_signature=tensor_inputs)
        self.segment_tensors = tf.function(self._segment_tensors, input_signature=tensor_inputs)
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None], tf.string, name="image_bytes"),
                tf.TensorSpec([None], tf.string, name="expression"),
            ],
        )
        self.serve_threshold = tf.function(
            self._serve_at,
            input_signature=[
                tf.TensorSpec([None], tf.string, name="image_bytes"),
                tf.TensorSpec([None], tf.string, name="expression"),
                tf.TensorSpec([], tf.float32, name="threshold"),
            ],
        )

    def _write_vocabulary(self, vocabulary) -> str:
        """The preprocessor's vocabulary as a `vocab.txt` the SavedModel copies as its asset."""
        import os
        import tempfile

        from refseg_tf.filenames import VOCABULARY_FILENAME

        # Removed with the module (the SavedModel holds its own copy once saved).
        self._vocabulary_directory = tempfile.TemporaryDirectory(prefix="refseg-export-")
        path = os.path.join(self._vocabulary_directory.name, VOCABULARY_FILENAME)
        vocabulary.save(path)
        return path

    @property
    def model(self):
        """The Keras model the signatures run (`inference_model()` of the trained model)."""
        return self._model.value

    def signatures(self) -> dict:
        """The `signatures` argument of `tf.saved_model.save`."""
        return {
            SERVING_SIGNATURE: self.serve,
            TENSOR_SIGNATURE: self.segment_tensors,
            THRESHOLD_SIGNATURE: self.serve_threshold,
        }

    def model_logits(self, image, word_ids):
        """float32 logits of the network (`logits` is this as one traced `tf.function`)."""
        logits = self.model({"image": image, "word_ids": word_ids}, training=False)
        return tf.cast(logits, tf.float32)

    def _segment_tensors(self, image, word_ids):
        # A loaded signature does not check its inputs against its TensorSpecs (only the dtype
        # is converted): a wrong size would fail deep in the network naming an inner node.
        size, length = self.image_size, self.max_length
        def shape_text(tensor):  # "1,64,64,3": comparable whatever the rank received
            return tf.strings.reduce_join(tf.strings.as_string(tf.shape(tensor)), separator=",")

        def check(tensor, name, expected):
            received = shape_text(tensor)
            matches = tf.strings.regex_full_match(received, r"\d+," + ",".join(map(str, expected)))
            return tf.debugging.Assert(matches, [
                f"segment_tensors: `{name}` must have shape [B, {', '.join(map(str, expected))}]"
                " (export.json); received shape", received], name=f"check_{name}")

        checks = [
            check(image, "image", [size, size, 3]),
            check(word_ids, "word_ids", [length]),
        ]
        with tf.control_dependencies(checks):
            image, word_ids = tf.identity(image), tf.identity(word_ids)
        return {"logits": self.logits(image, word_ids)}

    def _prepare(self, inputs):
        index, encoded = inputs
        with tf.name_scope("image_bytes"):  # decoder errors name their node .../image_bytes/...
            image = decode_image_bytes(encoded, index, self.max_pixels)
        prepared, _ = self.preprocessor.preprocess_image(image)
        return prepared, tf.shape(image, out_type=tf.int32)[:2]

    def _word_ids(self, expression):
        return self.preprocessor.tokenize(expression)  # the text-blind control included

    def _serve(self, image_bytes, expression):
        return self._serve_at(image_bytes, expression, self.threshold)

    def _serve_at(self, image_bytes, expression, threshold):
        with tf.control_dependencies(_batch_checks(image_bytes, expression)):
            indices = tf.range(tf.size(image_bytes), dtype=tf.int32)
        size = self.image_size
        images, sizes = tf.map_fn(
            self._prepare,
            (indices, image_bytes),
            fn_output_signature=(
                tf.TensorSpec([size, size, 3], tf.float32),
                tf.TensorSpec([2], tf.int32),
            ),
        )
        logits = self.logits(images, self._word_ids(expression))
        largest = tf.reduce_max(sizes, axis=0)

        def score(inputs):
            example_logits, original_size = inputs
            probability, mask = score_for_serving(
                example_logits, original_size, self.preprocessor, threshold
            )
            padding = [[0, largest[0] - original_size[0]], [0, largest[1] - original_size[1]]]
            return tf.pad(probability, padding), tf.pad(mask, padding)

        probability, mask = tf.map_fn(
            score,
            (logits, sizes),
            fn_output_signature=(
                tf.TensorSpec([None, None], tf.float32),
                tf.TensorSpec([None, None], tf.uint8),
            ),
        )
        return {"mask": mask, "probability": probability, "image_size": sizes}

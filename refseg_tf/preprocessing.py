"""`ReferringPreprocessor`: image in -> model inputs, logits -> mask out, defined once.

A model directory holds a model and its preprocessor: `preprocessor.json` (the settings below,
`get_config`) beside `vocab.txt` (the vocabulary, an asset). The tf.data pipeline
(`refseg_tf.data.load`), `refseg_tf.inference.Predictor`, the evaluation
(`refseg_tf.training.evaluation`) and the export (`refseg_tf.export`) all call it, so the
letterbox, normalisation, tokenisation, text padding, text-blind control, the inverse letterbox
and the scoring rule (`refseg_tf.scoring`) have one definition.

Example:
    >>> preprocessor = ReferringPreprocessor.from_model_dir("runs/rrn")
    >>> inputs, window = preprocessor.model_inputs(image, ["the man on the left"])
    >>> logits = model(inputs, training=False)
    >>> mask = preprocessor.score(logits, [window], [image.shape[:2]])[0]  # bool [h, w]

Reference: the layout of keras-hub's `Preprocessor` (`preprocessor.json` + tokenizer assets
beside the model; `image_segmenter_preprocessor.py` pairs an image converter with the task).
"""

import json
import os

import keras
import tensorflow as tf

from refseg_tf import scoring
from refseg_tf.data import transforms
from refseg_tf.data.settings import PREPROCESSING_DEFAULTS, PREPROCESSING_KEYS
from refseg_tf.filenames import (  # noqa: F401  (re-exported)
    CONFIG_FILENAME,
    METADATA_FILENAME,
    PREPROCESSOR_FILENAME,
    VOCABULARY_FILENAME,
)

TEXT_PADDINGS = ("front", "back")
# The keys of `get_config` that come from `config.data` of a training config.
DATA_KEYS = PREPROCESSING_KEYS
_DEFAULTS = PREPROCESSING_DEFAULTS


def resolve_threshold(config):
    """The probability threshold of a training config: `eval.threshold` when >= 0, else the
    model's `model.threshold`; None when the config has neither (a config of another tool)."""
    evaluation = config.get("eval", {}) or {}
    threshold = float(evaluation.get("threshold", -1.0))
    if threshold >= 0:
        return scoring.check_threshold(threshold)
    model = config.get("model", {}) or {}
    if model.get("threshold") is not None:
        return scoring.check_threshold(model["threshold"])
    return None


def data_tokenizer(data_dir):
    """The tokeniser mode a converted data directory's `vocab.txt` was built with
    (`metadata.json` "vocabulary"/"tokenizer", "refseg" when the key predates it); None when
    there is no readable metadata.json."""
    path = os.path.join(os.fspath(data_dir), METADATA_FILENAME)
    try:
        with tf.io.gfile.GFile(path, "r") as stream:
            metadata = json.load(stream)
        return metadata.get("vocabulary", {}).get("tokenizer", "refseg")
    except (tf.errors.OpError, ValueError, AttributeError):
        return None


def _check_bool_free_int(name: str, value) -> int:
    transforms.check_positive_int(name, value)
    return int(value)


@keras.saving.register_keras_serializable(package="refseg_tf")
class ReferringPreprocessor(tf.Module):
    """The preprocessing of one referring-segmentation model and its inverse.

    Args:
        vocabulary: a `refseg_tf.text.Vocabulary`, a word list (specials first) or a file path.
        image_size ... blind_expression: the `refseg_tf.data.settings.PreprocessingSettings`
            (keys and defaults defined there once):
        image_size: side S of the square network input.
        max_length: word ids per sentence T.
        text_padding: "front" (Hu/RMI/RRN: last word at the last step) or "back" (MCN/LTS).
        resize_method: "bilinear" or "bicubic" (see `transforms.resize_and_pad`).
        pad_value: "zero" or "grey" outside the letterboxed image.
        normalization: "caffe_bgr" (the default), "vgg_rgb", "unit" or "none" (`transforms.normalize_image`).
        tokenizer: "refseg" or "authors" (`refseg_tf.text.split_words`).
        blind_expression: "" or the sentence a text-blind control model reads for every input.
        scoring_rule: one of `refseg_tf.scoring.SCORING_RULES` (config `eval.scoring_rule`).
        threshold: the probability threshold; None leaves it to the model (`threshold_for`).
            Built from a training config (`from_config`), it is resolved there: `eval.threshold`,
            or when that is < 0 the model's `model.threshold` (LTS: 0.25).

    Call args (`model_inputs`):
        image: one [h, w, 3] uint8 RGB image (grey and RGBA converted).
        expressions: a string or [B] strings (one model input each).

    Returns (`model_inputs`):
        ({"image": float32 [B, S, S, 3], "word_ids": int32 [B, T]}, window int32 [4]).

    Example:
        >>> preprocessor = ReferringPreprocessor(Vocabulary.build(["a red ball"]), image_size=64)
        >>> preprocessor.save("runs/model")  # preprocessor.json + vocab.txt
        >>> ReferringPreprocessor.load("runs/model").get_config() == preprocessor.get_config()
        True

    Reference: Hu et al. 2016 public code (letterbox, VGG mean, front padding), RMI / RRN code
    (Caffe BGR mean), MCN / LTS (Jing et al. 2021, Sec. 4.2: grey 416 letterbox, bicubic, 1/255);
    the scoring rules are `refseg_tf.scoring`'s.
    """

    def __init__(
        self,
        vocabulary,
        *,
        image_size: int = _DEFAULTS["image_size"],
        max_length: int = _DEFAULTS["max_length"],
        text_padding: str = _DEFAULTS["text_padding"],
        resize_method: str = _DEFAULTS["resize_method"],
        pad_value: str = _DEFAULTS["pad_value"],
        normalization: str = _DEFAULTS["normalization"],
        tokenizer: str = _DEFAULTS["tokenizer"],
        blind_expression: str = _DEFAULTS["blind_expression"],
        scoring_rule: str = scoring.DEFAULT_SCORING_RULE,
        threshold=None,
        name: str = "referring_preprocessor",
    ):
        from refseg_tf.text import Tokenizer, as_vocabulary, check_tokenizer_mode, encode_sentence

        super().__init__(name=name)
        if vocabulary is None:
            raise ValueError(
                "`vocabulary` must be a Vocabulary, a word list or a vocabulary file; received "
                f"None (a saved preprocessor keeps it in {VOCABULARY_FILENAME} beside "
                f"{PREPROCESSOR_FILENAME}: use `ReferringPreprocessor.load(directory)`)."
            )
        self.image_size = _check_bool_free_int("image_size", image_size)
        self.max_length = _check_bool_free_int("max_length", max_length)
        transforms.check_choice("text_padding", text_padding, TEXT_PADDINGS)
        transforms.check_choice("resize_method", resize_method, transforms.RESIZE_METHODS)
        transforms.check_choice("pad_value", pad_value, tuple(transforms.PAD_VALUES))
        transforms.check_choice("normalization", normalization, transforms.NORMALIZATIONS)
        if not isinstance(blind_expression, str):
            raise ValueError(
                f"`blind_expression` must be a string; received {blind_expression!r}."
            )
        self.text_padding = text_padding
        self.resize_method = resize_method
        self.pad_value = pad_value
        self.normalization = normalization
        self.tokenizer_mode = check_tokenizer_mode(tokenizer)
        self.blind_expression = blind_expression
        self.scoring_rule = scoring.check_scoring_rule(scoring_rule)
        self.threshold = None if threshold is None else scoring.check_threshold(threshold)
        self.vocabulary = as_vocabulary(vocabulary)
        self.tokenizer = Tokenizer(
            self.vocabulary, max_length=self.max_length, padding=text_padding,
            mode=self.tokenizer_mode,
        )
        self.blind_word_ids = None
        if blind_expression:
            self.blind_word_ids = tuple(encode_sentence(
                blind_expression, self.vocabulary, self.max_length, text_padding,
                mode=self.tokenizer_mode,
            ))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config, vocabulary=None):
        """From a `get_config` dict, or from a training config (`config.data`, `config.eval`).

        Args:
            config: the dict of `get_config`, or an `ml_collections.ConfigDict` / dict with
                `data` (and `eval`) sections as `refseg-train` writes to `config.json`.
            vocabulary: the vocabulary (a `Vocabulary`, word list or file); required, as it is
                an asset and not part of the config.
        """
        if "data" in config:
            return cls(vocabulary, **cls.config_from_training_config(config))
        return cls(vocabulary, **dict(config))

    @staticmethod
    def config_from_training_config(config) -> dict:
        """The `get_config` dict of a training config; keys missing from old configs default."""
        data = config["data"]
        evaluation = config.get("eval", {}) or {}
        values = {key: data[key] if key in data else default for key, default in _DEFAULTS.items()}
        values["scoring_rule"] = evaluation.get("scoring_rule", scoring.DEFAULT_SCORING_RULE)
        values["threshold"] = resolve_threshold(config)
        return values

    def get_config(self) -> dict:
        """Every setting but the vocabulary (an asset: `save` writes it as `vocab.txt`)."""
        return {
            "image_size": self.image_size,
            "max_length": self.max_length,
            "text_padding": self.text_padding,
            "resize_method": self.resize_method,
            "pad_value": self.pad_value,
            "normalization": self.normalization,
            "tokenizer": self.tokenizer_mode,
            "blind_expression": self.blind_expression,
            "scoring_rule": self.scoring_rule,
            "threshold": self.threshold,
        }

    def save(self, directory: str) -> str:
        """Writes `preprocessor.json` and its vocabulary asset `vocab.txt` into `directory`.

        An existing `vocab.txt` holding the same words is left as it is (its bytes are what
        `refseg-train` compares when resuming). Returns the path of `preprocessor.json`.
        """
        from refseg_tf.files import atomic_write_json
        from refseg_tf.text import Vocabulary, VocabularyError

        os.makedirs(directory, exist_ok=True)
        vocabulary_path = os.path.join(directory, VOCABULARY_FILENAME)
        try:
            same = Vocabulary.load(vocabulary_path) == self.vocabulary
        except VocabularyError:
            same = False
        if not same:
            self.vocabulary.save(vocabulary_path)
        document = {
            "class_name": "ReferringPreprocessor",
            "module": "refseg_tf.preprocessing",
            "config": self.get_config(),
            "assets": {"vocabulary": VOCABULARY_FILENAME},
        }
        return atomic_write_json(
            os.path.join(directory, PREPROCESSOR_FILENAME), document, indent=2, sort_keys=True
        )

    @classmethod
    def load(cls, directory: str):
        """Reads a preprocessor written by `save` (errors name the file)."""
        path = os.path.join(directory, PREPROCESSOR_FILENAME)
        try:
            with open(path, encoding="utf-8") as stream:
                document = json.load(stream)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} not found: no saved preprocessor in {directory!r}.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
            raise ValueError(f"{path} must hold an object with a `config` object; received {document!r:.200}.")
        vocabulary = document.get("assets", {}).get("vocabulary", VOCABULARY_FILENAME)
        try:
            return cls.from_config(document["config"], os.path.join(directory, vocabulary))
        except TypeError as error:
            raise ValueError(f"{path}: unknown preprocessor setting ({error}).") from error

    @classmethod
    def from_data_dir(cls, data_dir, vocabulary=None, **settings):
        """The preprocessor of a converted data directory: its `vocab.txt` and the tokeniser it
        was built with (`metadata.json` "vocabulary"/"tokenizer"); every other setting is the
        `PreprocessingSettings` default unless given. What `refseg_tf.data.load` builds when
        it is given no preprocessor, and what a notebook builds to change a setting:

            >>> preprocessor = ReferringPreprocessor.from_data_dir("data/unc", image_size=416)
            >>> train = load("data/unc", "train", preprocessor=preprocessor)

        Args:
            data_dir: a directory written by `refseg-convert`.
            vocabulary: a `Vocabulary`, word list or file path instead of `data_dir/vocab.txt`
                (e.g. a model's, to read the data with the ids it was trained with).
            **settings: keyword arguments of `ReferringPreprocessor` (`image_size`,
                `max_length`, `normalization`, ..., `threshold`).

        Raises:
            FileNotFoundError: no `vocabulary` given and no `vocab.txt` in `data_dir`.
        """
        data_dir = os.fspath(data_dir)
        built_with = data_tokenizer(data_dir)
        if vocabulary is None:
            vocabulary = os.path.join(data_dir, VOCABULARY_FILENAME)
            if not tf.io.gfile.exists(vocabulary):
                raise FileNotFoundError(
                    f"No vocabulary file {VOCABULARY_FILENAME!r} in {data_dir!r}; pass "
                    "`vocabulary=` or convert the dataset again."
                )
            settings.setdefault("tokenizer", built_with or _DEFAULTS["tokenizer"])
            if built_with is not None and settings["tokenizer"] != built_with:
                from absl import logging

                logging.warning(
                    "%s: vocab.txt was built with tokenizer=%r but the sentences are tokenised "
                    "with tokenizer=%r; set data.tokenizer=%r.",
                    os.path.join(data_dir, METADATA_FILENAME), built_with, settings["tokenizer"],
                    built_with,
                )
        return cls(vocabulary, **settings)

    @classmethod
    def from_model_dir(cls, model_dir: str):
        """The preprocessor of a model directory: `preprocessor.json` + `vocab.txt`, or, for
        directories written before it existed, `config.json` + `vocab.txt`."""
        if os.path.exists(os.path.join(model_dir, PREPROCESSOR_FILENAME)):
            return cls.load(model_dir)
        from refseg_tf.training import config as config_lib

        config = config_lib.load_config(model_dir)
        return cls.from_config(config, os.path.join(model_dir, VOCABULARY_FILENAME))

    # ------------------------------------------------------------------ forward
    def preprocess_image(self, image):
        """One image -> (float32 [S, S, 3], window int32 [4]); graph-safe (tf.data, serving)."""
        return transforms.preprocess_image(
            image, self.image_size, resize_method=self.resize_method, pad_value=self.pad_value,
            normalization=self.normalization,
        )

    def preprocess_mask(self, mask):
        """A ground-truth mask [h, w(, 1)] -> binary float32 [S, S, 1], letterboxed as the image."""
        return transforms.resize_and_pad_mask(
            mask, self.image_size, transforms.letterbox_rounding(self.resize_method)
        )

    def tokenize(self, expressions):
        """Sentences -> int32 word ids ([T] for a scalar, [B, T] for a vector); the text-blind
        control's fixed ids when `blind_expression` is set. Graph-safe."""
        expressions = tf.convert_to_tensor(expressions, tf.string)
        if self.blind_word_ids is None:
            return self.tokenizer(expressions)
        blind = tf.constant(self.blind_word_ids, tf.int32)
        if expressions.shape.rank == 0:
            return blind
        return tf.tile(blind[tf.newaxis], [tf.size(expressions), 1])

    def word_ids_from_ids(self, ids):
        """Whole word ids `[B, None]` (ragged: e.g. stored at conversion, `refseg-convert
        --word_ids`) -> int32 `[B, T]`, as `tokenize` gives for the sentences they came from
        (truncated, padded; the text-blind ids when `blind_expression` is set). Graph-safe."""
        if self.blind_word_ids is None:
            return self.tokenizer.pad(ids)
        blind = tf.constant(self.blind_word_ids, tf.int32)
        return tf.tile(blind[tf.newaxis], [ids.nrows(out_type=tf.int32), 1])

    @property
    def tokenization_fingerprint(self) -> str:
        """What word ids depend on: this vocabulary and tokeniser
        (`refseg_tf.text.tokenization_fingerprint`); stored ids made with another are not read."""
        from refseg_tf.text import tokenization_fingerprint

        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = tokenization_fingerprint(self.vocabulary, self.tokenizer_mode)
        return self._fingerprint

    def model_inputs(self, image, expressions):
        """One image with one or several expressions -> (model inputs, window int32 [4])."""
        prepared, window = self.preprocess_image(image)
        word_ids = self.tokenize(tf.reshape(tf.convert_to_tensor(expressions, tf.string), [-1]))
        images = tf.repeat(prepared[tf.newaxis], tf.shape(word_ids)[0], axis=0)
        return {"image": images, "word_ids": word_ids}, window

    # ------------------------------------------------------------------ inverse and scoring
    def threshold_for(self, model=None) -> float:
        """The probability threshold: this preprocessor's, else `model.threshold`.

        Raises:
            ValueError: neither is known (no silent 0.5: LTS scores at 0.25).
        """
        if self.threshold is not None:
            return self.threshold
        if model is None:
            raise ValueError(
                "This preprocessor has no threshold (threshold=None): pass the model "
                "(`threshold_for(model)`) or a `threshold`, or build it from the training "
                "config (`ReferringPreprocessor.from_config`), which resolves it."
            )
        return scoring.check_threshold(model.threshold)

    def restore(self, score_map, original_size, method: str = "bilinear"):
        """Inverse letterbox of a square map [s, s(, 1)] -> [h, w(, 1)] (graph-safe)."""
        return transforms.restore_to_original(
            score_map, original_size, self.image_size, method,
            transforms.letterbox_rounding(self.resize_method),
        )

    def score(self, logits, image_window, original_size, threshold=None):
        """The scored masks of a batch at the original sizes: `scoring.score_masks` (numpy)."""
        return scoring.score_masks(
            logits, image_window, original_size, self.image_size, self.scoring_rule,
            self.threshold_for() if threshold is None else threshold,
        )

    def probabilities(self, logits, image_window, original_size):
        """Probability maps at the original sizes: `scoring.probability_maps` (numpy)."""
        return scoring.probability_maps(
            logits, image_window, original_size, self.image_size, self.scoring_rule
        )

    def score_tf(self, logits, original_size, threshold=None):
        """Graph form for one example: logits [g, g, 1] -> (probability float32 [h, w], mask
        bool [h, w]) at the letterbox of `original_size` (`scoring.score_mask_tf`)."""
        threshold = self.threshold_for() if threshold is None else threshold
        original = tf.reshape(tf.cast(original_size, tf.int32), [2])
        window = transforms.letterbox_geometry(
            original[0], original[1], self.image_size,
            transforms.letterbox_rounding(self.resize_method),
        )
        probability = scoring.probability_map_tf(
            logits, original_size, self.image_size, self.scoring_rule, window
        )
        mask = scoring.score_mask_tf(
            logits, original_size, self.image_size, self.scoring_rule, threshold, window
        )
        return probability, mask

    def describe(self) -> dict:
        """The human-readable contract of the preprocessing (for `export.json`)."""
        return {
            "letterbox": (
                "scale = min(S / h, S / w), new size "
                + ("floored" if self.resize_method == "bicubic" else "rounded")
                + ", centred on an S x S canvas with offsets floor((S - new) / 2)"
                + (" (bicubic antialiased when downscaling, as PIL)" if self.resize_method == "bicubic" else "")
            ),
            "resize_method": self.resize_method,
            "pad_value": self.pad_value,
            "normalization": self.normalization,
        }

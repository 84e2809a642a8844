"""Running a trained model on your own images and sentences.

Example:
    predictor = Predictor.from_model_dir("runs/rrn")
    mask = predictor.predict_mask(image, "the man on the left")  # bool [height, width]
    probability = predictor.predict(image, "the man on the left")  # [height, width] in [0, 1]

The mask follows the model directory's scoring rule (`eval.scoring_rule`, `refseg_tf.scoring`);
under the authors' "upsample_logits" rule it is not a threshold of the probability map.
"""

import os

import numpy as np
import tensorflow as tf

from refseg_tf import scoring


def read_image(path: str) -> np.ndarray:
    """Reads any image Pillow understands as uint8 RGB [H, W, 3], honouring EXIF orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"Image {path} not found.") from None
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"Cannot read image {path}: {error} Pillow refuses images over "
            f"{2 * Image.MAX_IMAGE_PIXELS} pixels (twice PIL.Image.MAX_IMAGE_PIXELS) as a "
            f"possible decompression bomb; if you trust the file, raise "
            f"PIL.Image.MAX_IMAGE_PIXELS in your program or downscale the image first."
        ) from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"Cannot read image {path}: {error}") from error


class Predictor:
    """A trained model with its preprocessing and vocabulary, for one image at a time.

    Args:
        model: a trained `ReferringSegmenter`.
        config: its resolved config (`model_dir/config.json`).
        vocabulary: the `refseg_tf.text.Vocabulary` it was trained with.
    """

    def __init__(self, model, config, vocabulary):
        from refseg_tf.text import Tokenizer

        self.model = model
        self.config = config
        self.image_size = int(config.data.image_size)
        mode = config.data.get("tokenizer", "refseg")
        self.tokenizer = Tokenizer(
            vocabulary, max_length=int(config.data.max_length), padding=config.data.text_padding,
            mode=mode,
        )
        self.blind_word_ids = None
        if config.data.get("blind_expression", ""):  # a text-blind control model
            from refseg_tf.text import as_vocabulary, encode_sentence

            self.blind_word_ids = encode_sentence(
                config.data.blind_expression, as_vocabulary(vocabulary), int(config.data.max_length),
                config.data.text_padding, mode=mode,
            )
        threshold = float(config.eval.get("threshold", -1.0))
        self.threshold = threshold if threshold >= 0 else float(getattr(model, "threshold", 0.5))
        self.scoring_rule = scoring.check_scoring_rule(
            config.eval.get("scoring_rule", scoring.DEFAULT_SCORING_RULE)
        )

    @classmethod
    def from_model_dir(cls, model_dir: str, checkpoint: str = "auto"):
        from refseg_tf.text import Vocabulary
        from refseg_tf.training.trainer import VOCAB_FILENAME, load_trained_model

        model, config = load_trained_model(model_dir, checkpoint=checkpoint)
        vocabulary = Vocabulary.load(os.path.join(model_dir, VOCAB_FILENAME))
        return cls(model, config, vocabulary)

    def predict(self, image: np.ndarray, expressions):
        """Foreground probabilities at the image's own size (for display and `--probabilities`).

        Args:
            image: uint8 RGB [H, W, 3].
            expressions: one string, or a list of strings (one map each).

        Returns:
            float32 [H, W] for one string, else a list of them (`scoring.probability_maps`).
        """
        logits, window, original_size, single = self._logits(image, expressions)
        maps = scoring.probability_maps(
            logits, [window] * len(logits), [original_size] * len(logits), self.image_size,
            self.scoring_rule,
        )
        return maps[0] if single else maps

    def predict_mask(self, image: np.ndarray, expressions, threshold=None):
        """The scored masks at the image's own size: `scoring.score_masks` of the logits.

        Args:
            image: uint8 RGB [H, W, 3].
            expressions: one string, or a list of strings (one mask each).
            threshold: probability threshold (default: the model's, `self.threshold`).

        Returns:
            bool [H, W] for one string, else a list of them.
        """
        logits, window, original_size, single = self._logits(image, expressions)
        masks = scoring.score_masks(
            logits, [window] * len(logits), [original_size] * len(logits), self.image_size,
            self.scoring_rule, self.threshold if threshold is None else threshold,
        )
        return masks[0] if single else masks

    def _logits(self, image, expressions):
        from refseg_tf.data import preprocess_image

        single = isinstance(expressions, str)
        expressions = [expressions] if single else list(expressions)
        if not expressions or any(not e.strip() for e in expressions):
            raise ValueError("Every expression must be a non-empty string.")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"Expected an RGB image [H, W, 3]; received shape {image.shape}.")
        prepared, window = preprocess_image(
            image,
            self.image_size,
            resize_method=self.config.data.resize_method,
            pad_value=self.config.data.pad_value,
            normalization=self.config.data.normalization,
        )
        batch = len(expressions)
        images = tf.repeat(tf.expand_dims(prepared, 0), batch, axis=0)
        word_ids = self.tokenizer(tf.constant(expressions))
        if self.blind_word_ids is not None:
            word_ids = tf.constant([self.blind_word_ids] * batch, tf.int32)
        logits = self.model({"image": images, "word_ids": word_ids}, training=False)
        logits = tf.cast(logits, tf.float32).numpy()
        return logits, window.numpy(), image.shape[:2], single

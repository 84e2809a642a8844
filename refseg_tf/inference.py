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
    """A trained model with its preprocessor (`refseg_tf.preprocessing.ReferringPreprocessor`).

    The preprocessor letterboxes, normalises and tokenises (text-blind control included) and
    scores the logits back at the image's own size; this class only runs the model between.

    Args:
        model: a trained `ReferringSegmenter`.
        config: its resolved config (`model_dir/config.json`).
        vocabulary: the `refseg_tf.text.Vocabulary` it was trained with (ignored when
            `preprocessor` is given).
        preprocessor: the model directory's preprocessor; None builds it from `config` and
            `vocabulary` (`ReferringPreprocessor.from_config`).
    """

    def __init__(self, model, config, vocabulary=None, preprocessor=None):
        from refseg_tf.preprocessing import ReferringPreprocessor

        self.model = model
        self.config = config
        if preprocessor is None:
            preprocessor = ReferringPreprocessor.from_config(config, vocabulary)
        self.preprocessor = preprocessor
        self.threshold = preprocessor.threshold_for(model)

    # Settings read by refseg-predict, the demo and the export (all the preprocessor's).
    image_size = property(lambda self: self.preprocessor.image_size)
    tokenizer = property(lambda self: self.preprocessor.tokenizer)
    blind_word_ids = property(lambda self: self.preprocessor.blind_word_ids)
    scoring_rule = property(lambda self: self.preprocessor.scoring_rule)

    @classmethod
    def from_model_dir(cls, model_dir: str, checkpoint: str = "auto"):
        from refseg_tf.preprocessing import ReferringPreprocessor
        from refseg_tf.training.model_dir import load_trained_model

        model, config = load_trained_model(model_dir, checkpoint=checkpoint)
        return cls(model, config, preprocessor=ReferringPreprocessor.from_model_dir(model_dir))

    def predict(self, image: np.ndarray, expressions):
        """Foreground probabilities at the image's own size (for display and `--probabilities`).

        Args:
            image: uint8 RGB [H, W, 3].
            expressions: one string, or a list of strings (one map each).

        Returns:
            float32 [H, W] for one string, else a list of them (`scoring.probability_maps`).
        """
        logits, window, original_size, single = self._logits(image, expressions)
        maps = self.preprocessor.probabilities(
            logits, [window] * len(logits), [original_size] * len(logits)
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
        masks = self.preprocessor.score(
            logits, [window] * len(logits), [original_size] * len(logits),
            self.threshold if threshold is None else threshold,
        )
        return masks[0] if single else masks

    def model_inputs(self, image: np.ndarray, expressions):
        """The checked model inputs of one image and its expressions, and the letterbox window."""
        expressions = [expressions] if isinstance(expressions, str) else list(expressions)
        if not expressions or any(not e.strip() for e in expressions):
            raise ValueError("Every expression must be a non-empty string.")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"Expected an RGB image [H, W, 3]; received shape {image.shape}.")
        return self.preprocessor.model_inputs(image, expressions)

    def _logits(self, image, expressions):
        single = isinstance(expressions, str)
        inputs, window = self.model_inputs(image, expressions)
        logits = self.model(inputs, training=False)
        logits = tf.cast(logits, tf.float32).numpy()
        return logits, window.numpy(), np.asarray(image).shape[:2], single


def explain_to_file(predictor, image, expression, path):
    """Draws the per-step response maps of `predictor.model.explain` over the image.

    RMI: the mLSTM state after each word (RMI Sec. 4.4, Fig. 6), one panel per word, labelled
    with the vocabulary word read at that step (`<unk>` for an unknown word). RRN: the state
    after each refinement step, labelled with its pyramid level. Maps are restored to the
    image's own size with the inverse letterbox.

    Returns:
        The path written.
    """
    from refseg_tf.data.transforms import restore_to_original
    from refseg_tf.visualize import save_step_maps

    model = predictor.model
    if not model.has_explanation:
        raise ValueError(
            f"--explain needs a model with per-step maps (RMI, RRN, LTS); {type(model).__name__} "
            "has none."
        )
    inputs, _ = predictor.model_inputs(image, expression)  # the model's preprocessor
    explanation = model.explain(inputs, words=predictor.tokenizer.vocabulary.words)
    maps = np.asarray(explanation["maps"])[0]
    steps = [i for i, label in enumerate(explanation["labels"][0]) if label is not None]
    labels = [f"{n + 1}. {explanation['labels'][0][i]}" for n, i in enumerate(steps)]
    height, width = image.shape[:2]
    restored = [
        np.asarray(restore_to_original(maps[i][..., None], (height, width), predictor.image_size))
        .reshape(height, width)
        for i in steps
    ]
    return save_step_maps(path, image, np.stack(restored), labels, title=expression)

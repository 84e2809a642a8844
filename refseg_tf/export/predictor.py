"""Predicting with an exported SavedModel alone (no model code): `refseg-predict --saved_model`."""

import numpy as np
import tensorflow as tf

from refseg_tf.export.serving import SERVING_SIGNATURE, THRESHOLD_SIGNATURE

# Pillow format names whose file bytes the serving graph decodes as they are.
_SERVED_AS_IS = ("JPEG", "PNG", "GIF", "BMP")
_EXIF_ORIENTATION = 0x0112


def image_bytes_for_serving(path: str) -> bytes:
    """The bytes to send for an image file: the file itself, or a PNG of it when needed.

    The serving graph decodes JPEG, PNG, GIF and BMP and ignores EXIF orientation, so other
    formats (TIFF, WebP, ...) and photos with an EXIF rotation are re-encoded as PNG from
    `refseg_tf.inference.read_image`, which is what `refseg-predict --model_dir` segments.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    from refseg_tf.inference import read_image

    try:
        with Image.open(path) as image:
            image_format = image.format
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"Image {path} not found.") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"Cannot read image {path}: {error}") from error
    if image_format in _SERVED_AS_IS and orientation == 1:
        with open(path, "rb") as f:
            return f.read()
    buffer = io.BytesIO()
    Image.fromarray(read_image(path)).save(buffer, format="PNG")
    return buffer.getvalue()


class SavedModelPredictor:
    """The `serving_default` signature of an exported SavedModel, one image at a time.

    Args:
        saved_model_dir: a version folder written by `refseg-export` (`OUT/saved_model/1`).

    Example:
        >>> predictor = SavedModelPredictor("exported/saved_model/1")
        >>> probability, mask = predictor.predict(image_bytes, "the dog on the left")
    """

    def __init__(self, saved_model_dir: str):
        if not tf.saved_model.contains_saved_model(saved_model_dir):
            raise FileNotFoundError(
                f"No SavedModel in {saved_model_dir!r}: pass a version folder written by "
                "refseg-export, e.g. OUT/saved_model/1."
            )
        self.loaded = tf.saved_model.load(saved_model_dir)
        if SERVING_SIGNATURE not in self.loaded.signatures:
            raise ValueError(f"{saved_model_dir} has no {SERVING_SIGNATURE!r} signature.")
        self.serve = self.loaded.signatures[SERVING_SIGNATURE]

    def predict(self, image_bytes: bytes, expression: str, threshold=None):
        """(probability float32 [H, W], mask bool [H, W]) at the image's own size.

        `threshold` None scores at the exported model's threshold (`serving_default`); a
        probability scores at it through the same scoring rule (`serving_threshold`).
        """
        inputs = {"image_bytes": tf.constant([image_bytes]), "expression": tf.constant([expression])}
        if threshold is None:
            outputs = self.serve(**inputs)
        else:
            from refseg_tf.scoring import check_threshold

            if THRESHOLD_SIGNATURE not in self.loaded.signatures:
                raise ValueError(
                    f"This SavedModel has no {THRESHOLD_SIGNATURE!r} signature (exported before "
                    "it existed): re-run refseg-export to score at another threshold."
                )
            outputs = self.loaded.signatures[THRESHOLD_SIGNATURE](
                threshold=tf.constant(check_threshold(threshold), tf.float32), **inputs
            )
        height, width = (int(v) for v in outputs["image_size"][0])
        probability = outputs["probability"][0, :height, :width].numpy()
        mask = outputs["mask"][0, :height, :width].numpy().astype(bool)
        return probability, mask


def call_signature(signature, **inputs):
    """Calls a loaded SavedModel signature after checking `inputs` against its TensorSpecs.

    A loaded signature refuses a wrong dtype with "input #1 (zero-based) was expected to be a
    int32 tensor" and does not check shapes; this names the input, what it must be and what
    was received.

    Args:
        signature: `tf.saved_model.load(path).signatures[name]`.
        **inputs: the signature's inputs by name (arrays, lists or tensors).

    Returns:
        The signature's dict of output tensors.

    Raises:
        ValueError: naming the missing, unexpected, mis-typed or mis-shaped input.

    Example:
        >>> call_signature(loaded.signatures["segment_tensors"], image=images, word_ids=ids)
    """
    specs = signature.structured_input_signature[1]
    missing, unexpected = sorted(set(specs) - set(inputs)), sorted(set(inputs) - set(specs))
    if missing or unexpected:
        raise ValueError(f"The signature takes {sorted(specs)}; missing {missing}, unexpected "
                         f"{unexpected}.")
    checked = {}
    for name, spec in sorted(specs.items()):
        value = inputs[name]
        if not isinstance(value, tf.Tensor):
            try:
                value = tf.convert_to_tensor(value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"`{name}` must be {spec.dtype.name} {spec.shape}; it cannot be "
                                 f"made a tensor: {error}") from None
        if value.dtype != spec.dtype:
            raise ValueError(f"`{name}` must be {spec.dtype.name} with shape {spec.shape}; "
                             f"received {value.dtype.name} with shape {value.shape}.")
        if not spec.shape.is_compatible_with(value.shape):
            raise ValueError(f"`{name}` must have shape {spec.shape} (None: any size); received "
                             f"{value.shape}.")
        checked[name] = value
    return signature(**checked)


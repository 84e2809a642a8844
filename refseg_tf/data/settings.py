"""The preprocessing settings of a model, defined once: their keys, types and defaults.

`PreprocessingSettings` is read by the experiment configs (`base_config`'s `data` section),
the input pipeline (`refseg_tf.data.load`) and `refseg_tf.preprocessing.ReferringPreprocessor`,
so a default changes in one place. (The low-level `transforms` functions keep their own
explicit arguments.) Plain Python.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class PreprocessingSettings:
    """What turns a picture and a sentence into model inputs (see `ReferringPreprocessor`).

    Attributes:
        image_size: side S of the square network input.
        max_length: word ids per sentence T.
        text_padding: "front" (Hu/RMI/RRN: last word at the last step) or "back" (MCN/LTS).
        resize_method: "bilinear" or "bicubic" (`transforms.resize_and_pad`).
        pad_value: "zero" or "grey" outside the letterboxed image.
        normalization: "caffe_bgr" (the DeepLab / keras.applications weights every paper row
            trains from), "vgg_rgb", "unit" or "none" (`transforms.normalize_image`).
        tokenizer: "refseg" or "authors" (`refseg_tf.text.split_words`).
        blind_expression: "" or the sentence a text-blind control model reads for every input.
    """

    image_size: int = 320
    max_length: int = 20
    text_padding: str = "front"
    resize_method: str = "bilinear"
    pad_value: str = "zero"
    normalization: str = "caffe_bgr"
    tokenizer: str = "refseg"
    blind_expression: str = ""


# key -> default, in declaration order.
PREPROCESSING_DEFAULTS = dataclasses.asdict(PreprocessingSettings())
PREPROCESSING_KEYS = tuple(PREPROCESSING_DEFAULTS)

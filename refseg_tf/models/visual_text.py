"""`VisualTextSegmenter`: what the families built on a backbone feature and a word LSTM share.

LSTM-CNN (Hu et al.: R/D+LSTM), RMI and RRN read one feature of an ImageNet backbone and
encode the sentence with a word LSTM; they store the same constructor arguments and, reading a
feature other than the classifier output, freeze the backbone's unused `fc1000` head.
"""

import keras

from refseg_tf.models.base import ReferringSegmenter


@keras.saving.register_keras_serializable(package="refseg_tf")
class VisualTextSegmenter(ReferringSegmenter):
    """A `ReferringSegmenter` with a `backbone`, a `visual_feature` and word-LSTM settings.

    Subclasses set the attributes named in `VISUAL_TEXT_KEYS` and `backbone` in `__init__`
    and put `visual_text_config()` into their `get_config`.

    Args:
        **kwargs: `ReferringSegmenter` arguments.

    Call args:
        As `ReferringSegmenter`.

    Returns:
        As `ReferringSegmenter`.

    Example:
        >>> class MyFamily(VisualTextSegmenter): ...  # see refseg_tf.models.rmi.RMI

    Reference:
        Hu et al. 2016 (fc8 / fc1000 heads of the VGG and ResNet backbones), RMI and RRN
        (features C4 / C5 of ResNet-101).
    """

    # Constructor arguments stored under these attribute names.
    VISUAL_TEXT_KEYS = (
        "vocabulary_size", "visual_feature", "visual_projection_dim", "embedding_dim", "text_units",
        "embedding_dropout",
    )

    def visual_text_config(self):
        """`get_config` entries of the backbone and `VISUAL_TEXT_KEYS`."""
        config = {key: getattr(self, key) for key in self.VISUAL_TEXT_KEYS}
        config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
        return config

    def freeze_for_training(self, config_train):
        """Freezes the backbone's ImageNet classifier head (`fc1000`) when another feature is read.

        ResNetOS8 always computes `fc1000`; D+LSTM, D-LSTM-ours and RRN read C5 instead, so
        the head gets no gradient (and Keras warns about it) when the backbone is trainable.
        """
        del config_train
        if self.visual_feature == "fc1000":
            return
        if "fc1000" in {layer.name for layer in self.backbone.layers}:
            self.backbone.get_layer("fc1000").trainable = False

"""`ToySegmenter`: the smallest referring segmenter the library's shared code accepts."""

import keras
from keras import ops

from refseg_tf.models.base import ReferringSegmenter, check_feature, resolve_backbone

TOY_OPTIMIZER = {"name": "adam", "learning_rate": 1e-3}


@keras.saving.register_keras_serializable(package="refseg_tf_toy")
class ToySegmenter(ReferringSegmenter):
    """Mean word embedding tiled over one backbone feature, then a 1x1 convolution.

    Args:
        backbone: a `refseg_tf.backbones.Backbone` (or its serialised dict).
        vocabulary_size: number of word ids.
        feature: the backbone feature read.
        embedding_dim: size of the word embedding.
        **kwargs: `ReferringSegmenter` arguments.

    Call args:
        inputs: `{"image": [B, S, S, 3], "word_ids": [B, T]}`.
        training: Python bool.

    Returns:
        float32 logits `[B, S / stride, S / stride, 1]`.

    Example:
        >>> model = build_preset("toy", 20, size="tiny")

    Reference:
        None: a test family.
    """

    def __init__(self, backbone, vocabulary_size, *, feature="C5", embedding_dim=8,
                 threshold=0.5, loss_config=None, optimizer_config=None, **kwargs):
        super().__init__(threshold=threshold, loss_config=loss_config,
                         optimizer_config=optimizer_config or TOY_OPTIMIZER, **kwargs)
        self.backbone = resolve_backbone(backbone)
        self.feature = check_feature(self.backbone, feature, "feature")
        self.vocabulary_size = int(vocabulary_size)
        self.embedding_dim = int(embedding_dim)
        self.embedding = keras.layers.Embedding(self.vocabulary_size, self.embedding_dim,
                                                name="embedding")
        self.score = keras.layers.Conv2D(1, 1, dtype="float32", name="score")

    @property
    def output_stride(self):
        return self.backbone.feature_strides[self.feature]

    def call(self, inputs, training=None):
        image, word_ids = self.check_inputs(inputs)
        visual = self.backbone(image, training=training)[self.feature]
        present = ops.cast(ops.not_equal(word_ids, 0), "float32")[..., None]
        words = self.embedding(word_ids) * present
        sentence = ops.sum(words, axis=1) / ops.maximum(ops.sum(present, axis=1), 1.0)
        height, width = ops.shape(visual)[1], ops.shape(visual)[2]
        tiled = ops.tile(sentence[:, None, None, :], (1, height, width, 1))
        fused = ops.concatenate([ops.cast(visual, "float32"), tiled], axis=-1)
        return self.score(fused)

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            vocabulary_size=self.vocabulary_size,
            feature=self.feature,
            embedding_dim=self.embedding_dim,
        )
        return config

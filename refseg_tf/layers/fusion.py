"""Fusion of an image feature map with an encoded expression (the LSTM-CNN localisation block)."""

import keras
from keras import ops

from refseg_tf.layers.spatial import (
    SPATIAL_CHANNELS,
    L2Normalize,
    SpatialCoordinates,
    TileToSpatial,
)
from refseg_tf.layers.text import LSTMTextEncoder


@keras.saving.register_keras_serializable(package="refseg_tf")
class TextVisualFusion(keras.layers.Layer):
    """Fuses an image feature map, the expression and spatial coordinates into one map.

    `v` = visual feature (optionally a learned 1x1 projection of it first), `s` = LSTM h_T:
    `fused = ReLU(conv1x1([L2(v); tile(L2(s)); spatial8]))` with `fused_channels` outputs.
    This is the first classifier layer of LSTM-CNN (D_cls = 500) and RRN's localisation
    feature q (D_Q = 500).

    Args:
        vocabulary_size: number of word ids.
        embedding_dim: word embedding size.
        text_units: LSTM hidden size D_text (1000 in the papers).
        fused_channels: output channels, D_cls / D_Q (500 in the papers).
        visual_projection_dim: if set, a learned 1x1 convolution maps the visual feature to this
            many channels before the L2 normalisation. The papers only give D_I = 1000; the
            authors' RMI code (DeepLab weights, "conv0") and RRN code ("mlp0") did this on res5c,
            their R+LSTM code used the ResNet's own fc1000 instead (no projection).
        normalize_visual / normalize_text: L2-normalise the visual feature / h_T (True in every
            paper of the family).
        embedding_dropout: dropout on word embeddings (training only).
        mask_text_padding: the text LSTM skips `<pad>` steps (True, RMI/RRN code) or runs over
            them (False, Hu et al.'s code); see `LSTMTextEncoder(mask_padding=...)`.

    Call args:
        visual: `[B, h, w, C]` image feature map.
        word_ids: `[B, T]` padded word ids (`<pad>` = 0).
        extra_features: optional `[B, h, w, E]` concatenated before the convolution (e.g. the
            detail-enhancement features of ASGN).
        training: Python bool.

    Returns:
        `[B, h, w, fused_channels]`.

    Example:
        >>> fusion = TextVisualFusion(20, embedding_dim=8, text_units=8, fused_channels=4)
        >>> fusion(keras.ops.ones((2, 3, 3, 6)), keras.ops.ones((2, 5), "int32")).shape
        (2, 3, 3, 4)

    Reference:
        Hu et al. 2016, Sec. 3.1-3.3; Liu et al. 2017 (RMI), Sec. 3.2; Li et al. 2018 (RRN),
        Sec. 3.2 "Localization". The ReLU after the fusion convolution follows the authors'
        RRN code (the paper only says "1x1 convolutional layer").
    """

    def __init__(
        self,
        vocabulary_size,
        *,
        embedding_dim=1000,
        text_units=1000,
        fused_channels=500,
        visual_projection_dim=None,
        normalize_visual=True,
        normalize_text=True,
        embedding_dropout=0.0,
        mask_text_padding=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        self.embedding_dim = int(embedding_dim)
        self.text_units = int(text_units)
        self.fused_channels = int(fused_channels)
        self.visual_projection_dim = (
            None if visual_projection_dim is None else int(visual_projection_dim)
        )
        self.normalize_visual = bool(normalize_visual)
        self.normalize_text = bool(normalize_text)
        self.embedding_dropout = float(embedding_dropout)
        self.mask_text_padding = bool(mask_text_padding)

        self.visual_projection = None
        if self.visual_projection_dim is not None:
            self.visual_projection = keras.layers.Conv2D(
                self.visual_projection_dim, 1, dtype=self.dtype_policy, name="visual_projection"
            )
        self.text_encoder = LSTMTextEncoder(
            self.vocabulary_size,
            self.embedding_dim,
            self.text_units,
            embedding_dropout=self.embedding_dropout,
            mask_padding=self.mask_text_padding,
            dtype=self.dtype_policy,
            name="text_encoder",
        )
        self.visual_norm = L2Normalize(dtype=self.dtype_policy, name="visual_l2")
        self.text_norm = L2Normalize(dtype=self.dtype_policy, name="text_l2")
        self.tile = TileToSpatial(dtype=self.dtype_policy, name="tile_text")
        self.spatial = SpatialCoordinates(dtype=self.dtype_policy, name="spatial")
        self.fusion_conv = keras.layers.Conv2D(
            self.fused_channels, 1, activation="relu", dtype=self.dtype_policy, name="fusion_conv"
        )

    def build(self, visual_shape, word_ids_shape, extra_features_shape=None):
        visual_shape = tuple(visual_shape)
        channels = visual_shape[-1]
        if self.visual_projection is not None:
            self.visual_projection.build(visual_shape)
            channels = self.visual_projection_dim
        self.text_encoder.build(tuple(word_ids_shape))
        channels += self.text_units + SPATIAL_CHANNELS
        if extra_features_shape is not None:
            channels += extra_features_shape[-1]
        self.fusion_conv.build(visual_shape[:-1] + (channels,))
        self.built = True

    def encode_text(self, word_ids, training=None):
        """h_T, L2-normalised when `normalize_text` (the language vector of the fusion)."""
        text = self.text_encoder(word_ids, training=training)
        return self.text_norm(text) if self.normalize_text else text

    def call(self, visual, word_ids, extra_features=None, training=None):
        if self.visual_projection is not None:
            visual = self.visual_projection(visual)
        if self.normalize_visual:
            visual = self.visual_norm(visual)
        text = self.encode_text(word_ids, training=training)
        parts = [visual, self.tile(text, visual), self.spatial(visual)]
        if extra_features is not None:
            parts.append(ops.cast(extra_features, visual.dtype))
        return self.fusion_conv(ops.concatenate([ops.cast(p, visual.dtype) for p in parts], -1))

    def compute_output_shape(self, visual_shape, word_ids_shape, extra_features_shape=None):
        return tuple(visual_shape[:3]) + (self.fused_channels,)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            embedding_dim=self.embedding_dim,
            text_units=self.text_units,
            fused_channels=self.fused_channels,
            visual_projection_dim=self.visual_projection_dim,
            normalize_visual=self.normalize_visual,
            normalize_text=self.normalize_text,
            embedding_dropout=self.embedding_dropout,
            mask_text_padding=self.mask_text_padding,
        )
        return config

"""RMI (Liu et al. 2017): recurrent multimodal interaction, R+RMI and D+RMI."""

import keras
import numpy as np
from keras import ops

from refseg_tf.layers.spatial import L2Normalize, SpatialCoordinates, resize_bilinear
from refseg_tf.layers.text import LSTMTextEncoder
from refseg_tf.models.base import (
    check_feature,
    merge_config,
    resolve_backbone,
)
from refseg_tf.models.visual_text import VisualTextSegmenter
from refseg_tf.models.recipes import ADAM_RMI, RMI_BASELINE_LOSS
from refseg_tf.models.rmi.layers import ClippedArctanh, MultimodalLSTM

# "atanh_relu": the authors' code (atanh-like transform of h_T, ReLU, 1x1 conv);
# "none": the paper (Sec. 3.3: "a convolution layer" on the mLSTM output).
OUTPUT_TRANSFORMS = ("atanh_relu", "none")

# RMI shares the training recipe of its R+LSTM / D+LSTM baselines (the same code base, RMIc
# `train_op`): BCE at the 40x40 grid, Adam 2.5e-4. One definition for both (`refseg_tf.models.recipes`).
RMI_LOSS = RMI_BASELINE_LOSS
RMI_OPTIMIZER = ADAM_RMI


@keras.saving.register_keras_serializable(package="refseg_tf")
class RMI(VisualTextSegmenter):
    """RMI: a word LSTM and a convolutional multimodal LSTM read the expression word by word.

    1. Visual feature `v` (D_I = 1000) at stride 8: the ResNet's `fc1000` (R+RMI) or a learned
       1x1 projection of `C5` (res5c) to 1000 (D+RMI, `visual_projection_dim`), L2-normalised
       over channels.
    2. Word LSTM (D_S = 1000) over the embedded words (1000): `h_t` after every word,
       L2-normalised; pad steps are skipped (`LSTMTextEncoder(return_sequences=True)`).
    3. mLSTM (`MultimodalLSTM`, n = 500) over `[L2(v_ij); w_t; L2(h_t); spatial_ij]` for every
       word t and cell (i, j), zero initial state, pads skipped per example.
    4. Head on the state after the last word: `output_transform="atanh_relu"` (the authors'
       code) applies `0.5 * (log(1.001 + h) - log(1.001 - h))` and a ReLU, then a 1x1
       convolution to one logit per cell; `"none"` is the paper's plain convolution on h_T.

    `explain(inputs)` returns the per-word response maps of Sec. 4.4 / Fig. 6.

    Args:
        backbone: a `refseg_tf.backbones.Backbone` (ResNetOS8) or its serialised dict.
        vocabulary_size: number of word ids.
        visual_feature: backbone feature used as `v` ("fc1000" for R+RMI, "C5" for D+RMI).
        visual_projection_dim: learned 1x1 projection of `visual_feature` (1000 for D+RMI, the
            authors' `conv0`; None = use the feature as is).
        embedding_dim: word embedding size (1000 in the authors' code).
        text_units: word LSTM size D_S (1000).
        mlstm_units: mLSTM cell size n (500).
        output_transform: one of `OUTPUT_TRANSFORMS`.
        embedding_dropout: dropout on word embeddings during training (0 in the authors' code).
        threshold, loss_config, optimizer_config: see `ReferringSegmenter`; the keys given
            override RMI's BCE at the logits' grid and Adam(2.5e-4).

    Call args:
        inputs: `{"image": [B, S, S, 3] float32, "word_ids": [B, T] int32}`; T must be static
            (the mLSTM is unrolled over the words).
        training: Python bool.

    Returns:
        float32 logits `[B, S / 8, S / 8, 1]` on ResNetOS8.

    Example:
        >>> model = build_preset("r_rmi", vocabulary_size=12112)
        >>> model.compile()
        >>> maps = model.explain({"image": images, "word_ids": word_ids})

    Reference:
        Liu et al. 2017, Sec. 3.2-3.3 (Eq. 1-7), Sec. 4.2 (sizes), Sec. 4.4 (Fig. 6); where the
        paper is silent or differs, the authors' code (TF-phrasecut-public `RMI_model.py`):
        the mLSTM input order and normalisations, the atanh head, the D+RMI projection.
    """

    has_detail_hook = True
    has_explanation = True

    def __init__(
        self,
        backbone,
        vocabulary_size,
        *,
        visual_feature="fc1000",
        visual_projection_dim=None,
        embedding_dim=1000,
        text_units=1000,
        mlstm_units=500,
        output_transform="atanh_relu",
        embedding_dropout=0.0,
        threshold=0.5,
        loss_config=None,
        optimizer_config=None,
        **kwargs,
    ):
        if output_transform not in OUTPUT_TRANSFORMS:
            raise ValueError(
                f"`output_transform` must be one of {OUTPUT_TRANSFORMS}; "
                f"received {output_transform!r}."
            )
        super().__init__(
            threshold=threshold,
            loss_config=merge_config(RMI_LOSS, loss_config),
            optimizer_config=merge_config(RMI_OPTIMIZER, optimizer_config),
            **kwargs,
        )
        self.backbone = resolve_backbone(backbone)
        self.visual_feature = check_feature(self.backbone, visual_feature, "visual_feature")
        self.vocabulary_size = int(vocabulary_size)
        self.visual_projection_dim = (
            None if visual_projection_dim is None else int(visual_projection_dim)
        )
        self.embedding_dim = int(embedding_dim)
        self.text_units = int(text_units)
        self.mlstm_units = int(mlstm_units)
        self.output_transform = output_transform
        self.embedding_dropout = float(embedding_dropout)

        # === Layers ===
        self.visual_projection = None
        if self.visual_projection_dim is not None:
            self.visual_projection = keras.layers.Conv2D(
                self.visual_projection_dim, 1, name="visual_projection"
            )
        self.visual_norm = L2Normalize(name="visual_l2")
        self.spatial = SpatialCoordinates(name="spatial")
        self.text_encoder = LSTMTextEncoder(
            self.vocabulary_size,
            self.embedding_dim,
            self.text_units,
            return_sequences=True,
            embedding_dropout=self.embedding_dropout,
            name="text_encoder",
        )
        self.text_norm = L2Normalize(name="text_l2")
        self.mlstm = MultimodalLSTM(self.mlstm_units, name="mlstm")
        self.arctanh = ClippedArctanh(name="arctanh") if output_transform == "atanh_relu" else None
        self.score_conv = keras.layers.Conv2D(1, 1, dtype="float32", name="score")

    @property
    def output_stride(self):
        return self.backbone.feature_strides[self.visual_feature]

    def _mlstm_states(self, inputs, training, return_sequences):
        states, mask, _ = self._mlstm_states_and_visual(inputs, training, return_sequences)
        return states, mask

    def _mlstm_states_and_visual(self, inputs, training, return_sequences, detail=None):
        image, word_ids = self.check_inputs(inputs)
        features = self.backbone(image, training=training)
        visual = features[self.visual_feature]
        if self.visual_projection is not None:
            visual = self.visual_projection(visual)
        visual = self.visual_norm(visual)
        mlstm_visual = visual
        if detail is not None:
            # ASGN's DE: extra channels of the time-invariant per-pixel mLSTM input.
            extra = ops.cast(detail(features, visual), visual.dtype)
            mlstm_visual = ops.concatenate([visual, extra], axis=-1)
        text = self.text_encoder(word_ids, training=training)
        # Zero at pads (the mLSTM skips those steps anyway); it also drops the Keras mask the
        # LSTM attaches, which L2Normalize would warn about.
        text_states = ops.where(text["mask"][..., None], text["sequence"], 0.0)
        states = self.mlstm(
            mlstm_visual,
            text["embeddings"],
            self.text_norm(text_states),
            self.spatial(visual),
            word_mask=text["mask"],
            return_sequences=return_sequences,
        )
        return states, text["mask"], visual

    def _head_input(self, hidden):
        if self.arctanh is None:
            return hidden
        return ops.relu(self.arctanh(hidden))

    def call(self, inputs, training=None, detail=None, return_features=False):
        """Logits; `detail` / `return_features` are the hook of ASGN's DE and SE modules.

        `detail`: optional callable `(backbone_features, visual) -> [B, h, w, E]` appended to
        the time-invariant mLSTM input `L2(v)`; `return_features`: return
        `{"logits", "semantic"}` with `semantic = L2(v)`.
        """
        hidden, _, visual = self._mlstm_states_and_visual(
            inputs, training, return_sequences=False, detail=detail
        )
        logits = self.score_conv(self._head_input(hidden))
        if not return_features:
            return logits
        return {"logits": logits, "semantic": visual}

    def explain(self, inputs, words=None):
        """Per-word response maps (RMI Sec. 4.4, Fig. 6).

        After each word t, the mLSTM hidden state `[B, H', W', n]` (through the head's atanh
        transform when the model has one, as the authors' visualisation) is averaged over its
        channels and bilinearly upsampled to the image size.

        Args:
            inputs: `{"image": [B, S, S, 3], "word_ids": [B, T]}`.
            words: the vocabulary's words by id; None labels the steps "word 1", "word 2"...

        Returns:
            A dict: `maps` float32 `[B, T, S, S]` (a pad step repeats the previous map),
            `is_word` bool `[B, T]` (True at real words) and `labels` (per example, the word
            read at each step, None at a pad step: `ReferringSegmenter.explain`).
        """
        hidden, mask = self._mlstm_states(inputs, training=False, return_sequences=True)
        if self.arctanh is not None:
            hidden = self.arctanh(hidden)
        response = ops.mean(ops.cast(hidden, "float32"), axis=-1)  # [B, T, H', W']
        size = tuple(ops.shape(inputs["image"])[1:3])
        # Time folded into channels: one resize for all words.
        channels_last = ops.transpose(response, (0, 2, 3, 1))
        upsampled = resize_bilinear(channels_last, size)
        maps = ops.transpose(upsampled, (0, 3, 1, 2))
        return {"maps": maps, "is_word": mask, "labels": _word_labels(inputs["word_ids"], mask, words)}

    def get_config(self):
        config = super().get_config()
        config.update(
            **self.visual_text_config(),
            mlstm_units=self.mlstm_units,
            output_transform=self.output_transform,
        )
        return config


def _word_labels(word_ids, is_word, words):
    """Per example, the word read at each step (None at a pad step)."""
    ids, real = np.asarray(word_ids), np.asarray(is_word)
    labels = []
    for row_ids, row_real in zip(ids, real):
        count = 0
        row = []
        for word_id, real_step in zip(row_ids, row_real):
            if not real_step:
                row.append(None)
                continue
            count += 1
            row.append(str(words[int(word_id)]) if words is not None else f"word {count}")
        labels.append(tuple(row))
    return labels

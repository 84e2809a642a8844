"""Recurrent Refinement Network (Li et al. 2018) and its Table 1 ablation variants."""

import keras
from keras import ops

from refseg_tf.layers.fusion import TextVisualFusion
from refseg_tf.layers.spatial import ResizeLike, resize_bilinear
from refseg_tf.models.base import (
    check_feature,
    merge_config,
    resolve_backbone,
)
from refseg_tf.models.visual_text import VisualTextSegmenter
from refseg_tf.models.recipes import ADAM_RMI, IMAGE_RESOLUTION_BCE
from refseg_tf.models.rrn.layers import RecurrentRefinement

# Variant name -> (update function F, activation a) of Table 1.
RRN_VARIANTS = {
    "plain": ("plain", "relu"),
    "rnn": ("rnn", "relu"),
    "rnn_tanh": ("rnn", "tanh"),
    "fpn": ("fpn", None),
    "lstm": ("lstm", "relu"),
    "lstm_tanh": ("lstm", "tanh"),
}

# Table 1 rows (UNC val) as model keyword arguments; row 1 is the reproduced D-LSTM of RMI
# (preset "d_lstm") and row 2 the authors' D-LSTM-ours (preset "d_lstm_ours").
TABLE1_ROWS = {
    3: {"variant": "plain", "pyramid": ("C5",)},
    4: {"variant": "plain", "pyramid": ("C5", "C4")},
    5: {"variant": "plain", "pyramid": ("C5", "C4", "C3")},
    6: {"variant": "plain", "pyramid": ("C5", "C4", "C3", "C2")},
    7: {"variant": "plain", "pyramid": ("C5", "C4", "C3", "C2", "C1")},
    8: {"variant": "fpn", "pyramid": ("C5", "C4", "C3")},
    9: {"variant": "rnn", "pyramid": ("C5", "C4", "C3")},
    10: {"variant": "rnn_tanh", "pyramid": ("C5", "C4", "C3")},
    11: {"variant": "lstm", "pyramid": ("C5", "C4", "C3")},
    12: {"variant": "lstm_tanh", "pyramid": ("C5", "C4", "C3")},
    13: {"variant": "lstm_tanh", "pyramid": ("C5", "C5", "C5")},
    14: {"variant": "lstm_tanh", "pyramid": ("C5", "C4", "C5")},
    15: {"variant": "lstm_tanh", "pyramid": ("C3", "C4", "C5")},
}

# The authors' public code, where the paper is silent: zero initial state with q as the first
# input, and their ConvLSTM cell (layer norm, per-position peepholes, forget bias 1).
RRN_AUTHORS_CODE = {"initial_state": "input", "lstm_cell": "layer_norm", "peephole": "spatial"}

# RRN Sec. 3.3 / authors' code: Adam 2.5e-4 (poly decay in refseg_tf.training), BCE at image
# size summed over the 320x320 pixels and averaged over the batch (`util/loss.py`); the
# recipes shared with RMI and D-LSTM-ours (`refseg_tf.models.recipes`).
RRN_OPTIMIZER = ADAM_RMI
RRN_LOSS = IMAGE_RESOLUTION_BCE


@keras.saving.register_keras_serializable(package="refseg_tf")
class RRN(VisualTextSegmenter):
    """Recurrent Refinement Network: LSTM-CNN localisation refined over a feature pyramid.

    1. Localisation (Sec. 3.2): `q = ReLU(conv1x1([L2(v); tile(L2(s)); spatial8]))`, D_Q
       channels, on the backbone's `visual_feature` (D+LSTM fusion).
    2. Laterals: each pyramid level m_t (e.g. C5, C4, C3, in that order) is resized bilinearly
       to q's grid and mapped by a 1x1 convolution + ReLU (phi) to D_Q channels -> x_t. A level
       named twice (Table 1 rows 13-14) reuses its lateral convolution.
    3. Refinement: `h_0 = q`, `h_t = F(h_{t-1}, x_t)` with `RecurrentRefinement`
       (`variant` selects F and its activation; the default "lstm_tanh" is the paper's model).
    4. Output (Eq. 3): a `score_kernel_size` convolution on h_T gives the logits at q's stride;
       the training loss (Eq. 4, BCE) upsamples them bilinearly to the image.

    Args:
        backbone: a `refseg_tf.backbones.Backbone` (ResNetOS8 in the paper) or its dict.
        vocabulary_size: number of word ids.
        visual_feature: feature used for the localisation (the paper: D_I = 1000 from C5).
        visual_projection_dim: learned 1x1 projection of `visual_feature` before the L2 norm
            (1000 in the authors' code, "mlp0" on res5c; None to use the feature as is, e.g.
            `fc1000`).
        embedding_dim: word embedding size (1000).
        text_units: LSTM size D_S (1000).
        fused_channels: D_Q (500), channels of q, of the laterals and of the hidden state.
        pyramid: backbone feature names fed in order (Table 1: ("C5", "C4", "C3")).
        variant: one of `RRN_VARIANTS` ("plain", "rnn", "rnn_tanh", "fpn", "lstm", "lstm_tanh").
        kernel_size: kernel of the update convolutions (1 as in the authors' code).
        score_kernel_size: kernel of the output convolution (3 as in the authors' code).
        initial_state: "hidden" (the paper: h_0 = q, c_0 = 0) or "input" (the authors' code:
            zero state and q fed as the first of T + 1 inputs).
        lstm_cell: "keras" (`keras.layers.ConvLSTM2D`; Keras fixes its map size, hence the
            image size, at the first call), "unrolled" (the same update written with
            `ConvLSTMStep`, any image size) or "layer_norm" (the authors' cell: layer
            normalisation and forget bias 1).
        peephole: None, "channel" or "spatial" (the authors' per-position peepholes; needs a
            fixed image size), not with `lstm_cell="keras"`.
        embedding_dropout: dropout on word embeddings during training.
        threshold, loss_config, optimizer_config: see `ReferringSegmenter`; the keys given
            override BCE at image resolution summed over the pixels (the code) and Adam(2.5e-4).

    Call args:
        inputs: `{"image": [B, S, S, 3] float32, "word_ids": [B, T] int32}`.
        training: Python bool.

    Returns:
        float32 logits `[B, S / output_stride, S / output_stride, 1]` (stride 8 on ResNetOS8).

    Example:
        >>> model = RRN(get_backbone("resnet101_os8", tiny=True), vocabulary_size=20,
        ...             embedding_dim=8, text_units=8, fused_channels=8, visual_projection_dim=8)
        >>> model({"image": images, "word_ids": word_ids}).shape  # [B, S/8, S/8, 1]

    `RRN(..., **RRN_AUTHORS_CODE)` reproduces the recurrence of the authors' public code.

    Reference:
        Li et al. 2018, Sec. 3.2 (Eq. 1-4), Sec. 3.3 (implementation), Table 1 (ablation);
        details the paper leaves open follow the authors' public code (ReLU after the fusion
        conv, 1x1 ConvLSTM kernels, 3x3 score conv).
    """

    has_explanation = True

    preset_keys = ("table1_row",)

    def __init__(
        self,
        backbone,
        vocabulary_size,
        *,
        visual_feature="C5",
        visual_projection_dim=1000,
        embedding_dim=1000,
        text_units=1000,
        fused_channels=500,
        pyramid=("C5", "C4", "C3"),
        variant="lstm_tanh",
        kernel_size=1,
        score_kernel_size=3,
        initial_state="hidden",
        lstm_cell="keras",
        peephole=None,
        embedding_dropout=0.0,
        threshold=0.5,
        loss_config=None,
        optimizer_config=None,
        **kwargs,
    ):
        if variant not in RRN_VARIANTS:
            raise ValueError(
                f"`variant` must be one of {sorted(RRN_VARIANTS)}; received {variant!r}."
            )
        super().__init__(
            threshold=threshold,
            loss_config=merge_config(RRN_LOSS, loss_config),
            optimizer_config=merge_config(RRN_OPTIMIZER, optimizer_config),
            **kwargs,
        )
        self.backbone = resolve_backbone(backbone)
        self.visual_feature = check_feature(self.backbone, visual_feature, "visual_feature")
        self.pyramid = tuple(check_feature(self.backbone, level, "pyramid") for level in pyramid)
        if not self.pyramid:
            raise ValueError(
                f"`pyramid` must name at least one backbone feature; received {pyramid!r}."
            )
        self.vocabulary_size = int(vocabulary_size)
        self.visual_projection_dim = visual_projection_dim
        self.embedding_dim = int(embedding_dim)
        self.text_units = int(text_units)
        self.fused_channels = int(fused_channels)
        self.variant = variant
        self.kernel_size = int(kernel_size)
        self.score_kernel_size = int(score_kernel_size)
        self.initial_state = initial_state
        self.lstm_cell = lstm_cell
        self.peephole = peephole
        self.embedding_dropout = float(embedding_dropout)

        self.fusion = TextVisualFusion(
            self.vocabulary_size,
            embedding_dim=self.embedding_dim,
            text_units=self.text_units,
            fused_channels=self.fused_channels,
            visual_projection_dim=visual_projection_dim,
            embedding_dropout=self.embedding_dropout,
            name="fusion",
        )
        self.resize = ResizeLike(name="resize_to_q")
        # One lateral per distinct level, in first-use order (dict keys are level names).
        self.laterals = {
            level: keras.layers.Conv2D(
                self.fused_channels, 1, activation="relu", name=f"lateral_{level}"
            )
            for level in dict.fromkeys(self.pyramid)
        }
        update, activation = RRN_VARIANTS[variant]
        self.refinement = RecurrentRefinement(
            self.fused_channels,
            len(self.pyramid),
            update=update,
            activation=activation,
            kernel_size=self.kernel_size,
            initial_state=initial_state,
            lstm_cell=lstm_cell,
            peephole=peephole,
            name="refinement",
        )
        self.score_conv = keras.layers.Conv2D(
            1, self.score_kernel_size, padding="same", dtype="float32", name="score"
        )

    @classmethod
    def expand_preset_kwargs(cls, preset, kwargs):
        """Expands `table1_row` (3-15, the "rrn" preset only) into the variant and pyramid of
        that row of RRN Table 1 (Li et al. 2018, Sec. 4.2.1); explicit keys win."""
        kwargs = dict(kwargs)
        row = kwargs.pop("table1_row", None)
        if row is None:
            return kwargs
        if preset.name != "rrn":
            raise ValueError(
                f"`table1_row` applies to the rrn preset only; received it for {preset.name!r}."
            )
        if int(row) not in TABLE1_ROWS:
            raise ValueError(
                f"`table1_row` must be one of {sorted(TABLE1_ROWS)} (rows 1-2 are the presets "
                f"'d_lstm' and 'd_lstm_ours'); received {row!r}."
            )
        row_kwargs = dict(TABLE1_ROWS[int(row)])
        row_kwargs.update(kwargs)
        return row_kwargs

    @property
    def output_stride(self):
        return self.backbone.feature_strides[self.visual_feature]

    def call(self, inputs, training=None):
        image, word_ids = self.check_inputs(inputs)
        features = self.backbone(image, training=training)
        fused = self.fusion(features[self.visual_feature], word_ids, training=training)
        lateral_inputs = [
            self.laterals[level](self.resize(features[level], fused)) for level in self.pyramid
        ]
        refined = self.refinement(fused, lateral_inputs, training=training)
        return self.score_conv(refined)

    def explain(self, inputs, words=None):
        """Per-step response maps: the refinement state after each pyramid level (Fig. 4 view).

        Each state `[B, H', W', D_Q]` is averaged over its channels and upsampled bilinearly to
        the image size, as RMI's per-word maps (`RMI.explain`).

        Returns:
            A dict: `maps` float32 `[B, N, S, S]` and `labels`, per example the N names: the
            pyramid levels, with "q" first when `initial_state="input"` reads q as its first
            input (`words` is not needed).
        """
        del words  # the steps are pyramid levels
        image, word_ids = self.check_inputs(inputs)
        features = self.backbone(image, training=False)
        fused = self.fusion(features[self.visual_feature], word_ids, training=False)
        lateral_inputs = [
            self.laterals[level](self.resize(features[level], fused)) for level in self.pyramid
        ]
        states = self.refinement.step_states(fused, lateral_inputs, training=False)
        response = ops.stack([ops.mean(ops.cast(h, "float32"), axis=-1) for h in states], -1)
        size = tuple(ops.shape(image)[1:3])
        maps = ops.transpose(resize_bilinear(response, size), (0, 3, 1, 2))
        labels = (("q",) if self.initial_state == "input" else ()) + tuple(self.pyramid)
        return {"maps": maps, "labels": [labels] * int(ops.shape(image)[0])}

    def get_config(self):
        config = super().get_config()
        config.update(
            **self.visual_text_config(),
            fused_channels=self.fused_channels,
            pyramid=list(self.pyramid),
            variant=self.variant,
            kernel_size=self.kernel_size,
            score_kernel_size=self.score_kernel_size,
            initial_state=self.initial_state,
            lstm_cell=self.lstm_cell,
            peephole=self.peephole,
        )
        return config

"""LSTM-CNN (Hu et al. 2016) and the R+LSTM / D+LSTM / D-LSTM-ours baselines built on it."""

import os

import keras

from refseg_tf.layers.fusion import TextVisualFusion
from refseg_tf.layers.upsampling import BilinearUpsamplingInitializer
from refseg_tf.models.base import (
    build_with_dummy_inputs,
    check_feature,
    merge_config,
    resolve_backbone,
)
from refseg_tf.models.visual_text import VisualTextSegmenter

UPSAMPLING_MODES = ("none", "deconv")
# Hu et al.'s two training stages (`stage`, a key of the "lstm_cnn" preset).
HU_STAGES = ("low", "high")

# Hu et al.: SGD with momentum 0.9 at lr 0.01 (step decays are the training module's job).
HU_OPTIMIZER = {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9}
# Low-resolution stage: Eq. 2 with a_f = 3, a_b = 1 against the "any" 16x16 coarse label
# (the authors' low-res script used 1 / 1).
HU_LOW_RES_LOSS = {
    "name": "weighted_logistic",
    "foreground_weight": 3.0,
    "background_weight": 1.0,
    "label_mode": "any",
    "resolution": "logits",
    "reduction": "mean",  # the authors' util/loss.py: tf.reduce_mean over all scores
}
# High-resolution stage: the authors' script weights foreground 1 and background 1/3 (the
# paper's 3:1 ratio, scaled); logits are at image size, so the mask is used as is.
HU_HIGH_RES_LOSS = {
    "name": "weighted_logistic",
    "foreground_weight": 1.0,
    "background_weight": 1.0 / 3.0,
    "label_mode": "binary",
    "resolution": "logits",
    "reduction": "mean",
}


@keras.saving.register_keras_serializable(package="refseg_tf")
class LSTMCNN(VisualTextSegmenter):
    """LSTM-CNN: tile the LSTM expression code over the CNN map, classify every cell.

    `fused = ReLU(conv1x1([L2(v); tile(L2(h_T)); spatial8]))` (D_cls channels), then a
    `score_kernel_size` convolution to one logit per cell and, in Hu's high-resolution stage,
    a 2s x 2s deconvolution with stride s initialised as bilinear upsampling (no bias, as the
    authors' code). One class covers the family through its configuration (see `presets`):

    | model | backbone feature | upsampling | score kernel | default loss |
    |---|---|---|---|---|
    | Hu low-res | VGG16FCN `fc8` (stride 32) | none | 1 | weighted (3, 1), "any" label at 16x16 |
    | Hu high-res | VGG16FCN `fc8` | deconv | 1 | weighted (1, 1/3) at image size |
    | R+LSTM (RMI 3.2) | ResNetOS8 `fc1000` (stride 8) | none | 1 | BCE vs "point" 40x40 label, sum |
    | D+LSTM (RMI 3.2) | ResNetOS8 `C5` + 1x1 projection to 1000 | none | 1 | BCE vs "point" label, sum |
    | D-LSTM-ours (RRN) | as D+LSTM | none | 3 | BCE at image size, sum |

    Hu's losses are means over the pixels, the RMI/RRN code's sums (`reduction`).

    Without deconvolution the logits stay at the feature stride; predictions are upsampled
    bilinearly (`predict_probabilities`), as RMI does at test time.

    Args:
        backbone: a `refseg_tf.backbones.Backbone` (or its serialised dict).
        vocabulary_size: number of word ids.
        visual_feature: backbone feature used as the image representation (D_im channels).
        visual_projection_dim: optional learned 1x1 projection of that feature (see
            `TextVisualFusion`; the authors' D+LSTM code projected res5c to 1000).
        embedding_dim: word embedding size (1000).
        text_units: LSTM size D_text (1000).
        classifier_units: D_cls, the hidden classifier channels (500).
        score_kernel_size: kernel of the last convolution (1; 3 in RRN's D-LSTM-ours).
        upsampling: "none" or "deconv" (Hu's high-resolution stage).
        embedding_dropout: dropout on word embeddings during training.
        mask_text_padding: the text LSTM skips the front `<pad>` steps (True: the RMI code of
            R/D+LSTM) or runs over them with a learned `<pad>` embedding (False: Hu et al.'s
            code; the preset "lstm_cnn" sets it).
        threshold, loss_config, optimizer_config: see `ReferringSegmenter`. Defaults: Hu's
            low- or high-resolution loss (by `upsampling`) and SGD(0.01, momentum 0.9).

    Call args:
        inputs: `{"image": [B, S, S, 3] float32, "word_ids": [B, T] int32}`.
        training: Python bool.

    Returns:
        float32 logits `[B, S / output_stride, S / output_stride, 1]`.

    Example:
        >>> backbone = get_backbone("vgg16_fcn", tiny=True)
        >>> low = LSTMCNN(backbone, vocabulary_size=20, embedding_dim=8, text_units=8,
        ...               classifier_units=8)
        >>> low.compile(); low.fit(dataset, epochs=1)
        >>> high = LSTMCNN.from_low_resolution(low)   # adds the bilinear deconvolution

    Reference:
        Hu et al. 2016, Sec. 3 (model), Eq. 1-2 (loss), Sec. 4.2 (two-stage training);
        Liu et al. 2017 (RMI), Sec. 3.2 (R/D+LSTM baselines, Eq. 6);
        Li et al. 2018 (RRN), Sec. 4.2.1 (D-LSTM-ours, Table 1 row 2).
    """

    has_detail_hook = True

    preset_keys = ("stage",)

    def __init__(
        self,
        backbone,
        vocabulary_size,
        *,
        visual_feature="fc8",
        visual_projection_dim=None,
        embedding_dim=1000,
        text_units=1000,
        classifier_units=500,
        score_kernel_size=1,
        upsampling="none",
        embedding_dropout=0.0,
        mask_text_padding=True,
        threshold=0.5,
        loss_config=None,
        optimizer_config=None,
        **kwargs,
    ):
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(
                f"`upsampling` must be one of {UPSAMPLING_MODES}; received {upsampling!r}."
            )
        stage_loss = HU_HIGH_RES_LOSS if upsampling == "deconv" else HU_LOW_RES_LOSS
        super().__init__(
            threshold=threshold,
            loss_config=merge_config(stage_loss, loss_config),
            optimizer_config=merge_config(HU_OPTIMIZER, optimizer_config),
            **kwargs,
        )
        self.backbone = resolve_backbone(backbone)
        self.visual_feature = check_feature(self.backbone, visual_feature, "visual_feature")
        self.vocabulary_size = int(vocabulary_size)
        self.visual_projection_dim = visual_projection_dim
        self.embedding_dim = int(embedding_dim)
        self.text_units = int(text_units)
        self.classifier_units = int(classifier_units)
        self.score_kernel_size = int(score_kernel_size)
        self.upsampling = upsampling
        self.embedding_dropout = float(embedding_dropout)
        self.mask_text_padding = bool(mask_text_padding)
        self.feature_stride = self.backbone.feature_strides[self.visual_feature]

        self.fusion = TextVisualFusion(
            self.vocabulary_size,
            embedding_dim=self.embedding_dim,
            text_units=self.text_units,
            fused_channels=self.classifier_units,
            visual_projection_dim=visual_projection_dim,
            embedding_dropout=self.embedding_dropout,
            mask_text_padding=self.mask_text_padding,
            name="fusion",
        )
        # float32 layers keep the logits float32 under mixed precision.
        self.score_conv = keras.layers.Conv2D(
            1, self.score_kernel_size, padding="same", dtype="float32", name="score"
        )
        self.upsample = None
        if upsampling == "deconv":
            self.upsample = keras.layers.Conv2DTranspose(
                1,
                2 * self.feature_stride,
                strides=self.feature_stride,
                padding="same",
                use_bias=False,
                kernel_initializer=BilinearUpsamplingInitializer(),
                dtype="float32",
                name="upsample",
            )

    @property
    def output_stride(self):
        return 1 if self.upsample is not None else self.feature_stride

    def call(self, inputs, training=None, detail=None, return_features=False):
        """Logits; `detail` / `return_features` are the hook of ASGN's DE and SE modules.

        `detail`: optional callable `(backbone_features, visual) -> [B, h, w, E]` whose output
        joins the fusion input (`TextVisualFusion(extra_features=...)`); `return_features`:
        return `{"logits", "semantic"}` on the feature grid (before any deconvolution, which
        the caller applies: `output_logits`), `semantic` being the fusion's visual feature
        (projected when `visual_projection_dim`, L2-normalised; recomputed by one 1x1 conv).
        """
        image, word_ids = self.check_inputs(inputs)
        features = self.backbone(image, training=training)
        visual = features[self.visual_feature]
        extra = None if detail is None else detail(features, visual)
        fused = self.fusion(visual, word_ids, extra_features=extra, training=training)
        logits = self.score_conv(fused)
        if return_features:
            return {"logits": logits, "semantic": self._semantic_feature(visual)}
        return self.output_logits(logits)

    def output_logits(self, feature_logits):
        """Hu's high-resolution stage: the deconvolution to the image grid (else unchanged)."""
        return feature_logits if self.upsample is None else self.upsample(feature_logits)

    def _semantic_feature(self, visual):
        """The fusion's visual input: projected (when configured) and L2-normalised."""
        if self.fusion.visual_projection is not None:
            visual = self.fusion.visual_projection(visual)
        return self.fusion.visual_norm(visual)

    @classmethod
    def expand_preset_kwargs(cls, preset, kwargs):
        """Maps `stage` ("low"/"high", the "lstm_cnn" preset only) onto the upsampling and Hu's
        loss of that stage (Hu et al. 2016, Sec. 3.3 and 4.2); explicit keys win."""
        kwargs = dict(kwargs)
        stage = kwargs.pop("stage", None)
        if stage is None:
            return kwargs
        if preset.name != "lstm_cnn":
            raise ValueError(
                f"`stage` applies to the lstm_cnn preset only; received it for {preset.name!r}."
            )
        if stage not in HU_STAGES:
            raise ValueError(f"`stage` must be one of {HU_STAGES}; received {stage!r}.")
        high = stage == "high"
        stage_kwargs = dict(
            upsampling="deconv" if high else "none",
            loss_config=HU_HIGH_RES_LOSS if high else HU_LOW_RES_LOSS,
        )
        stage_kwargs.update(kwargs)
        return stage_kwargs

    @classmethod
    def from_low_resolution(cls, source, *, loss_config=None, optimizer_config=None):
        """Hu's second stage: a high-resolution model initialised from a low-resolution one.

        Every weight shared by the two (backbone, text encoder, fusion and score convolutions)
        is copied; the new deconvolution starts as bilinear upsampling.

        Args:
            source: a low-resolution `LSTMCNN` or the path of one saved as `.keras`.
            loss_config: the high-resolution loss (default: `HU_HIGH_RES_LOSS`).
            optimizer_config: default: the source's optimizer configuration.

        Returns:
            A new `LSTMCNN` with `upsampling="deconv"` and `output_stride == 1`.
        """
        low = _load_low_resolution(source)
        config = low.get_config()
        config.update(
            upsampling="deconv",
            loss_config=loss_config or HU_HIGH_RES_LOSS,
            optimizer_config=optimizer_config or low.optimizer_config,
            name=f"{low.name}_high_res",
        )
        high = cls.from_config(config)
        build_with_dummy_inputs(low, 2 * low.feature_stride)
        build_with_dummy_inputs(high, 2 * low.feature_stride)
        for name in ("backbone", "fusion", "score_conv"):
            getattr(high, name).set_weights(getattr(low, name).get_weights())
        return high

    def get_config(self):
        config = super().get_config()
        config.update(
            **self.visual_text_config(),
            classifier_units=self.classifier_units,
            score_kernel_size=self.score_kernel_size,
            upsampling=self.upsampling,
            mask_text_padding=self.mask_text_padding,
        )
        return config


def _load_low_resolution(source):
    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise FileNotFoundError(f"No low-resolution model file at {source!r}.")
        source = keras.saving.load_model(source, compile=False)
    if not isinstance(source, LSTMCNN):
        raise TypeError(f"Expected a low-resolution LSTMCNN; got {type(source).__name__}.")
    if source.upsampling != "none":
        raise ValueError(
            f"Model {source.name!r} already has upsampling={source.upsampling!r}; "
            "from_low_resolution needs a low-resolution (upsampling='none') model."
        )
    return source

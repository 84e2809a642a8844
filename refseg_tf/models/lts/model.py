"""LTS (Jing et al. 2021): locate then segment, with relevance filtering or a transformer."""

import threading

import keras
from keras import ops

from refseg_tf.layers.spatial import resize_bilinear
from refseg_tf.losses.segmentation import PIXEL_REDUCTIONS, SigmoidCrossEntropyLoss
from refseg_tf.models.base import ReferringSegmenter, check_feature, merge_config, resolve_backbone
from refseg_tf.models.lts.layers import (
    FILTER_SOURCES,
    UPSAMPLING_MODES,
    ASPPSegmentation,
    GRUTextEncoder,
    LTSFusion,
    RelevanceFilter,
    TransformerLocalizer,
)

LOCALIZATIONS = ("filter", "transformer", "none")
# The input side S must be a multiple of the coarsest fused stride (the presets' InputContract).
IMAGE_SIZE_MULTIPLE = 32
PRIOR_ACTIVATIONS = ("sigmoid", "none")

# LTS Sec. 3.4 Eq. 11: BCE against the mask downsampled to the logits' grid. The downsampling
# is not given; MCN used nearest (cv2.INTER_NEAREST); "binary" (>= half the cell) is the
# library's equivalent up to sampling (SPEC 2.7 REC).
# Summed over the grid's pixels (Eq. 11-12 as written; MCN `K.sum(BCE) / batch`).
LTS_LOSS = {
    "name": "sigmoid_cross_entropy",
    "label_mode": "binary",
    "resolution": "logits",
    "reduction": "sum",
}
# LTS Sec. 4.1: Adam, initial learning rate 1e-3 (x0.1 at epoch 30: refseg_tf.training).
LTS_OPTIMIZER = {"name": "adam", "learning_rate": 1e-3}


@keras.saving.register_keras_serializable(package="refseg_tf")
class PixelBCELoss(SigmoidCrossEntropyLoss):
    """The shared `SigmoidCrossEntropyLoss` at the logits' grid, summed over the pixels by
    default (LTS Eq. 11-12 as written), then averaged over the batch (MCN: `K.sum(BCE) / batch`).

    The same maths as `SigmoidCrossEntropyLoss(label_mode, "logits", pixel_reduction)`; the
    class keeps LTS's name and defaults (and loads LTS files saved with it).

    Args:
        label_mode: how the full-size mask is pooled onto the logits' grid ("binary", "soft",
            "any"; see `refseg_tf.losses.downsample_mask`).
        pixel_reduction: "sum" (LTS / MCN) or "mean".
        name, reduction, dtype: as `keras.losses.Loss`.

    Call args:
        y_true: `[B, H, W, 1]` mask; y_pred: `[B, h, w, 1]` logits.

    Reference:
        Jing et al. 2021 (LTS), Sec. 3.4 Eq. 11-13; MCN `yolo_loss` (sum over pixels / batch).
    """

    def __init__(self, label_mode="binary", pixel_reduction="sum", name="pixel_bce",
                 reduction="sum_over_batch_size", dtype=None, upsampling=None):
        # `upsampling` is accepted for configs written by the shared loss; a loss at the
        # logits' grid never upsamples, so the value changes nothing.
        del upsampling
        super().__init__(label_mode=label_mode, resolution="logits",
                         pixel_reduction=pixel_reduction, name=name, reduction=reduction,
                         dtype=dtype)

    def get_config(self):
        config = super().get_config()
        config.pop("resolution")
        config.pop("upsampling", None)
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class LTS(ReferringSegmenter):
    """LTS: locate the referent with a text-conditioned heatmap, then segment around it.

    1. Visual: Darknet-53 with the YOLOv3 neck (`Darknet53(neck=True)`): F_v1 = `neck`
       (stride 32, 1024), F_v2 = `C4` (16, 512), F_v3 = `C3` (8, 256) [Sec. 3.1; MCN].
    2. Text: GloVe-300-initialised embedding, bi-GRU (1024 per direction, REC), f_text = masked
       mean of the word states (`GRUTextEncoder`, Eq. 1-4), back-padded word ids.
    3. Fusion (`LTSFusion`, Eq. 5-7) to F_m3 at stride 8 (1024 channels).
    4. Localisation: relevance filtering (`RelevanceFilter`, Eq. 8; n kernels, or one per word)
       or a transformer decoder (`TransformerLocalizer`, Eq. 9) -> heatmap logits H_mask at
       stride 8.
    5. Segmentation (`ASPPSegmentation`, Eq. 10): `concat(F_m3, sigmoid(H_mask))` -> ASPP ->
       bilinear-initialised stride-2 deconvolution -> P_mask logits at stride 4.
    6. Loss (Eq. 11-13): `L_seg(P_mask) + 0.1 * L_loc(H_mask)`, BCE summed over the pixels of
       each grid (the mask pooled to H/4 and H/8), averaged over the batch.

    `explain(inputs)` returns the heatmaps and the mask as pictures (Fig. 4, `refseg-predict
    --explain`). `call` returns the mask logits (the `ReferringSegmenter` contract). The heatmap:
    `heatmap(inputs)` returns it; in training, `compute_loss` adds the locating loss on the
    heatmap of the same forward pass (`call` hands it over per thread, so `fit` under a
    `tf.distribute` strategy is safe; a `compute_loss` call without the matching `call` runs the
    localisation branch again).

    Table 2 ablations: `fusion=False` (no text factor in Eq. 5), `localization="none"` (no
    filter: Seg(F_m3), no L_loc), `segmentation=False` (the mask is H_mask at stride 8 when
    there is a localisation module, else a 1x1 convolution on F_m3; trained with L_seg at H/8),
    `locating_loss_weight=0` (no L_loc).

    Args:
        backbone: a `Darknet53` with `neck=True` (or its serialised dict).
        vocabulary_size: number of word ids.
        embedding_dim: word embedding size (300, GloVe).
        text_units: GRU units per direction (1024).
        text_dropout: GRU input dropout (0.1, MCN).
        trainable_embeddings: True (LTS: "initialized" from GloVe; REC) or False (MCN).
        use_cudnn: the GRU's cuDNN switch ("auto": taken on GPU; holds for back padding).
        fusion: the text factor of Eq. 5 (Table 2 "Fusion").
        fusion_channels: F_m1 channels (1024, REC).
        branch_channels: channels of each Eq. 7 branch (512, REC: F_m3 = 1024 = d_k).
        localization: "filter" (Eq. 8), "transformer" (Eq. 9) or "none".
        num_filters: n of Table 5 (n independent kernels; REC).
        filter_source: "sentence" or "words" (Table 5 WordFilter; REC mean of per-word maps).
        transformer_heads, transformer_ffn_units, transformer_dropout: the decoder (4, 1024,
            0.1; Sec. 4.1 and DETR).
        segmentation: the ASPP segmentation module (Table 2 "Seg").
        aspp_channels, aspp_rates, upsampling: see `ASPPSegmentation` (256, (6, 12, 18), "mask"
            REC).
        prior_activation: "sigmoid" (REC: the heatmap as a position prior in [0, 1]) or "none"
            (raw logits concatenated).
        locating_loss_weight: lambda of Eq. 13 (0.1); 0 = no L_loc (Table 2 row 6).
        pixel_reduction: None, or "sum" / "mean": sets `loss_config["reduction"]` (the pixel
            reduction of L_seg and L_loc, "sum" by default: Eq. 11-12 as written, MCN), as
            files saved before that key did; `model.loss.reduction` in a config.
        threshold: probability threshold at inference (0.25, Sec. 3.4).
        loss_config, optimizer_config: see `ReferringSegmenter` (label_mode of the pooled
            mask; Adam 1e-3).

    Call args:
        inputs: `{"image": [B, S, S, 3] float32 (pixels / 255), "word_ids": [B, T] int32}`,
            S a multiple of 32, word ids back padded.
        training: Python bool.

    Returns:
        float32 mask logits `[B, S / 4, S / 4, 1]` (`[B, S / 8, S / 8, 1]` without the
        segmentation module).

    Example:
        >>> model = build_preset("lts", vocabulary_size=12112)
        >>> model.compile()
        >>> heatmap = model.heatmap({"image": images, "word_ids": word_ids})  # [B, 52, 52, 1]

    Reference:
        Jing et al. 2021, "Locate then Segment", Sec. 3 (Eq. 1-13), Sec. 4.1, Tables 2 and 5;
        MCN (luogen1996/MCN) for what the paper leaves to its code base; the REC choices of
        /work/shared/papers/SPEC_RMI_LTS_ASGN.md section 2, each a constructor argument.
    """

    has_explanation = True
    takes_word_vectors = True

    def __init__(
        self,
        backbone,
        vocabulary_size,
        *,
        embedding_dim=300,
        text_units=1024,
        text_dropout=0.1,
        trainable_embeddings=True,
        use_cudnn="auto",
        fusion=True,
        fusion_channels=1024,
        branch_channels=512,
        localization="filter",
        num_filters=1,
        filter_source="sentence",
        transformer_heads=4,
        transformer_ffn_units=1024,
        transformer_dropout=0.1,
        segmentation=True,
        aspp_channels=256,
        aspp_rates=(6, 12, 18),
        upsampling="mask",
        prior_activation="sigmoid",
        locating_loss_weight=0.1,
        pixel_reduction=None,
        threshold=0.25,
        loss_config=None,
        optimizer_config=None,
        **kwargs,
    ):
        for value, choices, argument in (
            (localization, LOCALIZATIONS, "localization"),
            (filter_source, FILTER_SOURCES, "filter_source"),
            (upsampling, UPSAMPLING_MODES, "upsampling"),
            (prior_activation, PRIOR_ACTIVATIONS, "prior_activation"),
        ):
            if value not in choices:
                raise ValueError(f"`{argument}` must be one of {choices}; received {value!r}.")
        if not fusion and localization == "none":
            raise ValueError(
                "`fusion=False` needs a localisation module (the text would not enter the "
                "model); received localization='none'."
            )
        if pixel_reduction is not None:
            if pixel_reduction not in PIXEL_REDUCTIONS:
                raise ValueError(
                    f"`pixel_reduction` must be one of {PIXEL_REDUCTIONS}; "
                    f"received {pixel_reduction!r}."
                )
            loss_config = merge_config(loss_config, {"reduction": pixel_reduction})
        super().__init__(
            threshold=threshold,
            loss_config=merge_config(LTS_LOSS, loss_config),
            optimizer_config=merge_config(LTS_OPTIMIZER, optimizer_config),
            **kwargs,
        )
        if self.loss_config["resolution"] != "logits":
            raise ValueError(
                "LTS computes L_seg and L_loc at the logits' grids (Eq. 11-12): "
                "`loss_config['resolution']` must be 'logits'; received "
                f"{self.loss_config['resolution']!r}."
            )
        self.backbone = resolve_backbone(backbone)
        for feature in ("neck", "C4", "C3"):
            check_feature(self.backbone, feature, "LTS visual level (build Darknet53(neck=True))")
        self.vocabulary_size = int(vocabulary_size)
        self.embedding_dim = int(embedding_dim)
        self.text_units = int(text_units)
        self.text_dropout = float(text_dropout)
        self.trainable_embeddings = bool(trainable_embeddings)
        self.use_cudnn = use_cudnn
        self.fusion = bool(fusion)
        self.fusion_channels = int(fusion_channels)
        self.branch_channels = int(branch_channels)
        self.localization = localization
        self.num_filters = int(num_filters)
        self.filter_source = filter_source
        self.transformer_heads = int(transformer_heads)
        self.transformer_ffn_units = int(transformer_ffn_units)
        self.transformer_dropout = float(transformer_dropout)
        self.segmentation = bool(segmentation)
        self.aspp_channels = int(aspp_channels)
        self.aspp_rates = tuple(int(rate) for rate in aspp_rates)
        self.upsampling = upsampling
        self.prior_activation = prior_activation
        self.locating_loss_weight = float(locating_loss_weight)
        self._handover = threading.local()

        # === Layers ===
        self.text_encoder = GRUTextEncoder(
            self.vocabulary_size,
            self.embedding_dim,
            self.text_units,
            dropout=self.text_dropout,
            trainable_embeddings=self.trainable_embeddings,
            use_cudnn=use_cudnn,
            name="text_encoder",
        )
        self.fusion_block = LTSFusion(
            self.fusion_channels, self.branch_channels, text_fusion=self.fusion, name="fusion"
        )
        self.localizer = None
        if localization == "filter":
            self.localizer = RelevanceFilter(
                self.num_filters, source=self.filter_source, name="relevance_filter"
            )
        elif localization == "transformer":
            self.localizer = TransformerLocalizer(
                2 * self.branch_channels,
                self.transformer_heads,
                self.transformer_ffn_units,
                self.transformer_dropout,
                name="transformer",
            )
        self.segmenter = None
        self.coarse_score = None
        if self.segmentation:
            self.segmenter = ASPPSegmentation(
                self.aspp_channels, self.aspp_rates, self.upsampling, name="segmentation"
            )
        elif self.localizer is None:
            self.coarse_score = keras.layers.Conv2D(1, 1, dtype="float32", name="coarse_score")

    # ------------------------------------------------------------------ properties

    @property
    def output_stride(self):
        return 4 if self.segmentation else 8

    @property
    def has_heatmap(self):
        """Whether the model computes a localisation heatmap (evaluation reports its accuracy)."""
        return self.localizer is not None

    @property
    def uses_locating_loss(self):
        """L_loc is added when there is a heatmap distinct from the mask and lambda > 0."""
        return self.has_heatmap and self.segmentation and self.locating_loss_weight > 0

    # ------------------------------------------------------------------ forward

    def _fused(self, inputs, training):
        image, word_ids = self.check_inputs(inputs)
        size = tuple(image.shape[1:3])
        multiple = IMAGE_SIZE_MULTIPLE
        if all(isinstance(side, int) for side in size) and (size[0] % multiple or size[1] % multiple):
            raise ValueError(
                "LTS fuses strides 32, 16 and 8 by 2x upsampling: the image size must be a "
                f"multiple of {multiple}; received {size[0]}x{size[1]}."
            )
        visual = self.backbone(image, training=training)
        text = self.text_encoder(word_ids, training=training)
        fused = self.fusion_block(
            [visual["neck"], visual["C4"], visual["C3"]], text["sentence"], training=training
        )
        return fused, text

    def _heatmaps(self, fused, text, training):
        if self.localization == "filter":
            return self.localizer(fused, text["sentence"], text["words"], text["mask"])
        return self.localizer(fused, text["sentence"], training=training)

    def forward(self, inputs, training=None):
        """Both outputs: `{"mask": logits [B, h, w, 1], "heatmaps": [B, S/8, S/8, n] or None}`."""
        fused, text = self._fused(inputs, training)
        heatmaps = None if self.localizer is None else self._heatmaps(fused, text, training)
        if not self.segmentation:
            if heatmaps is None:
                return {"mask": self.coarse_score(fused), "heatmaps": None}
            return {"mask": ops.mean(heatmaps, axis=-1, keepdims=True), "heatmaps": heatmaps}
        features = fused
        if heatmaps is not None:
            prior = ops.sigmoid(heatmaps) if self.prior_activation == "sigmoid" else heatmaps
            features = ops.concatenate([fused, ops.cast(prior, fused.dtype)], axis=-1)
        return {"mask": self.segmenter(features, training=training), "heatmaps": heatmaps}

    def call(self, inputs, training=None):
        outputs = self.forward(inputs, training=training)
        mask = outputs["mask"]
        if self.uses_locating_loss:
            self._handover.pending = (mask, outputs["heatmaps"])
        return mask

    def heatmap(self, inputs, training=False):
        """Localisation heatmap logits `[B, S / 8, S / 8, 1]` (the mean of the n maps).

        Raises:
            ValueError: the model has no localisation module (`localization="none"`).
        """
        if not self.has_heatmap:
            raise ValueError("This LTS model has no localisation module (localization='none').")
        fused, text = self._fused(inputs, training)
        return ops.mean(self._heatmaps(fused, text, training), axis=-1, keepdims=True)

    def explain(self, inputs, words=None):
        """The maps of LTS Fig. 4: `sigmoid(H_mask)` of each filter and the P_mask probability.

        Args:
            inputs: `{"image": [B, S, S, 3], "word_ids": [B, T]}`.

        Returns:
            A dict: `maps` float32 `[B, N, S, S]` (bilinearly upsampled) and `labels`, per
            example the N names: "heatmap" or "heatmap 1..n", then "mask".
        """
        del words  # the maps are the heatmaps and the mask
        outputs = self.forward(inputs, training=False)
        size = tuple(ops.shape(inputs["image"])[1:3])
        maps = [ops.sigmoid(resize_bilinear(outputs["mask"], size))]
        labels = ["mask"]
        if outputs["heatmaps"] is not None and self.segmentation:
            heatmaps = ops.sigmoid(resize_bilinear(outputs["heatmaps"], size))
            maps.insert(0, heatmaps)
            count = int(heatmaps.shape[-1])
            labels = (["heatmap"] if count == 1 else [f"heatmap {i + 1}" for i in range(count)]
                      ) + labels
        stacked = ops.concatenate(maps, axis=-1)  # [B, S, S, N]
        batch = int(ops.shape(inputs["image"])[0])
        return {"maps": ops.transpose(stacked, (0, 3, 1, 2)), "labels": [tuple(labels)] * batch}

    # ------------------------------------------------------------------ loss

    def default_loss(self):
        """L_seg: `PixelBCELoss` at the mask logits' grid (H/4, or H/8 without Seg)."""
        return PixelBCELoss(self.loss_config["label_mode"], self.pixel_reduction)

    def locating_loss(self, mask, heatmaps):
        """L_loc (Eq. 12) summed over the n heatmaps, each against the mask pooled to H/8."""
        loss = PixelBCELoss(self.loss_config["label_mode"], self.pixel_reduction, name="l_loc")
        total = 0.0
        for index in range(int(heatmaps.shape[-1])):
            total = total + loss(mask, heatmaps[..., index : index + 1])
        return total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss (L_seg) + `locating_loss_weight * L_loc` (Eq. 13)."""
        total = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                     training=training)
        if not self.uses_locating_loss or y is None:
            return total
        pending = getattr(self._handover, "pending", None)
        self._handover.pending = None
        if pending is not None and pending[0] is y_pred:
            heatmaps = pending[1]
        else:
            fused, text = self._fused(x, training)
            heatmaps = self._heatmaps(fused, text, training)
        return total + self.locating_loss_weight * self.locating_loss(y, heatmaps)

    # ------------------------------------------------------------------ weights

    def load_word_vectors(self, matrix):
        """Sets the word embedding to `matrix` `[vocabulary_size, embedding_dim]` (GloVe)."""
        self.text_encoder.set_embeddings(matrix)

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            vocabulary_size=self.vocabulary_size,
            embedding_dim=self.embedding_dim,
            text_units=self.text_units,
            text_dropout=self.text_dropout,
            trainable_embeddings=self.trainable_embeddings,
            use_cudnn=self.use_cudnn,
            fusion=self.fusion,
            fusion_channels=self.fusion_channels,
            branch_channels=self.branch_channels,
            localization=self.localization,
            num_filters=self.num_filters,
            filter_source=self.filter_source,
            transformer_heads=self.transformer_heads,
            transformer_ffn_units=self.transformer_ffn_units,
            transformer_dropout=self.transformer_dropout,
            segmentation=self.segmentation,
            aspp_channels=self.aspp_channels,
            aspp_rates=list(self.aspp_rates),
            upsampling=self.upsampling,
            prior_activation=self.prior_activation,
            locating_loss_weight=self.locating_loss_weight,
        )
        return config

    @property
    def pixel_reduction(self):
        """The pixel reduction of L_seg and L_loc: `loss_config["reduction"]`."""
        return self.loss_config["reduction"]

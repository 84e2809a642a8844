"""ASGN (Qiu et al.): a segmenter with DE/SE modules trained against a discriminator."""

import keras
from keras import ops

from refseg_tf.labels import downsample_mask, label_grid
from refseg_tf.layers.spatial import resize_bilinear
from refseg_tf.losses import WeightedLogisticLoss
from refseg_tf.models.asgn.layers import (
    DETAIL_CHANNELS,
    DISCRIMINATOR_FILTERS,
    DetailEnhancement,
    Discriminator,
    SemanticEmbedding,
)
from refseg_tf.models.base import ReferringSegmenter, merge_config

# ASGN §IV.C: Adam at a fixed 2.5e-4 for the generator and the discriminator.
ASGN_OPTIMIZER = {"name": "adam", "learning_rate": 2.5e-4}
# Table VI: lambda multiplies the cross entropy; 0.1 is the paper's setting.
CROSS_ENTROPY_WEIGHT = 0.1
# "non_saturating": G minimises BCE(D(fake), 1) (Goodfellow 2014 practice, REC);
# "saturating": G minimises -BCE(D(fake), 0), the literal minimax of Eq. 5.
GENERATOR_ADVERSARIAL_LOSSES = ("non_saturating", "saturating")
# The mask of the discriminator's real pair: "binary" = the ground truth (ASGN Fig. 2);
# "scaling" = Luc et al. 2016's encoding (the ground truth's class at least tau, then the
# prediction), so that D cannot win by telling a binary mask from a soft one.
REAL_MASK_ENCODINGS = ("binary", "scaling")
# Luc et al. 2016: tau = 0.9 for the "scaling" encoding.
SCALING_TAU = 0.9
# The image part of the discriminator's input is multiplied by this (REC; paper silent): the
# backbones' normalised images (caffe BGR / VGG RGB minus the mean) span about +-128, the mask
# [0, 1]; 1/128 brings the image to about [-1, 1] so neither part dominates D's first layer.
DISCRIMINATOR_IMAGE_SCALE = 1.0 / 128.0


class _WrappingSegmenter(ReferringSegmenter):
    """A segmenter around another one (`wrapped`, default the attribute `base`): its backbone,
    visual feature, output stride and training-time freezing are the wrapped segmenter's."""

    @property
    def wrapped(self):
        return self.base

    @property
    def backbone(self):
        return self.wrapped.backbone

    @property
    def visual_feature(self):
        return self.wrapped.visual_feature

    @property
    def output_stride(self):
        return self.wrapped.output_stride

    def freeze_for_training(self, config_train):
        """What the wrapped segmenter freezes (`ReferringSegmenter.freeze_for_training`)."""
        self.wrapped.freeze_for_training(config_train)


@keras.saving.register_keras_serializable(package="refseg_tf")
class ASGNGenerator(_WrappingSegmenter):
    """ASGN's generator: a base segmenter with the optional DE and SE modules.

    - **DE** (`detail_features` non-empty): a `DetailEnhancement` of those backbone features
      joins the base's fusion input (R/D+LSTM and SNLE: `TextVisualFusion(extra_features=...)`;
      D+RMI: extra channels of the time-invariant mLSTM input), through the base's `call(...,
      detail=...)` hook.
    - **SE** (`semantic_embedding=True`): `SemanticEmbedding` predicts the final logits from the
      base's visual feature and its probability map; only the final logits are returned (and
      supervised).

    Without DE and SE the generator is the base model itself (same logits). A plain
    `ReferringSegmenter`: this is what inference and export run.

    Args:
        base: an `LSTMCNN` (SNLE = preset "lstm_cnn", R+LSTM, D+LSTM) or `RMI` (D+RMI), or its
            serialised dict. With Hu's deconvolution (SNLE high resolution) SE works on the
            fc8 grid and the deconvolution upsamples its output (REC; the paper is silent).
        detail_features: backbone feature names of DE (`()` = no DE). Table III's best:
            `("C3", "C4", "C5")` on ResNet; VGG: `("conv3", "conv4", "conv5")` (REC, SPEC 3.9-7).
        detail_channels: channels of each DE 1x1 convolution (REC 128; paper silent).
        detail_activation: their activation (REC "relu"; paper silent).
        detail_normalize: L2-normalise each DE map over its channels, as the features it is
            concatenated with (REC; the ASGN presets and paper configs set True, the
            constructor's False keeps models saved before the option; `DetailEnhancement`).
        semantic_embedding: add the SE head.
        semantic_kernel_size: kernel of the SE convolution (REC 1; paper silent).
        loss_config, optimizer_config: see `ReferringSegmenter` (default: the base's).

    Call args:
        inputs: `{"image", "word_ids"}` as the base takes them.
        training: Python bool.

    Returns:
        float32 logits `[B, S / output_stride, S / output_stride, 1]`.

    Reference:
        Qiu et al., ASGN, Sec. III.B (generator, DE in III.B.1, SE in III.B.2), Fig. 2.
    """

    def __init__(
        self,
        base,
        *,
        detail_features=(),
        detail_channels=DETAIL_CHANNELS,
        detail_activation="relu",
        detail_normalize=False,
        semantic_embedding=False,
        semantic_kernel_size=1,
        threshold=None,
        loss_config=None,
        optimizer_config=None,
        **kwargs,
    ):
        if isinstance(base, dict):
            base = keras.saving.deserialize_keras_object(base)
        if not isinstance(base, ReferringSegmenter):
            raise TypeError(
                f"`base` must be a ReferringSegmenter (LSTMCNN or RMI); received {type(base).__name__}."
            )
        detail_features = tuple(str(name) for name in detail_features or ())
        semantic_embedding = bool(semantic_embedding)
        if (detail_features or semantic_embedding) and not base.has_detail_hook:
            raise ValueError(
                "DE and SE need a base with the `detail` / `return_features` call hook "
                f"(`has_detail_hook`: LSTMCNN, RMI); received {type(base).__name__}."
            )
        for name in detail_features:
            if name not in base.backbone.feature_strides:
                raise ValueError(
                    f"`detail_features` must name features of backbone {base.backbone.name!r} "
                    f"({list(base.backbone.feature_names)}); received {name!r}."
                )
        super().__init__(
            threshold=base.threshold if threshold is None else threshold,
            loss_config=merge_config(base.loss_config, loss_config),
            optimizer_config=merge_config(base.optimizer_config, optimizer_config),
            **kwargs,
        )
        self.base = base
        self.detail_features = detail_features
        self.detail_channels = int(detail_channels)
        self.detail_activation = detail_activation
        self.detail_normalize = bool(detail_normalize)
        self.semantic_embedding = semantic_embedding
        self.semantic_kernel_size = int(semantic_kernel_size)

        # === Layers ===
        self.detail = None
        if detail_features:
            self.detail = DetailEnhancement(
                detail_features,
                self.detail_channels,
                detail_activation,
                normalize=self.detail_normalize,
                name="detail",
            )
        self.semantic = None
        if semantic_embedding:
            self.semantic = SemanticEmbedding(self.semantic_kernel_size, name="semantic")

    def call(self, inputs, training=None):
        if self.detail is None and self.semantic is None:
            return self.base(inputs, training=training)
        # `base.call`, not `base(...)`: the base is then never built as a model on its own, so
        # a SavedModel does not trace its default signature (a call without the DE inputs its
        # fusion was built with). Its layers are built and tracked as usual.
        outputs = self.base.call(
            inputs,
            training=training,
            detail=self.detail,
            return_features=self.semantic is not None,
        )
        if self.semantic is None:
            return outputs
        logits = self.semantic(outputs["semantic"], outputs["logits"])
        # SNLE's high-resolution stage: SE on the fc8 grid, then the base's deconvolution.
        return self.base.output_logits(logits)

    def get_config(self):
        config = super().get_config()
        config.update(
            base=keras.saving.serialize_keras_object(self.base),
            detail_features=list(self.detail_features),
            detail_channels=self.detail_channels,
            detail_activation=self.detail_activation,
            detail_normalize=self.detail_normalize,
            semantic_embedding=self.semantic_embedding,
            semantic_kernel_size=self.semantic_kernel_size,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        base = dict(config["base"])
        # The base is built as part of the generator (with the DE inputs of its fusion), not
        # on its own from its build config.
        base.pop("build_config", None)
        base.pop("compile_config", None)
        config["base"] = keras.saving.deserialize_keras_object(base)
        return cls(**config)


@keras.saving.register_keras_serializable(package="refseg_tf")
class ASGN(_WrappingSegmenter):
    """ASGN: an `ASGNGenerator` trained with a `Discriminator` (adversarial training, AT).

    `call` runs the generator only, so `predict`, evaluation, `refseg-predict` and the export
    (through `inference_model()`) see a plain segmenter; `.keras` saving keeps both networks.

    Training (`train_step`, the model owns it; ASGN §III.D Eq. 5-7, §IV.C): for each batch
    1. the generator predicts logits `F(x)` at its grid (one forward pass, reused);
    2. **D step**: `L_D = BCE(D(s x ⊕ M), 1) + BCE(D(s x ⊕ sg(P)), 0)` with `P` =
       sigmoid(F(x)) bilinearly upsampled to the image size, `s` = `discriminator_image_scale`
       and `sg` = stop-gradient (the generator gets no gradient from it); Adam step on the
       discriminator. `M` is the ground truth as the CE sees it (`real_mask_encoding="binary"`,
       the paper) or Luc et al.'s "scaling" encoding of it (`max(tau, P)` on the object,
       `min(1 - tau, P)` elsewhere, with `sg(P)`). Real and fake masks share one pixel grid,
       the one of the CE's labels and of scoring (`refseg_tf.labels.label_grid`): with a loss
       at the logit grid, `M` is the row's label (`downsample_mask` with its `label_mode`)
       and `M` and `P` are both upsampled on that label mode's grid (TF1 corners for "point",
       half-pixel for the block modes); with a loss at image resolution `M` is the mask and
       `P` is upsampled on the loss's `upsampling` grid. A prediction equal to its label then
       gives a fake mask equal to the real one (no sub-cell shift for D to learn instead of
       shape);
    3. **G step**: `L_G = L_adv + λ (L_CE + R_G)`, `L_adv = BCE(D(s x ⊕ P), 1)` through the
       *updated* discriminator (non-saturating, REC; "saturating" = `-BCE(D(s x ⊕ P), 0)`),
       `L_CE` the base's cross entropy at its grid (R/D+LSTM, D+RMI: BCE summed over the 40x40
       grid as the authors' base code, so "CE much larger than L_adv" holds with λ = 0.1;
       SNLE rows sum over the 512x512 grid, see `refseg_tf.training.experiments.asgn`), `R_G`
       the generator's weight decay, scaled with λ so that the base recipe's balance of data
       term and decay is kept (the paper is silent; unscaled, decay would weigh 1/λ times more
       against the CE than in the base recipe); step on the generator's variables only.
    Loss trackers `d_loss`, `g_adv`, `g_ce` (and `loss` = L_G). With
    `adversarial_training=False` the step is plain CE training of the generator (Table II's rows
    without "+AT"; no discriminator step).

    Distribution and precision: the hand-written BCE terms and the regularisation (generator
    regularisers in L_G, discriminator ones in L_D) are divided by the replica count, as Keras
    losses are, so MirroredStrategy's summed gradients equal the single-device ones; both
    optimizers scale the loss under `mixed_float16` (the discriminator's is wrapped in a
    `LossScaleOptimizer` here, Keras wraps only the compiled one); `compile` (call it in the
    strategy scope) builds both optimizers over their own networks' variables.

    Args:
        backbone: the backbone for a new generator (ignored when `generator` is given).
        vocabulary_size: word ids for a new generator.
        generator: an `ASGNGenerator` (or serialised dict); None builds one from `base_preset`.
        base_preset: the generator's base, one of "lstm_cnn" (SNLE), "r_lstm", "d_lstm",
            "d_rmi" (any preset of an LSTMCNN / RMI model).
        base_size: "paper" or "tiny" for the base preset.
        base_kwargs: extra keyword arguments of the base preset.
        detail_features, detail_channels, detail_activation, detail_normalize,
            semantic_embedding, semantic_kernel_size: see `ASGNGenerator` (DE / SE); None
            (the default) takes the generator's default (no DE, no SE). Named here so that
            `config.model` keys are checked against this signature.
        discriminator: a `Discriminator` (or serialised dict); None builds one from
            `discriminator_filters`, `discriminator_kernel_size`.
        discriminator_filters: REC `(64, 128, 256, 512, 512)` (+ the dense layer = six layers).
        discriminator_kernel_size: REC 4.
        discriminator_image_scale: factor of the image part of D's input (REC 1/128: the
            normalised image spans about +-128, the mask [0, 1]).
        cross_entropy_weight: λ of Eq. 7 (0.1; Table VI also 0.01 and 1).
        generator_adversarial_loss: one of `GENERATOR_ADVERSARIAL_LOSSES` (REC non-saturating).
        adversarial_training: False trains the generator on CE alone (no "+AT").
        real_mask_encoding: the mask of the real pair, one of `REAL_MASK_ENCODINGS`: "binary"
            (the ground truth, ASGN Fig. 2; the default) or "scaling" (Luc et al. 2016's
            encoding: on the object `max(tau, P)`, elsewhere `min(1 - tau, P)`; a real mask
            is then as soft as the prediction where the prediction is right, so D must judge
            where the mask lies rather than how binary it is). Not in the paper.
        scaling_tau: tau of the "scaling" encoding (Luc et al.: 0.9), in (0.5, 1].
        threshold, loss_config, optimizer_config: see `ReferringSegmenter`; default the
            generator's threshold and loss, Adam 2.5e-4 (both optimizers).

    Call args:
        inputs: `{"image", "word_ids"}`.
        training: Python bool.

    Returns:
        The generator's float32 logits.

    Example:
        >>> model = build_preset("asgn_r_lstm", vocabulary_size=12112)
        >>> model.compile()  # Adam(2.5e-4) for G and D, the base's CE
        >>> model.fit(load(data_dir, "train", as_supervised=True), steps_per_epoch=100)

    Reference:
        Qiu et al., "Referring Image Segmentation by Generative Adversarial Learning",
        Sec. III.D (Eq. 5-7), Sec. IV.C (schedule), Table VI (λ). No code was published: the
        choices marked REC are this library's, each a constructor argument. Luc et al.,
        "Semantic Segmentation using Adversarial Networks" (2016, ASGN ref. [18]): the
        "scaling" real-mask encoding.
    """

    def __init__(
        self,
        backbone=None,
        vocabulary_size=None,
        *,
        generator=None,
        base_preset="r_lstm",
        base_size="paper",
        base_kwargs=None,
        detail_features=None,
        detail_channels=None,
        detail_activation=None,
        detail_normalize=None,
        semantic_embedding=None,
        semantic_kernel_size=None,
        discriminator=None,
        discriminator_filters=DISCRIMINATOR_FILTERS,
        discriminator_kernel_size=4,
        discriminator_image_scale=DISCRIMINATOR_IMAGE_SCALE,
        cross_entropy_weight=CROSS_ENTROPY_WEIGHT,
        generator_adversarial_loss="non_saturating",
        adversarial_training=True,
        real_mask_encoding="binary",
        scaling_tau=SCALING_TAU,
        threshold=None,
        loss_config=None,
        optimizer_config=None,
        **kwargs,
    ):
        if real_mask_encoding not in REAL_MASK_ENCODINGS:
            raise ValueError(
                f"`real_mask_encoding` must be one of {REAL_MASK_ENCODINGS}; "
                f"received {real_mask_encoding!r}."
            )
        scaling_tau = float(scaling_tau)
        if not 0.5 < scaling_tau <= 1.0:
            raise ValueError(f"`scaling_tau` must be in (0.5, 1]; received {scaling_tau}.")
        if generator_adversarial_loss not in GENERATOR_ADVERSARIAL_LOSSES:
            raise ValueError(
                f"`generator_adversarial_loss` must be one of {GENERATOR_ADVERSARIAL_LOSSES}; "
                f"received {generator_adversarial_loss!r}."
            )
        discriminator_image_scale = float(discriminator_image_scale)
        if discriminator_image_scale <= 0:
            raise ValueError(
                "`discriminator_image_scale` must be positive; received "
                f"{discriminator_image_scale}."
            )
        cross_entropy_weight = float(cross_entropy_weight)
        if cross_entropy_weight <= 0:
            raise ValueError(
                f"`cross_entropy_weight` must be positive; received {cross_entropy_weight}."
            )
        if isinstance(generator, dict):
            generator = keras.saving.deserialize_keras_object(generator)
        if generator is None:
            modules = dict(
                detail_features=detail_features,
                detail_channels=detail_channels,
                detail_activation=detail_activation,
                detail_normalize=detail_normalize,
                semantic_embedding=semantic_embedding,
                semantic_kernel_size=semantic_kernel_size,
            )
            # None: the generator's own default (ASGNGenerator holds the one definition).
            generator = self._new_generator(
                backbone, vocabulary_size, base_preset, base_size, base_kwargs,
                **{key: value for key, value in modules.items() if value is not None},
            )
        if not isinstance(generator, ASGNGenerator):
            raise TypeError(
                f"`generator` must be an ASGNGenerator; received {type(generator).__name__}."
            )
        if isinstance(discriminator, dict):
            discriminator = keras.saving.deserialize_keras_object(discriminator)
        if discriminator is None:
            discriminator = Discriminator(
                discriminator_filters, discriminator_kernel_size, name="discriminator"
            )
        if not discriminator.built:
            # Convolutions, global pooling and a dense layer: any image size, 4 channels.
            side = 2 ** len(discriminator.filters)
            discriminator(ops.zeros((1, side, side, 4)))
        super().__init__(
            threshold=generator.threshold if threshold is None else threshold,
            loss_config=merge_config(generator.loss_config, loss_config),
            optimizer_config=merge_config(ASGN_OPTIMIZER, optimizer_config),
            **kwargs,
        )
        self.base_preset = base_preset
        self.cross_entropy_weight = cross_entropy_weight
        self.discriminator_image_scale = discriminator_image_scale
        self.generator_adversarial_loss = generator_adversarial_loss
        self.adversarial_training = bool(adversarial_training)
        self.real_mask_encoding = real_mask_encoding
        self.scaling_tau = scaling_tau

        # === Networks ===
        self.generator = generator
        self.discriminator = discriminator

        # === Loss trackers (reset each epoch by fit) ===
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_adv_tracker = keras.metrics.Mean(name="g_adv")
        self.g_ce_tracker = keras.metrics.Mean(name="g_ce")
        self._discriminator_optimizer = None
        self._cross_entropy = None

    @staticmethod
    def _new_generator(backbone, vocabulary_size, base_preset, base_size, base_kwargs, **modules):
        from refseg_tf.models.factory import build_preset

        if backbone is None or vocabulary_size is None:
            raise ValueError(
                "ASGN needs `generator`, or `backbone` and `vocabulary_size` to build one from "
                f"`base_preset`; received backbone={backbone!r}, vocabulary_size={vocabulary_size!r}."
            )
        base = build_preset(
            base_preset, int(vocabulary_size), size=base_size, backbone=backbone,
            **dict(base_kwargs or {}),
        )
        return ASGNGenerator(base, name="generator", **modules)

    # --- A plain segmenter at inference -------------------------------------------------------

    @property
    def wrapped(self):
        return self.generator

    def inference_model(self):
        """The generator alone: what prediction, export and TFLite run (no discriminator)."""
        return self.generator

    def call(self, inputs, training=None):
        return self.generator(inputs, training=training)

    # --- Training hooks (CONTRACTS2, issue 8 §4) --------------------------------------------

    @property
    def discriminator_optimizer(self):
        return self._discriminator_optimizer

    def compile(
        self,
        generator_optimizer=None,
        discriminator_optimizer=None,
        loss=None,
        metrics=None,
        optimizer=None,
        **kwargs,
    ):
        """Compiles with a generator and a discriminator optimizer (default Adam 2.5e-4 each).

        `optimizer` is an alias of `generator_optimizer` (what `.keras` re-compiling passes).
        Call it inside the distribution strategy's scope: both optimizers are built there.
        """
        if generator_optimizer is None:
            generator_optimizer = optimizer
        loss = self.default_loss() if loss is None else loss
        super().compile(optimizer=generator_optimizer, loss=loss, metrics=metrics, **kwargs)
        self._cross_entropy = keras.losses.get(loss) if isinstance(loss, str) else loss
        if discriminator_optimizer is None:
            discriminator_optimizer = self.default_optimizer()
        if self.dtype_policy.name == "mixed_float16" and not isinstance(
            discriminator_optimizer, keras.optimizers.LossScaleOptimizer
        ):
            discriminator_optimizer = keras.optimizers.LossScaleOptimizer(discriminator_optimizer)
        self._discriminator_optimizer = discriminator_optimizer
        if self.built:
            self.build_optimizers()

    def build_optimizers(self):
        """Builds each optimizer over its own network's trainable variables (idempotent)."""
        if not self.optimizer.built:
            self.optimizer.build(self.generator.trainable_variables)
        if not self._discriminator_optimizer.built:
            self._discriminator_optimizer.build(self.discriminator.trainable_variables)

    def make_optimizers(self, build_optimizer):
        """`{"generator", "discriminator"}` optimizers from the trainer's `build_optimizer(role)`."""
        return {
            "generator": build_optimizer("generator"),
            "discriminator": build_optimizer("discriminator"),
        }

    def compile_for_training(self, optimizers, **compile_kwargs):
        """Compiles with `make_optimizers`' dict and builds both optimizers (in the scope)."""
        missing = {"generator", "discriminator"} - set(optimizers)
        if missing:
            raise ValueError(
                f"`optimizers` must have keys 'generator' and 'discriminator'; received {sorted(optimizers)}."
            )
        self.compile(
            generator_optimizer=optimizers["generator"],
            discriminator_optimizer=optimizers["discriminator"],
            **compile_kwargs,
        )
        self.build_optimizers()

    def checkpoint_items(self):
        """`tf.train.Checkpoint` items: the model (G and D), G's and D's optimizers."""
        return {
            "model": self,
            "optimizer": self.optimizer,
            "discriminator_optimizer": self._discriminator_optimizer,
        }

    def trainable_for_weight_decay(self):
        """Weight decay covers both networks (each term enters its own network's loss).

        The model itself (its layers are G and D): `apply_weight_decay` walks layers, so a
        list of variables made `refseg-train` fail with an AttributeError.
        """
        return self

    # --- Adversarial losses -----------------------------------------------------------------

    def _cross_entropy_grid(self):
        """`(resolution, label_mode, upsampling)` of the CE the generator is trained with."""
        loss = self._cross_entropy
        if isinstance(loss, WeightedLogisticLoss):  # also SigmoidCrossEntropyLoss
            return loss.resolution, loss.label_mode, loss.upsampling
        config = self.loss_config
        return (
            config.get("resolution", "logits"),
            config.get("label_mode", "binary"),
            config.get("upsampling", "tf1"),
        )

    def _mask_grid(self, logits, image):
        """`(label_mode or None, half_pixel_centers)`: how masks are put on the label grid.

        `label_mode` is None when the CE compares with the mask itself (loss at image
        resolution, or logits already at the image size).
        """
        resolution, label_mode, upsampling = self._cross_entropy_grid()
        if resolution == "image" or tuple(logits.shape[1:3]) == tuple(image.shape[1:3]):
            return None, upsampling == "half_pixel"
        return label_mode, label_grid(label_mode) == "half_pixel"

    @staticmethod
    def _image_size(image):
        size = tuple(image.shape[1:3])
        if any(value is None for value in size):
            size = tuple(ops.shape(image)[1:3])
        return size

    def upsampled_prediction(self, logits, image):
        """`P`: sigmoid(logits) bilinearly upsampled to the image size on the labels' grid."""
        _, half_pixel = self._mask_grid(logits, image)
        probability = ops.sigmoid(ops.cast(logits, "float32"))
        return resize_bilinear(probability, self._image_size(image), half_pixel_centers=half_pixel)

    def ground_truth_mask(self, mask, logits, image):
        """The ground truth as the CE sees it, at the image size on the labels' grid.

        With a loss at the logit grid: the row's label (`refseg_tf.labels.downsample_mask` of
        the mask with the CE's `label_mode`) upsampled as `upsampled_prediction` upsamples the
        prediction; otherwise the mask itself. A prediction equal to the label gives
        `upsampled_prediction(...) == ground_truth_mask(...)`.
        """
        mask = ops.cast(mask, "float32")
        if len(mask.shape) == 3:
            mask = ops.expand_dims(mask, -1)
        label_mode, half_pixel = self._mask_grid(logits, image)
        if label_mode is None:
            return mask
        label = downsample_mask(mask, tuple(logits.shape[1:3]), label_mode)
        return resize_bilinear(label, self._image_size(image), half_pixel_centers=half_pixel)

    def discriminator_input(self, image, mask):
        """D's input `[B, S, S, 4]`: the image times `discriminator_image_scale` ⊕ the mask."""
        image = ops.cast(image, "float32") * self.discriminator_image_scale
        return ops.concatenate([image, ops.cast(mask, "float32")], -1)

    def discriminate(self, image, mask, training=None):
        """D's logits `[B, 1]` for the pairs image ⊕ mask (the image rescaled)."""
        pair = self.discriminator_input(image, mask)
        return ops.cast(self.discriminator(pair, training=training), "float32")

    def real_mask(self, mask, prediction):
        """The real pair's mask: the ground truth, or its "scaling" encoding with `prediction`."""
        mask = ops.cast(mask, "float32")
        if self.real_mask_encoding == "binary":
            return mask
        tau = self.scaling_tau
        return mask * ops.maximum(tau, prediction) + (1.0 - mask) * ops.minimum(1.0 - tau, prediction)

    def discriminator_loss(self, image, mask, logits, training=None):
        """Per-replica mean `BCE(D(x ⊕ M), 1) + BCE(D(x ⊕ sg(P)), 0)` (P detached)."""
        prediction = ops.stop_gradient(self.upsampled_prediction(logits, image))
        truth = self.ground_truth_mask(mask, logits, image)
        real = self.discriminate(image, self.real_mask(truth, prediction), training=training)
        fake = self.discriminate(image, prediction, training=training)
        # BCE with logits: label 1 -> softplus(-z), label 0 -> softplus(z).
        return ops.mean(ops.softplus(-real)) + ops.mean(ops.softplus(fake))

    def generator_adversarial_term(self, image, logits, training=None):
        """Per-replica mean `L_adv` of the generator through the (current) discriminator."""
        fake = self.discriminate(image, self.upsampled_prediction(logits, image), training)
        if self.generator_adversarial_loss == "non_saturating":
            return ops.mean(ops.softplus(-fake))
        return -ops.mean(ops.softplus(fake))

    def train_step(self, data):
        from refseg_tf.models.asgn.training import asgn_train_step

        return asgn_train_step(self, data)

    def get_config(self):
        config = super().get_config()
        config.update(
            generator=keras.saving.serialize_keras_object(self.generator),
            discriminator=keras.saving.serialize_keras_object(self.discriminator),
            base_preset=self.base_preset,
            cross_entropy_weight=self.cross_entropy_weight,
            discriminator_image_scale=self.discriminator_image_scale,
            generator_adversarial_loss=self.generator_adversarial_loss,
            adversarial_training=self.adversarial_training,
            real_mask_encoding=self.real_mask_encoding,
            scaling_tau=self.scaling_tau,
        )
        return config

"""`ReferringSegmenter`: the common interface of every referring-segmentation model."""

import numpy as np
import keras
from keras import ops

from refseg_tf.layers.spatial import resize_bilinear
from refseg_tf.losses import (
    LABEL_MODES,
    LOSS_NAMES,
    LOSS_UPSAMPLINGS,
    PIXEL_REDUCTIONS,
    RESOLUTIONS,
    get_loss,
)
from refseg_tf.metrics import MeanIoU, OverallIoU, PrecisionAtIoU

OPTIMIZER_NAMES = ("sgd", "adam")

# Neutral defaults for keys a loss configuration leaves out (models pass their paper's values).
DEFAULT_LOSS_CONFIG = {
    "name": "sigmoid_cross_entropy",
    "foreground_weight": 1.0,
    "background_weight": 1.0,
    "label_mode": "binary",
    "resolution": "logits",
    # Over the pixels of the loss grid: "mean" (Hu) or "sum" (the RMI/RRN code).
    "reduction": "mean",
    # Pixel grid of the logits' upsampling at resolution "image" (losses.LOSS_UPSAMPLINGS):
    # "tf1", as the RRN code (the only image-resolution losses the papers' code has).
    "upsampling": "tf1",
}
# A neutral default (Keras's Adam); every family passes its paper's optimizer_config.
DEFAULT_OPTIMIZER_CONFIG = {"name": "adam", "learning_rate": 1e-3}

# The allowed values of each loss_config key with a closed set of values.
LOSS_CONFIG_CHOICES = {
    "name": LOSS_NAMES,
    "label_mode": LABEL_MODES,
    "resolution": RESOLUTIONS,
    "reduction": PIXEL_REDUCTIONS,
    "upsampling": LOSS_UPSAMPLINGS,
}


def validate_loss_config(config):
    """Checks a loss configuration dict; returns a plain-dict copy with the defaults filled in."""
    config = dict(DEFAULT_LOSS_CONFIG, **dict(config or {}))
    for key, choices in LOSS_CONFIG_CHOICES.items():
        if config[key] not in choices:
            raise ValueError(
                f"`loss_config[{key!r}]` must be one of {choices}; received {config[key]!r}."
            )
    if config["resolution"] != "image":
        config.pop("upsampling")  # the logits are not upsampled
    if config["name"] == "sigmoid_cross_entropy":
        config.pop("foreground_weight", None)
        config.pop("background_weight", None)
    unknown = set(config) - set(DEFAULT_LOSS_CONFIG)
    if unknown:
        raise ValueError(f"Unknown loss_config keys {sorted(unknown)}.")
    return config


def validate_optimizer_config(config):
    """Checks an optimizer configuration dict; returns a plain-dict copy."""
    config = dict(config or DEFAULT_OPTIMIZER_CONFIG)
    if config.get("name") not in OPTIMIZER_NAMES:
        raise ValueError(
            f"optimizer_config['name'] must be one of {OPTIMIZER_NAMES}; "
            f"got {config.get('name')!r}."
        )
    if "learning_rate" not in config:
        raise ValueError("optimizer_config needs a 'learning_rate'.")
    return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class ReferringSegmenter(keras.Model):
    """Base class: `{"image", "word_ids"}` -> foreground logits, with the paper's training recipe.

    Subclasses build their layers in `__init__`, implement `call` and set `output_stride`.
    The logits are float32 even under a mixed-precision policy.

    `compile()` without arguments uses `default_optimizer()`, `default_loss()` and
    `default_metrics()`; any argument given overrides only that part, so
    `model.compile(); model.fit(load(..., as_supervised=True))` trains with the paper's setup
    (constant learning rate: schedules and weight decay belong to `refseg_tf.training`).

    Args:
        threshold: probability above which a pixel is foreground at prediction (0.5 = logit > 0,
            the authors' rule); also used by `default_metrics()`.
        loss_config: dict for `default_loss()`: `name` ("weighted_logistic" or
            "sigmoid_cross_entropy"), `foreground_weight`, `background_weight`, `label_mode`
            ("any", "soft", "binary", "point"), `resolution` ("logits" or "image"),
            `reduction` over the pixels ("mean" or "sum"; always a mean over the batch).
        optimizer_config: dict for `default_optimizer()`: `name` ("sgd" or "adam"),
            `learning_rate`, and for SGD `momentum`.
        **kwargs: `keras.Model` arguments (`name`, `dtype`, `trainable`).

    Call args:
        inputs: dict with `image` float32 `[B, S, S, 3]` (normalised) and `word_ids` int32
            `[B, T]` (`<pad>` = 0).
        training: Python bool.

    Returns:
        float32 logits `[B, h, w, 1]`, `h = S / output_stride`.

    Example:
        >>> model = build_model(config)          # a ReferringSegmenter subclass
        >>> model.compile()                      # the paper's optimizer, loss and metrics
        >>> model.fit(load(data_dir, "train", as_supervised=True), steps_per_epoch=100)
        >>> probabilities = model.predict_probabilities({"image": images, "word_ids": ids})

    Reference:
        The task and metrics of Hu et al. 2016, Sec. 4; training recipes per model.
    """

    output_stride = 1
    # Preset-level keys `expand_preset_kwargs` replaces by model arguments (e.g. "stage").
    preset_keys = ()

    def __init__(self, *, threshold=0.5, loss_config=None, optimizer_config=None, **kwargs):
        super().__init__(**kwargs)
        threshold = float(threshold)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` must be a probability in (0, 1); received {threshold}.")
        self.threshold = threshold
        self.loss_config = validate_loss_config(loss_config)
        self.optimizer_config = validate_optimizer_config(optimizer_config)

    # ------------------------------------------------------------------ presets

    @classmethod
    def expand_preset_kwargs(cls, preset, kwargs):
        """Replaces the class's `preset_keys` in `kwargs` by the model arguments they stand for.

        Called by `refseg_tf.models.registry.preset_kwargs` with the overrides of a build of
        `preset` (a `Preset` whose `model_class` is this class); returns the new dict. The base
        class has no such keys and returns `kwargs` unchanged.
        """
        return kwargs

    # ------------------------------------------------------------------ capabilities
    # What shared code (evaluation, prediction, export, the web demo, the trainer) may ask of
    # a model. Each has a default here; a family overrides what it has, and shared code asks
    # these, never `hasattr`.

    # Whether `heatmap` gives a localisation heatmap (evaluation then reports its accuracy).
    has_heatmap = False
    # Whether `explain` gives per-step maps (`refseg-predict --explain`, the web demo).
    has_explanation = False
    # Whether `load_word_vectors` sets the word embedding (`train.word_vectors`).
    takes_word_vectors = False
    # Whether `call(inputs, training, detail=, return_features=)` takes ASGN's DE / SE hook:
    # `detail(backbone_features, visual)` joins the fusion input, and `return_features=True`
    # returns `{"logits", "semantic"}` (the visual feature SE reads) on the feature grid, which
    # `output_logits` takes to the output grid.
    has_detail_hook = False
    # The backbone feature the model reads as its image representation (e.g. "fc8", "C5"),
    # None when it reads no single one. Wrappers (ASGN's generator) pass it on.
    visual_feature = None

    def output_logits(self, feature_logits):
        """The output logits (as `call` returns them) from logits on the feature grid.

        Part of the detail hook (`has_detail_hook`): `call(..., return_features=True)` gives
        `logits` before any upsampling layer of the model, and a wrapper that changes them
        (ASGN's SE) finishes with this. Default: unchanged (the output is the feature grid);
        LSTM-CNN's high-resolution stage applies its deconvolution.
        """
        return feature_logits

    def inference_model(self):
        """The network prediction, export and TFLite run (default: the model itself)."""
        return self

    def heatmap(self, inputs, training=False):
        """Localisation heatmap logits `[B, h, w, 1]` (see `has_heatmap`).

        Raises:
            ValueError: the model has no heatmap (the default).
        """
        raise ValueError(f"{type(self).__name__} has no localisation heatmap (has_heatmap=False).")

    def explain(self, inputs, words=None):
        """Per-step maps of one batch, to draw (see `has_explanation`).

        Args:
            inputs: `{"image": [B, S, S, 3], "word_ids": [B, T]}`.
            words: the vocabulary's words by id (`Vocabulary.words`), for models whose steps
                are words (RMI); None labels them by position.

        Returns:
            A dict: `maps` float32 `[B, N, S, S]` and `labels`, one tuple of N labels per
            example; a label None marks a map with nothing to draw (e.g. RMI's pad steps).

        Raises:
            ValueError: the model has no per-step maps (the default).
        """
        raise ValueError(
            f"{type(self).__name__} has no per-step maps to explain (has_explanation=False); "
            "RMI, RRN and LTS have them."
        )

    def load_word_vectors(self, matrix):
        """Sets the word embedding to `matrix` `[vocabulary_size, embedding_dim]` (GloVe).

        Raises:
            ValueError: the model takes no word vectors (the default).
        """
        raise ValueError(
            f"{type(self).__name__} takes no word vectors (takes_word_vectors=False); "
            f"received a {np.shape(matrix)} matrix."
        )

    # ------------------------------------------------------------------ training hooks

    def make_optimizers(self, build_optimizer):
        """The optimizers training uses, by role: `{"optimizer": build_optimizer("model")}`.

        `build_optimizer(role)` is given by the trainer and returns an optimizer built from
        `config.train.optimizer` (schedule, epsilon, clipnorm...). A model trained by several
        optimizers (a GAN's generator and discriminator) returns one per role.
        """
        return {"optimizer": build_optimizer("model")}

    def compile_for_training(self, optimizers, **compile_kwargs):
        """Compiles with the optimizers of `make_optimizers` (and the default loss/metrics)."""
        self.compile(optimizer=optimizers["optimizer"], **compile_kwargs)

    def build_optimizers(self):
        """Creates the variables of every compiled optimizer (before a checkpoint restore, or
        before the train step is traced); a no-op for an optimizer already built."""
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; a built model's optimizers get their variables first.

        Without a distribution strategy Keras creates the optimizer's variables while it
        traces the train step, and a `tf.function` that created variables on its first trace
        is traced a second time without them: the whole train step (forward, gradient,
        update) is traced twice before the first step runs. Building the optimizers first
        traces it once (a tiny LTS's `compile(); fit(...)` on CPU: 8.1 s -> 5.0 s). A model
        not built yet, or one under a strategy (Keras builds its optimizer in the strategy's
        scope before tracing), is left to Keras.
        """
        self._build_optimizers_before_tracing()
        return super().fit(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        """`keras.Model.train_on_batch`, with the optimizers built first as in `fit`."""
        self._build_optimizers_before_tracing()
        return super().train_on_batch(*args, **kwargs)

    def _build_optimizers_before_tracing(self):
        # `_distribute_strategy` is what Keras's TF trainer asks (`_maybe_symbolic_build`): set,
        # Keras itself builds the optimizer in the strategy's scope before tracing.
        if self.built and self.compiled and getattr(self, "_distribute_strategy", None) is None:
            self.build_optimizers()

    def checkpoint_items(self):
        """The objects a training checkpoint saves and restores, by name.

        Default: the model and its (one) optimizer. The optimizer under "optimizer" counts the
        steps trained (`iterations`), which resuming reads.
        """
        return {"model": self, "optimizer": self.optimizer}

    def freeze_for_training(self, config_train):
        """Freezes what the paper froze beyond the backbone settings of `config_train`.

        Default: nothing more. A family overrides it (e.g. the visual-text families freeze the
        ImageNet classifier head their feature does not read, `visual_text.VisualTextSegmenter`).
        """
        del config_train  # the default needs no training setting

    def trainable_for_weight_decay(self):
        """The layers whose variables weight decay may reach (`training.optimizers`): all."""
        return self

    def default_loss(self):
        """The paper's training loss, built from `loss_config`."""
        config = dict(self.loss_config)
        # `reduction` of a loss config is over pixels; Keras's own `reduction` is over the batch.
        config["pixel_reduction"] = config.pop("reduction")
        return get_loss(config.pop("name"), **config)

    def default_optimizer(self):
        """The paper's optimizer at its base learning rate (Hu: SGD momentum 0.9; RMI/RRN: Adam)."""
        config = dict(self.optimizer_config)
        name = config.pop("name")
        if name == "sgd":
            return keras.optimizers.SGD(
                learning_rate=config["learning_rate"], momentum=config.get("momentum", 0.9)
            )
        return keras.optimizers.Adam(learning_rate=config["learning_rate"])

    def default_metrics(self):
        """Overall IoU, mean IoU and precision@0.5, on logits against the full-size mask."""
        return [
            OverallIoU(probability_threshold=self.threshold),
            MeanIoU(probability_threshold=self.threshold),
            PrecisionAtIoU(0.5, probability_threshold=self.threshold),
        ]

    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """`keras.Model.compile` where each of optimizer, loss, metrics defaults to the paper's."""
        super().compile(
            optimizer=self.default_optimizer() if optimizer is None else optimizer,
            loss=self.default_loss() if loss is None else loss,
            metrics=self.default_metrics() if metrics is None else metrics,
            **kwargs,
        )

    def compile_from_config(self, config):
        """Re-compiles a loaded model with its saved optimizer, loss and metrics."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def logits_to_probabilities(self, logits, size):
        """Sigmoid of the logits bilinearly upsampled to `size = (H, W)`; float32 `[B, H, W, 1]`."""
        return ops.sigmoid(resize_bilinear(logits, size))

    def predict_probabilities(self, inputs, batch_size=None):
        """Foreground probabilities at the input image size, as a numpy array `[N, S, S, 1]`.

        Args:
            inputs: a dict `{"image", "word_ids"}` of arrays, or an iterable of batches (e.g. a
                `tf.data.Dataset`) yielding such dicts or `(dict, target)` pairs.
            batch_size: batch size for a dict input (default: all at once in `predict`'s
                default batches of 32).
        """
        if isinstance(inputs, dict):
            logits = self.predict(inputs, batch_size=batch_size, verbose=0)
            size = tuple(int(v) for v in np.shape(inputs["image"])[1:3])
            return np.asarray(self.logits_to_probabilities(logits, size))
        outputs = []
        for batch in inputs:
            features = batch[0] if isinstance(batch, (tuple, list)) else batch
            logits = self.predict_on_batch(features)
            size = tuple(int(v) for v in np.shape(features["image"])[1:3])
            outputs.append(np.asarray(self.logits_to_probabilities(logits, size)))
        if not outputs:
            raise ValueError("predict_probabilities received an empty input iterable.")
        return np.concatenate(outputs, axis=0)

    def predict_masks(self, inputs, batch_size=None, scoring_rule="upsample_logits"):
        """Boolean masks `[N, S, S, 1]` at the input size, by `refseg_tf.scoring`'s rule.

        "upsample_logits" (the authors'): TF1 bilinear logits, logit >= 1e-9 at threshold 0.5;
        "resize_probability": `predict_probabilities(...) >= threshold`.
        """
        from refseg_tf import scoring

        if scoring.check_scoring_rule(scoring_rule) == "resize_probability":
            return self.predict_probabilities(inputs, batch_size) >= self.threshold
        batches = [inputs] if isinstance(inputs, dict) else inputs
        masks = []
        for batch in batches:
            features = batch[0] if isinstance(batch, (tuple, list)) else batch
            if isinstance(inputs, dict):
                logits = self.predict(features, batch_size=batch_size, verbose=0)
            else:
                logits = self.predict_on_batch(features)
            size = tuple(int(v) for v in np.shape(features["image"])[1:3])
            binary = scoring.input_resolution_masks(logits, size, scoring_rule, self.threshold)
            masks.append(np.asarray(binary) > 0)
        if not masks:
            raise ValueError("predict_masks received an empty input iterable.")
        return np.concatenate(masks, axis=0)

    @staticmethod
    def check_inputs(inputs):
        """Raises a clear error unless `inputs` is a dict with `image` and `word_ids`."""
        if not isinstance(inputs, dict) or not {"image", "word_ids"} <= set(inputs):
            received = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(
                "A ReferringSegmenter takes a dict with 'image' [B, S, S, 3] and 'word_ids' "
                f"[B, T]; received {received}."
            )
        return inputs["image"], inputs["word_ids"]

    def get_config(self):
        config = super().get_config()
        config.update(
            threshold=self.threshold,
            loss_config=dict(self.loss_config),
            optimizer_config=dict(self.optimizer_config),
        )
        return config

    @classmethod
    def from_config(cls, config):
        """Rebuilds a subclass whose config holds a serialised `backbone` (see `get_config`)."""
        config = dict(config)
        if "backbone" in config:
            config["backbone"] = resolve_backbone(config["backbone"])
        return cls(**config)



def merge_config(defaults, overrides):
    """A copy of the dict `defaults` updated with `overrides` (None changes nothing)."""
    merged = dict(defaults)
    merged.update(dict(overrides or {}))
    return merged


def resolve_backbone(backbone):
    """A backbone instance from an instance or its `keras.saving.serialize_keras_object` dict."""
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
        # A `trainable=False` constructor argument does not reach the sub-layers and their
        # variables, and re-assigning the same value is a no-op in Keras 3.15: toggle the flag
        # so a frozen backbone stays frozen after loading.
        if not backbone.trainable:
            backbone.trainable = True
            backbone.trainable = False
    if not isinstance(backbone, keras.Model) or not hasattr(backbone, "feature_strides"):
        raise TypeError(
            "backbone must be a refseg_tf.backbones.Backbone (a keras.Model returning a dict of "
            f"features with feature_strides/feature_channels); got {type(backbone).__name__}."
        )
    return backbone


def check_feature(backbone, feature, argument):
    """Raises a ValueError naming `argument` unless `backbone` outputs the feature `feature`."""
    if feature not in backbone.feature_strides:
        raise ValueError(
            f"{argument}={feature!r} is not a feature of backbone {backbone.name!r}; "
            f"available: {list(backbone.feature_names)}."
        )
    return feature


def dummy_inputs(image_size, sequence_length, batch_size=1):
    """A zero image batch `[B, S, S, 3]` and all-`<pad>` word ids `[B, T]` (numpy)."""
    return {
        "image": np.zeros((batch_size, image_size, image_size, 3), np.float32),
        "word_ids": np.zeros((batch_size, sequence_length), np.int32),
    }


def build_with_dummy_inputs(model, image_size=None, sequence_length=2):
    """Creates every weight of a subclassed model by calling it once on `dummy_inputs`.

    `image_size` defaults to twice the model's coarsest stride used (enough for a 2x2 grid).
    """
    if image_size is None:
        image_size = 2 * max(model.backbone.feature_strides.values())
    model(dummy_inputs(int(image_size), int(sequence_length)), training=False)
    return model

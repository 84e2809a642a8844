"""refseg_tf.models: referring-segmentation models and `build_model(config)`."""

import inspect

import refseg_tf.backbones  # noqa: F401  (registers the backbone classes for load_model)
from refseg_tf.models.base import ReferringSegmenter, build_with_dummy_inputs
from refseg_tf.models.lstm_cnn import (
    HU_HIGH_RES_LOSS,
    HU_LOW_RES_LOSS,
    HU_OPTIMIZER,
    LSTMCNN,
)
from refseg_tf.models.presets import (
    PRESETS,
    SIZES,
    Preset,
    build_preset,
    get_preset,
    list_presets,
    preset_kwargs,
)
from refseg_tf.models.asgn import ASGN, Discriminator, register as _register_asgn
from refseg_tf.models.lts import LTS, register as _register_lts
from refseg_tf.models.rmi import RMI, MultimodalLSTM, register as _register_rmi
from refseg_tf.models.rrn import (
    RRN,
    RRN_AUTHORS_CODE,
    RRN_LOSS,
    RRN_OPTIMIZER,
    RRN_VARIANTS,
    TABLE1_ROWS,
)

__all__ = [
    "ASGN",
    "Discriminator",
    "HU_HIGH_RES_LOSS",
    "HU_LOW_RES_LOSS",
    "HU_OPTIMIZER",
    "LSTMCNN",
    "LTS",
    "MultimodalLSTM",
    "PRESETS",
    "Preset",
    "RMI",
    "RRN",
    "RRN_AUTHORS_CODE",
    "RRN_LOSS",
    "RRN_OPTIMIZER",
    "RRN_VARIANTS",
    "ReferringSegmenter",
    "SIZES",
    "TABLE1_ROWS",
    "build_model",
    "build_preset",
    "build_with_dummy_inputs",
    "get_preset",
    "list_presets",
    "preset_kwargs",
]

_register_rmi()  # the r_rmi / d_rmi presets (refseg_tf.models.rmi.presets)
_register_lts()  # the lts / lts_trans presets (refseg_tf.models.lts.presets)
_register_asgn()  # the asgn_* presets (refseg_tf.models.asgn.presets)

# Keys of the `model` section that are not model keyword arguments.
_SECTION_KEYS = ("name", "vocabulary_size", "size", "backbone", "loss", "optimizer")
# Accepted besides the model constructor's own keyword arguments.
_EXTRA_KEYS = ("stage", "table1_row", "dtype", "trainable")


def _as_dict(section):
    if section is None:
        return {}
    if hasattr(section, "to_dict"):
        return section.to_dict()
    return dict(section)


def _backbone_spec(value):
    """`config.model.backbone` -> (name or None, kwargs)."""
    if value is None or isinstance(value, str):
        return value, {}
    spec = _as_dict(value)
    unknown = set(spec) - {"name", "kwargs"}
    if unknown:
        raise ValueError(
            f"config.model.backbone takes 'name' and 'kwargs'; unknown keys {sorted(unknown)}."
        )
    return spec.get("name"), _as_dict(spec.get("kwargs"))


def _check_model_keys(preset, kwargs):
    parameters = inspect.signature(preset.model_class.__init__).parameters
    allowed = set(parameters) - {"self", "backbone", "vocabulary_size", "kwargs"}
    unknown = set(kwargs) - allowed - set(_EXTRA_KEYS)
    if unknown:
        raise ValueError(
            f"config.model has keys {sorted(unknown)} that model {preset.name!r} "
            f"({preset.model_class.__name__}) does not take; allowed: "
            f"{sorted(allowed | set(_EXTRA_KEYS))}."
        )


def build_model(config):
    """Builds a `ReferringSegmenter` from an `ml_collections.ConfigDict` (or a dict).

    Reads `config.model` (or `config` itself when it has no `model` section):

    - `name` (str, required): a preset, one of "lstm_cnn", "r_lstm", "d_lstm",
      "d_lstm_ours", "rrn", "r_rmi", "d_rmi", "lts", "lts_trans" (see
      `refseg_tf.models.presets`).
    - `vocabulary_size` (int, required): size of the dataset's `vocab.txt`.
    - `size` (str, default "paper"): "paper" or "tiny" (few channels, for tests).
    - `backbone` (optional): a backbone name, or a section with `name` (str; default the
      preset's: "vgg16_fcn" for lstm_cnn, "resnet101_os8" otherwise) and `kwargs` (dict of
      `get_backbone` constructor arguments, e.g. `{"output_stride": 8}`).
    - `loss` (optional dict): overrides of the preset's loss configuration: `name`
      ("weighted_logistic" | "sigmoid_cross_entropy"), `foreground_weight`,
      `background_weight`, `label_mode` ("any" | "soft" | "binary" | "point"), `resolution`
      ("logits" | "image"), `reduction` over the pixels ("mean" | "sum").
    - `optimizer` (optional dict): overrides of the preset's optimizer configuration:
      `name` ("sgd" | "adam"), `learning_rate`, `momentum`.
    - `stage` (lstm_cnn only): "low" (default) or "high" (bilinear deconvolution, Hu's
      high-resolution loss).
    - `table1_row` (rrn only): 3-15, the variant and pyramid of that row of RRN's Table 1.
    - any other key: a keyword argument of the preset's model class, e.g. `threshold`,
      `embedding_dim`, `text_units`, `classifier_units`, `score_kernel_size`,
      `visual_feature`, `visual_projection_dim`, `upsampling`, `mask_text_padding` (LSTMCNN) or `fused_channels`,
      `pyramid`, `variant`, `kernel_size`, `initial_state`, `lstm_cell`, `peephole` (RRN).

    Example:
        >>> config = ml_collections.ConfigDict()
        >>> config.model = dict(name="rrn", vocabulary_size=12112, variant="lstm_tanh",
        ...                     backbone=dict(name="resnet101_os8", kwargs={}))
        >>> model = build_model(config)

    Returns:
        The model, randomly initialised and not compiled (backbone weights are loaded by the
        training code with `refseg_tf.backbones.load_*_weights`).
    """
    section = config["model"] if "model" in config else config
    section = _as_dict(section)
    if not section.get("name"):
        raise ValueError("config.model.name is required (one of %s)." % list_presets())
    if not section.get("vocabulary_size"):
        raise ValueError(
            "config.model.vocabulary_size is required: the number of lines of the dataset's "
            "vocab.txt (refseg_tf.training fills it in when it is 0)."
        )
    preset = get_preset(section["name"])
    backbone_name, backbone_kwargs = _backbone_spec(section.get("backbone"))
    kwargs = {key: value for key, value in section.items() if key not in _SECTION_KEYS}
    _check_model_keys(preset, kwargs)
    if section.get("loss") is not None:
        kwargs["loss_config"] = _as_dict(section["loss"])
    if section.get("optimizer") is not None:
        kwargs["optimizer_config"] = _as_dict(section["optimizer"])
    return build_preset(
        preset.name,
        int(section["vocabulary_size"]),
        size=section.get("size", "paper"),
        backbone=backbone_name,
        backbone_kwargs=backbone_kwargs,
        **kwargs,
    )

"""`build_model(config)` and `build_preset(name, ...)`: models from the preset registry."""

import inspect

from refseg_tf.models.base import build_with_dummy_inputs
from refseg_tf.models.registry import (
    check_input_contract,
    get_preset,
    list_presets,
    preset_keys,
    preset_kwargs,
)

# Keys of the `model` section that are not model keyword arguments.
_SECTION_KEYS = ("name", "vocabulary_size", "size", "backbone", "loss", "optimizer")
# Accepted by every model besides its constructor's own keyword arguments.
_KERAS_KEYS = ("dtype", "trainable")


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
            f"`config.model.backbone` must have only 'name' and 'kwargs'; received unknown "
            f"keys {sorted(unknown)}."
        )
    return spec.get("name"), _as_dict(spec.get("kwargs"))


def _check_model_keys(preset, kwargs):
    model_class = preset.model_class
    parameters = inspect.signature(model_class.__init__).parameters
    allowed = set(parameters) - {"self", "backbone", "vocabulary_size", "kwargs"}
    allowed |= set(_KERAS_KEYS) | set(model_class.preset_keys)
    unknown = set(kwargs) - allowed - set(preset_keys())
    if unknown:
        raise ValueError(
            f"config.model has keys {sorted(unknown)} that model {preset.name!r} "
            f"({model_class.__name__}) does not take; allowed: {sorted(allowed)}."
        )


def build_preset(
    name, vocabulary_size, *, size="paper", backbone=None, backbone_kwargs=None, **overrides
):
    """Builds the model of preset `name`.

    Args:
        name: one of `list_presets()`, e.g. "lstm_cnn", "r_lstm", "d_lstm", "d_lstm_ours",
            "rrn", "r_rmi", "d_rmi", "lts", "lts_trans".
        vocabulary_size: number of word ids (ReferIt 8,803; the COCO datasets 12,112).
        size: "paper" (the papers' dimensions) or "tiny" (few channels, for tests).
        backbone: backbone name overriding the preset's (e.g. "resnet101_os8" for lstm_cnn),
            or a built `Backbone`.
        backbone_kwargs: constructor arguments of the backbone (override the tiny preset).
        **overrides: model keyword arguments, and the keys the model class expands
            (`preset_kwargs`: `stage`, `table1_row`).

    Returns:
        A `ReferringSegmenter` (randomly initialised; load backbone weights separately).

    Example:
        >>> model = build_preset("lstm_cnn", 8803, stage="low")
        >>> tiny = build_preset("rrn", 20, size="tiny", table1_row=9)
    """
    from refseg_tf.backbones import get_backbone

    preset = get_preset(name)
    kwargs = preset_kwargs(name, size, **overrides)
    if backbone is None or isinstance(backbone, str):
        backbone = get_backbone(
            backbone or preset.backbone, tiny=size == "tiny", **dict(backbone_kwargs or {})
        )
    elif backbone_kwargs:
        raise ValueError(
            "`backbone_kwargs` must be empty when `backbone` is already built; received "
            f"{sorted(backbone_kwargs)}."
        )
    return preset.model_class(backbone, vocabulary_size, **kwargs)


def build_model(config, *, build=False):
    """Builds a `ReferringSegmenter` from an `ml_collections.ConfigDict` (or a dict).

    Reads `config.model` (or `config` itself when it has no `model` section):

    - `name` (str, required): a registered preset (`list_presets()`).
    - `vocabulary_size` (int, required): size of the dataset's `vocab.txt`.
    - `size` (str, default "paper"): "paper" or "tiny" (few channels, for tests).
    - `backbone` (optional): a backbone name, or a section with `name` (str; default the
      preset's) and `kwargs` (dict of `get_backbone` constructor arguments, e.g.
      `{"output_stride": 8}`).
    - `loss` (optional dict): overrides of the preset's loss configuration: `name`
      ("weighted_logistic" | "sigmoid_cross_entropy"), `foreground_weight`,
      `background_weight`, `label_mode` ("any" | "soft" | "binary" | "point"), `resolution`
      ("logits" | "image"), `reduction` over the pixels ("mean" | "sum").
    - `optimizer` (optional dict): overrides of the preset's optimizer configuration (used by
      `model.compile()`; `refseg-train` builds its optimizer from `train.optimizer`).
    - the keys the preset's model class expands (`preset_keys`): `stage` (lstm_cnn: "low" or
      "high"), `table1_row` (rrn: 3-15, the variant and pyramid of that row of RRN's Table 1).
    - any other key: a keyword argument of the preset's model class, e.g. `threshold`,
      `embedding_dim`, `text_units`, `classifier_units`, `visual_feature`, `fused_channels`,
      `pyramid`, `variant`, `mlstm_units`, `localization`.

    Args:
        config: the configuration.
        build: also create every weight by calling the model once on a zero batch of
            `config.data.image_size` and `config.data.max_length` (what training and loading a
            checkpoint need).

    Example:
        >>> config = ml_collections.ConfigDict()
        >>> config.model = dict(name="rrn", vocabulary_size=12112, variant="lstm_tanh",
        ...                     backbone=dict(name="resnet101_os8", kwargs={}))
        >>> model = build_model(config)

    Returns:
        The model, randomly initialised and not compiled (backbone weights are loaded by the
        training code, `refseg_tf.backbones.load_backbone_weights`).
    """
    section = config["model"] if "model" in config else config
    section = _as_dict(section)
    if not section.get("name"):
        raise ValueError(
            f"`config.model.name` must be one of {list_presets()}; "
            f"received {section.get('name')!r}."
        )
    if not section.get("vocabulary_size"):
        raise ValueError(
            "`config.model.vocabulary_size` must be the number of lines of the dataset's "
            "vocab.txt (refseg_tf.training fills it in when it is 0); received "
            f"{section.get('vocabulary_size')!r}."
        )
    preset = get_preset(section["name"])
    if build:  # the input size the model is built at must be one it takes
        check_input_contract(preset.name, config["data"], prefix="data.")
    backbone_name, backbone_kwargs = _backbone_spec(section.get("backbone"))
    kwargs = {key: value for key, value in section.items() if key not in _SECTION_KEYS}
    _check_model_keys(preset, kwargs)
    if section.get("loss") is not None:
        kwargs["loss_config"] = _as_dict(section["loss"])
    if section.get("optimizer") is not None:
        kwargs["optimizer_config"] = _as_dict(section["optimizer"])
    model = build_preset(
        preset.name,
        int(section["vocabulary_size"]),
        size=section.get("size", "paper"),
        backbone=backbone_name,
        backbone_kwargs=backbone_kwargs,
        **kwargs,
    )
    if build:
        data = config["data"]
        build_with_dummy_inputs(model, int(data["image_size"]), int(data["max_length"]))
    return model

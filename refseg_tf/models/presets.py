"""Named model presets: the papers' configurations at paper scale, plus a tiny size for tests."""

import dataclasses
from typing import Any, Mapping

from refseg_tf.models.lstm_cnn import HU_HIGH_RES_LOSS, HU_LOW_RES_LOSS, LSTMCNN
from refseg_tf.models.rrn import RRN, TABLE1_ROWS

SIZES = ("paper", "tiny")
HU_STAGES = ("low", "high")

# RMI Sec. 3.2 / Eq. 6: BCE at the 40x40 feature grid against the downsampled mask. The
# authors' code (`LSTM_model.py` train_op, `util/loss.py`): the target is TF1 resize_bilinear
# of the 320 mask ("point": pixel (8i, 8j)) and the loss is summed over the grid (the paper's
# Eq. 6 writes a mean).
RMI_BASELINE_LOSS = {
    "name": "sigmoid_cross_entropy",
    "label_mode": "point",
    "resolution": "logits",
    "reduction": "sum",
}
# RRN Sec. 4.2.1: D-LSTM-ours computes the loss at image resolution; summed over the pixels
# as the RRN code's `util/loss.py`.
IMAGE_RESOLUTION_BCE = {
    "name": "sigmoid_cross_entropy",
    "label_mode": "binary",
    "resolution": "image",
    "reduction": "sum",
}
ADAM_RMI = {"name": "adam", "learning_rate": 2.5e-4}

# Text/fusion sizes of the tiny variants (the backbone comes from backbones.TINY_PRESETS).
TINY_TEXT = {"embedding_dim": 8, "text_units": 16}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model configuration.

    Attributes:
        name: preset name.
        model_class: the `ReferringSegmenter` subclass.
        backbone: backbone name for `refseg_tf.backbones.get_backbone`.
        kwargs: model keyword arguments at paper scale.
        tiny_kwargs: keyword arguments that replace `kwargs` entries for `size="tiny"`.
        reference: the paper and section the configuration comes from.
    """

    name: str
    model_class: type
    backbone: str
    kwargs: Mapping[str, Any]
    tiny_kwargs: Mapping[str, Any]
    reference: str


PRESETS = {
    "lstm_cnn": Preset(
        name="lstm_cnn",
        model_class=LSTMCNN,
        backbone="vgg16_fcn",
        kwargs=dict(
            visual_feature="fc8",
            embedding_dim=1000,
            text_units=1000,
            classifier_units=500,
            upsampling="none",
            mask_text_padding=False,  # Hu's code runs the LSTM over the front <pad> steps
        ),
        tiny_kwargs=dict(TINY_TEXT, classifier_units=8),
        reference="Hu et al. 2016, Sec. 3 and 4.2 (VGG-16 fc8, D_im = D_text = 1000, D_cls = 500)",
    ),
    "r_lstm": Preset(
        name="r_lstm",
        model_class=LSTMCNN,
        backbone="resnet101_os8",
        kwargs=dict(
            visual_feature="fc1000",
            embedding_dim=1000,
            text_units=1000,
            classifier_units=500,
            loss_config=RMI_BASELINE_LOSS,
            optimizer_config=ADAM_RMI,
        ),
        tiny_kwargs=dict(TINY_TEXT, classifier_units=8),
        reference="Liu et al. 2017 (RMI), Sec. 3.2 and 4 (R+LSTM; ResNet-101 fc1000 at stride 8)",
    ),
    "d_lstm": Preset(
        name="d_lstm",
        model_class=LSTMCNN,
        backbone="resnet101_os8",
        kwargs=dict(
            visual_feature="C5",
            visual_projection_dim=1000,
            embedding_dim=1000,
            text_units=1000,
            classifier_units=500,
            loss_config=RMI_BASELINE_LOSS,
            optimizer_config=ADAM_RMI,
        ),
        tiny_kwargs=dict(TINY_TEXT, classifier_units=8, visual_projection_dim=8),
        reference="Liu et al. 2017 (RMI), Sec. 3.2 (D+LSTM; res5c projected to 1000 as its code)",
    ),
    "d_lstm_ours": Preset(
        name="d_lstm_ours",
        model_class=LSTMCNN,
        backbone="resnet101_os8",
        kwargs=dict(
            visual_feature="C5",
            visual_projection_dim=1000,
            embedding_dim=1000,
            text_units=1000,
            classifier_units=500,
            score_kernel_size=3,
            loss_config=IMAGE_RESOLUTION_BCE,
            optimizer_config=ADAM_RMI,
        ),
        tiny_kwargs=dict(TINY_TEXT, classifier_units=8, visual_projection_dim=8),
        reference="Li et al. 2018 (RRN), Sec. 4.2.1 and Table 1 row 2 (3x3 last conv, image loss)",
    ),
    "rrn": Preset(
        name="rrn",
        model_class=RRN,
        backbone="resnet101_os8",
        kwargs=dict(
            visual_feature="C5",
            visual_projection_dim=1000,
            embedding_dim=1000,
            text_units=1000,
            fused_channels=500,
            pyramid=("C5", "C4", "C3"),
            variant="lstm_tanh",
        ),
        tiny_kwargs=dict(TINY_TEXT, fused_channels=8, visual_projection_dim=8),
        reference="Li et al. 2018 (RRN), Sec. 3.2-3.3 and Table 1 row 12",
    ),
}


def list_presets():
    """Names of the available presets."""
    return sorted(PRESETS)


def get_preset(name):
    """The `Preset` called `name` (ValueError listing the names otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown model preset {name!r}; expected one of {list_presets()}.")
    return PRESETS[name]


def _stage_kwargs(preset, kwargs):
    """Maps `stage` ("low"/"high", LSTM-CNN only) onto upsampling and Hu's loss of that stage."""
    stage = kwargs.pop("stage", None)
    if stage is None:
        return kwargs
    if preset.name != "lstm_cnn":
        raise ValueError(f"'stage' applies to the lstm_cnn preset only, not {preset.name!r}.")
    if stage not in HU_STAGES:
        raise ValueError(f"stage must be one of {HU_STAGES}; got {stage!r}.")
    high = stage == "high"
    stage_kwargs = dict(
        upsampling="deconv" if high else "none",
        loss_config=HU_HIGH_RES_LOSS if high else HU_LOW_RES_LOSS,
    )
    stage_kwargs.update(kwargs)
    return stage_kwargs


def _table1_kwargs(preset, kwargs):
    """Expands `table1_row` (3-15, RRN only) into the row's variant and pyramid."""
    row = kwargs.pop("table1_row", None)
    if row is None:
        return kwargs
    if preset.name != "rrn":
        raise ValueError(f"'table1_row' applies to the rrn preset only, not {preset.name!r}.")
    if int(row) not in TABLE1_ROWS:
        raise ValueError(
            f"table1_row must be one of {sorted(TABLE1_ROWS)} (rows 1-2 are the presets "
            f"'d_lstm' and 'd_lstm_ours'); got {row!r}."
        )
    row_kwargs = dict(TABLE1_ROWS[int(row)])
    row_kwargs.update(kwargs)
    return row_kwargs


def preset_kwargs(name, size="paper", **overrides):
    """The model keyword arguments of preset `name` at `size`, with `overrides` applied.

    Special keys: `stage` ("low"/"high") for "lstm_cnn"; `table1_row` (3-15) for "rrn".
    `loss_config` / `optimizer_config` overrides are merged key by key into the preset's.
    """
    preset = get_preset(name)
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}; got {size!r}.")
    kwargs = dict(preset.kwargs)
    if size == "tiny":
        kwargs.update(preset.tiny_kwargs)
    overrides = _table1_kwargs(preset, _stage_kwargs(preset, dict(overrides)))
    for key in ("loss_config", "optimizer_config"):
        if key in overrides and key in kwargs:
            overrides[key] = dict(kwargs[key], **dict(overrides[key] or {}))
    kwargs.update(overrides)
    return kwargs


def build_preset(
    name, vocabulary_size, *, size="paper", backbone=None, backbone_kwargs=None, **overrides
):
    """Builds the model of preset `name`.

    Args:
        name: one of `list_presets()`: "lstm_cnn", "r_lstm", "d_lstm", "d_lstm_ours", "rrn".
        vocabulary_size: number of word ids (ReferIt 8,803; the COCO datasets 12,112).
        size: "paper" (the papers' dimensions) or "tiny" (few channels, for tests).
        backbone: backbone name overriding the preset's (e.g. "resnet101_os8" for lstm_cnn),
            or a built `Backbone`.
        backbone_kwargs: constructor arguments of the backbone (override the tiny preset).
        **overrides: model keyword arguments (see `preset_kwargs` for `stage`/`table1_row`).

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
        raise ValueError("backbone_kwargs cannot be applied to an already built backbone.")
    return preset.model_class(backbone, vocabulary_size, **kwargs)

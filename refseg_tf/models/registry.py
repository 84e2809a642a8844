"""The preset registry: named model configurations that each family package registers.

A family registers its presets when its package is imported (`register_preset` in its
`presets.py`); `refseg_tf.models` imports every family package once. The registry names no
model: a preset carries its model class, and the class expands its own special keys
(`ReferringSegmenter.expand_preset_kwargs`, e.g. LSTM-CNN's `stage`, RRN's `table1_row`).
"""

import dataclasses
from typing import Any, Mapping

SIZES = ("paper", "tiny")

# name -> Preset, filled by the family packages.
PRESETS = {}


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


def register_preset(preset):
    """Adds `preset` to the registry; returns it. Registering the same preset again is a no-op.

    Raises:
        ValueError: another preset of the same name is registered.
    """
    if not isinstance(preset, Preset):
        raise ValueError(f"`preset` must be a Preset; received {type(preset).__name__}.")
    existing = PRESETS.get(preset.name)
    if existing is not None and existing != preset:
        raise ValueError(
            f"`preset.name` must be new; received {preset.name!r}, already registered by "
            f"{existing.model_class.__name__}."
        )
    PRESETS[preset.name] = preset
    return preset


def list_presets():
    """Names of the registered presets."""
    return sorted(PRESETS)


def get_preset(name):
    """The `Preset` called `name` (ValueError listing the names otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown model preset {name!r}; expected one of {list_presets()}.")
    return PRESETS[name]


def preset_keys():
    """Keys some registered model class expands (`preset_keys` of each class), sorted."""
    keys = set()
    for preset in PRESETS.values():
        keys.update(getattr(preset.model_class, "preset_keys", ()))
    return sorted(keys)


def preset_kwargs(name, size="paper", **overrides):
    """The model keyword arguments of preset `name` at `size`, with `overrides` applied.

    Keys the preset's model class expands (`expand_preset_kwargs`) are replaced by what they
    stand for: `stage` ("low"/"high") for "lstm_cnn", `table1_row` (3-15) for "rrn".
    `loss_config` / `optimizer_config` overrides are merged key by key into the preset's.
    """
    preset = get_preset(name)
    if size not in SIZES:
        raise ValueError(f"`size` must be one of {SIZES}; received {size!r}.")
    kwargs = dict(preset.kwargs)
    if size == "tiny":
        kwargs.update(preset.tiny_kwargs)
    overrides = preset.model_class.expand_preset_kwargs(preset, dict(overrides))
    unexpanded = set(overrides) & set(preset_keys())
    if unexpanded:
        raise ValueError(
            f"{sorted(unexpanded)} do not apply to preset {name!r} "
            f"({preset.model_class.__name__}); received {sorted(overrides)}."
        )
    for key in ("loss_config", "optimizer_config"):
        if key in overrides and key in kwargs:
            overrides[key] = dict(kwargs[key], **dict(overrides[key] or {}))
    kwargs.update(overrides)
    return kwargs

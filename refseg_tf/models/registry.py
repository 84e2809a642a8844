"""The preset registry: named model configurations that each family package registers.

A family registers its presets when its package is imported (`register_preset` in its
`presets.py`); `refseg_tf.models` imports every family package once. The registry names no
model: a preset carries its model class, and the class expands its own special keys
(`ReferringSegmenter.expand_preset_kwargs`, e.g. LSTM-CNN's `stage`, RRN's `table1_row`).
"""

import dataclasses
from typing import Any, Mapping

SIZES = ("paper", "tiny")
TEXT_PADDINGS = ("front", "back")


@dataclasses.dataclass(frozen=True)
class InputContract:
    """What a preset's model needs of its inputs: the preprocessing settings it accepts.

    Attributes:
        image_size_multiple: the network input side S must be a multiple of this (LTS: 32,
            it fuses strides 32, 16 and 8 by 2x upsampling); 1 accepts any S.
        text_paddings: the `text_padding` values its text encoder reads (LTS: "back").

    Checked in one place, `check_input_contract` (`training.config.validate_config` and
    `build_model(config, build=True)` call it); tests ask it (`valid_image_size`,
    `text_paddings`) instead of naming a family.
    """

    image_size_multiple: int = 1
    text_paddings: tuple = TEXT_PADDINGS

    def __post_init__(self):
        if isinstance(self.image_size_multiple, bool) or not isinstance(
            self.image_size_multiple, int
        ) or self.image_size_multiple < 1:
            raise ValueError(
                "`image_size_multiple` must be a positive integer; received "
                f"{self.image_size_multiple!r}."
            )
        if not self.text_paddings or not set(self.text_paddings) <= set(TEXT_PADDINGS):
            raise ValueError(
                f"`text_paddings` must be a non-empty subset of {TEXT_PADDINGS}; received "
                f"{self.text_paddings!r}."
            )

    def problems(self, preset_name, settings, prefix=""):
        """The violations of `settings` (a mapping with `image_size` / `text_padding`; keys
        it lacks are not checked), each naming the preset, the key (`prefix` + key) and the
        value; an empty list when it holds."""
        found = []
        image_size = settings.get("image_size")
        if image_size is not None and int(image_size) % self.image_size_multiple:
            found.append(
                f"preset {preset_name!r} needs `{prefix}image_size` a multiple of "
                f"{self.image_size_multiple}; received {image_size!r} (the next valid size: "
                f"{self.valid_image_size(int(image_size))})"
            )
        padding = settings.get("text_padding")
        if padding is not None and padding not in self.text_paddings:
            found.append(
                f"preset {preset_name!r} needs `{prefix}text_padding` one of "
                f"{self.text_paddings}; received {padding!r}"
            )
        return found

    def valid_image_size(self, near):
        """The smallest image size >= `near` that this contract accepts."""
        multiple = self.image_size_multiple
        return -(-int(near) // multiple) * multiple

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
        input_contract: the preprocessing settings the model accepts (`InputContract`; the
            default accepts any image size and both text paddings).
    """

    name: str
    model_class: type
    backbone: str
    kwargs: Mapping[str, Any]
    tiny_kwargs: Mapping[str, Any]
    reference: str
    input_contract: InputContract = InputContract()


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


def check_input_contract(name, settings, prefix=""):
    """THE check of a preset's input contract: raises a ValueError naming the preset, the key
    and the value when `settings` (e.g. `config.data`, or `{"image_size": 300}`) break
    `get_preset(name).input_contract`.

    Example:
        >>> check_input_contract("lts", {"image_size": 300})
        ValueError: preset 'lts' needs `image_size` a multiple of 32; received 300 (...)
    """
    problems = get_preset(name).input_contract.problems(name, settings, prefix)
    if problems:
        raise ValueError("; ".join(problems) + ".")


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

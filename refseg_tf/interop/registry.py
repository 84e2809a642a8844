"""The registry of checkpoint formats `refseg-import --format=NAME` knows."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from refseg_tf.interop.assign import TF1_TRAINING_STATE


@dataclasses.dataclass(frozen=True)
class ImportFormat:
    """One authors' checkpoint format: how its variables fill a refseg-tf model.

    Args:
        name: the `--format` value ("text_objseg", "phrasecut_lstm", ...).
        assign: `assign(model, plan, options)` fills the `AssignmentPlan` with every weight
            of `model` (a built model of the config's family), reading checkpoint variables
            by the authors' names. It must not assign anything itself.
        configure: optional `configure(config)`, run before the model is built: sets what the
            authors' weights imply (e.g. the input normalisation they were trained with,
            `data.tokenizer = "authors"`); may raise ValueError for a config the format
            cannot fill (e.g. another model family).
        check_model: optional `check_model(model)`: raises ValueError naming what the built
            model has that the format cannot fill.
        ignore: regular expressions of checkpoint variables that are training state
            (default `TF1_TRAINING_STATE`: optimizer slots, global_step).
        defaults: default `options` (e.g. `{"forget_bias": 1.0}`); `import_checkpoint`'s
            options override them, unknown option names are refused.
        description: one line for `--help` and errors.
        reference: where the variable names and equations come from.
    """

    name: str
    assign: Callable
    configure: Optional[Callable] = None
    check_model: Optional[Callable] = None
    ignore: tuple = TF1_TRAINING_STATE
    defaults: dict = dataclasses.field(default_factory=dict)
    description: str = ""
    reference: str = ""

    def options(self, overrides=None) -> dict:
        """`defaults` updated with `overrides`; an unknown option is a ValueError."""
        options = dict(self.defaults)
        for key, value in dict(overrides or {}).items():
            if key not in self.defaults:
                raise ValueError(
                    f"format {self.name!r} has no option {key!r}; its options: "
                    f"{sorted(self.defaults) or 'none'}."
                )
            options[key] = type(self.defaults[key])(value) if self.defaults[key] is not None else value
        return options


_FORMATS = {}


def register_format(name, assign, *, replace=False, **fields) -> ImportFormat:
    """Registers a checkpoint format under `name` (fields: see `ImportFormat`).

    Raises:
        ValueError: `name` is already registered (and `replace` is False).
    """
    if name in _FORMATS and not replace:
        raise ValueError(f"checkpoint format {name!r} is already registered.")
    entry = ImportFormat(name=name, assign=assign, **fields)
    _FORMATS[name] = entry
    return entry


def get_format(name) -> ImportFormat:
    """The registered format `name`; ValueError listing the known ones otherwise."""
    if name not in _FORMATS:
        raise ValueError(
            f"unknown checkpoint format {name!r}; known formats: {', '.join(list_formats())}."
        )
    return _FORMATS[name]


def list_formats() -> list:
    """The registered format names, sorted."""
    return sorted(_FORMATS)

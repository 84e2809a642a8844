"""Experiment configuration: the shared layout of every `experiments/*.py` file.

Every config is an `ml_collections.ConfigDict` built from `base_config()` and changed where its
paper differs. The keys users override most sit at the same place in every config:
`data.dir`, `train.steps`, `train.batch_size`, `model.name`.

Sections:
- `data`: where the converted TFRecords are and how images and text are preprocessed
  (the `PreprocessingSettings` keys a `ReferringPreprocessor` is built from, and the reading
  options of `refseg_tf.data.load`).
- `model`: read by `refseg_tf.models.build_model`: `name` (a preset), `size` ("paper" or
  "tiny"), `backbone` (`name` and `kwargs`), `vocabulary_size` (0 = read from
  `data.dir/vocab.txt`), optional `loss`/`optimizer` overrides and the model's own arguments.
- `train`: steps, batch size, optimizer and schedule, weight decay, freezing, checkpoints,
  mixed precision, distribution.
- `eval`: batch size, DenseCRF, threshold override, scoring rule (`refseg_tf.scoring`).
"""

import json
import os

import ml_collections

from refseg_tf.experiment import base_config  # noqa: F401  (the defaults; defined there)
from refseg_tf.data.settings import PREPROCESSING_KEYS
from refseg_tf.files import atomic_write_text
from refseg_tf.filenames import CONFIG_FILENAME  # noqa: F401  (re-exported)

REQUIRED_KEYS = (
    "data.dir",
    "data.split_train",
    "data.split_eval",
    "data.image_size",
    "data.max_length",
    "train.steps",
    "train.batch_size",
    "model.name",
    "model.backbone",
)


# Keys whose change makes existing weights mean something else: the model (architecture,
# vocabulary size, threshold) and the preprocessing and text handling it was trained on.
# Resuming a model directory with any of them changed is refused (`weight_meaning_changes`);
# other keys (`train.steps` to train longer, batch size, learning rate, eval settings) may change.
WEIGHT_MEANING_PREFIXES = ("model.",) + tuple(
    f"data.{key}" for key in PREPROCESSING_KEYS
)


def get_by_path(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _input_contract_problems(config) -> list:
    """`config.data` against the input contract of the preset `config.model.name`
    (`refseg_tf.models.registry.InputContract`); an unknown preset is `build_model`'s error."""
    from refseg_tf.models import PRESETS

    name = config.model.get("name")
    if name not in PRESETS:
        return []
    return PRESETS[name].input_contract.problems(name, config.data, prefix="data.")


def validate_config(config, require_data_dir: bool = False) -> None:
    """Raises ValueError naming every missing or invalid key."""
    problems = []
    for key in REQUIRED_KEYS:
        try:
            get_by_path(config, key)
        except KeyError:
            problems.append(f"missing key `{key}`")
    if not problems:
        if int(config.train.steps) <= 0:
            problems.append(f"`train.steps` must be > 0, got {config.train.steps}")
        if int(config.train.batch_size) <= 0:
            problems.append(f"`train.batch_size` must be > 0, got {config.train.batch_size}")
        if int(config.train.checkpoint_every) <= 0:
            problems.append(
                f"`train.checkpoint_every` must be > 0, got {config.train.checkpoint_every}"
            )
        rule = config.eval.get("scoring_rule", "upsample_logits")
        if rule not in ("upsample_logits", "resize_probability"):
            problems.append(
                "`eval.scoring_rule` must be one of 'upsample_logits', 'resize_probability'; "
                f"received {rule!r}"
            )
        tokenizer = config.data.get("tokenizer", "refseg")
        if tokenizer not in ("refseg", "authors"):
            problems.append(
                f"`data.tokenizer` must be one of 'refseg', 'authors'; received {tokenizer!r}"
            )
        if config.model.get("optimizer") is not None:
            # One source of the training recipe: refseg-train builds its optimizers from
            # `train.optimizer` (schedule, epsilon, clipnorm...); `model.optimizer` would be
            # silently ignored.
            problems.append(
                "`model.optimizer` must be unset for training; received "
                f"{dict(config.model.optimizer)!r}: set `train.optimizer.<key>` instead"
            )
        problems.extend(_input_contract_problems(config))
        if require_data_dir and not config.data.dir:
            problems.append("`data.dir` is empty: pass --config.data.dir=PATH to converted TFRecords")
    if problems:
        raise ValueError("Invalid config: " + "; ".join(problems))


def save_config(config, model_dir: str) -> str:
    """Writes the resolved config as `model_dir/config.json` (atomically)."""
    path = os.path.join(model_dir, CONFIG_FILENAME)
    atomic_write_text(path, config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    return path


def load_config(model_dir: str) -> ml_collections.ConfigDict:
    """Reads `model_dir/config.json` written by `refseg-train`.

    Raises:
        FileNotFoundError: there is no config.json.
        ValueError: it is not valid JSON, nested too deeply, or not a config (not an object,
            or lacking one of `REQUIRED_KEYS`); the message names the file.
    """
    path = os.path.join(model_dir, CONFIG_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: is {model_dir!r} a model directory written by refseg-train?"
        )
    values = _read_json(path)
    if not isinstance(values, dict):
        raise ValueError(
            f"{path} must hold a JSON object (a refseg-train config); "
            f"received {type(values).__name__}."
        )
    config = ml_collections.ConfigDict(_lists_to_tuples(values))
    missing = [key for key in REQUIRED_KEYS if not _has_path(config, key)]
    if missing:
        raise ValueError(
            f"{path} is not a config written by refseg-train: it lacks {', '.join(missing)}."
        )
    return config


def weight_meaning_changes(saved, new) -> list:
    """The dotted keys under `WEIGHT_MEANING_PREFIXES` whose values differ between two configs.

    A key that only one config has counts as changed unless its value is the `base_config()`
    default (a key added to the library after the saved config was written).
    """
    saved_values, new_values = flat_values(saved), flat_values(new)
    defaults = flat_values(base_config())
    changed = []
    for key in sorted(set(saved_values) | set(new_values)):
        if not key.startswith(WEIGHT_MEANING_PREFIXES):
            continue
        missing = object()
        before = saved_values.get(key, defaults.get(key, missing))
        after = new_values.get(key, defaults.get(key, missing))
        if before != after:
            changed.append(key)
    return changed


def flat_values(config) -> dict:
    """{dotted key: JSON value} of a ConfigDict or dict (tuples compare equal to lists)."""
    if isinstance(config, ml_collections.ConfigDict):
        config = json.loads(config.to_json_best_effort())
    else:
        config = json.loads(json.dumps(config, default=str))
    flat = {}

    def visit(node, prefix):
        if isinstance(node, dict) and node:
            for key, value in node.items():
                visit(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    visit(config, "")
    return flat


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be a config.") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}") from error


def _has_path(config, dotted: str) -> bool:
    try:
        get_by_path(config, dotted)
    except (KeyError, TypeError, AttributeError):
        return False
    return True


def _lists_to_tuples(value):
    if isinstance(value, dict):
        return {key: _lists_to_tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(item) for item in value)
    return value

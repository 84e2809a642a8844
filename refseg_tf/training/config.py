"""Experiment configuration: the shared layout of every `experiments/*.py` file.

Every config is an `ml_collections.ConfigDict` built from `base_config()` and changed where its
paper differs. The keys users override most sit at the same place in every config:
`data.dir`, `train.steps`, `train.batch_size`, `model.name`.

Sections:
- `data`: where the converted TFRecords are and how images and text are preprocessed
  (the keyword arguments of `refseg_tf.data.load`).
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

from refseg_tf.files import atomic_write_text

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

PREPROCESSING_KEYS = (
    "image_size",
    "max_length",
    "text_padding",
    "resize_method",
    "pad_value",
    "normalization",
)

# Keys whose change makes existing weights mean something else: the model (architecture,
# vocabulary size, threshold) and the preprocessing and text handling it was trained on.
# Resuming a model directory with any of them changed is refused (`weight_meaning_changes`);
# other keys (`train.steps` to train longer, batch size, learning rate, eval settings) may change.
WEIGHT_MEANING_PREFIXES = ("model.",) + tuple(
    f"data.{key}" for key in PREPROCESSING_KEYS + ("tokenizer", "blind_expression")
)
CONFIG_FILENAME = "config.json"


def base_config() -> ml_collections.ConfigDict:
    """The defaults every experiment starts from (RMI/RRN-style training at 320 px)."""
    config = ml_collections.ConfigDict()
    config.description = ""

    config.data = ml_collections.ConfigDict()
    config.data.dir = ""
    config.data.dataset = "synthetic"
    config.data.split_train = "train"
    config.data.split_eval = "val"
    config.data.image_size = 320
    config.data.max_length = 20
    config.data.text_padding = "front"
    config.data.resize_method = "bilinear"
    config.data.pad_value = "zero"
    config.data.normalization = "caffe_bgr"
    config.data.sentences = "sample"
    # "refseg" (the library's tokeniser) or "authors" (Hu/RMI/RRN's `re.split(r'(\W+)')`).
    config.data.tokenizer = "refseg"
    config.data.shuffle_buffer = 1000
    # Read every training shard at once (`refseg_tf.data.load(interleave_all_files=True)`):
    # the batch-1 rows set it (issue 19 §10), the buffer alone then mixes the whole split.
    config.data.interleave_all_files = False
    # The text-blind control: every expression replaced by this one word ("" = off).
    config.data.blind_expression = ""

    config.model = ml_collections.ConfigDict()
    config.model.name = "d_lstm"
    config.model.backbone = ml_collections.ConfigDict(
        {"name": "resnet101_os8", "kwargs": ml_collections.ConfigDict()}
    )
    config.model.size = "paper"
    config.model.vocabulary_size = 0
    config.model.threshold = 0.5  # probability threshold of the predicted mask

    config.train = ml_collections.ConfigDict()
    config.train.steps = 1000
    config.train.batch_size = 1
    config.train.optimizer = ml_collections.ConfigDict()
    config.train.optimizer.name = "adam"
    config.train.optimizer.learning_rate = 2.5e-4
    config.train.optimizer.momentum = 0.9
    config.train.optimizer.epsilon = 1e-7  # Adam; Keras's default (TF1's, in RMI/RRN rows: 1e-8)
    config.train.optimizer.schedule = "polynomial"
    config.train.optimizer.decay_steps = 0  # the decay horizon; 0: train.steps
    config.train.optimizer.decay_rate = 0.1  # staircase
    config.train.optimizer.end_learning_rate = 1e-5  # polynomial
    config.train.optimizer.power = 0.9  # polynomial
    config.train.optimizer.boundaries = ()  # piecewise, in steps
    config.train.optimizer.bias_lr_multiplier = 2.0
    config.train.optimizer.clipnorm = 0.0
    config.train.weight_decay = 5e-4
    # Which kernels are decayed: "conv_kernels" (RMI/RRN code: convolutions only, never the
    # LSTM, ConvLSTM or embedding) or "matrices" (Hu's code: every weight matrix, LSTM included).
    config.train.weight_decay_scope = "conv_kernels"
    config.train.backbone_weights = ""  # "" | "imagenet" | a DeepLab .npz/.h5 or darknet .weights file
    config.train.freeze_backbone = True
    config.train.trainable_backbone_layers = ()  # layer-name prefixes kept trainable when frozen
    config.train.freeze_batchnorm = True
    config.train.init_from = ""  # a model_dir or checkpoint to start from (e.g. Hu's low-res stage)
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 3
    config.train.log_images_every = 1  # in checkpoint intervals; 0 disables pictures
    config.train.mixed_precision = "float32"
    config.train.jit_compile = "auto"
    config.train.distribution = "auto"
    # "auto": the custom loop (`training.loop`) under MultiWorkerMirroredStrategy with several
    # workers, Keras `fit` otherwise; "fit" | "loop" force one.
    config.train.engine = "auto"
    # How a multi-worker job splits the data: "auto" (by shard file when every worker gets one,
    # else by batch) | "data" (every worker reads everything and keeps its part of each global
    # batch: the batches of one worker, at the cost of reading all).
    config.train.input_sharding = "auto"
    # With stdout not a terminal (a log file): a progress line every N steps besides the line
    # per epoch (0 = per epoch only). A terminal shows the progress bar.
    config.train.log_every_steps = 0
    config.train.seed = 0

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 8
    config.eval.dense_crf = False
    config.eval.threshold = -1.0  # < 0: the model's own threshold
    # refseg_tf.scoring.SCORING_RULES: "upsample_logits" (Hu/RMI/RRN code) | "resize_probability"
    config.eval.scoring_rule = "upsample_logits"
    return config


def get_by_path(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


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
        if require_data_dir and not config.data.dir:
            problems.append("`data.dir` is empty: pass --config.data.dir=PATH to converted TFRecords")
    if problems:
        raise ValueError("Invalid config: " + "; ".join(problems))


def preprocessing_kwargs(config) -> dict:
    """The `refseg_tf.data.load` keyword arguments shared by training, evaluation and prediction."""
    kwargs = {key: config.data[key] for key in PREPROCESSING_KEYS}
    kwargs["tokenizer"] = tokenizer_mode(config)
    return kwargs


def tokenizer_mode(config) -> str:
    """`config.data.tokenizer`; "refseg" for model directories written before the key."""
    return config.data.get("tokenizer", "refseg")


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

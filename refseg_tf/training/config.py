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
    config.data.shuffle_buffer = 1000
    # The text-blind control: every expression replaced by this one word ("" = off).
    config.data.blind_expression = ""
    # "refseg" (the library's tokeniser) | "authors" (Hu/RMI/RRN `re.split(r'(\W+)')`).
    config.data.tokenizer = "refseg"

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
    config.train.optimizer.schedule = "polynomial"
    config.train.optimizer.decay_steps = 0  # 0: train.steps
    config.train.optimizer.decay_rate = 0.1  # staircase
    config.train.optimizer.end_learning_rate = 1e-5  # polynomial
    config.train.optimizer.power = 0.9  # polynomial
    config.train.optimizer.boundaries = ()  # piecewise, in steps
    config.train.optimizer.bias_lr_multiplier = 2.0
    config.train.optimizer.clipnorm = 0.0
    config.train.weight_decay = 5e-4
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
    path = os.path.join(model_dir, "config.json")
    atomic_write_text(path, config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    return path


def load_config(model_dir: str) -> ml_collections.ConfigDict:
    """Reads `model_dir/config.json` written by `refseg-train`."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: is {model_dir!r} a model directory written by refseg-train?"
        )
    with open(path, encoding="utf-8") as f:
        try:
            values = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
    return ml_collections.ConfigDict(_lists_to_tuples(values))


def _lists_to_tuples(value):
    if isinstance(value, dict):
        return {key: _lists_to_tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(item) for item in value)
    return value

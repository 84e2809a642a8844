"""What every experiment is built from: the base config, the experiment registry and the recipe
helpers several model families share.

A low module (it imports neither `refseg_tf.models` nor `refseg_tf.training`), so that each
family's `refseg_tf/models/<family>/experiments.py` can register its builders and paper tables
when the family is imported, and `refseg_tf.training` (which imports the models) can look them
up: no import cycle. `refseg_tf.training.experiments` is the public face: it imports
`refseg_tf.models` (every family registers) and re-exports this module and the family builders.

Contract of a family's `experiments.py`:
- builders `f(**kwargs) -> ml_collections.ConfigDict`, each starting from `base_config()`;
- one `register_experiment(name, **kwargs)(builder)` per file `experiments/<name>.py` (the
  file's `get_config()` is `experiments.get_experiment("<name>")`, `<name>` = its stem;
  `tests/test_experiments.py` checks both directions);
- for a preset with a synthetic-data recipe, `register_synthetic_recipe(preset)` on a function
  `(config, model, model_overrides)` setting the model section of `synthetic(model)`.

Every paper row trains as the authors' public code did (Hu: ronghanghu/text_objseg; RMI and
its R/D+LSTM baselines: chenxi116/TF-phrasecut-public; RRN: liruiyu/referseg_rrn), where it
differs from the paper text; a row's description names any point where it cannot:
- every (ref, sentence) pair is a sample each epoch (`data.sentences="all"`) and sentences are
  split by the authors' tokeniser (`data.tokenizer="authors"`): `authors_data`;
- the per-pixel loss is averaged (Hu) or summed (RMI/RRN) over the grid
  (`model.loss.reduction`), averaged over the batch;
- weight decay 5e-4 on Hu's weight matrices, LSTM included (`train.weight_decay_scope=
  "matrices"`), or on the convolution kernels only for RMI/RRN ("conv_kernels"); Adam's
  epsilon 1e-8 (TF1) for RMI/RRN: `authors_adam`;
- the learning-rate decay horizon (`train.optimizer.decay_steps`) and the training length
  (`train.steps`) are separate: RMI decays over and trains 750k steps, RRN decays over 800k
  and its published model is the 700k snapshot.

Datasets (converted with `refseg-convert`; `data.dir` defaults follow datasets/README.md):
"referit" (Hu split: trainval / test), "unc" (RefCOCO), "unc+" (RefCOCO+),
"gref" (RefCOCOg, Google split: train / val), and "synthetic".
"""

import dataclasses
from typing import Any, Callable, Mapping

import ml_collections

from refseg_tf.data.settings import PREPROCESSING_DEFAULTS
from refseg_tf.losses.segmentation import DEFAULT_LOSS_UPSAMPLING

__all__ = [
    "DATASETS",
    "DATASET_SUFFIXES",
    "DEEPLAB_WEIGHTS",
    "EXPERIMENTS",
    "Experiment",
    "RMI_DECAY_STEPS",
    "RMI_SNAPSHOT_NOTE",
    "RMI_TRAIN_STEPS",
    "SYNTHETIC_BACKBONES",
    "SYNTHETIC_RECIPES",
    "TF1_ADAM_EPSILON",
    "authors_adam",
    "authors_data",
    "base_config",
    "get_experiment",
    "list_experiments",
    "paper_row_summary",
    "register_experiment",
    "register_synthetic_recipe",
    "set_dataset",
    "set_loss",
    "set_paper",
    "synthetic",
    "synthetic_backbone",
    "whole_split_shuffle",
]

# --------------------------------------------------------------------------- the base config


def base_config() -> ml_collections.ConfigDict:
    """The defaults every experiment starts from (RMI/RRN-style training at 320 px).

    Also `refseg_tf.training.config.base_config` (the config layout is described there).
    """
    config = ml_collections.ConfigDict()
    config.description = ""

    config.data = ml_collections.ConfigDict()
    config.data.dir = ""
    config.data.dataset = "synthetic"
    config.data.split_train = "train"
    config.data.split_eval = "val"
    # The preprocessing (`refseg_tf.data.settings.PreprocessingSettings`: image size, text
    # length and padding, letterbox, normalisation, tokeniser "refseg" or "authors" (Hu/RMI/RRN's
    # `re.split(r'(\W+)')`), the text-blind control's sentence ("" = off)).
    for key, value in PREPROCESSING_DEFAULTS.items():
        config.data[key] = value
    config.data.sentences = "sample"
    config.data.shuffle_buffer = 1000
    # Read every training shard at once (`refseg_tf.data.load(interleave_all_files=True)`):
    # the batch-1 rows set it (`whole_split_shuffle`), the buffer then mixes the whole split.
    config.data.interleave_all_files = False

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
    # Multi-worker: how long (s) a collective waits for the other workers before every worker
    # stops with an error naming the lost one (0: no bound; training.distribute).
    config.train.worker_timeout_seconds = 300.0
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


# --------------------------------------------------------------------------- the registry


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment: `builder(**kwargs)` returns its config.

    Attributes:
        name: the experiment name (`experiments/<name>.py` calls `get_experiment(name)`).
        builder: a function returning an `ml_collections.ConfigDict`.
        kwargs: the builder's keyword arguments.
        synthetic: trains on the bundled synthetic data (the demo and the benchmark run it).
        paper_row: for a synthetic experiment, the registered paper-row experiment it is the
            tiny version of ("" = none): `benchmarks/synthetic_results.py` prints its numbers
            beside the synthetic ones.
    """

    name: str
    builder: Callable[..., Any]
    kwargs: Mapping[str, Any]
    synthetic: bool
    paper_row: str = ""

    def config(self):
        return self.builder(**dict(self.kwargs))


EXPERIMENTS = {}


def register_experiment(name, *, synthetic=False, paper_row="", **kwargs):
    """Decorator: registers the decorated builder, called with `kwargs`, as experiment `name`.

    Stackable (one builder, several experiments); returns the builder unchanged, so a table
    of rows registers as `register_experiment(name, **row)(builder)`.

    Example:
        >>> @register_experiment("synthetic_rmi", synthetic=True, paper_row="r_rmi_unc")
        ... def synthetic_rmi(model="r_rmi"): ...
    """

    def register(builder):
        if name in EXPERIMENTS:
            raise ValueError(f"`name` must be a new experiment name; received {name!r}.")
        EXPERIMENTS[name] = Experiment(name, builder, dict(kwargs), bool(synthetic), str(paper_row))
        return builder

    return register


def list_experiments(synthetic=None):
    """Registered experiment names, sorted (only the synthetic ones, or the others, if set)."""
    return sorted(
        name for name, experiment in EXPERIMENTS.items()
        if synthetic is None or experiment.synthetic == bool(synthetic)
    )


def get_experiment(name):
    """The config of the registered experiment `name` (a new ConfigDict each call).

    Families register when `refseg_tf.models` is imported: call it through
    `refseg_tf.training.experiments`, which imports them.
    """
    if name not in EXPERIMENTS:
        raise ValueError(
            f"`name` must be a registered experiment, one of {list_experiments()}; "
            f"received {name!r}."
        )
    return EXPERIMENTS[name].config()


def paper_row_summary(name):
    """The headline number of the paper row synthetic experiment `name` stands for, as text
    ("54.26 overall IoU (refcoco val; RRN Table 2; rrn_unc)"), or "-" without one."""
    row = EXPERIMENTS[name].paper_row if name in EXPERIMENTS else ""
    if not row:
        return "-"
    config = get_experiment(row)
    metric = config.paper.get("metric", "overall_iou")
    split = config.data.split_eval
    value = config.paper[metric][split]
    return (
        f"{value:.2f} {metric.replace('_', ' ').replace('iou', 'IoU')} "
        f"({config.data.dataset} {split}; {config.paper.source}; {row})"
    )


# --------------------------------------------------------------------------- shared recipe helpers

DATASETS = {
    "referit": dict(dir="data/tfrecords/referit", dataset="referit", split_train="trainval", split_eval="test"),
    "unc": dict(dir="data/tfrecords/refcoco_unc", dataset="refcoco", split_train="train", split_eval="val"),
    "unc+": dict(dir="data/tfrecords/refcoco+_unc", dataset="refcoco+", split_train="train", split_eval="val"),
    "gref": dict(dir="data/tfrecords/refcocog_google", dataset="refcocog", split_train="train", split_eval="val"),
    "synthetic": dict(dir="runs/demo/tfrecords", dataset="synthetic", split_train="train", split_eval="val"),
}
# The experiment-name suffix of each dataset of `DATASETS` (`rrn_uncplus` trains on "unc+").
DATASET_SUFFIXES = {"referit": "referit", "unc": "unc", "unc+": "uncplus", "gref": "gref"}

# The authors' DeepLab-v2 ResNet-101 weights, converted to .npz (see refseg_tf.backbones.weights).
DEEPLAB_WEIGHTS = "data/weights/deeplab_resnet101.npz"

# Schedules of the authors' code (`lr_decay_step` and the iterations trained / evaluated).
RMI_DECAY_STEPS = 750000  # TF-phrasecut-public LSTM_model.py / RMI_model.py
RMI_TRAIN_STEPS = 750000  # main.py -i (README: train 750000)
# ... while the README tests the 650k snapshot (SPEC 1.7): said in every RMI-code config.
RMI_SNAPSHOT_NOTE = (
    "trains the code's 750k iterations; the authors' README tests the 650k-iteration "
    "snapshot (evaluate that checkpoint to follow it)"
)
TF1_ADAM_EPSILON = 1e-8


def set_dataset(config, dataset):
    """Points `config.data` at the converted `dataset` (a key of `DATASETS`)."""
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}.")
    for key, value in DATASETS[dataset].items():
        config.data[key] = value


def authors_data(config):
    """The authors' readers: every (ref, sentence) pair per epoch, their regex tokeniser."""
    config.data.sentences = "all"
    config.data.tokenizer = "authors"


def authors_adam(config, decay_steps, steps):
    """RMI/RRN code: TF1 Adam (epsilon 1e-8), poly decay over `decay_steps`, `steps` trained,
    weight decay on convolution kernels only (the `DW` variables)."""
    config.train.optimizer.epsilon = TF1_ADAM_EPSILON
    config.train.optimizer.decay_steps = int(decay_steps)
    config.train.steps = int(steps)
    config.train.weight_decay_scope = "conv_kernels"


def whole_split_shuffle(config):
    """Batch-1 rows (RMI, RRN and the ASGN rows built on them; issue 19 §10): the authors'
    readers permuted the whole training set each epoch, while a 1,000-sentence buffer over
    16 shards at a time would make neighbouring steps come from a narrow stretch of the split.
    Every shard is read at once (shards reshuffled each epoch) so the buffer draws from all of
    them; a buffer covering the split would hold every encoded image in memory."""
    config.data.interleave_all_files = True


def set_loss(config, loss):
    """Declares the model's loss in the config so `--config.model.loss.<key>=` can change it.

    A loss at image resolution also declares `upsampling` (default "tf1": the RRN code's TF1
    `resize_bilinear` of the logits, the grid its test-time scores use).
    """
    loss = dict(loss)
    if loss.get("resolution") == "image":
        loss.setdefault("upsampling", DEFAULT_LOSS_UPSAMPLING)
    config.model.loss = ml_collections.ConfigDict(loss)


def set_paper(config, source, overall_iou):
    """`config.paper`: the source table and the overall IoU (%) it reports, by split."""
    config.paper = ml_collections.ConfigDict()
    config.paper.source = source
    config.paper.overall_iou = ml_collections.ConfigDict(dict(overall_iou))


# --------------------------------------------------------------------------- synthetic data

# Small backbones for the synthetic data: enough channels to learn colours and shapes from scratch.
SYNTHETIC_BACKBONES = {
    "vgg16_fcn": dict(widths=(16, 16, 32, 32, 32), depths=(1, 1, 2, 2, 2), fc_units=64, num_classes=32),
    "resnet101_os8": dict(depths=(1, 1, 1, 1), widths=(8, 16, 16, 16), stem_filters=16, num_classes=32),
}

# preset -> function(config, model, model_overrides) setting the model section of `synthetic`.
SYNTHETIC_RECIPES = {}


def register_synthetic_recipe(*presets):
    """Decorator: the decorated `(config, model, model_overrides)` function sets the model
    section (and any data key its grid needs) of `synthetic(model)` for each of `presets`."""

    def register(recipe):
        for preset in presets:
            if preset in SYNTHETIC_RECIPES:
                raise ValueError(f"`preset` must be new to SYNTHETIC_RECIPES; received {preset!r}.")
            SYNTHETIC_RECIPES[preset] = recipe
        return recipe

    return register


def synthetic(model, **model_overrides):
    """A tiny version of `model` that trains on the synthetic data in minutes on two CPU cores.

    The data, schedule (Adam 3e-3, polynomial decay, 1,500 steps) and evaluation are shared;
    the model section is the family's `register_synthetic_recipe` function. Raises KeyError
    for a preset without one (callers fall back on the tiny preset).
    """
    if model not in SYNTHETIC_RECIPES:
        raise KeyError(model)  # no synthetic recipe: callers fall back on the tiny preset
    config = base_config()
    set_dataset(config, "synthetic")
    config.description = f"{model} (tiny) on the synthetic data"
    config.data.image_size = 64
    config.data.max_length = 12
    config.data.normalization = "unit"
    config.data.sentences = "all"
    config.model.name = model
    config.model.size = "tiny"
    SYNTHETIC_RECIPES[model](config, model, dict(model_overrides))
    config.train.steps = 1500
    config.train.batch_size = 16
    config.train.optimizer.name = "adam"
    config.train.optimizer.learning_rate = 3e-3
    config.train.optimizer.schedule = "polynomial"
    config.train.optimizer.end_learning_rate = 1e-4
    config.train.optimizer.bias_lr_multiplier = 1.0
    config.train.weight_decay = 0.0
    config.train.freeze_backbone = False  # random initialisation: the backbone must learn
    config.train.freeze_batchnorm = False
    config.train.checkpoint_every = 250
    config.eval.batch_size = 32
    config.paper = ml_collections.ConfigDict({"source": "none (synthetic data)", "overall_iou": {}})
    return config


def synthetic_backbone(config, name):
    """Sets the tiny synthetic-data backbone `name` (a key of `SYNTHETIC_BACKBONES`)."""
    config.model.backbone.name = name
    config.model.backbone.kwargs = ml_collections.ConfigDict(SYNTHETIC_BACKBONES[name])

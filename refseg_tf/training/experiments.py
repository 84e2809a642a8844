"""The papers' experiments as configs: one builder per model family, one file per table row.

`experiments/<name>.py` files are thin: each calls one builder here with the row's dataset and
variant, so the schedules and preprocessing of a paper live in one place. Every config carries
`paper` (the source table and the overall IoU it reports) for the results table.

Datasets (converted with `refseg-convert`; `data.dir` defaults follow datasets/README.md):
"referit" (Hu split: trainval / test), "unc" (RefCOCO), "unc+" (RefCOCO+),
"gref" (RefCOCOg, Google split: train / val), and "synthetic".
"""

import ml_collections

from refseg_tf.models.lstm_cnn import HU_HIGH_RES_LOSS, HU_LOW_RES_LOSS
from refseg_tf.models.presets import IMAGE_RESOLUTION_BCE, RMI_BASELINE_LOSS
from refseg_tf.models.rrn import RRN_LOSS
from refseg_tf.training.config import base_config

DATASETS = {
    "referit": dict(dir="data/tfrecords/referit", dataset="referit", split_train="trainval", split_eval="test"),
    "unc": dict(dir="data/tfrecords/refcoco_unc", dataset="refcoco", split_train="train", split_eval="val"),
    "unc+": dict(dir="data/tfrecords/refcoco+_unc", dataset="refcoco+", split_train="train", split_eval="val"),
    "gref": dict(dir="data/tfrecords/refcocog_google", dataset="refcocog", split_train="train", split_eval="val"),
    "synthetic": dict(dir="runs/demo/tfrecords", dataset="synthetic", split_train="train", split_eval="val"),
}

# Overall IoU (%) the papers report, by (row, dataset) -> {split: value}.
PAPER_RESULTS = {
    ("lstm_cnn_low", "referit"): {"test": 45.57},  # Hu et al. 2016, Table 1 "low resolution"
    ("lstm_cnn_high", "referit"): {"test": 48.03},  # Hu et al. 2016, Table 1 "high resolution"
    ("lstm_cnn_high", "gref"): {"val": 28.14},  # as reported in RMI Table 1
    ("r_lstm", "gref"): {"val": 28.60},  # RMI Table 1
    ("r_lstm", "unc"): {"val": 38.74, "testA": 39.18, "testB": 39.01},
    ("r_lstm", "unc+"): {"val": 26.25, "testA": 26.95, "testB": 24.57},
    ("r_lstm", "referit"): {"test": 54.01},
    ("d_lstm", "gref"): {"val": 33.08},
    ("d_lstm", "unc"): {"val": 43.27, "testA": 43.60, "testB": 43.31},
    ("d_lstm", "unc+"): {"val": 28.42, "testA": 28.57, "testB": 27.70},
    ("d_lstm", "referit"): {"test": 56.83},
    ("d_lstm_ours", "unc"): {"val": 46.49},  # RRN Table 1 row 2
    ("rrn", "referit"): {"test": 63.12},  # RRN Table 2, LSTM
    ("rrn", "unc"): {"val": 54.26, "testA": 56.21, "testB": 52.71},
    ("rrn", "unc+"): {"val": 39.23, "testA": 41.68, "testB": 35.63},
    ("rrn", "gref"): {"val": 36.32},
}

# RRN Table 1 (UNC val, overall IoU) for rows 3-15; rows 1-2 are d_lstm / d_lstm_ours.
RRN_TABLE1_IOU = {
    3: 46.87, 4: 48.56, 5: 49.74, 6: 48.97, 7: 48.30, 8: 39.31, 9: 48.86,
    10: 46.35, 11: 52.48, 12: 54.26, 13: 51.41, 14: 52.81, 15: 53.81,
}

# The authors' DeepLab-v2 ResNet-101 weights, converted to .npz (see refseg_tf.backbones.weights).
DEEPLAB_WEIGHTS = "data/weights/deeplab_resnet101.npz"


def _set_dataset(config, dataset):
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}.")
    for key, value in DATASETS[dataset].items():
        config.data[key] = value


def _set_loss(config, loss):
    """Declares the model's loss in the config so `--config.model.loss.<key>=` can change it."""
    config.model.loss = ml_collections.ConfigDict(dict(loss))


def _declare_rrn_options(config):
    """Declares RRN's cell options (the authors' code: lstm_cell="layer_norm", peephole="spatial",
    initial_state="input") so that they can be overridden from the command line."""
    config.model.lstm_cell = "keras"
    config.model.initial_state = "hidden"
    config.model.peephole = ml_collections.config_dict.placeholder(str)


def _paper(config, source, row, dataset):
    config.paper = ml_collections.ConfigDict()
    config.paper.source = source
    config.paper.overall_iou = ml_collections.ConfigDict(PAPER_RESULTS.get((row, dataset), {}))


def hu_lstm_cnn(dataset="referit", stage="low"):
    """Hu et al. 2016: VGG-16 FCN-32s + LSTM at 512 x 512; two stages (Sec. 3.3, 4.2)."""
    config = base_config()
    _set_dataset(config, dataset)
    config.description = f"LSTM-CNN (Hu et al. 2016), {stage}-resolution stage, {dataset}"
    config.data.image_size = 512
    # Hu's weights took RGB minus the VGG mean; keras.applications' VGG16 weights take Caffe BGR.
    config.data.normalization = "caffe_bgr"
    config.model.name = "lstm_cnn"
    config.model.stage = stage
    _set_loss(config, HU_HIGH_RES_LOSS if stage == "high" else HU_LOW_RES_LOSS)
    config.model.backbone.name = "vgg16_fcn"
    config.train.backbone_weights = "imagenet"
    config.train.freeze_backbone = True  # VGG conv layers fixed; fc6-fc8 fine-tuned
    config.train.trainable_backbone_layers = ("fc6", "fc7", "fc8")
    config.train.freeze_batchnorm = False
    config.train.batch_size = 10
    config.train.optimizer.name = "sgd"
    config.train.optimizer.learning_rate = 0.01
    config.train.optimizer.momentum = 0.9
    config.train.optimizer.schedule = "staircase"
    config.train.optimizer.decay_rate = 0.1
    config.train.optimizer.bias_lr_multiplier = 1.0
    if stage == "low":
        config.train.steps = 30000
        config.train.optimizer.decay_steps = 10000
    else:
        config.train.steps = 18000
        config.train.optimizer.decay_steps = 6000
        config.train.init_from = f"runs/lstm_cnn_low_{dataset}"
    config.train.checkpoint_every = 1000
    source = "Hu et al. 2016, Table 1" if dataset == "referit" else "RMI Table 1 (LSTM-CNN [12, 13])"
    _paper(config, source, f"lstm_cnn_{stage}", dataset)
    return config


def rmi_baseline(model="r_lstm", dataset="unc"):
    """RMI (Liu et al. 2017) Sec. 3.2 baselines R+LSTM / D+LSTM: 320 px, output stride 8."""
    if model not in ("r_lstm", "d_lstm", "d_lstm_ours"):
        raise ValueError(f"model must be r_lstm, d_lstm or d_lstm_ours; got {model!r}.")
    config = base_config()
    _set_dataset(config, dataset)
    names = {"r_lstm": "R+LSTM", "d_lstm": "D+LSTM", "d_lstm_ours": "D-LSTM-ours (RRN)"}
    config.description = f"{names[model]} baseline, {dataset}"
    config.model.name = model
    _set_loss(config, IMAGE_RESOLUTION_BCE if model == "d_lstm_ours" else RMI_BASELINE_LOSS)
    config.train.backbone_weights = "imagenet" if model == "r_lstm" else DEEPLAB_WEIGHTS
    config.train.steps = 750000  # the polynomial decay runs over train.steps
    source = "RRN Table 1" if model == "d_lstm_ours" else "RMI Table 1"
    _paper(config, source, model, dataset)
    return config


def rrn(dataset="unc", table1_row=12):
    """RRN (Li et al. 2018): DeepLab ResNet-101, ConvLSTM over C5, C4, C3 at 320 px (Sec. 3.3)."""
    config = base_config()
    _set_dataset(config, dataset)
    config.model.name = "rrn"
    config.model.table1_row = int(table1_row)
    _set_loss(config, RRN_LOSS)
    _declare_rrn_options(config)
    config.train.backbone_weights = DEEPLAB_WEIGHTS
    config.train.steps = 700000  # the polynomial decay runs over train.steps
    config.description = f"RRN (Li et al. 2018), Table 1 row {table1_row}, {dataset}"
    if table1_row == 12:
        _paper(config, "RRN Table 2", "rrn", dataset)
    else:
        config.paper = ml_collections.ConfigDict(
            {"source": f"RRN Table 1 row {table1_row}",
             "overall_iou": {"val": RRN_TABLE1_IOU[int(table1_row)]}}
        )
    return config


# Small backbones for the synthetic data: enough channels to learn colours and shapes from scratch.
SYNTHETIC_BACKBONES = {
    "vgg16_fcn": dict(widths=(16, 16, 32, 32, 32), depths=(1, 1, 2, 2, 2), fc_units=64, num_classes=32),
    "resnet101_os8": dict(depths=(1, 1, 1, 1), widths=(8, 16, 16, 16), stem_filters=16, num_classes=32),
}


# The loss each preset trains with (lstm_cnn: its high-resolution stage).
SYNTHETIC_LOSSES = {
    "lstm_cnn": HU_HIGH_RES_LOSS,
    "r_lstm": RMI_BASELINE_LOSS,
    "d_lstm": RMI_BASELINE_LOSS,
    "d_lstm_ours": IMAGE_RESOLUTION_BCE,
    "rrn": RRN_LOSS,
}


def synthetic(model="rrn", **model_overrides):
    """A tiny version of `model` that trains on the synthetic data in minutes on two CPU cores."""
    config = base_config()
    _set_dataset(config, "synthetic")
    config.description = f"{model} (tiny) on the synthetic data"
    config.data.image_size = 64
    config.data.max_length = 12
    config.data.normalization = "unit"
    config.data.sentences = "all"
    if model == "lstm_cnn":
        config.data.image_size = 128  # stride 32: a 4 x 4 grid (Hu used 512 px -> 16 x 16)
    config.model.name = model
    config.model.size = "tiny"
    config.model.backbone.name = "vgg16_fcn" if model == "lstm_cnn" else "resnet101_os8"
    config.model.backbone.kwargs = ml_collections.ConfigDict(SYNTHETIC_BACKBONES[config.model.backbone.name])
    config.model.embedding_dim = 32
    config.model.text_units = 64
    if model == "rrn":
        config.model.fused_channels = 32
    else:
        config.model.classifier_units = 32
    if model in ("d_lstm", "d_lstm_ours", "rrn"):
        config.model.visual_projection_dim = 32
    if model == "rrn":
        _declare_rrn_options(config)
    for key, value in model_overrides.items():
        config.model[key] = value
    _set_loss(config, SYNTHETIC_LOSSES[model] if model != "lstm_cnn" or config.model.get("stage") != "low" else HU_LOW_RES_LOSS)
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


# --------------------------------------------------------------------------- RMI (Liu et al. 2017)

# RMI Table 1 (overall IoU, %): the R+RMI / D+RMI rows and their +DCRF rows, by dataset.
RMI_RESULTS = {
    ("r_rmi", "gref"): {"val": 32.06},
    ("r_rmi", "unc"): {"val": 39.74, "testA": 39.99, "testB": 40.44},
    ("r_rmi", "unc+"): {"val": 27.85, "testA": 28.69, "testB": 26.65},
    ("r_rmi", "referit"): {"test": 54.55},
    ("d_rmi", "gref"): {"val": 34.40},
    ("d_rmi", "unc"): {"val": 44.33, "testA": 44.74, "testB": 44.63},
    ("d_rmi", "unc+"): {"val": 29.91, "testA": 30.37, "testB": 29.43},
    ("d_rmi", "referit"): {"test": 57.34},
}
RMI_DCRF_RESULTS = {
    ("r_rmi", "gref"): {"val": 32.85},
    ("r_rmi", "unc"): {"val": 41.17, "testA": 41.35, "testB": 41.87},
    ("r_rmi", "unc+"): {"val": 28.26, "testA": 29.16, "testB": 26.86},
    ("r_rmi", "referit"): {"test": 56.61},
    ("d_rmi", "gref"): {"val": 34.52},
    ("d_rmi", "unc"): {"val": 45.18, "testA": 45.69, "testB": 45.57},
    ("d_rmi", "unc+"): {"val": 29.86, "testA": 30.48, "testB": 29.50},
    ("d_rmi", "referit"): {"test": 58.73},
}
# RMI Tables 2-5: overall IoU of R+RMI by expression length (the buckets of
# refseg_tf.metrics.LENGTH_BUCKETS; "test set" in the paper, val recommended for UNC/UNC+).
RMI_BY_LENGTH = {
    "gref": {"1-5": 35.34, "6-7": 31.76, "8-10": 30.66, "11-20": 30.56},
    "unc": {"1-2": 44.51, "3": 41.86, "4-5": 35.05, "6-20": 25.95},
    "unc+": {"1-2": 35.72, "3": 25.41, "4-5": 21.73, "6-20": 14.37},
    "referit": {"1": 68.11, "2": 52.73, "3-4": 45.69, "5-20": 34.53},
}
RMI_MODELS = {"r_rmi": "R+RMI", "d_rmi": "D+RMI"}


def _rmi_authors_recipe(config):
    """The training recipe of the authors' RMI code (TF-phrasecut-public `main.py`, `train_op`).

    Keys of the fidelity-recipe work (CONTRACTS.md) are set here even where this branch does not
    read them yet: `train.weight_decay_scope`, `train.optimizer.epsilon`, `data.tokenizer`.
    The loss (`RMI_BASELINE_LOSS`, shared with R/D+LSTM) carries `reduction` / `label_mode`.
    """
    config.data.sentences = "all"  # every sentence of every ref, shuffled each epoch
    config.data.tokenizer = "authors"  # re.split(r'(\W+)'), as Hu/RMI/RRN code
    config.train.batch_size = 1
    config.train.steps = 750000
    config.train.optimizer.name = "adam"
    config.train.optimizer.learning_rate = 2.5e-4
    config.train.optimizer.epsilon = 1e-8  # TF1 Adam default
    config.train.optimizer.schedule = "polynomial"
    config.train.optimizer.decay_steps = 750000
    config.train.optimizer.end_learning_rate = 1e-5
    config.train.optimizer.power = 0.9
    config.train.optimizer.bias_lr_multiplier = 2.0
    config.train.weight_decay = 5e-4
    config.train.weight_decay_scope = "conv_kernels"  # DW variables only: not LSTMs, not embedding
    config.train.checkpoint_every = 50000


def rmi(model="r_rmi", dataset="unc"):
    """RMI (Liu et al. 2017) Table 1 rows R+RMI / D+RMI: 320 px, ResNet-101 at stride 8.

    The +DCRF rows of Table 1 are the same trained model evaluated with
    `refseg-evaluate --dense_crf` (`eval.dense_crf=True`); their targets are in
    `paper.overall_iou_dense_crf`. `paper.overall_iou_by_length` holds the R+RMI length
    breakdown (Tables 2-5).
    """
    if model not in RMI_MODELS:
        raise ValueError(f"`model` must be one of {sorted(RMI_MODELS)}; received {model!r}.")
    config = base_config()
    _set_dataset(config, dataset)
    config.description = (
        f"{RMI_MODELS[model]} (Liu et al. 2017), {dataset}; the Table 1 "
        f"{RMI_MODELS[model]}+DCRF row is this model evaluated with --dense_crf"
    )
    config.model.name = model
    _set_loss(config, RMI_BASELINE_LOSS)
    _rmi_authors_recipe(config)
    if model == "r_rmi":
        config.train.backbone_weights = "imagenet"
        config.train.trainable_backbone_layers = ("fc1000",)  # fc1000 trained, rest frozen
    else:
        config.train.backbone_weights = DEEPLAB_WEIGHTS  # DeepLab fully frozen; conv0 trained
    config.paper = ml_collections.ConfigDict()
    config.paper.source = "RMI Table 1"
    config.paper.overall_iou = ml_collections.ConfigDict(RMI_RESULTS[(model, dataset)])
    config.paper.overall_iou_dense_crf = ml_collections.ConfigDict(
        RMI_DCRF_RESULTS[(model, dataset)]
    )
    if model == "r_rmi":
        config.paper.overall_iou_by_length = ml_collections.ConfigDict(RMI_BY_LENGTH[dataset])
    return config


def synthetic_rmi(model="r_rmi"):
    """A tiny `r_rmi` / `d_rmi` that trains on the synthetic data in minutes on two CPU cores."""
    if model not in RMI_MODELS:
        raise ValueError(f"`model` must be one of {sorted(RMI_MODELS)}; received {model!r}.")
    config = synthetic("r_lstm" if model == "r_rmi" else "d_lstm")
    config.description = f"{model} (tiny) on the synthetic data"
    config.model.name = model
    del config.model["classifier_units"]
    config.model.mlstm_units = 32
    _set_loss(config, RMI_BASELINE_LOSS)
    return config

"""The papers' experiments as configs: one builder per model family, one file per table row.

`experiments/<name>.py` files are thin: each calls one builder here with the row's dataset and
variant, so the schedules and preprocessing of a paper live in one place. Every config carries
`paper` (the source table and the overall IoU it reports) for the results table.

Every paper row trains as the authors' public code did (Hu: ronghanghu/text_objseg; RMI and
its R/D+LSTM baselines: chenxi116/TF-phrasecut-public; RRN: liruiyu/referseg_rrn), where it
differs from the paper text; a row's description names any point where it cannot:
- every (ref, sentence) pair is a sample each epoch (`data.sentences="all"`) and sentences are
  split by the authors' tokeniser (`data.tokenizer="authors"`);
- the per-pixel loss is averaged (Hu) or summed (RMI/RRN) over the grid
  (`model.loss.reduction`), averaged over the batch;
- weight decay 5e-4 on Hu's weight matrices, LSTM included (`train.weight_decay_scope=
  "matrices"`), or on the convolution kernels only for RMI/RRN ("conv_kernels"); Adam's
  epsilon 1e-8 (TF1) for RMI/RRN;
- the R/D+LSTM 40x40 target samples pixel (8i, 8j) (`model.loss.label_mode="point"`);
- R+LSTM trains the backbone's fc1000; Hu's LSTM runs over the front `<pad>` steps
  (`model.mask_text_padding=False`), the RMI/RRN LSTMs skip them;
- the learning-rate decay horizon (`train.optimizer.decay_steps`) and the training length
  (`train.steps`) are separate: RMI decays over and trains 750k steps, RRN decays over 800k
  and its published model is the 700k snapshot.

Datasets (converted with `refseg-convert`; `data.dir` defaults follow datasets/README.md):
"referit" (Hu split: trainval / test), "unc" (RefCOCO), "unc+" (RefCOCO+),
"gref" (RefCOCOg, Google split: train / val), and "synthetic".
"""

import ml_collections

from refseg_tf.models.lstm_cnn import HU_HIGH_RES_LOSS, HU_LOW_RES_LOSS
from refseg_tf.models.presets import IMAGE_RESOLUTION_BCE, RMI_BASELINE_LOSS
from refseg_tf.models.rrn import RRN_AUTHORS_CODE, RRN_LOSS
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


# Schedules of the authors' code (`lr_decay_step` and the iterations trained / evaluated).
RMI_DECAY_STEPS = 750000  # TF-phrasecut-public LSTM_model.py / RMI_model.py
RMI_TRAIN_STEPS = 750000  # main.py -i (README: train 750000)
RRN_DECAY_STEPS = 800000  # referseg_rrn LSTM_model_convlstm_p543.py
RRN_TRAIN_STEPS = 700000  # README: the 700000-iteration snapshot is evaluated
TF1_ADAM_EPSILON = 1e-8


def _authors_data(config):
    """The authors' readers: every (ref, sentence) pair per epoch, their regex tokeniser."""
    config.data.sentences = "all"
    config.data.tokenizer = "authors"


def _authors_adam(config, decay_steps, steps):
    """RMI/RRN code: TF1 Adam (epsilon 1e-8), poly decay over `decay_steps`, `steps` trained,
    weight decay on convolution kernels only (the `DW` variables)."""
    config.train.optimizer.epsilon = TF1_ADAM_EPSILON
    config.train.optimizer.decay_steps = int(decay_steps)
    config.train.steps = int(steps)
    config.train.weight_decay_scope = "conv_kernels"


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


# Hu's first stage, which the library does not reproduce (see `hu_lstm_cnn`).
HU_DETECTION_STAGE_GAP = (
    "Not reproduced: Hu's code initialises the low-resolution model from a detection model "
    "trained first (exp_train_referit_det.py: 224x224 crops of EdgeBox proposals, one score "
    "per box from VGG fc8 + the box's 8-D position + the LSTM, 25k SGD steps; "
    "init_referit_seg_lowres_from_det.py copies every weight). Box proposals and crop-level "
    "training are outside the library's data format; this row starts from ImageNet VGG-16."
)


def hu_lstm_cnn(dataset="referit", stage="low"):
    """Hu et al. 2016: VGG-16 FCN-32s + LSTM at 512 x 512; two stages (Sec. 3.3, 4.2).

    As the authors' code (text_objseg `exp_train_referit_seg_*.py`): a mean over the pixels,
    class weights 1 / 1 in the low-resolution stage (the paper's a_f = 3 is the preset's
    default) and 1 / (1/3) in the high-resolution one, weight decay on every weight matrix
    (`weights` and the LSTM's `Matrix`), the LSTM run over the front `<pad>` steps. Hu's code starts the low-resolution stage from a detection model
    trained on boxes of the same data (also RMI Sec. 4.2); that stage does not fit the
    library's pixel-level models and data, so it is not reproduced (`HU_DETECTION_STAGE_GAP`).
    """
    config = base_config()
    _set_dataset(config, dataset)
    _authors_data(config)
    config.description = f"LSTM-CNN (Hu et al. 2016), {stage}-resolution stage, {dataset}"
    if stage == "low":
        config.description += ". " + HU_DETECTION_STAGE_GAP
    config.data.image_size = 512
    # Hu's weights took RGB minus the VGG mean; keras.applications' VGG16 weights take Caffe BGR.
    config.data.normalization = "caffe_bgr"
    config.model.name = "lstm_cnn"
    config.model.stage = stage
    config.model.mask_text_padding = False  # Hu's lstm_net.py: no mask over <pad> steps
    _set_loss(config, HU_HIGH_RES_LOSS if stage == "high" else HU_LOW_RES_LOSS)
    if stage == "low":
        # exp_train_referit_seg_lowres.py: pos_loss_mult = neg_loss_mult = 1 (the paper: 3, 1).
        config.model.loss.foreground_weight = 1.0
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
    config.train.weight_decay_scope = "matrices"
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
    """RMI (Liu et al. 2017) Sec. 3.2 baselines R+LSTM / D+LSTM: 320 px, output stride 8.

    As the authors' code (TF-phrasecut-public `LSTM_model.py`, `main.py`): BCE summed over the
    40x40 grid against the point-sampled target, weight decay on the convolution kernels
    (and R's fc1000, which R+LSTM trains), TF1 Adam, poly decay over the 750k steps trained.
    "d_lstm_ours" (RRN Table 1 row 2) has no public code: it takes the same recipe with its
    loss at image resolution (summed, as the RRN code).
    """
    if model not in ("r_lstm", "d_lstm", "d_lstm_ours"):
        raise ValueError(f"model must be r_lstm, d_lstm or d_lstm_ours; got {model!r}.")
    config = base_config()
    _set_dataset(config, dataset)
    names = {"r_lstm": "R+LSTM", "d_lstm": "D+LSTM", "d_lstm_ours": "D-LSTM-ours (RRN)"}
    config.description = f"{names[model]} baseline, {dataset}"
    if model == "d_lstm_ours":
        config.description += (
            " (no public code: the RMI code's recipe with the loss at image resolution, "
            "summed as in the RRN code)"
        )
    _authors_data(config)
    config.model.name = model
    config.model.mask_text_padding = True  # the code skips <pad> steps (tf.cond on id 0)
    _set_loss(config, IMAGE_RESOLUTION_BCE if model == "d_lstm_ours" else RMI_BASELINE_LOSS)
    config.train.backbone_weights = "imagenet" if model == "r_lstm" else DEEPLAB_WEIGHTS
    if model == "r_lstm":
        # `tvars` of LSTM_model.py include ResNet/fc1000: the only trained backbone layer.
        config.train.trainable_backbone_layers = ("fc1000",)
    _authors_adam(config, RMI_DECAY_STEPS, RMI_TRAIN_STEPS)
    source = "RRN Table 1" if model == "d_lstm_ours" else "RMI Table 1"
    _paper(config, source, model, dataset)
    return config


def rrn(dataset="unc", table1_row=12, authors_cell=False):
    """RRN (Li et al. 2018): DeepLab ResNet-101, ConvLSTM over C5, C4, C3 at 320 px (Sec. 3.3).

    The recipe of the authors' code (referseg_rrn `LSTM_model_convlstm_p543.py`): BCE summed
    over the 320x320 pixels, weight decay on the convolution kernels only (never the LSTM or
    ConvLSTM), TF1 Adam, poly decay over 800k steps of which 700k are trained.

    Args:
        dataset: a key of `DATASETS`.
        table1_row: the row of RRN Table 1 (3-15; 12 is the model of Table 2).
        authors_cell: False: the recurrence the paper describes (standard ConvLSTM, h_0 = q);
            True: the cell of the authors' code, `RRN_AUTHORS_CODE` (layer norm, spatial
            peepholes, no bias, zero state with q as the first input), which produced the
            published numbers. Their code implements row 12 only.
    """
    if authors_cell and int(table1_row) != 12:
        raise ValueError(f"authors_cell needs table1_row=12 (the code's model); received {table1_row}.")
    config = base_config()
    _set_dataset(config, dataset)
    _authors_data(config)
    config.model.name = "rrn"
    config.model.table1_row = int(table1_row)
    _set_loss(config, RRN_LOSS)
    _declare_rrn_options(config)
    config.train.backbone_weights = DEEPLAB_WEIGHTS
    _authors_adam(config, RRN_DECAY_STEPS, RRN_TRAIN_STEPS)
    config.description = f"RRN (Li et al. 2018), Table 1 row {table1_row}, {dataset}"
    if authors_cell:
        for key, value in RRN_AUTHORS_CODE.items():
            config.model[key] = value
        config.description += ", the ConvLSTM cell of the authors' code (RRN_AUTHORS_CODE)"
    elif int(table1_row) == 12:
        config.description += (
            "; the paper's ConvLSTM (the authors' code used another cell: see the "
            "rrn_*_authors rows)"
        )
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
    _authors_data(config)
    _authors_adam(config, RMI_DECAY_STEPS, RMI_TRAIN_STEPS)
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

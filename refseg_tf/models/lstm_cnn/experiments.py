"""The LSTM-CNN family's experiments: Hu et al. 2016 (both stages) and the RMI paper's R+LSTM /
D+LSTM baselines (with RRN's D-LSTM-ours), their paper tables, the synthetic-data recipe of
these presets, and the registration of every `experiments/<name>.py` row of the family.

Registered on `import refseg_tf.models.lstm_cnn` (`refseg_tf.experiment` is the registry).
As the authors' code: the R/D+LSTM 40x40 target samples pixel (8i, 8j)
(`model.loss.label_mode="point"`); R+LSTM trains the backbone's fc1000; Hu's LSTM runs over the
front `<pad>` steps (`model.mask_text_padding=False`), the RMI LSTMs skip them.
"""

import ml_collections

from refseg_tf.experiment import (
    RMI_SNAPSHOT_NOTE,
    DATASET_SUFFIXES,
    DEEPLAB_WEIGHTS,
    RMI_DECAY_STEPS,
    RMI_TRAIN_STEPS,
    authors_data,
    base_config,
    register_experiment,
    register_synthetic_recipe,
    set_dataset,
    set_loss,
    set_paper,
    synthetic,
)
from refseg_tf.models.lstm_cnn.model import HU_HIGH_RES_LOSS, HU_LOW_RES_LOSS
from refseg_tf.models.recipes import (
    IMAGE_RESOLUTION_BCE,
    RMI_BASELINE_LOSS,
    authors_code_config,
    synthetic_lstm_model,
)

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
}
# RMI Table 1's R+LSTM+DCRF / D+LSTM+DCRF rows: the baselines evaluated with --dense_crf.
RMI_BASELINE_DCRF_RESULTS = {
    ("r_lstm", "gref"): {"val": 28.94},
    ("r_lstm", "unc"): {"val": 39.88, "testA": 40.44, "testB": 40.07},
    ("r_lstm", "unc+"): {"val": 26.29, "testA": 27.03, "testB": 24.44},
    ("r_lstm", "referit"): {"test": 55.90},
    ("d_lstm", "gref"): {"val": 33.11},
    ("d_lstm", "unc"): {"val": 43.97, "testA": 44.25, "testB": 44.07},
    ("d_lstm", "unc+"): {"val": 28.07, "testA": 28.29, "testB": 27.44},
    ("d_lstm", "referit"): {"test": 58.20},
}
# RMI Tables 2-5: overall IoU of R+LSTM by expression length (the R+RMI rows are in
# `refseg_tf.models.rmi.experiments.RMI_BY_LENGTH`; "test set" in the paper).
R_LSTM_BY_LENGTH = {
    "gref": {"1-5": 32.29, "6-7": 28.27, "8-10": 27.33, "11-20": 26.61},
    "unc": {"1-2": 43.66, "3": 40.60, "4-5": 33.98, "6-20": 24.91},
    "unc+": {"1-2": 34.40, "3": 24.04, "4-5": 19.31, "6-20": 12.30},
    "referit": {"1": 67.64, "2": 52.26, "3-4": 44.87, "5-20": 33.81},
}

# Hu's low-resolution row: the block-centred grid of its labels and of its bilinear upsampling.
HU_LOW_RES_SCORING = (
    "Scored with \"resize_probability\": Hu's low-resolution row upsamples the 16x16 scores "
    "bilinearly (the paper, Sec. 4.2, Table 1) as the high-resolution model's deconvolution at its "
    "bilinear initialisation (text_objseg init_referit_seg_highres_from_lowres.py, a 64x64 "
    "stride-32 SAME conv2d_transpose): cell i sits at pixel 32i + 15.5, the half-pixel grid of "
    "its 32x32-block labels (build_training_batches_seg.py, downscale_local_mean), not TF1's "
    "32i. Hu's test script (exp_test_referit_seg.py) thresholds the upsampled scores at 1e-9 "
    "and resize_and_crops the binary map; \"resize_probability\" resizes probabilities, crops "
    "and thresholds at 0.5 (same grid; the orders differ only along mask edges)."
)

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
    set_dataset(config, dataset)
    authors_data(config)
    config.description = f"LSTM-CNN (Hu et al. 2016), {stage}-resolution stage, {dataset}"
    if stage == "low":
        config.description += ". " + HU_DETECTION_STAGE_GAP + " " + HU_LOW_RES_SCORING
        config.eval.scoring_rule = "resize_probability"
    config.data.image_size = 512
    # Hu's weights took RGB minus the VGG mean; keras.applications' VGG16 weights take Caffe BGR.
    config.data.normalization = "caffe_bgr"
    config.model.name = "lstm_cnn"
    config.model.stage = stage
    config.model.mask_text_padding = False  # Hu's lstm_net.py: no mask over <pad> steps
    set_loss(config, HU_HIGH_RES_LOSS if stage == "high" else HU_LOW_RES_LOSS)
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
    set_paper(config, source, PAPER_RESULTS.get((f"lstm_cnn_{stage}", dataset), {}))
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
        raise ValueError(f"`model` must be r_lstm, d_lstm or d_lstm_ours; received {model!r}.")
    config = authors_code_config(dataset, RMI_DECAY_STEPS, RMI_TRAIN_STEPS)
    names = {"r_lstm": "R+LSTM", "d_lstm": "D+LSTM", "d_lstm_ours": "D-LSTM-ours (RRN)"}
    config.description = f"{names[model]} baseline, {dataset}"
    if model == "d_lstm_ours":
        config.description += (
            " (no public code: the RMI code's recipe with the loss at image resolution, "
            "summed as in the RRN code)"
        )
    config.model.name = model
    config.model.mask_text_padding = True  # the code skips <pad> steps (tf.cond on id 0)
    set_loss(config, IMAGE_RESOLUTION_BCE if model == "d_lstm_ours" else RMI_BASELINE_LOSS)
    config.train.backbone_weights = "imagenet" if model == "r_lstm" else DEEPLAB_WEIGHTS
    if model == "r_lstm":
        # `tvars` of LSTM_model.py include ResNet/fc1000: the only trained backbone layer.
        config.train.trainable_backbone_layers = ("fc1000",)
    source = "RRN Table 1" if model == "d_lstm_ours" else "RMI Table 1"
    set_paper(config, source, PAPER_RESULTS.get((model, dataset), {}))
    if model != "d_lstm_ours":
        config.description += (
            f"; the Table 1 {names[model]}+DCRF row is this model evaluated with --dense_crf; "
            + RMI_SNAPSHOT_NOTE
        )
        config.paper.overall_iou_dense_crf = ml_collections.ConfigDict(
            RMI_BASELINE_DCRF_RESULTS[(model, dataset)]
        )
    if model == "r_lstm":
        config.paper.source = "RMI Tables 1-5"
        config.paper.overall_iou_by_length = ml_collections.ConfigDict(R_LSTM_BY_LENGTH[dataset])
    return config


@register_synthetic_recipe("lstm_cnn", "r_lstm", "d_lstm", "d_lstm_ours")
def synthetic_lstm_cnn_family(config, model, model_overrides):
    """The model section of `synthetic(model)` for the LSTM-CNN presets: a tiny VGG-16 FCN
    (LSTM-CNN, at 128 px: a 4 x 4 grid) or ResNet-101 OS8, 32-wide classifier, the preset's loss
    (LSTM-CNN without a `stage`: its high-resolution stage's)."""
    if model == "lstm_cnn":
        config.data.image_size = 128  # stride 32: a 4 x 4 grid (Hu used 512 px -> 16 x 16)
    sizes = {"classifier_units": 32}
    if model in ("d_lstm", "d_lstm_ours"):
        sizes["visual_projection_dim"] = 32
    synthetic_lstm_model(
        config, model, model_overrides,
        backbone="vgg16_fcn" if model == "lstm_cnn" else "resnet101_os8",
        sizes=sizes,
        preset_defaults={"stage": "high"} if model == "lstm_cnn" else None,
    )


for _preset in ("r_lstm", "d_lstm", "d_lstm_ours"):
    register_experiment(
        f"synthetic_{_preset}", synthetic=True, paper_row=f"{_preset}_unc", model=_preset
    )(synthetic)


# stride 32 at 256 px: an 8 x 8 grid, the grid of the other synthetic configs (stride 8 at 64 px).
SYNTHETIC_LSTM_CNN_IMAGE_SIZE = 256


@register_experiment("synthetic_lstm_cnn", synthetic=True, paper_row="lstm_cnn_low_referit")
def synthetic_lstm_cnn():
    """Hu's low-resolution LSTM-CNN, tiny, at 256 px with the high-resolution stage's class
    weights (1, 1/3) against the binary label of its 8 x 8 grid (experiments/
    synthetic_lstm_cnn.py says why)."""
    config = synthetic(model="lstm_cnn", stage="low")
    config.description = "lstm_cnn (tiny, low-resolution stage at 256 px) on the synthetic data"
    config.data.image_size = SYNTHETIC_LSTM_CNN_IMAGE_SIZE
    loss = dict(config.model.loss)
    loss.update(
        foreground_weight=HU_HIGH_RES_LOSS["foreground_weight"],
        background_weight=HU_HIGH_RES_LOSS["background_weight"],
        label_mode="binary",
        resolution="logits",
    )
    config.model.loss = ml_collections.ConfigDict(loss)
    # Block-centred "binary" cells (cell i covers pixels 32i..32i+31) call for the half-pixel
    # grid; TF1's corner-aligned upsampling would shift every mask by 16 px.
    config.eval.scoring_rule = "resize_probability"
    return config


# experiments/<name>.py of the family: (stage, dataset) of Hu's rows, (model, dataset) of the
# baselines.
for _stage in ("low", "high"):
    for _dataset in ("referit", "gref"):
        register_experiment(
            f"lstm_cnn_{_stage}_{DATASET_SUFFIXES[_dataset]}", dataset=_dataset, stage=_stage
        )(hu_lstm_cnn)
for _model in ("r_lstm", "d_lstm"):
    for _dataset in ("referit", "unc", "unc+", "gref"):
        register_experiment(
            f"{_model}_{DATASET_SUFFIXES[_dataset]}", model=_model, dataset=_dataset
        )(rmi_baseline)
register_experiment("d_lstm_ours_unc", model="d_lstm_ours", dataset="unc")(rmi_baseline)
del _preset, _stage, _dataset, _model

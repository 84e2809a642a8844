"""The RMI family's experiments: RMI (Liu et al. 2017) Table 1 rows R+RMI / D+RMI (the +DCRF
rows are the same models evaluated with `--dense_crf`), Tables 2-5 by expression length, the
tiny synthetic R+RMI, and the registration of every `experiments/{r,d}_rmi_*.py` row.

Registered on `import refseg_tf.models.rmi` (`refseg_tf.experiment` is the registry).
"""

import ml_collections

from refseg_tf.experiment import (
    DATASET_SUFFIXES,
    DEEPLAB_WEIGHTS,
    RMI_DECAY_STEPS,
    RMI_SNAPSHOT_NOTE,
    RMI_TRAIN_STEPS,
    register_experiment,
    set_loss,
    synthetic,
)
from refseg_tf.models.recipes import RMI_BASELINE_LOSS, authors_code_config

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
    config = authors_code_config(dataset, RMI_DECAY_STEPS, RMI_TRAIN_STEPS)
    config.description = (
        f"{RMI_MODELS[model]} (Liu et al. 2017), {dataset}; the Table 1 "
        f"{RMI_MODELS[model]}+DCRF row is this model evaluated with --dense_crf; "
        + RMI_SNAPSHOT_NOTE
    )
    config.model.name = model
    set_loss(config, RMI_BASELINE_LOSS)
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


@register_experiment("synthetic_rmi", synthetic=True, paper_row="r_rmi_unc", model="r_rmi")
def synthetic_rmi(model="r_rmi"):
    """A tiny `r_rmi` / `d_rmi` that trains on the synthetic data in minutes on two CPU cores."""
    if model not in RMI_MODELS:
        raise ValueError(f"`model` must be one of {sorted(RMI_MODELS)}; received {model!r}.")
    config = synthetic("r_lstm" if model == "r_rmi" else "d_lstm")
    config.description = f"{model} (tiny) on the synthetic data"
    config.model.name = model
    del config.model["classifier_units"]
    config.model.mlstm_units = 32
    set_loss(config, RMI_BASELINE_LOSS)
    return config


# experiments/<name>.py of the family.
for _model in RMI_MODELS:
    for _dataset in ("referit", "unc", "unc+", "gref"):
        register_experiment(
            f"{_model}_{DATASET_SUFFIXES[_dataset]}", model=_model, dataset=_dataset
        )(rmi)
del _model, _dataset

"""The LTS family's experiments: LTS (Jing et al. 2021) Table 1 / 4 rows, the RefCOCO ablations
of Tables 2, 5 and 6, the tiny synthetic LTS, and the registration of every
`experiments/lts_*.py` row.

Registered on `import refseg_tf.models.lts` (`refseg_tf.experiment` is the registry). LTS
follows MCN's code base: an epoch is one pass over the refs (`data.sentences="sample"`).
"""

import ml_collections

from refseg_tf.experiment import (
    base_config,
    register_experiment,
    register_synthetic_recipe,
    set_dataset,
    set_loss,
    synthetic,
)
from refseg_tf.models.lts.model import LTS_LOSS


# LTS reports MCN's "IoU", the mean of per-sample IoU (MCN `callbacks/eval.py`), so its targets
# go to `paper.mean_iou`; refseg-evaluate prints mean IoU next to overall IoU.
LTS_DATASETS = {
    "refcoco": dict(dir="data/tfrecords/refcoco_unc", dataset="refcoco", split_train="train",
                    split_eval="val", max_length=15, train_refs=42404),
    "refcocoplus": dict(dir="data/tfrecords/refcoco+_unc", dataset="refcoco+", split_train="train",
                        split_eval="val", max_length=15, train_refs=42278),
    "refcocog_umd": dict(dir="data/tfrecords/refcocog_umd", dataset="refcocog",
                         split_train="train", split_eval="val", max_length=20, train_refs=42226),
}
# Table 1 (n = 1, relevance filtering) and Table 4 (val): mean IoU, %.
LTS_RESULTS = {
    "refcoco": {"val": 65.43, "testA": 67.76, "testB": 63.08},
    "refcocoplus": {"val": 54.21, "testA": 58.32, "testB": 48.02},
    "refcocog_umd": {"val": 54.40, "test": 54.25},
}
LTS_TRANS_RESULTS = {"refcoco": {"val": 66.15}, "refcocoplus": {"val": 54.52},
                     "refcocog_umd": {"val": 54.51}}
# Table 2 (RefCOCO): the module switches of each row (decoded in SPEC_RMI_LTS_ASGN 2.10) and
# its mean IoU; the precisions are in `paper.precision`.
LTS_TABLE2 = {
    1: (dict(fusion=True, localization="none", segmentation=False, locating_loss_weight=0.0),
        "Fusion", {"val": 55.08, "testA": 56.82, "testB": 53.52}),
    2: (dict(fusion=False, localization="filter", segmentation=False, locating_loss_weight=0.0),
        "Filter (no fusion)", {"val": 54.53, "testA": 56.05, "testB": 52.55}),
    3: (dict(fusion=True, localization="filter", segmentation=False, locating_loss_weight=0.0),
        "Fusion + Filter", {"val": 56.94, "testA": 58.53, "testB": 55.12}),
    4: (dict(fusion=True, localization="none", segmentation=True, locating_loss_weight=0.0),
        "Fusion + Seg", {"val": 63.50, "testA": 65.31, "testB": 60.97}),
    5: (dict(fusion=False, localization="filter", segmentation=True, locating_loss_weight=0.1),
        "Filter + Seg + L_loc (no fusion)", {"val": 63.64, "testA": 66.41, "testB": 60.72}),
    6: (dict(fusion=True, localization="filter", segmentation=True, locating_loss_weight=0.0),
        "Fusion + Filter + Seg, no L_loc", {"val": 65.05, "testA": 67.49, "testB": 62.43}),
    7: (dict(fusion=True, localization="filter", segmentation=True, locating_loss_weight=0.1),
        "Fusion + Filter + Seg + L_loc (full LTS)", {"val": 65.43, "testA": 67.76, "testB": 63.08}),
}
LTS_TABLE2_PRECISION = {  # prec@0.5/0.6/0.7/0.8/0.9 (%), by row and split
    1: {"val": (60.58, 51.26, 41.55, 27.15, 6.76), "testA": (62.49, 53.60, 42.87, 28.27, 6.65),
        "testB": (59.20, 49.64, 39.20, 26.22, 8.58)},
    2: {"val": (60.43, 50.00, 39.03, 24.95, 5.85), "testA": (61.66, 51.76, 40.32, 25.61, 5.67),
        "testB": (56.45, 46.91, 37.45, 24.10, 8.03)},
    3: {"val": (63.49, 54.20, 44.13, 29.43, 8.36), "testA": (64.52, 55.65, 45.59, 30.51, 7.94),
        "testB": (60.61, 51.21, 41.32, 29.07, 10.64)},
    4: {"val": (72.84, 65.85, 57.61, 42.33, 13.41), "testA": (75.32, 69.45, 60.46, 44.76, 11.38),
        "testB": (69.13, 62.24, 53.39, 39.65, 15.68)},
    5: {"val": (72.94, 66.52, 58.01, 42.84, 13.20), "testA": (77.00, 71.27, 62.63, 46.65, 12.82),
        "testB": (68.03, 61.14, 52.60, 39.59, 16.68)},
    6: {"val": (75.01, 68.48, 60.69, 44.93, 14.03), "testA": (78.10, 72.87, 64.47, 48.31, 13.24),
        "testB": (70.99, 64.65, 55.27, 42.41, 17.48)},
    7: {"val": (75.16, 69.51, 60.74, 45.17, 14.41), "testA": (78.47, 73.13, 64.56, 47.98, 12.92),
        "testB": (71.82, 64.59, 55.74, 42.79, 17.35)},
}
# Table 5 (RefCOCO): n relevance filterings, and the per-word kernels of WordFilter.
LTS_TABLE5 = {
    "n1": (dict(num_filters=1), {"val": 65.43, "testA": 67.76, "testB": 63.08}),
    "n2": (dict(num_filters=2), {"val": 66.04, "testA": 68.68, "testB": 63.27}),
    "n3": (dict(num_filters=3), {"val": 65.54, "testA": 67.82, "testB": 62.97}),
    "wordfilter": (dict(num_filters=1, filter_source="words"),
                   {"val": 64.92, "testA": 67.31, "testB": 62.50}),
}
# Table 6 (RefCOCO, n = 1): input resolution -> mean IoU.
LTS_TABLE6 = {
    320: {"val": 63.01, "testA": 65.40, "testB": 60.78},
    352: {"val": 64.04, "testA": 66.24, "testB": 61.76},
    384: {"val": 64.45, "testA": 67.02, "testB": 62.47},
    416: {"val": 65.43, "testA": 67.76, "testB": 63.08},
    448: {"val": 65.71, "testA": 67.90, "testB": 63.23},
    480: {"val": 65.90, "testA": 68.16, "testB": 63.45},
}
# Localisation accuracy of the n = 1 filter heatmap (Sec. 4.3; RefCOCO, split not given).
LTS_LOCALIZATION_ACCURACY = 81.74
# The COCO-trained Darknet-53 of MCN without the RefCOCO/+/g val and test images (MCN README),
# in MCN's Keras format, and GloVe-300 (common crawl) word vectors.
LTS_BACKBONE_WEIGHTS = "data/weights/mcn_darknet53_coco.h5"
LTS_WORD_VECTORS = "data/weights/glove.840B.300d.txt"
LTS_EPOCHS = 45
LTS_BOUNDARY_EPOCHS = (29,)  # x0.1 "at the 30-th epoch": epochs 1-29 at 1e-3 (MCN lr_step_decay)


def _lts_recipe(config, dataset):
    """Input, text and schedule of LTS Sec. 4.1 (and MCN, which it follows)."""
    spec = LTS_DATASETS[dataset]
    for key in ("dir", "dataset", "split_train", "split_eval", "max_length"):
        config.data[key] = spec[key]
    config.data.image_size = 416
    config.data.text_padding = "back"
    config.data.resize_method = "bicubic"
    config.data.pad_value = "grey"
    config.data.normalization = "unit"
    config.data.sentences = "sample"  # an epoch = one pass over the refs, one random sentence
    config.model.backbone.name = "darknet53_neck"
    config.model.threshold = 0.25
    config.train.backbone_weights = LTS_BACKBONE_WEIGHTS
    config.train.word_vectors = LTS_WORD_VECTORS
    # MCN free_body=1: the first 185 + 12 Keras 2 layers frozen = Darknet-53 and the first four
    # neck convolutions; the last two train (SPEC 2.2). Their batch norms train too.
    config.train.freeze_backbone = True
    config.train.trainable_backbone_layers = ("neck5", "neck6")
    config.train.freeze_batchnorm = False
    # Frozen BN: "inference" (Keras 3) or "batch_statistics" (Keras 2, what MCN ran).
    config.model.backbone.kwargs = ml_collections.ConfigDict({"frozen_batchnorm": "inference"})
    config.train.batch_size = 18
    config.train.epochs = LTS_EPOCHS
    steps_per_epoch = -(-spec["train_refs"] // 18)
    config.train.steps = LTS_EPOCHS * steps_per_epoch  # replaced from metadata.json at train time
    config.train.optimizer.name = "adam"
    config.train.optimizer.learning_rate = 1e-3
    config.train.optimizer.epsilon = 1e-7  # Keras Adam default (MCN)
    config.train.optimizer.schedule = "piecewise"
    config.train.optimizer.decay_rate = 0.1
    config.train.optimizer.boundary_epochs = LTS_BOUNDARY_EPOCHS
    config.train.optimizer.boundaries = tuple(e * steps_per_epoch for e in LTS_BOUNDARY_EPOCHS)
    config.train.optimizer.bias_lr_multiplier = 1.0
    config.train.weight_decay = 1e-3  # 0.5 * 1e-3 * |w|^2 = MCN's Keras l2(5e-4) on conv kernels
    config.train.weight_decay_scope = "conv_kernels"  # MCN: none on Dense / GRU / embedding
    config.train.checkpoint_every = steps_per_epoch
    config.eval.scoring_rule = "resize_probability"  # sigmoid, resize to the original, >= 0.25
    config.eval.batch_size = 8


def _lts_paper(config, source, mean_iou, **extra):
    config.paper = ml_collections.ConfigDict()
    config.paper.source = source
    config.paper.metric = "mean_iou"  # MCN code base: mean of per-sample IoU
    config.paper.overall_iou = ml_collections.ConfigDict()  # not reported
    config.paper.mean_iou = ml_collections.ConfigDict(mean_iou)
    for key, value in extra.items():
        config.paper[key] = value


def lts(dataset="refcoco", *, localization="filter", table2_row=None, table5_row=None,
        table6_size=None):
    """LTS (Jing et al. 2021) rows: Table 1 / 4 (`localization`), Tables 2, 5 and 6 (RefCOCO).

    Args:
        dataset: "refcoco", "refcocoplus" or "refcocog_umd" (UMD = "UNC partition").
        localization: "filter" (Table 1: n = 1) or "transformer" (LTS-Trans, Table 4).
        table2_row: 1-7, the module combination of that Table 2 row (RefCOCO only).
        table5_row: "n1", "n2", "n3" or "wordfilter" (RefCOCO only).
        table6_size: input resolution of a Table 6 row, 320-480 (RefCOCO only, n = 1).

    The paper's numbers are mean IoU (`paper.mean_iou`; `paper.metric`).
    """
    if dataset not in LTS_DATASETS:
        raise ValueError(f"`dataset` must be one of {sorted(LTS_DATASETS)}; received {dataset!r}.")
    if localization not in ("filter", "transformer"):
        raise ValueError(
            f"`localization` must be 'filter' or 'transformer'; received {localization!r}."
        )
    rows = (table2_row, table5_row, table6_size)
    if any(row is not None for row in rows) and dataset != "refcoco":
        raise ValueError(f"Tables 2, 5 and 6 are RefCOCO rows; received dataset {dataset!r}.")
    if table6_size is not None and int(table6_size) not in LTS_TABLE6:
        raise ValueError(
            f"`table6_size` must be one of {sorted(LTS_TABLE6)}; received {table6_size!r}."
        )
    config = base_config()
    _lts_recipe(config, dataset)
    set_loss(config, LTS_LOSS)
    config.model.name = "lts" if localization == "filter" else "lts_trans"
    if localization == "filter":
        config.model.num_filters = 1  # Table 1 (n = 2 is Table 5's best, the preset default)
        config.model.filter_source = "sentence"
    config.model.locating_loss_weight = 0.1
    config.model.prior_activation = "sigmoid"
    config.model.upsampling = "mask"
    config.model.trainable_embeddings = True
    if table2_row is not None:
        switches, modules, mean_iou = LTS_TABLE2[int(table2_row)]
        for key, value in switches.items():
            config.model[key] = value
        config.description = f"LTS Table 2 row {table2_row} ({modules}), RefCOCO"
        precision = {split: tuple(values)
                     for split, values in LTS_TABLE2_PRECISION[int(table2_row)].items()}
        _lts_paper(config, f"LTS Table 2 row {table2_row}", mean_iou,
                   precision_at=ml_collections.ConfigDict(precision))
    elif table5_row is not None:
        switches, mean_iou = LTS_TABLE5[table5_row]
        for key, value in switches.items():
            config.model[key] = value
        config.description = f"LTS Table 5 ({table5_row}), RefCOCO"
        _lts_paper(config, f"LTS Table 5 {table5_row}", mean_iou)
    elif table6_size is not None:
        config.data.image_size = int(table6_size)
        config.description = f"LTS Table 6 ({table6_size} x {table6_size} input), RefCOCO"
        _lts_paper(config, f"LTS Table 6 {table6_size}", LTS_TABLE6[int(table6_size)])
    elif localization == "transformer":
        config.description = f"LTS-Trans (Jing et al. 2021), {dataset}"
        _lts_paper(config, "LTS Table 4", LTS_TRANS_RESULTS[dataset])
    else:
        config.description = f"LTS (Jing et al. 2021), n = 1, {dataset}"
        extra = {}
        if dataset == "refcoco":
            extra["localization_accuracy"] = LTS_LOCALIZATION_ACCURACY
        _lts_paper(config, "LTS Table 1", LTS_RESULTS[dataset], **extra)
    return config


@register_synthetic_recipe("lts", "lts_trans")
def synthetic_lts_model(config, model, model_overrides):
    """The model section of `synthetic("lts")` / `synthetic("lts_trans")`: a tiny Darknet-53
    with neck, and LTS's input contract (back padding, bicubic letterbox on grey, pixels / 255:
    LTS Sec. 4.1, MCN), threshold 0.25 and scoring of resized probabilities."""
    config.data.text_padding = "back"
    config.data.resize_method = "bicubic"
    config.data.pad_value = "grey"
    config.data.normalization = "unit"
    config.model.threshold = 0.25
    config.model.backbone.name = "darknet53_neck"
    config.model.backbone.kwargs = ml_collections.ConfigDict(
        dict(widths=(16, 16, 32, 32, 32), depths=(1, 1, 1, 1, 1), stem_filters=8)
    )
    config.model.embedding_dim = 32
    config.model.text_units = 32
    config.model.fusion_channels = 32
    config.model.branch_channels = 16
    config.model.aspp_channels = 16
    config.model.aspp_rates = (1, 2, 3)
    config.model.text_dropout = 0.0
    if model == "lts":  # relevance filtering with one filter (LTS-Trans has none)
        config.model.num_filters = 1
    for key, value in model_overrides.items():
        config.model[key] = value
    set_loss(config, LTS_LOSS)
    config.eval.scoring_rule = "resize_probability"


@register_experiment("synthetic_lts", synthetic=True, paper_row="lts_refcoco")
def synthetic_lts(localization="filter"):
    """A tiny LTS (Darknet-53 with neck, 64 px) that learns the synthetic data on two CPU cores:
    `synthetic("lts")` (or "lts_trans") with LTS's step decay (x0.1 for the last 200 steps)."""
    config = synthetic("lts" if localization == "filter" else "lts_trans")
    config.description = f"lts ({localization}, tiny) on the synthetic data"
    config.train.steps = 1200
    config.train.optimizer.schedule = "piecewise"
    config.train.optimizer.decay_rate = 0.1
    config.train.optimizer.boundaries = (1000,)
    config.train.checkpoint_every = 300
    return config


# experiments/<name>.py of the family.
for _dataset in LTS_DATASETS:
    register_experiment(f"lts_{_dataset}", dataset=_dataset)(lts)
    register_experiment(f"lts_trans_{_dataset}", dataset=_dataset, localization="transformer")(lts)
for _row in LTS_TABLE2:
    register_experiment(f"lts_table2_row{_row}_refcoco", dataset="refcoco", table2_row=_row)(lts)
for _row in LTS_TABLE5:
    register_experiment(f"lts_table5_{_row}_refcoco", dataset="refcoco", table5_row=_row)(lts)
for _size in LTS_TABLE6:
    register_experiment(f"lts_table6_{_size}px_refcoco", dataset="refcoco", table6_size=_size)(lts)
del _dataset, _row, _size

"""The RRN family's experiments: RRN (Li et al. 2018) Table 1 rows 3-15 and the Table 2 rows
(with the paper's ConvLSTM or the authors' cell), their paper tables, the synthetic-data recipe
of `rrn`, and the registration of every `experiments/rrn_*.py` row.

Registered on `import refseg_tf.models.rrn` (`refseg_tf.experiment` is the registry).
"""

import ml_collections

from refseg_tf.experiment import (
    DATASET_SUFFIXES,
    DEEPLAB_WEIGHTS,
    register_experiment,
    register_synthetic_recipe,
    set_loss,
    set_paper,
    synthetic,
)
from refseg_tf.models.recipes import authors_code_config, synthetic_lstm_model
from refseg_tf.models.rrn.model import RRN_AUTHORS_CODE, RRN_LOSS

# RRN Table 2 (LSTM), overall IoU (%) by dataset -> {split: value}.
RRN_RESULTS = {
    "referit": {"test": 63.12},
    "unc": {"val": 54.26, "testA": 56.21, "testB": 52.71},
    "unc+": {"val": 39.23, "testA": 41.68, "testB": 35.63},
    "gref": {"val": 36.32},
}

# RRN Table 1 (UNC val, overall IoU) for rows 3-15; rows 1-2 are d_lstm / d_lstm_ours.
RRN_TABLE1_IOU = {
    3: 46.87, 4: 48.56, 5: 49.74, 6: 48.97, 7: 48.30, 8: 39.31, 9: 48.86,
    10: 46.35, 11: 52.48, 12: 54.26, 13: 51.41, 14: 52.81, 15: 53.81,
}

RRN_DECAY_STEPS = 800000  # referseg_rrn LSTM_model_convlstm_p543.py
RRN_TRAIN_STEPS = 700000  # README: the 700000-iteration snapshot is evaluated


def declare_rrn_options(config):
    """Declares RRN's cell options (the authors' code: lstm_cell="layer_norm", peephole="spatial",
    initial_state="input") so that they can be overridden from the command line."""
    config.model.lstm_cell = "keras"
    config.model.initial_state = "hidden"
    config.model.peephole = ml_collections.config_dict.placeholder(str)


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
    config = authors_code_config(dataset, RRN_DECAY_STEPS, RRN_TRAIN_STEPS)
    config.model.name = "rrn"
    config.model.table1_row = int(table1_row)
    set_loss(config, RRN_LOSS)
    declare_rrn_options(config)
    config.train.backbone_weights = DEEPLAB_WEIGHTS
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
        set_paper(config, "RRN Table 2", RRN_RESULTS.get(dataset, {}))
    else:
        config.paper = ml_collections.ConfigDict(
            {"source": f"RRN Table 1 row {table1_row}",
             "overall_iou": {"val": RRN_TABLE1_IOU[int(table1_row)]}}
        )
    return config


@register_synthetic_recipe("rrn")
def synthetic_rrn_model(config, model, model_overrides):
    """The model section of `synthetic("rrn")`: a tiny ResNet-101 OS8, 32 fused channels, the
    cell options declared, the preset's loss (after `table1_row`)."""
    declare_rrn_options(config)
    synthetic_lstm_model(
        config, model, model_overrides, backbone="resnet101_os8",
        sizes={"fused_channels": 32, "visual_projection_dim": 32},
    )


register_experiment("synthetic_rrn", synthetic=True, paper_row="rrn_unc", model="rrn")(synthetic)

# experiments/<name>.py of the family.
for _dataset in ("referit", "unc", "unc+", "gref"):
    register_experiment(f"rrn_{DATASET_SUFFIXES[_dataset]}", dataset=_dataset, table1_row=12)(rrn)
    register_experiment(
        f"rrn_{DATASET_SUFFIXES[_dataset]}_authors", dataset=_dataset, table1_row=12,
        authors_cell=True,
    )(rrn)
for _row in RRN_TABLE1_IOU:
    register_experiment(f"rrn_table1_row{_row:02d}_unc", dataset="unc", table1_row=_row)(rrn)
del _dataset, _row

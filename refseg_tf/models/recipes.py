"""Loss and optimizer recipes shared by several model families (each defined once here).

A family's own recipe lives in its package (e.g. `lstm_cnn.HU_LOW_RES_LOSS`); the dicts here
are the ones several families train with, so that one change reaches all of them, and
`authors_code_config` / `synthetic_lstm_model` the parts of their configs they share.
"""

from refseg_tf.experiment import (
    authors_adam,
    authors_data,
    base_config,
    set_dataset,
    set_loss,
    synthetic_backbone,
    whole_split_shuffle,
)
from refseg_tf.models.registry import get_preset, preset_kwargs

# The RMI and RRN code (TF-phrasecut-public, referseg_rrn `train_op`): Adam at a base learning
# rate of 2.5e-4 (the poly decay is `refseg_tf.training`'s). R/D+LSTM, RMI, RRN and the
# default of `ReferringSegmenter` train with it.
ADAM_RMI = {"name": "adam", "learning_rate": 2.5e-4}

# RMI Sec. 3.2 / Eq. 6: BCE at the 40x40 feature grid against the downsampled mask. The
# authors' code (`LSTM_model.py` train_op, `util/loss.py`): the target is TF1 resize_bilinear
# of the 320 mask ("point": pixel (8i, 8j)) and the loss is summed over the grid (the paper's
# Eq. 6 writes a mean). R+LSTM, D+LSTM, R+RMI and D+RMI.
RMI_BASELINE_LOSS = {
    "name": "sigmoid_cross_entropy",
    "label_mode": "point",
    "resolution": "logits",
    "reduction": "sum",
}

# RRN Sec. 3.3 and 4.2.1: BCE at image size, summed over the 320x320 pixels and averaged over
# the batch as the RRN code's `util/loss.py`. RRN and D-LSTM-ours.
IMAGE_RESOLUTION_BCE = {
    "name": "sigmoid_cross_entropy",
    "label_mode": "binary",
    "resolution": "image",
    "reduction": "sum",
}

# Hu, RMI and RRN at paper scale: word embedding and text LSTM of 1000 (D_text, D_S).
PAPER_TEXT = {"embedding_dim": 1000, "text_units": 1000}
# DeepLab ResNet-101 res5c projected to 1000 by a learned 1x1 convolution (the RMI code's
# `conv0` / the RRN code's `mlp0`): D+LSTM, D-LSTM-ours, D+RMI, RRN.
DEEPLAB_C5 = {"visual_feature": "C5", "visual_projection_dim": 1000}

# Text/fusion sizes of the tiny variants (the backbone comes from backbones.TINY_PRESETS).
TINY_TEXT = {"embedding_dim": 8, "text_units": 16}


def authors_code_config(dataset, decay_steps, steps):
    """The start of a paper row trained as the RMI / RRN code (R/D+LSTM, RMI, RRN): the base
    config on `dataset`, the authors' readers (`authors_data`), every shard read at once for
    their batch-1 whole-split shuffle, and their TF1 Adam over `decay_steps` / `steps`."""
    config = base_config()
    set_dataset(config, dataset)
    authors_data(config)
    whole_split_shuffle(config)
    authors_adam(config, decay_steps, steps)
    return config


# Text sizes of the synthetic-data configs of the LSTM families (LSTM-CNN, R/D+LSTM, RRN).
SYNTHETIC_TEXT = {"embedding_dim": 32, "text_units": 64}


def synthetic_lstm_model(config, model, model_overrides, backbone, sizes, preset_defaults=None):
    """The model section of `synthetic(model)` for a preset with an LSTM text encoder.

    Sets the tiny synthetic backbone `backbone`, `SYNTHETIC_TEXT`, the family's `sizes` (e.g.
    `classifier_units`), then `model_overrides`, and declares the loss the preset trains with:
    its tiny `loss_config` after the keys its class expands (`preset_keys`: `stage`,
    `table1_row`), taken from `model_overrides` or else from `preset_defaults`.
    """
    synthetic_backbone(config, backbone)
    for key, value in dict(SYNTHETIC_TEXT, **sizes).items():
        config.model[key] = value
    for key, value in model_overrides.items():
        config.model[key] = value
    expanded = dict(preset_defaults or {})
    expanded.update(
        (key, value) for key, value in model_overrides.items()
        if key in get_preset(model).model_class.preset_keys and value is not None
    )
    set_loss(config, preset_kwargs(model, "tiny", **expanded)["loss_config"])

"""LSTM-CNN presets: Hu et al.'s `lstm_cnn` and the R+LSTM / D+LSTM / D-LSTM-ours baselines."""

from refseg_tf.models.lstm_cnn.model import LSTMCNN
from refseg_tf.models.recipes import (
    ADAM_RMI,
    DEEPLAB_C5,
    IMAGE_RESOLUTION_BCE,
    PAPER_TEXT,
    RMI_BASELINE_LOSS,
    TINY_TEXT,
)
from refseg_tf.models.registry import Preset, register_preset

_TINY = dict(TINY_TEXT, classifier_units=8)

LSTM_CNN_PRESETS = {
    "lstm_cnn": Preset(
        name="lstm_cnn",
        model_class=LSTMCNN,
        backbone="vgg16_fcn",
        kwargs=dict(
            visual_feature="fc8",
            **PAPER_TEXT,
            classifier_units=500,
            upsampling="none",
            mask_text_padding=False,  # Hu's code runs the LSTM over the front <pad> steps
        ),
        tiny_kwargs=_TINY,
        reference="Hu et al. 2016, Sec. 3 and 4.2 (VGG-16 fc8, D_im = D_text = 1000, D_cls = 500)",
    ),
    "r_lstm": Preset(
        name="r_lstm",
        model_class=LSTMCNN,
        backbone="resnet101_os8",
        kwargs=dict(
            visual_feature="fc1000",
            **PAPER_TEXT,
            classifier_units=500,
            loss_config=RMI_BASELINE_LOSS,
            optimizer_config=ADAM_RMI,
        ),
        tiny_kwargs=_TINY,
        reference="Liu et al. 2017 (RMI), Sec. 3.2 and 4 (R+LSTM; ResNet-101 fc1000 at stride 8)",
    ),
    "d_lstm": Preset(
        name="d_lstm",
        model_class=LSTMCNN,
        backbone="resnet101_os8",
        kwargs=dict(
            **DEEPLAB_C5,
            **PAPER_TEXT,
            classifier_units=500,
            loss_config=RMI_BASELINE_LOSS,
            optimizer_config=ADAM_RMI,
        ),
        tiny_kwargs=dict(_TINY, visual_projection_dim=8),
        reference="Liu et al. 2017 (RMI), Sec. 3.2 (D+LSTM; res5c projected to 1000 as its code)",
    ),
    "d_lstm_ours": Preset(
        name="d_lstm_ours",
        model_class=LSTMCNN,
        backbone="resnet101_os8",
        kwargs=dict(
            **DEEPLAB_C5,
            **PAPER_TEXT,
            classifier_units=500,
            score_kernel_size=3,
            loss_config=IMAGE_RESOLUTION_BCE,
            optimizer_config=ADAM_RMI,
        ),
        tiny_kwargs=dict(_TINY, visual_projection_dim=8),
        reference="Li et al. 2018 (RRN), Sec. 4.2.1 and Table 1 row 2 (3x3 last conv, image loss)",
    ),
}

for _preset in LSTM_CNN_PRESETS.values():
    register_preset(_preset)

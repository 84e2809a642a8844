"""RRN preset `rrn`: Table 1 row 12 / Table 2 (ConvLSTM + tanh over C5, C4, C3)."""

from refseg_tf.models.recipes import DEEPLAB_C5, PAPER_TEXT, TINY_TEXT
from refseg_tf.models.registry import Preset, register_preset
from refseg_tf.models.rrn.model import RRN, RRN_LOSS

RRN_PRESETS = {
    "rrn": Preset(
        name="rrn",
        model_class=RRN,
        backbone="resnet101_os8",
        kwargs=dict(
            **DEEPLAB_C5,
            **PAPER_TEXT,
            fused_channels=500,
            pyramid=("C5", "C4", "C3"),
            variant="lstm_tanh",
            loss_config=RRN_LOSS,  # the class default, stated for the experiment builders
        ),
        tiny_kwargs=dict(TINY_TEXT, fused_channels=8, visual_projection_dim=8),
        reference="Li et al. 2018 (RRN), Sec. 3.2-3.3 and Table 1 row 12",
    ),
}

for _preset in RRN_PRESETS.values():
    register_preset(_preset)

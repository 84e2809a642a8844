"""RMI presets: R+RMI (`r_rmi`) and D+RMI (`d_rmi`) at paper scale, plus tiny sizes."""

from refseg_tf.models.recipes import DEEPLAB_C5, PAPER_TEXT, TINY_TEXT
from refseg_tf.models.registry import Preset, register_preset
from refseg_tf.models.rmi.model import RMI

RMI_PRESETS = {
    "r_rmi": Preset(
        name="r_rmi",
        model_class=RMI,
        backbone="resnet101_os8",
        kwargs=dict(
            visual_feature="fc1000",
            **PAPER_TEXT,
            mlstm_units=500,
        ),
        tiny_kwargs=dict(TINY_TEXT, mlstm_units=8),
        reference=(
            "Liu et al. 2017 (RMI), Sec. 3.2-3.3 and 4.2 (R+RMI: ResNet-101 fc1000 at stride 8, "
            "D_I = D_S = 1000, n = 500)"
        ),
    ),
    "d_rmi": Preset(
        name="d_rmi",
        model_class=RMI,
        backbone="resnet101_os8",
        kwargs=dict(
            **DEEPLAB_C5,
            **PAPER_TEXT,
            mlstm_units=500,
        ),
        tiny_kwargs=dict(TINY_TEXT, mlstm_units=8, visual_projection_dim=8),
        reference=(
            "Liu et al. 2017 (RMI), Sec. 3.2-3.3 (D+RMI: DeepLab ResNet-101 res5c projected to "
            "1000 by a 1x1 conv, as the authors' code `conv0`)"
        ),
    ),
}


for _preset in RMI_PRESETS.values():
    register_preset(_preset)

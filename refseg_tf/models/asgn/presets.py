"""ASGN presets: one per generator of ASGN Table I, with DE (conv3+4+5) + SE + AT by default.

`asgn_snle` (Hu et al.'s LSTM-CNN, VGG-16 fc8), `asgn_r_lstm`, `asgn_d_lstm` (RMI's baselines)
and `asgn_d_rmi`; the "+AT" rows set `detail_features=()` and `semantic_embedding=False`, the
rows without AT `adversarial_training=False` (see `refseg_tf.models.asgn.experiments.asgn`).
"""

from refseg_tf.models.asgn.model import ASGN
from refseg_tf.models.registry import Preset, get_preset, register_preset

# Table III's best DE layer set, conv3+4+5 (ResNet res3 / res4 / res5c = lib C3, C4, C5).
RESNET_DETAIL = ("C3", "C4", "C5")
# SNLE: VGG-16 conv3_3, conv4_3, conv5_3 resized to the fc8 grid (REC; the paper's "1/8" grid
# cannot hold on the stride-32 FCN, SPEC 3.9-7).
VGG_DETAIL = ("conv3", "conv4", "conv5")
# Name of each generator in configs and Table I -> (base preset, backbone, DE layers).
GENERATORS = {
    "snle": ("lstm_cnn", "vgg16_fcn", VGG_DETAIL),
    "r_lstm": ("r_lstm", "resnet101_os8", RESNET_DETAIL),
    "d_lstm": ("d_lstm", "resnet101_os8", RESNET_DETAIL),
    "d_rmi": ("d_rmi", "resnet101_os8", RESNET_DETAIL),
}
_TINY = dict(base_size="tiny", detail_channels=4, discriminator_filters=(4, 8, 8, 8, 8))


def _preset(generator):
    base, backbone, detail = GENERATORS[generator]
    return Preset(
        name=f"asgn_{generator}",
        model_class=ASGN,
        backbone=backbone,
        kwargs=dict(
            base_preset=base, detail_features=detail, detail_normalize=True,
            semantic_embedding=True,
        ),
        tiny_kwargs=_TINY,
        input_contract=get_preset(base).input_contract,  # the generator's inputs
        reference=(
            f"Qiu et al. (ASGN), Sec. III and IV.C, Table I ({base} generator +DE+SE+AT; "
            "DE conv3+4+5, Table III)"
        ),
    )


ASGN_PRESETS = {f"asgn_{name}": _preset(name) for name in GENERATORS}

for _preset in ASGN_PRESETS.values():
    register_preset(_preset)

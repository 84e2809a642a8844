"""LTS presets: `lts` (relevance filtering, n = 2, the best of Table 5) and `lts_trans`
(transformer localisation, Table 4), at paper scale plus tiny sizes."""

from refseg_tf.models.lts.model import IMAGE_SIZE_MULTIPLE, LTS
from refseg_tf.models.registry import InputContract, Preset, register_preset

# Darknet-53 with the YOLOv3 neck (the backbone's kwargs are given to `get_backbone`).
LTS_BACKBONE = "darknet53_neck"

# Strides 32, 16 and 8 fused by 2x upsampling; the GRU reads back-padded sentences (MCN).
LTS_INPUTS = InputContract(image_size_multiple=IMAGE_SIZE_MULTIPLE, text_paddings=("back",))

_PAPER = dict(
    embedding_dim=300,
    text_units=1024,
    fusion_channels=1024,
    branch_channels=512,
    aspp_channels=256,
)
_TINY = dict(
    embedding_dim=8,
    text_units=8,
    fusion_channels=16,
    branch_channels=8,
    aspp_channels=8,
    aspp_rates=(1, 2, 3),
    transformer_heads=2,
    transformer_ffn_units=16,
)

LTS_PRESETS = {
    "lts": Preset(
        name="lts",
        model_class=LTS,
        backbone=LTS_BACKBONE,
        kwargs=dict(_PAPER, localization="filter", num_filters=2),
        tiny_kwargs=_TINY,
        input_contract=LTS_INPUTS,
        reference=(
            "Jing et al. 2021 (LTS), Sec. 3-4.1; n = 2 relevance filterings, the best row of "
            "Table 5 (Table 1 uses n = 1: `num_filters=1`)"
        ),
    ),
    "lts_trans": Preset(
        name="lts_trans",
        model_class=LTS,
        backbone=LTS_BACKBONE,
        kwargs=dict(
            _PAPER,
            localization="transformer",
            transformer_heads=4,
            transformer_ffn_units=1024,
        ),
        tiny_kwargs=_TINY,
        input_contract=LTS_INPUTS,
        reference="Jing et al. 2021 (LTS-Trans), Sec. 3.2 Eq. 9, Sec. 4.1, Table 4",
    ),
}


for _preset in LTS_PRESETS.values():
    register_preset(_preset)

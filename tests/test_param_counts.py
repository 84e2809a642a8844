"""Parameter counts of the paper-scale presets against the counts implied by the papers.

Heads (text encoder, fusion, refinement, score) are counted analytically from the papers'
dimensions: D_im = D_I = 1000, D_text = D_S = 1000 (embeddings 1000), D_cls = D_Q = 500, 8
spatial channels, the LSTM formula 4 * (input + units + 1) * units and the ConvLSTM formula
4 * units * (k * k * (input + units) + 1); vocabularies of the authors' code: ReferIt 8,803 and
COCO 12,112 words. Backbones: VGG-16 (with fc6-fc8 as convolutions) 138,357,544 and ResNet-101
44,707,176 weights (keras.applications counts, batch-norm statistics included).
"""

import numpy as np
import pytest

from refseg_tf.backbones import get_backbone
from refseg_tf.models import build_preset

VOCAB_REFERIT = 8803
VOCAB_COCO = 12112
EMBEDDING = 1000
D_TEXT = 1000
D_CLS = 500
D_Q = 500
SPATIAL = 8
PROJECTION = 1000

VGG16_PARAMS = 138_357_544
RESNET101_PARAMS = 44_707_176
PAPER_CHANNELS = {"fc8": 1000, "fc1000": 1000, "C3": 512, "C4": 1024, "C5": 2048}
# Darknet-53 (keras-yolo3 `darknet_body`: 40,620,640 weights) + the YOLOv3 neck on C5
# (3 x (1x1 1024->512 + 3x3 512->1024), each with 4 batch-norm vectors: 15,747,072).
DARKNET53_NECK_PARAMS = 40_620_640 + 15_747_072
DARKNET_CHANNELS = {"neck": 1024, "C3": 256, "C4": 512, "C5": 1024}


def lstm_params(inputs, units):
    return 4 * (inputs + units + 1) * units


def conv_params(kernel, inputs, outputs, bias=True):
    return kernel * kernel * inputs * outputs + (outputs if bias else 0)


def conv_lstm_params(kernel, inputs, units):
    return 4 * units * (kernel * kernel * (inputs + units) + 1)


def text_params(vocabulary_size):
    return vocabulary_size * EMBEDDING + lstm_params(EMBEDDING, D_TEXT)


def fusion_params(vocabulary_size, visual_channels, projection, fused):
    total = text_params(vocabulary_size)
    if projection:
        total += conv_params(1, visual_channels, projection)
        visual_channels = projection
    return total + conv_params(1, visual_channels + D_TEXT + SPATIAL, fused)


def lstm_cnn_head(vocabulary_size, channels, feature, projection=None, score_kernel=1, deconv=0):
    """Hu et al. Sec. 3: text + [v; h_T; 8] -> 1x1 (D_cls) -> k x k (1) [+ 2s x 2s deconv]."""
    total = fusion_params(vocabulary_size, channels[feature], projection, D_CLS)
    total += conv_params(score_kernel, D_CLS, 1)
    return total + (2 * deconv) ** 2  # deconvolution without bias


def rrn_head(vocabulary_size, channels, pyramid=("C5", "C4", "C3")):
    """RRN Sec. 3.2-3.3: D+LSTM fusion to D_Q, laterals to D_Q, 1x1 ConvLSTM, 3x3 score."""
    total = fusion_params(vocabulary_size, channels["C5"], PROJECTION, D_Q)
    total += sum(conv_params(1, channels[level], D_Q) for level in dict.fromkeys(pyramid))
    return total + conv_lstm_params(1, D_Q, D_Q) + conv_params(3, D_Q, 1)


def rmi_head(vocabulary_size, channels, feature="fc1000", projection=None, units=500):
    """RMI Sec. 3.3 / 4.2 and authors' code: text, [v; w_t; h_t; 8] -> mLSTM (n) -> 1x1 score."""
    total = text_params(vocabulary_size)
    visual_channels = channels[feature]
    if projection:
        total += conv_params(1, visual_channels, projection)
        visual_channels = projection
    mlstm_inputs = visual_channels + EMBEDDING + D_TEXT + SPATIAL
    return total + conv_lstm_params(1, mlstm_inputs, units) + conv_params(1, units, 1)


def _lts_head(vocabulary_size, channels, n, transformer=False):
    from tests.test_lts import lts_head_params

    return lts_head_params(vocabulary_size, channels, n, transformer)


# (preset, overrides, vocabulary, backbone, head formula, head count worked out by hand)
CASES = [
    ("lstm_cnn", {"stage": "low"}, VOCAB_REFERIT, "vgg16_fcn",
     lambda v, c: lstm_cnn_head(v, c, "fc8"), 17_812_001),
    ("lstm_cnn", {"stage": "high"}, VOCAB_REFERIT, "vgg16_fcn",
     lambda v, c: lstm_cnn_head(v, c, "fc8", deconv=32), 17_816_097),
    ("r_lstm", {}, VOCAB_COCO, "resnet101_os8",
     lambda v, c: lstm_cnn_head(v, c, "fc1000"), 21_121_001),
    ("d_lstm", {}, VOCAB_COCO, "resnet101_os8",
     lambda v, c: lstm_cnn_head(v, c, "C5", projection=PROJECTION), 23_170_001),
    ("d_lstm_ours", {}, VOCAB_COCO, "resnet101_os8",
     lambda v, c: lstm_cnn_head(v, c, "C5", projection=PROJECTION, score_kernel=3), 23_174_001),
    ("rrn", {}, VOCAB_COCO, "resnet101_os8", lambda v, c: rrn_head(v, c), 26_969_501),
    ("r_rmi", {}, VOCAB_COCO, "resnet101_os8", lambda v, c: rmi_head(v, c), 27_134_501),
    ("d_rmi", {}, VOCAB_COCO, "resnet101_os8",
     lambda v, c: rmi_head(v, c, "C5", projection=PROJECTION), 29_183_501),
]
# LTS (tests/test_lts.py `lts_head_params`, SPEC_RMI_LTS_ASGN section 2 dimensions).
CASES += [
    ("lts", {"num_filters": 1}, VOCAB_COCO, "darknet53_neck",
     lambda v, c: _lts_head(v, c, 1), 26_097_617),
    ("lts", {}, VOCAB_COCO, "darknet53_neck", lambda v, c: _lts_head(v, c, 2), 28_202_193),
    ("lts_trans", {}, VOCAB_COCO, "darknet53_neck",
     lambda v, c: _lts_head(v, c, 1, transformer=True), 36_602_834),
]
CASE_IDS = ["lstm_cnn_low", "lstm_cnn_high", "r_lstm", "d_lstm", "d_lstm_ours", "rrn", "r_rmi",
            "d_rmi", "lts_n1", "lts", "lts_trans"]
BACKBONE_PARAMS = {"vgg16_fcn": VGG16_PARAMS, "resnet101_os8": RESNET101_PARAMS,
                   "darknet53_neck": DARKNET53_NECK_PARAMS}
PAPER_CHANNELS_BY_BACKBONE = {"darknet53_neck": DARKNET_CHANNELS}


def _build(model, image_size):
    inputs = {
        "image": np.zeros((1, image_size, image_size, 3), "float32"),
        "word_ids": np.ones((1, 3), "int32"),
    }
    model(inputs, training=False)
    return model


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_head_formula_gives_the_hand_computed_paper_count(case):
    _, _, vocabulary, backbone_name, formula, by_hand = case
    channels = PAPER_CHANNELS_BY_BACKBONE.get(backbone_name, PAPER_CHANNELS)
    assert formula(vocabulary, channels) == by_hand


# Building a paper-scale head takes a few seconds on CPU (a 1000-unit LSTM, 12M embeddings):
# two cases covering every head layer type run by default, the others with `-m slow`.
_FAST_HEADS = ("lstm_cnn_high", "rrn")
HEAD_CASES = [
    pytest.param(case, id=case_id, marks=[] if case_id in _FAST_HEADS else [pytest.mark.slow])
    for case, case_id in zip(CASES, CASE_IDS)
]


@pytest.mark.parametrize("case", HEAD_CASES)
def test_paper_scale_heads_on_tiny_backbones(case):
    name, overrides, vocabulary, backbone_name, formula, _ = case
    backbone = get_backbone(backbone_name, tiny=True, **(
        {"depths": (1, 1, 1, 1)} if backbone_name == "resnet101_os8" else {}
    ))
    model = _build(build_preset(name, vocabulary, backbone=backbone, **overrides), 64)
    head = model.count_params() - backbone.count_params()
    print(f"{name} {overrides}: head {head:,} parameters (tiny backbone)")
    assert head == formula(vocabulary, backbone.feature_channels)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_paper_scale_presets_total_count(case):
    name, overrides, vocabulary, backbone_name, formula, by_hand = case
    model = _build(build_preset(name, vocabulary, **overrides), 64)
    backbone = model.backbone.count_params()
    total = model.count_params()
    print(f"{name} {overrides}: {total:,} = backbone {backbone:,} + head {total - backbone:,}")
    assert backbone == BACKBONE_PARAMS[backbone_name]
    assert total == BACKBONE_PARAMS[backbone_name] + by_hand

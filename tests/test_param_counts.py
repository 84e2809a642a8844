"""Parameter counts of the paper-scale presets against counts worked out from their dimensions.

Heads (text encoder, fusion, refinement, score) are counted analytically. Which dimension
comes from where:
- the papers: D_im = D_I = 1000, D_text = D_S = 1000, D_cls = D_Q = 500, the 8 spatial
  channels (RMI Sec. 3.2; Hu's text writes 2), the 1x1 fusion convolution, the 1x1 laterals
  to D_Q (RRN Sec. 3.2), the LSTM formula 4 * (input + units + 1) * units, Hu's 2s x 2s
  deconvolution;
- the authors' code, where the papers are silent: the embedding size 1000 and the
  vocabularies (ReferIt 8,803 and COCO 12,112 words, their fixed files); the learned
  2048 -> 1000 projection of res5c (RMI's D+LSTM `conv0`, RRN's `mlp0`; R+LSTM reads fc1000
  instead); the 3x3 score convolution of RRN and D-LSTM-ours; the bias-free deconvolution
  (text_objseg `upsample32s`); the 1x1 ConvLSTM kernel (ConvLSTM formula
  4 * units * (k * k * (input + units) + 1), k = 1); and for `RRN_AUTHORS_CODE` the cell of
  referseg_rrn `util/cell.py` (no bias, 3 spatial peepholes, 5 layer norms).
Backbones: VGG-16 (with fc6-fc8 as convolutions) 138,357,544 and ResNet-101 44,707,176
weights (keras.applications counts, batch-norm statistics included).
"""

import numpy as np
import pytest

from refseg_tf.backbones import get_backbone
from refseg_tf.models import build_preset
from tests.test_case import run_preset_test

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
    model = run_preset_test(
        name, vocabulary, size="paper", backbone=backbone, head_formula=formula, **overrides
    )
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


# The RRN authors' ConvLSTM cell (referseg_rrn util/cell.py, `ConvLSTMCell([40, 40], 500, [1, 1])`
# with normalize=True, peephole=True) at the 40x40 grid of a 320 input.
GRID = 40


def authors_conv_lstm_params(units=D_Q, inputs=D_Q, grid=GRID):
    kernel = 1 * 1 * (inputs + units) * 4 * units  # `kernel` [1, 1, n, 4 * filters], no bias
    peepholes = 3 * grid * grid * units  # W_ci, W_cf, W_co, each of shape c.shape[1:]
    layer_norms = 5 * 2 * units  # layer_norm of j, i, f, o and c: beta and gamma per channel
    return kernel, peepholes, layer_norms


def test_rrn_authors_refinement_count_from_the_cell_dimensions():
    from refseg_tf.models.rrn import RecurrentRefinement
    from refseg_tf.models import RRN_AUTHORS_CODE

    kernel, peepholes, layer_norms = authors_conv_lstm_params()
    assert kernel + peepholes + layer_norms == 4_405_000
    assert peepholes == 2_400_000
    refinement = RecurrentRefinement(
        D_Q, 3, update="lstm", activation="tanh", **RRN_AUTHORS_CODE
    )
    q = np.zeros((1, GRID, GRID, D_Q), "float32")
    refinement(q, [q, q, q])
    assert refinement.count_params() == 4_405_000
    peephole_count = sum(
        int(np.prod(v.shape)) for v in refinement.weights if "peephole" in v.path
    )
    assert peephole_count == peepholes
    # The whole authors' head: the paper's RRN head with this cell instead of the ConvLSTM.
    head = rrn_head(VOCAB_COCO, PAPER_CHANNELS) - conv_lstm_params(1, D_Q, D_Q) + 4_405_000
    assert head == 29_372_501

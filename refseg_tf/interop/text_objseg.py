"""Format "text_objseg": Hu et al. 2016's TF1 checkpoints -> `LSTMCNN` (preset "lstm_cnn").

The authors' graph (ronghanghu/text_objseg `models/text_objseg_model.py`,
`text_objseg_full_conv` and `text_objseg_upsample32s`; `lstm_net.py`, `vgg_net.py`,
`util/cnn.py`, `util/rnn.py`) and its variables, for vocabulary size V, D_emb = D_text =
D_im = 1000, D_cls = 500:

| variable | shape | refseg-tf weight |
|---|---|---|
| `word_embedding/embedding` | [V, D_emb] | `fusion/text_encoder/embedding` (row = vocabulary line) |
| `lstm_lang/RNN/MultiRNNCell/Cell0/BasicLSTMCell/Linear/{Matrix,Bias}` (TF 1.0) or `lstm_lang/rnn/multi_rnn_cell/cell_0/basic_lstm_cell/{kernel,bias}` | [D_emb + D_text, 4 D_text], [4 D_text] | `fusion/text_encoder/lstm` (`tf1_lstm_to_keras`, forget_bias 1.0 folded in) |
| `vgg_local/conv{b}_{i}/{weights,biases}` | [3, 3, in, out], [out] | backbone `block{b}_conv{i}` |
| `vgg_local/fc6/{weights,biases}` | [7, 7, 512, 4096] (or the detection model's [25088, 4096]) | backbone `fc6` |
| `vgg_local/fc7`, `vgg_local/fc8` | [1, 1, 4096, 4096], [1, 1, 4096, 1000] | backbone `fc7`, `fc8` |
| `classifier/mlp_l1/{weights,biases}` | [1, 1, D_text + D_im + 8, D_cls] | `fusion/fusion_conv` (input rows reordered) |
| `classifier/mlp_l2/{weights,biases}` | [1, 1, D_cls, 1] | `score` |
| `classifier/upsample32s/weights` (high-res only, no bias) | [64, 64, 1, 1] ([kh, kw, out, in]) | `upsample` (`Conv2DTranspose`, same layout) |

Equations matched (the model's own code, checked by `tests/test_interop_text_objseg.py`
against a TF1 graph written from them): `h_T` of the LSTM run over all T steps, the front
`<pad>` steps included (`mask_text_padding=False`); `fused = ReLU(conv1x1([L2(h_T) tiled;
L2(fc8); spatial8]))` where the authors concatenate the LANGUAGE feature first and refseg-tf
the visual one, so the first D_text input rows of `mlp_l1/weights` move behind the D_im visual
rows; `tf.nn.l2_normalize` (epsilon 1e-12) = `L2Normalize`; the 8 spatial channels
`[xmin, ymin, xmax, ymax, xctr, yctr, 1/W, 1/H]` (`generate_spatial_batch`) =
`SpatialCoordinates`; the images are RGB minus the VGG mean `(123.68, 116.779, 103.939)`
(`vgg_net.channel_mean`): `data.normalization = "vgg_rgb"`. The optimizer's `Momentum` slots
and `global_step` of a `tf.train.Saver()` checkpoint are training state, skipped.

Checkpoint files: the released `referit_fc8_seg_lowres_iter_30000.tfmodel` and
`referit_fc8_seg_highres_iter_18000.tfmodel` (single-file V1, TF 1.0 names), and what
`exp_train_referit_seg_{lowres,highres}.py` write under later TF 1.x (V2, `rnn/...` names).
"""

from __future__ import annotations

import numpy as np

from refseg_tf.interop.registry import register_format
from refseg_tf.interop.tf1 import dense_to_conv_kernel, plan_tf1_lstm, tf1_conv2d_transpose_kernel

FORMAT_NAME = "text_objseg"
VGG_SCOPE = "vgg_local"
LSTM_SCOPE = "lstm_lang"
EMBEDDING = "word_embedding/embedding"
MLP1 = "classifier/mlp_l1"
MLP2 = "classifier/mlp_l2"
UPSAMPLE = "classifier/upsample32s/weights"
# util/rnn.py: BasicLSTMCell(output_dim, forget_bias) with lstm_net.py's forget_bias=1.0.
HU_FORGET_BIAS = 1.0


def configure(config):
    """The settings Hu's weights imply: RGB minus the VGG mean, the authors' tokenizer, the
    LSTM over the front `<pad>` steps; the weights come from the checkpoint, not from
    `train.backbone_weights` / `train.init_from`."""
    if config.model.name != "lstm_cnn":
        raise ValueError(
            f"format {FORMAT_NAME!r} fills the lstm_cnn model (experiments/lstm_cnn_*); the "
            f"config's model.name is {config.model.name!r}."
        )
    config.model.mask_text_padding = False
    config.data.normalization = "vgg_rgb"
    config.data.tokenizer = "authors"
    config.data.text_padding = "front"
    config.train.backbone_weights = ""
    config.train.init_from = ""


def check_model(model):
    """Refuses an `LSTMCNN` configured differently from Hu's graph (names the setting)."""
    from refseg_tf.backbones import VGG16FCN
    from refseg_tf.models.lstm_cnn import LSTMCNN

    problems = []
    if not isinstance(model, LSTMCNN):
        raise ValueError(f"format {FORMAT_NAME!r} needs an LSTMCNN; the config builds {type(model).__name__}.")
    if not isinstance(model.backbone, VGG16FCN):
        problems.append(f"backbone {type(model.backbone).__name__} (Hu: VGG16FCN)")
    if model.visual_feature != "fc8":
        problems.append(f"visual_feature={model.visual_feature!r} (Hu: 'fc8')")
    if model.fusion.visual_projection is not None:
        problems.append("visual_projection_dim is set (Hu: none)")
    if model.score_kernel_size != 1:
        problems.append(f"score_kernel_size={model.score_kernel_size} (Hu: 1)")
    if model.mask_text_padding:
        problems.append("mask_text_padding=True (Hu's LSTM runs over the <pad> steps)")
    if not (model.fusion.normalize_visual and model.fusion.normalize_text):
        problems.append("the fusion does not L2-normalise both features (Hu does)")
    if problems:
        raise ValueError(f"format {FORMAT_NAME!r} cannot fill this model: " + "; ".join(problems) + ".")


def assign(model, plan, options):
    """Plans every weight of a Hu-style `LSTMCNN` from the text_objseg variables."""
    _assign_vgg(model.backbone, plan, VGG_SCOPE)
    encoder = model.fusion.text_encoder
    embedding = encoder.embedding.embeddings
    plan.assign(
        embedding, plan.take(EMBEDDING, "embedding", shape=embedding.shape),
        source=EMBEDDING, layer="fusion/text_encoder/embedding",
    )
    plan_tf1_lstm(
        plan, LSTM_SCOPE, encoder.lstm, "fusion/text_encoder/lstm",
        input_dim=encoder.embedding_dim, forget_bias=float(options["forget_bias"]),
    )
    _assign_mlp1(model, plan)
    score = model.score_conv
    _assign_conv(plan, MLP2, score, "score")
    if model.upsample is not None:
        kernel = model.upsample.kernel
        value = plan.take(UPSAMPLE, "upsample", shape=kernel.shape)
        if value is not None:
            value = tf1_conv2d_transpose_kernel(value, kernel.shape)
        plan.assign(kernel, value, source=UPSAMPLE, layer="upsample")


def _assign_vgg(backbone, plan, scope):
    """VGG-16 `conv{b}_{i}` / `fc6..fc8` of the authors' `vgg_net.py` -> a `VGG16FCN`."""
    for block, depth in enumerate(backbone.depths, start=1):
        for index in range(1, depth + 1):
            _assign_conv(plan, f"{scope}/conv{block}_{index}", backbone.get_layer(f"block{block}_conv{index}"))
    for name in ("fc6", "fc7", "fc8"):
        _assign_conv(plan, f"{scope}/{name}", backbone.get_layer(name), dense_ok=True)


def _assign_conv(plan, prefix, layer, layer_name=None, dense_ok=False):
    layer_name = layer_name or layer.name
    kernel_shape = tuple(int(d) for d in layer.kernel.shape)
    name = f"{prefix}/weights"
    shapes = [kernel_shape]
    if dense_ok:
        shapes.append((int(np.prod(kernel_shape[:3])), kernel_shape[3]))
    value = None
    if plan.has(name) and plan.variables.shapes[name] in shapes:
        value = dense_to_conv_kernel(plan.take(name, layer_name), kernel_shape)
    else:
        value = plan.take(name, layer_name, shape=kernel_shape)
    plan.assign(layer.kernel, value, source=name, layer=layer_name)
    bias = f"{prefix}/biases"
    plan.assign(layer.bias, plan.take(bias, layer_name, shape=layer.bias.shape), source=bias, layer=layer_name)


def _assign_mlp1(model, plan):
    """`mlp_l1` reads [L2(h_T); L2(fc8); spatial]; refseg-tf's fusion [L2(v); L2(h_T); spatial]."""
    conv = model.fusion.fusion_conv
    layer = "fusion/fusion_conv"
    text_units = model.fusion.text_units
    visual_channels = model.backbone.feature_channels[model.visual_feature]
    name = f"{MLP1}/weights"
    kernel = plan.take(name, layer, shape=conv.kernel.shape)
    if kernel is not None:
        text_rows = kernel[:, :, :text_units]
        visual_rows = kernel[:, :, text_units : text_units + visual_channels]
        spatial_rows = kernel[:, :, text_units + visual_channels :]
        kernel = np.concatenate([visual_rows, text_rows, spatial_rows], axis=2)
    plan.assign(conv.kernel, kernel, source=f"{name} (rows: text, visual, spatial -> visual, text, spatial)", layer=layer)
    bias = f"{MLP1}/biases"
    plan.assign(conv.bias, plan.take(bias, layer, shape=conv.bias.shape), source=bias, layer=layer)


register_format(
    FORMAT_NAME,
    assign,
    configure=configure,
    check_model=check_model,
    defaults={"forget_bias": HU_FORGET_BIAS},
    description="Hu et al. 2016 text_objseg (LSTM-CNN low-res / high-res, VGG-16 + LSTM)",
    reference="ronghanghu/text_objseg models/text_objseg_model.py, lstm_net.py, vgg_net.py, util/cnn.py, util/rnn.py",
)

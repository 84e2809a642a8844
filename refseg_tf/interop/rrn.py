"""referseg_rrn (Li et al. 2018) checkpoints of `main_convlstm_p543.py` -> the RRN model.

Variable names, shapes and equations read from the authors' `LSTM_model_convlstm_p543.py` and
`util/cell.py` (no code taken). The backbone is DrSleep's tensorflow-deeplab-resnet
`DeepLabResNetModel` at the top level (Caffe names, slim batch norm: `tf1_resnet` flavour
"drsleep"; its VOC head `fc1_voc12_c*` is built but unused); the rest is under `text_objseg`:

| checkpoint variable | shape | layer here |
|---|---|---|
| `mlp0/{DW,biases}` | `[1,1,2048,1000]` | `fusion/visual_projection` |
| `embedding` | `[V, 1000]` (rows = vocabulary lines) | `fusion/text_encoder/embedding` |
| `RNN/multi_rnn_cell/cell_0/basic_lstm_cell/{weights,biases}` (or kernel/bias) | `[2000, 4000]` | `fusion/text_encoder/lstm` |
| `fusion/{DW,biases}` | `[1,1,2008,500]` | `fusion/fusion_conv` (+ ReLU) |
| `c5_lateral`, `c4_lateral`, `c3_lateral` `/{DW,biases}` | `[1,1,C,500]` | `lateral_C5`, `lateral_C4`, `lateral_C3` |
| `rnn/conv_lstm_cell/kernel` | `[1,1,500+500,2000]`, rows [x; h], gates j, i, f, o | `refinement/conv_lstm_step/gates` |
| `rnn/conv_lstm_cell/W_ci`, `W_cf`, `W_co` | `[40,40,500]` | spatial peepholes input / forget / output |
| `rnn/conv_lstm_cell/LayerNorm{,_1,_2,_3,_4}/{gamma,beta}` | `[500]` | layer norms of j, i, f, o, c |
| `score/{DW,biases}` | `[3,3,500,1]` | `score` |

The cell (`RRN_AUTHORS_CODE`: zero state, q fed first, layer norm, spatial peepholes, forget
bias 1 at run time, no gate bias) is the `rrn_*_authors` experiment rows' `ConvLSTMStep`, whose
gate layout equals the authors' kernel, so every variable is copied as it is.
"""

from __future__ import annotations

from refseg_tf.interop import tf1_resnet
from refseg_tf.interop.phrasecut import (
    SCOPE,
    STEP_COUNTER,
    _plan_conv,
    _plan_keras_lstm,
)

FORMAT_NAME = "rrn"
_LATERALS = {"C5": "c5_lateral", "C4": "c4_lateral", "C3": "c3_lateral"}
_NORMS = ("candidate", "input", "forget", "output", "cell")  # LayerNorm, _1 .. _4
_PEEPHOLES = {"input": "W_ci", "forget": "W_cf", "output": "W_co"}


def ignore_patterns():
    from refseg_tf.interop.assign import TF1_TRAINING_STATE

    voc = tuple("^" + prefix for prefix in tf1_resnet.IGNORED_PREFIXES["drsleep"])
    return TF1_TRAINING_STATE + (STEP_COUNTER,) + voc


def configure(config):
    """The authors' cell and DrSleep's backbone padding / epsilon; Caffe-BGR input."""
    import ml_collections

    from refseg_tf.models.rrn import RRN_AUTHORS_CODE

    if config.model.name != "rrn":
        raise ValueError(
            f"format {FORMAT_NAME!r} fills the rrn model (experiments/rrn_*_authors.py); the "
            f"config's model.name is {config.model.name!r}."
        )
    for key, value in RRN_AUTHORS_CODE.items():
        if config.model.get(key) != value:
            raise ValueError(
                f"format {FORMAT_NAME!r}: the authors' checkpoints hold their own ConvLSTM cell; "
                f"the config has model.{key}={config.model.get(key)!r}, theirs is {value!r} "
                "(use experiments/rrn_*_authors.py)."
            )
    kwargs = dict(config.model.backbone.get("kwargs", {}) or {})
    kwargs.update(tf1_resnet.TF1_BACKBONE_KWARGS)
    config.model.backbone.kwargs = ml_collections.ConfigDict(kwargs)
    config.data.normalization = "caffe_bgr"
    config.data.tokenizer = "authors"
    config.data.text_padding = "front"
    config.train.backbone_weights = ""
    config.train.init_from = ""


def check_model(model):
    from refseg_tf.backbones import ResNetOS8
    from refseg_tf.models.rrn import RRN

    if not isinstance(model, RRN):
        raise ValueError(f"format {FORMAT_NAME!r} needs an RRN; the config builds {type(model).__name__}.")
    problems = []
    if not isinstance(model.backbone, ResNetOS8):
        problems.append(f"backbone {type(model.backbone).__name__} (the authors': ResNet-101)")
    if model.visual_feature != "C5" or model.fusion.visual_projection is None:
        problems.append("visual feature is not C5 with a 1x1 projection (the authors' mlp0)")
    if tuple(model.pyramid) != ("C5", "C4", "C3"):
        problems.append(f"pyramid={model.pyramid} (the authors': C5, C4, C3)")
    if model.refinement.update != "lstm" or model.kernel_size != 1:
        problems.append("refinement is not a 1x1 ConvLSTM")
    if model.score_kernel_size != 3:
        problems.append(f"score_kernel_size={model.score_kernel_size} (the authors': 3)")
    if problems:
        raise ValueError(f"format {FORMAT_NAME!r} cannot fill this model: " + "; ".join(problems) + ".")


def assign(model, plan, options):
    """Plans every RRN weight from the `main_convlstm_p543.py` variables."""
    tf1_resnet.plan_backbone(plan, model.backbone, "drsleep")
    fusion = model.fusion
    encoder = fusion.text_encoder
    _plan_conv(plan, f"{SCOPE}/mlp0", fusion.visual_projection, "fusion/visual_projection")
    embedding = encoder.embedding.embeddings
    plan.assign(embedding, plan.take(f"{SCOPE}/embedding", "fusion/text_encoder/embedding",
                                     shape=embedding.shape),
                source=f"{SCOPE}/embedding", layer="fusion/text_encoder/embedding")
    _plan_keras_lstm(plan, f"{SCOPE}/RNN", encoder.lstm, "fusion/text_encoder/lstm",
                     encoder.embedding_dim, float(options["forget_bias"]))
    _plan_conv(plan, f"{SCOPE}/fusion", fusion.fusion_conv, "fusion/fusion_conv")
    for level, scope in _LATERALS.items():
        _plan_conv(plan, f"{SCOPE}/{scope}", model.laterals[level], f"lateral_{level}")
    cell = model.refinement.step_layers[0]
    prefix = f"{SCOPE}/rnn/conv_lstm_cell"
    kernel = cell.gates.kernel
    plan.assign(kernel, plan.take(f"{prefix}/kernel", "refinement/conv_lstm_step/gates",
                                  shape=kernel.shape),
                source=f"{prefix}/kernel", layer="refinement/conv_lstm_step/gates")
    for gate, name in _PEEPHOLES.items():
        weight = cell.peephole_weights[gate]
        layer = f"refinement/conv_lstm_step/peephole_{gate}"
        plan.assign(weight, plan.take(f"{prefix}/{name}", layer, shape=weight.shape),
                    source=f"{prefix}/{name}", layer=layer)
    for index, part in enumerate(_NORMS):
        norm = cell.norms[part]
        scope = f"{prefix}/LayerNorm" + ("" if index == 0 else f"_{index}")
        layer = f"refinement/conv_lstm_step/norm_{part}"
        for weight_name in ("gamma", "beta"):
            weight = getattr(norm, weight_name)
            plan.assign(weight, plan.take(f"{scope}/{weight_name}", layer, shape=weight.shape),
                        source=f"{scope}/{weight_name}", layer=layer)
    _plan_conv(plan, f"{SCOPE}/score", model.score_conv, "score")
    # RRN never reads the backbone's fc1000 (DrSleep's ResNet has none): it keeps its values.
    layer = model.backbone.get_layer("fc1000")
    for weight in layer.weights:
        plan.assign(weight, weight.numpy(), source="(no fc1000 in DeepLab: initial value)",
                    layer=f"{model.backbone.name}/fc1000")


def register():
    from refseg_tf.interop.registry import register_format

    register_format(
        FORMAT_NAME,
        assign,
        configure=configure,
        check_model=check_model,
        ignore=ignore_patterns(),
        defaults={"forget_bias": 1.0},
        description="referseg_rrn main_convlstm_p543.py checkpoints (RRN, the authors' ConvLSTM)",
        reference="liruiyu/referseg_rrn LSTM_model_convlstm_p543.py, util/cell.py; "
                  "DrSleep/tensorflow-deeplab-resnet deeplab_resnet/model.py",
    )


register()

"""TF-phrasecut-public (Liu et al. 2017, the RMI code) checkpoints -> LSTMCNN / RMI models.

Variable names, shapes and equations read from the authors' `LSTM_model.py` / `RMI_model.py`
(TensorFlow 1.2.1), no code taken from them. Both build the backbone first, then everything
else under the variable scope `text_objseg`:

| checkpoint variable | shape | layer here |
|---|---|---|
| `ResNet/...` (`-w resnet`) or `DeepLab/group_...` (`-w deeplab`) | | `backbone` (`tf1_resnet`) |
| `text_objseg/conv0/{DW,biases}` (DeepLab only) | `[1,1,2048,1000]`, `[1000]` | visual projection |
| `text_objseg/embedding` | `[V, 1000]`: row = line of the vocabulary file | text embedding |
| LSTM: `text_objseg/RNN/<cell>` | `[1000 + 1000, 4000]` | text LSTM (`fusion.text_encoder`) |
| LSTM: `text_objseg/conv1/{DW,biases}` | `[1,1,1000+1000+8,500]` | `fusion.fusion_conv` (+ ReLU) |
| RMI: `text_objseg/RNN/WLSTM/<cell>` | `[2000, 4000]` | word LSTM (`text_encoder`) |
| RMI: `text_objseg/RNN/ALSTM/<cell>` | `[1000+1000+1000+8 + 500, 2000]` | `mlstm` |
| `text_objseg/conv2/{DW,biases}` | `[1,1,500,1]` | `score` |

`<cell>` is a TF1 `MultiRNNCell` of one `BasicLSTMCell`: `multi_rnn_cell/cell_0/basic_lstm_cell/`
`{weights,biases}` under TF 1.1-1.2 (the README's 1.2.1), `{kernel,bias}` under TF >= 1.3,
`MultiRNNCell/Cell0/BasicLSTMCell/Linear/{Matrix,Bias}` under TF 1.0; all three are accepted.
Gates i, j, f, o with `forget_bias = 1.0` added at run time (folded into the bias here).
The mLSTM's rows are `[visual; word embedding; L2(h_t); spatial8; h_{t-1}]` and its columns
i, j, f, o: the layout of `MultimodalLSTM` (copied as is, forget bias folded).

Both skip the front `<pad>` steps (`tf.cond` on word id 0; vocabulary line 0 is `<pad>`),
L2-normalise the visual feature and h_t, and score `up >= 1e-9`, i.e. probability >= 0.5.
The ResNet feature is TF-resnet's `fc1000` logits at output stride 8 (`atrous=True`), the
DeepLab one `res5c`. Every `text_objseg/...` variable not listed above is training state
(Adam slots, `beta{1,2}_power`, the step counter `text_objseg/Variable`).
"""

from __future__ import annotations

from refseg_tf.interop import tf1_resnet

SCOPE = "text_objseg"
FORMATS = ("phrasecut_lstm", "phrasecut_rmi")
BACKBONE_FLAVOURS = {"resnet": "tf_resnet", "deeplab": "tf_deeplab"}
FORGET_BIAS = 1.0  # TF1 BasicLSTMCell default, not stored in the checkpoint


def lstm_cell_names(prefix):
    """The (kernel, bias) names of a TF1 `MultiRNNCell([BasicLSTMCell])` under `prefix`, for
    TF 1.1-1.2, TF >= 1.3 and TF 1.0 (first = the README's TF 1.2.1)."""
    return (
        (f"{prefix}/multi_rnn_cell/cell_0/basic_lstm_cell/weights",
         f"{prefix}/multi_rnn_cell/cell_0/basic_lstm_cell/biases"),
        (f"{prefix}/multi_rnn_cell/cell_0/basic_lstm_cell/kernel",
         f"{prefix}/multi_rnn_cell/cell_0/basic_lstm_cell/bias"),
        (f"{prefix}/MultiRNNCell/Cell0/BasicLSTMCell/Linear/Matrix",
         f"{prefix}/MultiRNNCell/Cell0/BasicLSTMCell/Linear/Bias"),
    )


def detect_backbone(names):
    """"resnet" or "deeplab" from the checkpoint's variable names (None: neither)."""
    flavour = tf1_resnet.detect_flavour(names)
    for weights, candidate in BACKBONE_FLAVOURS.items():
        if flavour == candidate:
            return weights
    return None

# Training state besides the TF1 defaults: `lr = tf.Variable(0.0)` (the Adam step counter)
# created under the `text_objseg` name scope.
STEP_COUNTER = r"^text_objseg/Variable(_\d+)?$"
MODELS = {"phrasecut_lstm": ("r_lstm", "d_lstm"), "phrasecut_rmi": ("r_rmi", "d_rmi")}


def ignore_patterns():
    """Checkpoint variables that are not weights of the network: training state, DeepLab's VOC
    classifier `DeepLab/fc1_voc12/*` (built by TF-deeplab, never read by LSTM/RMI_model.py)."""
    from refseg_tf.interop.assign import TF1_TRAINING_STATE

    voc = tuple("^" + prefix for prefix in tf1_resnet.IGNORED_PREFIXES["tf_deeplab"])
    return TF1_TRAINING_STATE + (STEP_COUNTER,) + voc


def configure_for(format_name):
    """`configure(config)` of a format: the settings the authors' weights imply."""

    def configure(config):
        allowed = MODELS[format_name]
        if config.model.name not in allowed:
            raise ValueError(
                f"format {format_name!r} fills the models {allowed} (experiments/{{r,d}}_"
                f"{'lstm' if 'lstm' in format_name else 'rmi'}_*); the config's model.name is "
                f"{config.model.name!r}."
            )
        kwargs = dict(config.model.backbone.get("kwargs", {}) or {})
        kwargs.update(tf1_resnet.TF1_BACKBONE_KWARGS)
        import ml_collections

        config.model.backbone.kwargs = ml_collections.ConfigDict(kwargs)
        config.data.normalization = "caffe_bgr"  # main.py: RGB -> BGR, minus the Caffe mean
        config.data.tokenizer = "authors"
        config.data.text_padding = "front"
        config.train.backbone_weights = ""
        config.train.init_from = ""

    return configure


def _model_weights(model):
    """"resnet" (fc1000, no projection) or "deeplab" (C5 + 1x1 projection) from the model."""
    projection = _projection(model)
    if model.visual_feature == "fc1000" and projection is None:
        return "resnet"
    if model.visual_feature == "C5" and projection is not None:
        return "deeplab"
    return None


def check_model_for(format_name):
    def check_model(model):
        from refseg_tf.backbones import ResNetOS8
        from refseg_tf.models.lstm_cnn import LSTMCNN
        from refseg_tf.models.rmi import RMI

        wanted = LSTMCNN if format_name == "phrasecut_lstm" else RMI
        if not isinstance(model, wanted):
            raise ValueError(
                f"format {format_name!r} needs a {wanted.__name__}; the config builds "
                f"{type(model).__name__}."
            )
        problems = []
        if not isinstance(model.backbone, ResNetOS8):
            problems.append(f"backbone {type(model.backbone).__name__} (the authors': ResNet-101)")
        elif model.backbone.stem_padding != "same" or abs(model.backbone.batchnorm_epsilon - 1e-3) > 1e-12:
            problems.append("backbone not built with stem_padding='same', batchnorm_epsilon=1e-3")
        if _model_weights(model) is None:
            problems.append(
                f"visual_feature={model.visual_feature!r} with"
                f"{'' if _projection(model) is not None else 'out'} a projection (the authors: "
                "fc1000 without (-w resnet) or C5 with a 1x1 projection (-w deeplab))"
            )
        if isinstance(model, LSTMCNN):
            if model.score_kernel_size != 1 or model.upsampling != "none":
                problems.append("score_kernel_size != 1 or upsampling (the authors: 1x1 conv2, none)")
            if not model.mask_text_padding:
                problems.append("mask_text_padding=False (the authors' LSTM skips <pad> steps)")
            if not (model.fusion.normalize_visual and model.fusion.normalize_text):
                problems.append("the fusion does not L2-normalise both features")
        elif model.output_transform != "atanh_relu":
            problems.append(f"output_transform={model.output_transform!r} (the authors': atanh_relu)")
        if problems:
            raise ValueError(f"format {format_name!r} cannot fill this model: " + "; ".join(problems) + ".")

    return check_model


def _projection(model):
    """The 1x1 visual projection layer (None without one): LSTMCNN's sits in its fusion."""
    from refseg_tf.models.lstm_cnn import LSTMCNN

    return model.fusion.visual_projection if isinstance(model, LSTMCNN) else model.visual_projection


def _checkpoint_weights(plan, model, options):
    """The checkpoint's backbone ("resnet"/"deeplab"), checked against the option and model."""
    found = detect_backbone(plan.variables.names)
    wanted = options.get("weights", "auto")
    if wanted not in ("auto",) + tuple(BACKBONE_FLAVOURS):
        raise ValueError(f"option weights must be auto, resnet or deeplab; received {wanted!r}.")
    if found is None:
        raise ValueError(
            f"{plan.path}: neither {tf1_resnet._MARKERS['tf_resnet']!r} (-w resnet) nor "
            f"{tf1_resnet._MARKERS['tf_deeplab']!r} (-w deeplab) is in the checkpoint: not a "
            "TF-phrasecut-public checkpoint."
        )
    if wanted != "auto" and wanted != found:
        raise ValueError(f"{plan.path}: option weights={wanted!r} but the checkpoint holds a {found} backbone.")
    model_weights = _model_weights(model)
    if model_weights != found:
        from refseg_tf.models.rmi import RMI

        family = "rmi" if isinstance(model, RMI) else "lstm"  # check_model admits these two
        raise ValueError(
            f"{plan.path}: the checkpoint was trained with -w {found} but the config builds "
            f"visual_feature={model.visual_feature!r} "
            f"{'with' if _projection(model) is not None else 'without'} a projection, the "
            f"-w {model_weights} model (use experiments/{found[0]}_{family}_*.py)."
        )
    return found


def _plan_conv(plan, scope, conv, layer):
    """`{scope}/DW` `[k, k, in, out]` and `{scope}/biases` -> a Keras Conv2D (same layout)."""
    plan.assign(conv.kernel, plan.take(f"{scope}/DW", layer, shape=conv.kernel.shape),
                source=f"{scope}/DW", layer=layer)
    plan.assign(conv.bias, plan.take(f"{scope}/biases", layer, shape=conv.bias.shape),
                source=f"{scope}/biases", layer=layer)


def _cell_names(plan, prefix, layer):
    """The `(kernel, bias)` names of the cell under `prefix` present in the checkpoint."""
    candidates = lstm_cell_names(prefix)
    for kernel_name, bias_name in candidates:
        if plan.has(kernel_name):
            return kernel_name, bias_name
    plan.problems.append(
        f"missing the LSTM variables of layer {layer!r}: none of "
        f"{[kernel for kernel, _ in candidates]} in the checkpoint"
    )
    return None


def _plan_keras_lstm(plan, prefix, lstm, layer, input_dim, forget_bias):
    from refseg_tf.interop.tf1 import tf1_lstm_to_keras

    targets = (lstm.cell.kernel, lstm.cell.recurrent_kernel, lstm.cell.bias)
    names = _cell_names(plan, prefix, layer)
    values, sources = [None] * 3, [prefix] * 3
    if names is not None:
        units = int(lstm.cell.recurrent_kernel.shape[0])
        matrix = plan.take(names[0], layer, shape=(input_dim + units, 4 * units))
        bias = plan.take(names[1], layer, shape=(4 * units,))
        if matrix is not None and bias is not None:
            values = tf1_lstm_to_keras(matrix, bias, input_dim, forget_bias)
        sources = (f"{names[0]} (input rows)", f"{names[0]} (state rows)", names[1])
    for target, value, source in zip(targets, values, sources):
        plan.assign(target, value, source=source, layer=layer)


def _plan_common(model, plan, options, encoder, projection, encoder_layer):
    weights = _checkpoint_weights(plan, model, options)
    tf1_resnet.plan_backbone(plan, model.backbone, BACKBONE_FLAVOURS[weights])
    if weights == "deeplab":
        _plan_conv(plan, f"{SCOPE}/conv0", projection, "visual_projection")
    else:
        # The DeepLab ResNet has no fc1000; R+ models use TF-resnet's (planned above).
        pass
    embedding = encoder.embedding.embeddings
    plan.assign(embedding, plan.take(f"{SCOPE}/embedding", f"{encoder_layer}/embedding",
                                     shape=embedding.shape),
                source=f"{SCOPE}/embedding", layer=f"{encoder_layer}/embedding")
    return weights


def assign_lstm(model, plan, options):
    """Plans every weight of an R+LSTM / D+LSTM `LSTMCNN` from LSTM_model.py's variables."""
    encoder = model.fusion.text_encoder
    _plan_common(model, plan, options, encoder, model.fusion.visual_projection, "fusion/text_encoder")
    _plan_keras_lstm(plan, f"{SCOPE}/RNN", encoder.lstm, "fusion/text_encoder/lstm",
                     encoder.embedding_dim, float(options["forget_bias"]))
    _plan_conv(plan, f"{SCOPE}/conv1", model.fusion.fusion_conv, "fusion/fusion_conv")
    _plan_conv(plan, f"{SCOPE}/conv2", model.score_conv, "score")
    _exclude_unused_fc1000(model, plan)


def assign_rmi(model, plan, options):
    """Plans every weight of an R+RMI / D+RMI `RMI` from RMI_model.py's variables."""
    import numpy as np

    encoder = model.text_encoder
    _plan_common(model, plan, options, encoder, model.visual_projection, "text_encoder")
    _plan_keras_lstm(plan, f"{SCOPE}/RNN/WLSTM", encoder.lstm, "text_encoder/lstm",
                     encoder.embedding_dim, float(options["forget_bias"]))
    mlstm = model.mlstm
    names = _cell_names(plan, f"{SCOPE}/RNN/ALSTM", "mlstm")
    kernel = bias = None
    if names is not None:
        kernel = plan.take(names[0], "mlstm", shape=mlstm.kernel.shape)
        bias = plan.take(names[1], "mlstm", shape=mlstm.bias.shape)
        if bias is not None:  # same rows and gate order (i, j, f, o); fold the forget bias
            units = mlstm.units
            bias = bias.copy()
            bias[2 * units : 3 * units] += np.float32(options["forget_bias"])
    sources = names or (f"{SCOPE}/RNN/ALSTM", f"{SCOPE}/RNN/ALSTM")
    plan.assign(mlstm.kernel, kernel, source=sources[0], layer="mlstm")
    plan.assign(mlstm.bias, bias, source=sources[1], layer="mlstm")
    _plan_conv(plan, f"{SCOPE}/conv2", model.score_conv, "score")
    _exclude_unused_fc1000(model, plan)


def _exclude_unused_fc1000(model, plan):
    """D+ models never read fc1000 (TF-deeplab has none): it keeps its initial values, the one
    weight of the model no checkpoint variable fills; listed so `require_complete` allows it."""
    if model.visual_feature != "fc1000":
        layer = model.backbone.get_layer("fc1000")
        for weight in layer.weights:
            plan.assign(weight, weight.numpy(), source="(unused by -w deeplab: initial value)",
                        layer=f"{model.backbone.name}/fc1000")


def register():
    from refseg_tf.interop.registry import register_format

    reference = ("chenxi116/TF-phrasecut-public LSTM_model.py / RMI_model.py (TF 1.2.1); "
                 "chenxi116/TF-resnet, TF-deeplab resnet_model.py / deeplab_model.py")
    for name, assign, what in (("phrasecut_lstm", assign_lstm, "R+LSTM / D+LSTM"),
                               ("phrasecut_rmi", assign_rmi, "R+RMI / D+RMI")):
        register_format(
            name,
            assign,
            configure=configure_for(name),
            check_model=check_model_for(name),
            ignore=ignore_patterns(),
            defaults={"forget_bias": 1.0, "weights": "auto"},
            description=f"TF-phrasecut-public {what} checkpoints (main.py -n "
                        f"{'LSTM' if 'lstm' in name else 'RMI'} -w resnet|deeplab)",
            reference=reference,
        )

register()

"""Authors' TF1 graphs written here (tf.compat.v1) from their published variable names, shapes
and equations, to check that imported checkpoints give the authors' numbers.

No code of the authors is copied: the cell math and layers are written from the equations
(see refseg_tf/interop/tf1.py and text_objseg.py docstrings). Keras 3 refuses
`tf.compat.v1.nn.rnn_cell`, so the LSTM cell is written with `tf.compat.v1.get_variable`.
Part B's graphs (RMI / RRN) reuse `basic_lstm`, `conv`, `save`.
"""

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1

# The variable-scope path of one LSTM cell, by naming (TF 1.0 / later TF 1.x).
LSTM_SCOPES = {
    "tf1.0": ("RNN/MultiRNNCell/Cell0/BasicLSTMCell/Linear", "Matrix", "Bias"),
    "tf1.x": ("rnn/multi_rnn_cell/cell_0/basic_lstm_cell", "kernel", "bias"),
}


def _initializer(rng, std):
    return lambda shape, dtype=None, partition_info=None: tf.constant(
        rng.normal(0.0, std, size=shape).astype(np.float32)
    )


def get_variable(rng, name, shape, std=None):
    """A variable initialised from `rng` (He-style std by default: logits of order 1)."""
    shape = [int(d) for d in shape]
    if std is None:
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        std = float(np.sqrt(2.0 / max(fan_in, 1)))
    return v1.get_variable(name, shape, initializer=_initializer(rng, std))


def basic_lstm(rng, inputs, units, naming="tf1.0", forget_bias=1.0):
    """TF1 BasicLSTMCell over a list of `[N, D]` steps from zero state; returns every h.

    One matrix `[D + U, 4U]` (inputs before states), bias `[4U]`, gates i, j, f, o:
    c' = c * sigmoid(f + forget_bias) + sigmoid(i) * tanh(j); h' = tanh(c') * sigmoid(o).
    """
    scope, matrix_name, bias_name = LSTM_SCOPES[naming]
    input_dim = int(inputs[0].shape[-1])
    with v1.variable_scope(scope):
        matrix = get_variable(rng, matrix_name, [input_dim + units, 4 * units],
                              std=1.0 / np.sqrt(input_dim + units))
        bias = get_variable(rng, bias_name, [4 * units], std=0.5)
    batch = tf.shape(inputs[0])[0]
    c = tf.zeros([batch, units])
    h = tf.zeros([batch, units])
    outputs = []
    for x in inputs:
        gates = tf.matmul(tf.concat([x, h], 1), matrix) + bias
        i, j, f, o = tf.split(gates, 4, axis=1)
        c = c * tf.sigmoid(f + forget_bias) + tf.sigmoid(i) * tf.tanh(j)
        h = tf.tanh(c) * tf.sigmoid(o)
        outputs.append(h)
    return outputs


def conv(rng, name, x, kernel_size, out, relu=True, std=None):
    """`util/cnn.py`-style conv: `<name>/weights [k, k, in, out]`, `<name>/biases`, SAME."""
    with v1.variable_scope(name):
        weights = get_variable(rng, "weights", [kernel_size, kernel_size, int(x.shape[-1]), out], std)
        biases = get_variable(rng, "biases", [out], std=0.1)
    y = tf.nn.bias_add(tf.nn.conv2d(x, weights, strides=[1, 1, 1, 1], padding="SAME"), biases)
    return tf.nn.relu(y) if relu else y


def vgg_fc8_full_conv(rng, x, widths, depths, fc_units, num_classes):
    """VGG-16 as `vgg_net.vgg_fc8_full_conv`: 3x3 conv+ReLU blocks, 2x2 SAME max pools,
    fc6 7x7 conv+ReLU, fc7 1x1 conv+ReLU, fc8 1x1 conv, under scope `vgg_local`."""
    with v1.variable_scope("vgg_local"):
        for block, (width, depth) in enumerate(zip(widths, depths), start=1):
            for index in range(1, depth + 1):
                x = conv(rng, f"conv{block}_{index}", x, 3, width)
            x = tf.nn.max_pool2d(x, 2, 2, "SAME")
        x = conv(rng, "fc6", x, 7, fc_units)
        x = conv(rng, "fc7", x, 1, fc_units)
        return conv(rng, "fc8", x, 1, num_classes, relu=False)


def spatial_batch(n, height, width):
    """The 8-D grid of Hu et al.: [xmin, ymin, xmax, ymax, xctr, yctr, 1/W, 1/H] in [-1, 1]."""
    grid = np.zeros((n, height, width, 8), np.float32)
    for h in range(height):
        for w in range(width):
            xmin, xmax = w / width * 2 - 1, (w + 1) / width * 2 - 1
            ymin, ymax = h / height * 2 - 1, (h + 1) / height * 2 - 1
            grid[:, h, w] = [xmin, ymin, xmax, ymax, (xmin + xmax) / 2, (ymin + ymax) / 2,
                             1 / width, 1 / height]
    return grid


def hu_text_objseg(rng, word_ids_tn, image, *, vocabulary_size, embed_dim, lstm_dim, mlp_dim,
                   widths, depths, fc_units, num_classes, high_res, naming="tf1.0"):
    """Hu et al.'s `text_objseg_full_conv` (+ `upsample32s` when `high_res`) as a TF1 graph.

    `word_ids_tn`: `[T, N]` int32 (time major, as the authors feed it); `image`: `[N, S, S, 3]`
    RGB minus the VGG mean. Returns the scores `[N, S/32, S/32, 1]` or `[N, S, S, 1]`.
    """
    with v1.variable_scope("word_embedding"):
        embedding = get_variable(rng, "embedding", [vocabulary_size, embed_dim], std=0.5)
    embedded = tf.nn.embedding_lookup(embedding, word_ids_tn)  # [T, N, D]
    steps = [embedded[t] for t in range(int(word_ids_tn.shape[0]))]
    with v1.variable_scope("lstm_lang"):
        h_t = basic_lstm(rng, steps, lstm_dim, naming=naming, forget_bias=1.0)[-1]
    visual = vgg_fc8_full_conv(rng, image, widths, depths, fc_units, num_classes)
    n, height, width = int(visual.shape[0]), int(visual.shape[1]), int(visual.shape[2])
    language = tf.tile(tf.reshape(h_t, [n, 1, 1, lstm_dim]), [1, height, width, 1])
    fused = tf.concat(
        [tf.nn.l2_normalize(language, 3), tf.nn.l2_normalize(visual, 3),
         tf.constant(spatial_batch(n, height, width))],
        axis=3,
    )
    with v1.variable_scope("classifier"):
        mlp1 = conv(rng, "mlp_l1", fused, 1, mlp_dim)
        scores = conv(rng, "mlp_l2", mlp1, 1, 1, relu=False)
        if high_res:
            with v1.variable_scope("upsample32s"):
                weights = get_variable(rng, "weights", [64, 64, 1, 1], std=0.05)
            scores = tf.nn.conv2d_transpose(
                scores, weights, output_shape=[n, height * 32, width * 32, 1],
                strides=[1, 32, 32, 1], padding="SAME",
            )
    return scores


def add_momentum_slots(rng):
    """What `tf.train.Saver()` of a MomentumOptimizer run also saves: `<var>/Momentum` slots
    and `global_step` (training state the import must skip)."""
    for variable in list(v1.global_variables()):
        v1.get_variable(variable.op.name + "/Momentum", variable.shape,
                        initializer=v1.zeros_initializer())
    v1.get_variable("global_step", [], dtype=tf.int32, initializer=v1.zeros_initializer())


def save(session, path, version):
    """Saves every global variable as a V1 (single file) or V2 checkpoint; returns its path."""
    write_version = v1.train.SaverDef.V1 if version == 1 else v1.train.SaverDef.V2
    saver = v1.train.Saver(write_version=write_version)
    return saver.save(session, path, write_meta_graph=False)

"""referseg_rrn's `LSTM_model_convlstm_p543.py` graph in tf.compat.v1 (Li et al. 2018, RRN).

Written here from the authors' variable names, shapes and equations (no code taken): DrSleep's
DeepLab ResNet-101 (Caffe names, slim batch norm), everything else under `text_objseg`:
`mlp0` (res5c -> 1000), the word LSTM (`RNN/multi_rnn_cell/cell_0/basic_lstm_cell`), `fusion`
(ReLU 1x1 conv of [L2(v); L2(h_T); spatial8] -> 500), `c{5,4,3}_lateral` (ReLU 1x1 convs of
res5c, res4b22, res3b3 -> 500), their ConvLSTM cell (`util/cell.py`) run by `tf.nn.dynamic_rnn`
over [q, c5, c4, c3] from a zero state (`rnn/conv_lstm_cell/{kernel, W_ci, W_cf, W_co}`, five
`LayerNorm*` in the order j, i, f, o, c, forget bias 1, no gate bias), and the 3x3 `score`.
"""

import numpy as np
import tensorflow as tf

from tests.tf1_phrasecut import _basic_lstm, _conv, _l2, randomize, resnet, spatial_batch, v1


def _layer_norm(x, index):
    """`tf.contrib.layers.layer_norm` defaults: statistics over all non-batch axes, per-channel
    beta / gamma, variance epsilon 1e-12; scopes LayerNorm, LayerNorm_1, ..."""
    scope = "LayerNorm" if index == 0 else f"LayerNorm_{index}"
    channels = [int(x.shape[-1])]
    with v1.variable_scope(scope):
        beta = v1.get_variable("beta", channels)
        gamma = v1.get_variable("gamma", channels)
    mean, variance = tf.nn.moments(x, [1, 2, 3], keepdims=True)
    return tf.nn.batch_normalization(x, mean, variance, beta, gamma, 1e-12)


def _conv_lstm(inputs, units, size):
    """`dynamic_rnn(ConvLSTMCell([h, w], units, [1, 1]))` over `inputs` (a list of maps)."""
    h = c = tf.zeros([1, size, size, units])
    with v1.variable_scope("rnn/conv_lstm_cell") as scope:
        for step, x in enumerate(inputs):
            if step:
                scope.reuse_variables()
            y = tf.concat([x, h], 3)
            kernel = v1.get_variable("kernel", [1, 1, int(y.shape[-1]), 4 * units])
            y = tf.nn.convolution(y, kernel, padding="SAME")
            j, i, f, o = tf.split(y, 4, axis=3)
            i += v1.get_variable("W_ci", [size, size, units]) * c
            f += v1.get_variable("W_cf", [size, size, units]) * c
            j, i, f = _layer_norm(j, 0), _layer_norm(i, 1), _layer_norm(f, 2)
            c = c * tf.sigmoid(f + 1.0) + tf.sigmoid(i) * tf.tanh(j)
            o += v1.get_variable("W_co", [size, size, units]) * c
            o, c = _layer_norm(o, 3), _layer_norm(c, 4)
            h = tf.sigmoid(o) * tf.tanh(c)
    return h


def rrn_graph(*, size, steps, vocab, backbone, emb=1000, rnn=1000, mlp=500, v_emb=1000, train=False):
    words = v1.placeholder(tf.int32, [1, steps])
    image = v1.placeholder(tf.float32, [1, size, size, 3])
    features = resnet(image, "drsleep", **backbone)
    grid = size // 8
    with v1.variable_scope("text_objseg"):
        visual = _conv(features["res5c"], "mlp0", 1, int(features["res5c"].shape[-1]), v_emb, bias=True)
        embedding = v1.get_variable("embedding", [vocab, emb])
        embedded = tf.nn.embedding_lookup(embedding, tf.transpose(words))
        state = tf.zeros([1, 2 * rnn])
        output = tf.constant(0.0)
        with v1.variable_scope("RNN"):
            for n in range(steps):
                if n > 0:
                    v1.get_variable_scope().reuse_variables()
                step = lambda n=n, state=state: _basic_lstm(embedded[n], state, rnn, v1.get_variable_scope())
                output, state = tf.cond(tf.equal(words[0, n], 0), lambda s=state: (tf.zeros([1, rnn]), s), step)
        lang = tf.tile(_l2(tf.reshape(output, [1, 1, 1, rnn])), [1, grid, grid, 1])
        feat = tf.concat([_l2(visual), lang, tf.constant(spatial_batch(grid, grid))], 3)
        fusion = tf.nn.relu(_conv(feat, "fusion", 1, int(feat.shape[-1]), mlp, bias=True))
        laterals = [
            tf.nn.relu(_conv(features[level], f"c{k}_lateral", 1, int(features[level].shape[-1]), mlp, bias=True))
            for k, level in ((5, "res5c"), (4, "res4"), (3, "res3"))
        ]
        refined = _conv_lstm([fusion] + laterals, mlp, grid)
        pred = _conv(refined, "score", 3, mlp, 1, bias=True)
        if train:
            step_var = tf.Variable(0.0, trainable=False)
            tvars = [v for v in v1.trainable_variables() if v.op.name.startswith("text_objseg")]
            v1.train.AdamOptimizer(1e-4).minimize(tf.reduce_mean(tf.square(pred)),
                                                  global_step=step_var, var_list=tvars)
    return words, image, pred


def run_rrn_reference(prefix, *, word_ids, image, seed=0, train=True, **dims):
    graph = tf.Graph()
    with graph.as_default():
        words_ph, image_ph, pred = rrn_graph(train=train, **dims)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            randomize(session, seed)
            rng = np.random.default_rng(seed + 1)
            for variable in v1.global_variables():  # peepholes and layer-norm scales drawn too
                leaf = variable.op.name.rsplit("/", 1)[-1]
                if leaf in ("W_ci", "W_cf", "W_co"):
                    variable.load(rng.normal(0, 0.5, variable.shape.as_list()).astype(np.float32), session)
                elif leaf == "kernel" and "conv_lstm_cell" in variable.op.name:
                    shape = variable.shape.as_list()
                    variable.load(rng.normal(0, (1.0 / shape[2]) ** 0.5, shape).astype(np.float32), session)
                elif "LayerNorm" in variable.op.name and leaf == "gamma":
                    variable.load(rng.uniform(0.5, 1.5, variable.shape.as_list()).astype(np.float32), session)
            v1.train.Saver().save(session, prefix, write_meta_graph=False)
            pred_value = session.run(pred, {words_ph: word_ids[None], image_ph: image[None]})
    return pred_value

"""The authors' TF1 graphs (TF-phrasecut-public, TF-resnet, TF-deeplab, DrSleep), in tf.compat.v1.

Written here from the variable names, shapes and equations of their public code (no code taken
from it): the reference the interop tests compare refseg-tf against. Every cell is written with
`tf.compat.v1.get_variable` (Keras 3 refuses `tf.compat.v1.nn.rnn_cell`); variable names are the
TF 1.2 ones (`multi_rnn_cell/cell_0/basic_lstm_cell/{weights,biases}`).

Random weights: every variable gets values drawn here, scaled so that a deep random ResNet keeps
O(1) activations (batch-norm variance near 1, small gamma), biases non-zero so that a dropped or
misplaced bias shows.
"""

import contextlib

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1

PAPER_RESNET = dict(depths=(3, 4, 23, 3), filters=(64, 256, 512, 1024, 2048), num_classes=1000)
# Every stage changes width (the ports project the shortcut only then; ResNetOS8 always does).
TINY_RESNET = dict(depths=(1, 2, 2, 1), filters=(8, 16, 32, 48, 64), num_classes=16)


def spatial_batch(height, width):
    """Hu et al.'s 8-D spatial map `[1, h, w, 8]` (xmin, ymin, xmax, ymax, xc, yc, 1/w, 1/h)."""
    grid = np.zeros((1, height, width, 8), np.float32)
    for i in range(height):
        for j in range(width):
            xmin, xmax = j / width * 2 - 1, (j + 1) / width * 2 - 1
            ymin, ymax = i / height * 2 - 1, (i + 1) / height * 2 - 1
            grid[0, i, j] = [xmin, ymin, xmax, ymax, (xmin + xmax) / 2, (ymin + ymax) / 2,
                             1 / width, 1 / height]
    return grid


def _relu(x):
    return tf.where(tf.less(x, 0.0), 0.0 * x, x)


class _Naming:
    """Where each ResNet variable lives: TF-resnet / TF-deeplab scopes or DrSleep's Caffe names."""

    def __init__(self, flavour, depths):
        self.flavour = flavour
        self.depths = depths

    def stem(self):
        if self.flavour == "drsleep":
            return "conv1", "bn_conv1"
        return "group_1/conv1", "group_1/bn_conv1"

    def block(self, stage, block, branch):
        """branch 0 = shortcut, 1..3 = bottleneck convs -> (conv scope, bn scope)."""
        if self.flavour == "drsleep":
            if block == 1:
                suffix = "a"
            elif self.depths[stage - 2] > 3:
                suffix = f"b{block - 1}"
            else:
                suffix = chr(ord("a") + block - 1)
            tail = f"{stage}{suffix}_branch{['1', '2a', '2b', '2c'][branch]}"
            return f"res{tail}", f"bn{tail}"
        name = f"group_{stage}_{block - 1}/" + ["block_add", "block_1", "block_2", "block_3"][branch]
        return f"{name}/conv", f"{name}/bn"


def _conv(x, scope, size, cin, cout, stride=1, rate=1, flavour="tf_resnet", bias=False):
    name = "weights" if flavour == "drsleep" else "DW"
    with v1.variable_scope(scope):
        kernel = v1.get_variable(name, [size, size, cin, cout], tf.float32)
        if rate == 1:
            y = tf.nn.conv2d(x, kernel, [1, stride, stride, 1], padding="SAME")
        else:
            y = v1.nn.atrous_conv2d(x, kernel, rate=rate, padding="SAME")
        if bias:
            y = y + v1.get_variable("biases", [cout], tf.float32)
        return y


def _batch_norm(x, scope, flavour):
    channels = [int(x.shape[-1])]
    with v1.variable_scope(scope):
        if flavour == "drsleep":  # slim.batch_norm(scale=True), inference: epsilon 0.001
            gamma = v1.get_variable("gamma", channels)
            beta = v1.get_variable("beta", channels)
            mean = v1.get_variable("moving_mean", channels)
            variance = v1.get_variable("moving_variance", channels)
        else:
            beta = v1.get_variable("beta", channels)
            gamma = v1.get_variable("gamma", channels)
            if flavour == "tf_deeplab":
                factor = v1.get_variable("factor", [1])
            mean = v1.get_variable("mean", channels)
            variance = v1.get_variable("variance", channels)
            if flavour == "tf_deeplab":
                mean = (1.0 / factor) * mean
                variance = (1.0 / factor) * variance
        return tf.nn.batch_normalization(x, mean, variance, beta, gamma, 0.001)


def resnet(images, flavour, depths, filters, num_classes):
    """Atrous ResNet (output stride 8): `{"res5c", "fc1000" (tf_resnet only)}`."""
    naming = _Naming(flavour, depths)
    scope = {"tf_resnet": "ResNet", "tf_deeplab": "DeepLab", "drsleep": ""}[flavour]
    outputs = {}
    with v1.variable_scope(scope or v1.get_variable_scope()):
        conv_scope, bn_scope = naming.stem()
        x = _conv(images, conv_scope, 7, 3, filters[0], 2, flavour=flavour)
        x = _relu(_batch_norm(x, bn_scope, flavour))
        x = tf.nn.max_pool2d(x, 3, 2, padding="SAME")
        strides, rates = (1, 2, 1, 1), (1, 1, 2, 4)
        cin = filters[0]
        for index, depth in enumerate(depths):
            stage, cout = index + 2, filters[index + 1]
            for block in range(1, depth + 1):
                stride = strides[index] if block == 1 else 1
                rate = rates[index]
                shortcut = x
                y = x
                for branch, (size, width) in enumerate(
                    ((1, cout // 4), (3, cout // 4), (1, cout)), start=1
                ):
                    c, b = naming.block(stage, block, branch)
                    y = _conv(y, c, size, int(y.shape[-1]), width,
                              stride if branch == 1 else 1, rate, flavour)
                    y = _batch_norm(y, b, flavour)
                    if branch < 3:
                        y = _relu(y)
                if cin != cout:
                    c, b = naming.block(stage, block, 0)
                    shortcut = _batch_norm(_conv(x, c, 1, cin, cout, stride, rate, flavour), b, flavour)
                x = _relu(y + shortcut)
                cin = cout
            outputs[f"res{stage}"] = x  # res3b3_relu / res4b22_relu at paper depth
        outputs["res5c"] = x
        if flavour == "tf_resnet":
            outputs["fc1000"] = _conv(x, "fc1000", 1, filters[-1], num_classes, bias=True)
        elif flavour == "tf_deeplab":
            with v1.variable_scope("fc1_voc12"):
                voc = [_conv(x, f"conv{i}", 3, filters[-1], 21, rate=r, bias=True)
                       for i, r in enumerate((6, 12, 18, 24))]
            outputs["voc"] = tf.add_n(voc)
        else:
            voc = [_conv(x, f"fc1_voc12_c{i}", 3, filters[-1], 21, rate=r, flavour="drsleep", bias=True)
                   for i, r in enumerate((6, 12, 18, 24))]
            outputs["voc"] = tf.add_n(voc)
    return outputs


def _basic_lstm(inputs, state, units, scope):
    """TF 1.2 `MultiRNNCell([BasicLSTMCell(units)], state_is_tuple=False)` under `scope`."""
    c, h = tf.split(state, 2, axis=1)
    with v1.variable_scope(scope), v1.variable_scope("multi_rnn_cell/cell_0/basic_lstm_cell"):
        rows = int(inputs.shape[-1]) + units
        weights = v1.get_variable("weights", [rows, 4 * units])
        biases = v1.get_variable("biases", [4 * units])
    gates = tf.matmul(tf.concat([inputs, h], 1), weights) + biases
    i, j, f, o = tf.split(gates, 4, axis=1)
    new_c = c * tf.sigmoid(f + 1.0) + tf.sigmoid(i) * tf.tanh(j)
    new_h = tf.tanh(new_c) * tf.sigmoid(o)
    return new_h, tf.concat([new_c, new_h], 1)


def _l2(x):
    return tf.nn.l2_normalize(x, 3)


def phrasecut_graph(model, weights, *, size, steps, vocab, backbone, emb=1000, rnn=1000, mlp=500,
                    v_emb=1000, train=False):
    """LSTM_model.py (`model="LSTM"`) or RMI_model.py (`"RMI"`), batch 1, eval mode.

    Returns (words placeholder, image placeholder, pred `[1, h, w, 1]`, features dict).
    """
    words = v1.placeholder(tf.int32, [1, steps])
    image = v1.placeholder(tf.float32, [1, size, size, 3])
    flavour = {"resnet": "tf_resnet", "deeplab": "tf_deeplab"}[weights]
    features = resnet(image, flavour, **backbone)
    vf = features["fc1000"] if weights == "resnet" else features["res5c"]
    h = w = size // 8
    with v1.variable_scope("text_objseg"):
        if weights == "deeplab":
            vf = _conv(vf, "conv0", 1, int(vf.shape[-1]), v_emb, bias=True)
        embedding = v1.get_variable("embedding", [vocab, emb])
        embedded = tf.nn.embedding_lookup(embedding, tf.transpose(words))
        spatial = tf.constant(spatial_batch(h, w))
        if model == "LSTM":
            state = tf.zeros([1, 2 * rnn])
            output = tf.constant(0.0)
            with v1.variable_scope("RNN"):
                for n in range(steps):
                    if n > 0:
                        v1.get_variable_scope().reuse_variables()
                    step = lambda n=n, state=state: _basic_lstm(embedded[n], state, rnn, v1.get_variable_scope())
                    output, state = tf.cond(
                        tf.equal(words[0, n], 0), lambda s=state: (tf.zeros([1, rnn]), s), step
                    )
            lang = tf.tile(_l2(tf.reshape(output, [1, 1, 1, rnn])), [1, h, w, 1])
            feat = tf.concat([_l2(vf), lang, spatial], 3)
            mlp_in = tf.nn.relu(_conv(feat, "conv1", 1, int(feat.shape[-1]), mlp, bias=True))
        else:
            visual = _l2(vf)
            state_w = tf.zeros([1, 2 * rnn])
            state_a = tf.zeros([h * w, 2 * mlp])
            h_a = tf.zeros([h * w, mlp])
            with v1.variable_scope("RNN"):
                for n in range(steps):
                    if n > 0:
                        v1.get_variable_scope().reuse_variables()

                    def step(n=n, state_w=state_w, state_a=state_a):
                        w_emb = embedded[n]
                        h_w, new_w = _basic_lstm(w_emb, state_w, rnn, "WLSTM")
                        lang = tf.tile(_l2(tf.reshape(h_w, [1, 1, 1, rnn])), [1, h, w, 1])
                        w_feat = tf.tile(tf.reshape(w_emb, [1, 1, 1, emb]), [1, h, w, 1])
                        feat = tf.reshape(tf.concat([visual, w_feat, lang, spatial], 3), [h * w, -1])
                        h_a_new, new_a = _basic_lstm(feat, state_a, mlp, "ALSTM")
                        return new_w, new_a, h_a_new

                    state_w, state_a, h_a = tf.cond(
                        tf.equal(words[0, n], 0),
                        lambda a=state_w, b=state_a, c=h_a: (a, b, c),
                        step,
                    )
            out = tf.reshape(h_a, [1, h, w, mlp])
            out = 0.5 * (tf.math.log(1.0 + 1e-3 + out) - tf.math.log(1.0 + 1e-3 - out))
            mlp_in = tf.nn.relu(out)
        pred = _conv(mlp_in, "conv2", 1, mlp, 1, bias=True)
        if train:  # the training state a real snapshot carries (Adam slots, step counter)
            step_var = tf.Variable(0.0, trainable=False)
            loss = tf.reduce_mean(tf.square(pred))
            # LSTM_model.py / RMI_model.py `tvars`: text_objseg/* and ResNet/fc1000 only.
            tvars = [v for v in v1.trainable_variables()
                     if v.op.name.startswith(("text_objseg", "ResNet/fc1000"))]
            v1.train.AdamOptimizer(1e-4).minimize(loss, global_step=step_var, var_list=tvars)
    return words, image, pred, features


def randomize(session, seed=0):
    """Assigns random values to every global variable of the session's graph (see module doc).

    One `session.run` of every drawn variable's initializer, fed its value (what
    `Variable.load` runs, one variable at a time: a new executor per call took about 70% of
    the interop tests' time).
    """
    rng = np.random.default_rng(seed)
    initializers, feed = [], {}
    for variable in v1.global_variables():
        shape = variable.shape.as_list()
        name = variable.op.name
        leaf = name.rsplit("/", 1)[-1]
        if leaf in ("variance", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "factor":
            value = rng.uniform(0.5, 2.0, shape)
        elif leaf == "gamma":
            value = rng.uniform(0.2, 0.6, shape)
        elif leaf in ("mean", "moving_mean", "beta"):
            value = rng.normal(0.0, 0.1, shape)
        elif leaf in ("DW", "weights", "Matrix", "kernel") and len(shape) == 4:
            value = rng.normal(0.0, np.sqrt(2.0 / (shape[0] * shape[1] * shape[2])), shape)
        elif leaf in ("weights", "kernel", "Matrix"):
            value = rng.uniform(-1.0, 1.0, shape) * np.sqrt(3.0 / shape[0])
        elif leaf in ("biases", "bias", "Bias"):
            value = rng.normal(0.0, 0.1, shape)
        elif leaf == "embedding":
            value = rng.uniform(-0.5, 0.5, shape)
        else:
            continue  # optimizer slots and counters keep their initial values
        initializers.append(variable.initializer)
        feed[variable.initializer.inputs[1]] = np.asarray(value, np.float32)
    if initializers:
        session.run(initializers, feed)


@contextlib.contextmanager
def reference_session(model, weights, checkpoint_prefix, *, size, steps, vocab, backbone,
                      seed=0, train=True, write_version=None, **dims):
    """Builds the graph, draws weights, saves `checkpoint_prefix`; yields
    `run(word_ids, image) -> (pred, features)` on that graph, open until the block ends (one
    graph for several inputs, e.g. inputs that only the imported model directory gives). The
    block itself runs eagerly: the graph is the default one only while it is built and run."""
    graph = tf.Graph()
    with graph.as_default():
        words_ph, image_ph, pred, features = phrasecut_graph(
            model, weights, size=size, steps=steps, vocab=vocab, backbone=backbone, train=train, **dims
        )
        session = v1.Session(graph=graph)
        session.run(v1.global_variables_initializer())
        randomize(session, seed)
        kwargs = {} if write_version is None else {"write_version": write_version}
        v1.train.Saver(**kwargs).save(session, checkpoint_prefix, write_meta_graph=False)

    def run(word_ids, image):
        with graph.as_default():
            feed = {words_ph: word_ids[None], image_ph: image[None]}
            return tuple(session.run([pred, features], feed))

    try:
        yield run
    finally:
        session.close()


def run_reference(model, weights, checkpoint_prefix, *, word_ids, image, **kwargs):
    """Builds the graph, draws weights, saves `checkpoint_prefix`, returns (pred, features)."""
    with reference_session(model, weights, checkpoint_prefix, **kwargs) as run:
        return run(word_ids, image)


def run_backbone_reference(flavour, checkpoint_prefix, *, size, backbone, image, seed=0):
    """The backbone alone (as the authors' init checkpoints): saves it, returns its features."""
    graph = tf.Graph()
    with graph.as_default():
        image_ph = v1.placeholder(tf.float32, [1, size, size, 3])
        features = resnet(image_ph, flavour, **backbone)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            randomize(session, seed)
            v1.train.Saver().save(session, checkpoint_prefix, write_meta_graph=False)
            values = session.run(features, {image_ph: image[None]})
    return values


def rewrite_checkpoint(source, destination, edit):
    """Copies the TF1 checkpoint `source` to `destination` through `edit(dict) -> dict` of
    name -> array (drop, add, reshape variables), written by a TF1 `Saver` with those names."""
    reader = tf.train.load_checkpoint(source)
    values = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    values = edit(values)
    graph = tf.Graph()
    with graph.as_default():
        variables = {name: tf.Variable(value, name=name.replace("/", "_"))
                     for name, value in values.items()}
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            v1.train.Saver(var_list=variables).save(session, destination, write_meta_graph=False)
    return destination


def write_vocabulary(path, size):
    """An authors'-style vocabulary file: `<pad> <go> <eos> <unk>` then words, one a line."""
    words = ["<pad>", "<go>", "<eos>", "<unk>"] + [f"word{i}" for i in range(4, size)]
    with open(path, "w") as handle:
        handle.write("\n".join(words) + "\n")
    return path

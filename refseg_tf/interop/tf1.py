"""TF1 layer conventions, converted to the Keras layers of refseg-tf.

LSTM (`tf.nn.rnn_cell.BasicLSTMCell` and `LSTMCell` without peepholes or projection): one
kernel `[D_in + D_out, 4 D_out]` whose first D_in rows multiply the input and the last D_out
rows the previous hidden state ("inputs before states"), one bias `[4 D_out]`; the four column
blocks are the gates in the order i (input gate), j (new input, the tanh candidate), f (forget
gate), o (output gate); the cell computes `c = c * sigmoid(f + forget_bias) + sigmoid(i) *
tanh(j)`, `h = tanh(c) * sigmoid(o)` with `forget_bias` (BasicLSTMCell's default 1.0) added at
run time and never stored. Keras `LSTM` holds `kernel [D_in, 4 U]`, `recurrent_kernel [U, 4 U]`
and `bias [4 U]` in the gate order i, f, c, o with the same activations, so the conversion
splits the rows, reorders the column blocks (i, j, f, o) -> (i, f, j, o) and adds
`forget_bias` to the forget block of the bias.

Variable names (scope = the `variable_scope` around the RNN, e.g. Hu's `lstm_lang`):
TF 1.0 (`tf.nn.rnn` / `static_rnn` of that time): `<scope>/RNN/MultiRNNCell/Cell0/
BasicLSTMCell/Linear/{Matrix,Bias}` (`LSTMCell`: `.../LSTMCell/{W_0,B}`); TF >= 1.1 (and
`tf.compat.v1`): `<scope>/rnn/multi_rnn_cell/cell_0/basic_lstm_cell/{kernel,bias}` (`LSTMCell`:
`lstm_cell`); without `MultiRNNCell` the `MultiRNNCell/Cell0` / `multi_rnn_cell/cell_0` part is
absent.

Convolutions: `tf.nn.conv2d` filters are `[kh, kw, in, out]`, Keras `Conv2D` kernels too.
`tf.nn.conv2d_transpose` filters are `[kh, kw, out, in]`, which is also the layout of Keras 3
`Conv2DTranspose` kernels (`kernel_size + (filters, input_channels)`), so they are assigned as
they are; `tf1_conv2d_transpose_kernel` checks the shape and documents it. A Caffe-converted
fully connected layer `[k * k * C, U]` (text_objseg's `fc_layer`, flattening a row-major
`[k, k, C]` patch) is the `[k, k, C, U]` convolution kernel reshaped (`dense_to_conv_kernel`).
"""

from __future__ import annotations

import numpy as np

# (matrix suffix, bias suffix) of one LSTM cell, every naming TF1 used; `{cell}` = layer index.
TF1_LSTM_NAMINGS = (
    ("RNN/MultiRNNCell/Cell{cell}/BasicLSTMCell/Linear/Matrix",
     "RNN/MultiRNNCell/Cell{cell}/BasicLSTMCell/Linear/Bias"),
    ("rnn/multi_rnn_cell/cell_{cell}/basic_lstm_cell/kernel",
     "rnn/multi_rnn_cell/cell_{cell}/basic_lstm_cell/bias"),
    ("RNN/MultiRNNCell/Cell{cell}/LSTMCell/W_0", "RNN/MultiRNNCell/Cell{cell}/LSTMCell/B"),
    ("rnn/multi_rnn_cell/cell_{cell}/lstm_cell/kernel",
     "rnn/multi_rnn_cell/cell_{cell}/lstm_cell/bias"),
    ("RNN/BasicLSTMCell/Linear/Matrix", "RNN/BasicLSTMCell/Linear/Bias"),
    ("rnn/basic_lstm_cell/kernel", "rnn/basic_lstm_cell/bias"),
    ("RNN/LSTMCell/W_0", "RNN/LSTMCell/B"),
    ("rnn/lstm_cell/kernel", "rnn/lstm_cell/bias"),
)

# Column block order: TF1 (i, j, f, o) -> Keras (i, f, c=j, o).
_TF1_TO_KERAS_GATES = (0, 2, 1, 3)


def tf1_lstm_names(scope, cell=0):
    """Candidate `(matrix, bias)` variable names of LSTM layer `cell` under `scope`, every
    TF1 naming (see the module docstring), the TF 1.0 names first."""
    prefix = f"{scope}/" if scope else ""
    return [(prefix + m.format(cell=cell), prefix + b.format(cell=cell)) for m, b in TF1_LSTM_NAMINGS]


def tf1_lstm_to_keras(matrix, bias, input_dim, forget_bias=1.0):
    """Converts a TF1 LSTM cell's `(matrix, bias)` to Keras `[kernel, recurrent_kernel, bias]`.

    Args:
        matrix: `[input_dim + units, 4 units]`, inputs before states, gates i, j, f, o.
        bias: `[4 units]`, same gate order.
        input_dim: D_in (the embedding size).
        forget_bias: the cell's run-time forget bias (BasicLSTMCell default 1.0; Hu's
            `lstm_net.py` passes 1.0), folded into the Keras forget-gate bias.

    Returns:
        `[kernel [D_in, 4U], recurrent_kernel [U, 4U], bias [4U]]`, gates i, f, c, o, float32.

    Raises:
        ValueError: the shapes do not form an LSTM cell with `input_dim` inputs.
    """
    matrix = np.asarray(matrix, np.float32)
    bias = np.asarray(bias, np.float32)
    if matrix.ndim != 2 or matrix.shape[1] % 4:
        raise ValueError(f"TF1 LSTM matrix must be [D_in + U, 4 U]; received {matrix.shape}.")
    units = matrix.shape[1] // 4
    if matrix.shape[0] != input_dim + units:
        raise ValueError(
            f"TF1 LSTM matrix {matrix.shape} does not match D_in = {input_dim} and U = {units} "
            f"(needs {input_dim + units} rows)."
        )
    if bias.shape != (4 * units,):
        raise ValueError(f"TF1 LSTM bias must be [{4 * units}]; received {bias.shape}.")

    def reorder(values):
        blocks = np.split(values, 4, axis=-1)
        return np.concatenate([blocks[k] for k in _TF1_TO_KERAS_GATES], axis=-1)

    kernel = reorder(matrix[:input_dim])
    recurrent = reorder(matrix[input_dim:])
    keras_bias = reorder(bias).copy()
    keras_bias[units : 2 * units] += np.float32(forget_bias)
    return [kernel, recurrent, keras_bias]


def keras_lstm_to_tf1(kernel, recurrent_kernel, bias, forget_bias=1.0):
    """The inverse of `tf1_lstm_to_keras`: `(matrix, bias)` of a TF1 cell (for tests, export)."""
    kernel, recurrent_kernel, bias = (np.asarray(v, np.float32) for v in (kernel, recurrent_kernel, bias))
    units = recurrent_kernel.shape[0]
    inverse = np.argsort(_TF1_TO_KERAS_GATES)

    def reorder(values):
        blocks = np.split(values, 4, axis=-1)
        return np.concatenate([blocks[k] for k in inverse], axis=-1)

    bias = bias.copy()
    bias[units : 2 * units] -= np.float32(forget_bias)
    return reorder(np.concatenate([kernel, recurrent_kernel], 0)), reorder(bias)


def plan_tf1_lstm(plan, scope, lstm, layer, input_dim, forget_bias=1.0, cell=0):
    """Plans a Keras `LSTM` layer's weights from TF1 LSTM cell `cell` under `scope`.

    Whichever TF1 naming the checkpoint uses is found (`tf1_lstm_names`); when none is
    present the problem names every candidate.

    Args:
        plan: the `AssignmentPlan`.
        scope: the variable scope of the RNN (e.g. "lstm_lang").
        lstm: a built `keras.layers.LSTM` (its `cell.kernel`, `cell.recurrent_kernel`,
            `cell.bias` are the targets).
        layer: the layer name used in errors.
        input_dim: the cell's input size D_in.
        forget_bias: the TF1 cell's run-time forget bias.
        cell: the `MultiRNNCell` layer index.

    Returns:
        the `(matrix, bias)` names used, or None when missing (the problem is recorded).
    """
    candidates = tf1_lstm_names(scope, cell)
    for matrix_name, bias_name in candidates:
        if plan.has(matrix_name):
            break
    else:
        plan.problems.append(
            f"missing the LSTM variables of layer {layer!r}: none of "
            f"{[m for m, _ in candidates]} in the checkpoint"
        )
        targets = (lstm.cell.kernel, lstm.cell.recurrent_kernel, lstm.cell.bias)
        for target in targets:
            plan.assign(target, None, source=scope, layer=layer)
        return None
    units = int(lstm.cell.recurrent_kernel.shape[0])
    matrix = plan.take(matrix_name, layer, shape=(input_dim + units, 4 * units))
    bias = plan.take(bias_name, layer, shape=(4 * units,))
    values = [None, None, None]
    if matrix is not None and bias is not None:
        values = tf1_lstm_to_keras(matrix, bias, input_dim, forget_bias)
    targets = (lstm.cell.kernel, lstm.cell.recurrent_kernel, lstm.cell.bias)
    sources = (f"{matrix_name} (input rows)", f"{matrix_name} (state rows)", bias_name)
    for target, value, source in zip(targets, values, sources):
        plan.assign(target, value, source=source, layer=layer)
    return matrix_name, bias_name


def dense_to_conv_kernel(weights, kernel_shape):
    """A fully connected `[kh * kw * C, U]` matrix as the `[kh, kw, C, U]` convolution kernel
    (exact for a row-major flattened channels-last patch, as TF1 `tf.reshape` flattens)."""
    weights = np.asarray(weights, np.float32)
    kh, kw, cin, cout = (int(d) for d in kernel_shape)
    if weights.shape == (kh, kw, cin, cout):
        return weights
    if weights.shape != (kh * kw * cin, cout):
        raise ValueError(
            f"a [{kh * kw * cin}, {cout}] matrix or a {(kh, kw, cin, cout)} kernel is needed; "
            f"received {weights.shape}."
        )
    return weights.reshape(kh, kw, cin, cout)


def tf1_conv2d_transpose_kernel(weights, kernel_shape):
    """A TF1 `conv2d_transpose` filter `[kh, kw, out, in]` for a Keras `Conv2DTranspose`
    kernel of shape `kernel_shape` (the same layout: returned unchanged after the check)."""
    weights = np.asarray(weights, np.float32)
    if tuple(weights.shape) != tuple(int(d) for d in kernel_shape):
        raise ValueError(
            f"conv2d_transpose filter [kh, kw, out, in] = {weights.shape} does not fit the "
            f"Conv2DTranspose kernel {tuple(kernel_shape)}."
        )
    return weights

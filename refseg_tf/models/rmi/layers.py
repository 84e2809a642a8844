"""The convolutional multimodal LSTM of RMI (Liu et al. 2017), keras / keras.ops only."""

import keras
from keras import ops

from refseg_tf.layers.spatial import Float32Layer


@keras.saving.register_keras_serializable(package="refseg_tf")
class MultimodalLSTM(keras.layers.Layer):
    """RMI's mLSTM: an LSTM run at every feature-map cell, weights shared over space and time.

    At word t and cell (i, j) the input is `[v_ij; w_t; h_t; s_ij]` (the order of the authors'
    code): the visual feature, the word embedding, the word LSTM's hidden state and the 8-D
    spatial coordinates; the model passes `v` and `h_t` L2-normalised, as the authors' code does
    (the paper omits both normalisations). The gates are one matrix over `[input; h_{t-1}]` (gate
    order i, g, f, o), i.e. a 1x1 convolutional LSTM with a `(D_in + units) x 4 units` kernel.

    Because a 1x1 convolution is linear in its input channels, the gates are computed in parts:
    `W_v v_ij + W_s s_ij` once per image (`[B, H, W, 4u]`), `W_w w_t + W_h h_t` once per word
    (`[B, T, 4u]`, broadcast over the grid) and `U h_{t-1}(ij)` per step: the same maths as a
    1x1 convolution over the tiled `D_v + D_w + D_h + 8` channel input, several times fewer
    FLOPs and no tiled tensor. The loop over T is a static Python unroll (T is known when
    tracing): no control flow on tensor values, XLA-compilable.

    Pad steps (`word_mask` False) leave `h` and `c` unchanged per example (a `where` on the
    mask), so with front padding the final state is the state after the last real word and a
    batch of sentences of different lengths gives each its batch-1 result. (The authors' code
    tested only batch element 0 with a `tf.cond`, which is the same at batch 1.) The initial
    state is zero.

    Args:
        units: cell size n (500 in RMI Sec. 4.2).
        unit_forget_bias: initialise the forget-gate bias to 1 (TF1 `BasicLSTMCell` adds a
            constant +1 to a zero-initialised bias: equal at initialisation).
        kernel_initializer: initialiser of the whole `(D_in + units) x 4 units` matrix
            (glorot-uniform, the TF1 `get_variable` default of the authors' code).
        bias_initializer: initialiser of the gate bias (before the forget-gate 1).

    Call args:
        visual: `[B, H, W, D_v]` time-invariant visual feature.
        embeddings: `[B, T, D_w]` word embeddings.
        text_states: `[B, T, D_h]` word-LSTM hidden states.
        spatial: `[B, H, W, S]` spatial coordinates (S = 8).
        word_mask: optional `[B, T]` bool, True at real words (default: every step is real).
        return_sequences: Python bool; if True return every step's hidden state.

    Returns:
        The hidden state after the last step `[B, H, W, units]`, or all of them
        `[B, T, H, W, units]` with `return_sequences=True` (a pad step repeats the state).

    Example:
        >>> mlstm = MultimodalLSTM(4)
        >>> h = mlstm(ops.ones((2, 5, 5, 6)), ops.ones((2, 3, 7)), ops.ones((2, 3, 9)),
        ...           ops.ones((2, 5, 5, 8)))
        >>> h.shape
        (2, 5, 5, 4)

    Reference:
        Liu et al. 2017, Sec. 3.3 (Eq. 7: mLSTM over [l_t; v_ij], 1x1 convolutional LSTM),
        Sec. 4.2 (n = 500); the input order, normalisations and forget bias of the authors'
        code (TF-phrasecut-public, `RMI_model.py`).
    """

    def __init__(
        self,
        units=500,
        *,
        unit_forget_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        units = int(units)
        if units < 1:
            raise ValueError(f"`units` must be a positive integer; received {units}.")
        self.units = units
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, visual_shape, embeddings_shape, text_states_shape, spatial_shape,
              word_mask_shape=None):
        self.input_channels = (
            int(visual_shape[-1]),
            int(embeddings_shape[-1]),
            int(text_states_shape[-1]),
            int(spatial_shape[-1]),
        )
        rows = sum(self.input_channels) + self.units
        self.kernel = self.add_weight(
            name="kernel", shape=(rows, 4 * self.units), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(
            name="bias", shape=(4 * self.units,), initializer=self._bias_initializer()
        )
        self.built = True

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        units, base = self.units, self.bias_initializer

        def initializer(shape, dtype=None):
            values = base((4 * units,), dtype=dtype)
            forget = ops.concatenate(
                [ops.zeros((2 * units,), dtype), ops.ones((units,), dtype), ops.zeros((units,), dtype)]
            )
            return values + forget

        return initializer

    def kernel_parts(self):
        """The kernel split by input rows: `(visual, embeddings, text_states, spatial, recurrent)`."""
        parts, start = [], 0
        for size in self.input_channels + (self.units,):
            parts.append(self.kernel[start : start + size])
            start += size
        return tuple(parts)

    def visual_gates(self, visual, spatial):
        """The time-invariant part of the gates, `W_v v + W_s s + b`: `[B, H, W, 4 units]`."""
        kernel_v, _, _, kernel_s, _ = self.kernel_parts()
        visual = ops.cast(visual, self.compute_dtype)
        spatial = ops.cast(spatial, self.compute_dtype)
        return ops.matmul(visual, kernel_v) + ops.matmul(spatial, kernel_s) + self.bias

    def word_gates(self, embeddings, text_states):
        """The per-word part of the gates, `W_w w_t + W_h h_t`: `[B, T, 4 units]`."""
        _, kernel_w, kernel_h, _, _ = self.kernel_parts()
        embeddings = ops.cast(embeddings, self.compute_dtype)
        text_states = ops.cast(text_states, self.compute_dtype)
        return ops.matmul(embeddings, kernel_w) + ops.matmul(text_states, kernel_h)

    def _step(self, gates, hidden, carry, recurrent_kernel):
        gates = gates + ops.matmul(hidden, recurrent_kernel)
        input_gate, candidate, forget_gate, output_gate = ops.split(gates, 4, axis=-1)
        carry = ops.sigmoid(forget_gate) * carry + ops.sigmoid(input_gate) * ops.tanh(candidate)
        hidden = ops.sigmoid(output_gate) * ops.tanh(carry)
        return hidden, carry

    def call(self, visual, embeddings, text_states, spatial, word_mask=None,
             return_sequences=False):
        steps = embeddings.shape[1]
        if steps is None:
            raise ValueError(
                "MultimodalLSTM unrolls over the words: the sequence length (axis 1 of "
                f"`embeddings`) must be static; received shape {embeddings.shape}."
            )
        recurrent_kernel = self.kernel_parts()[-1]
        image_part = self.visual_gates(visual, spatial)
        word_part = self.word_gates(embeddings, text_states)
        hidden = ops.zeros_like(image_part[..., : self.units])
        carry = hidden
        states = []
        for t in range(steps):
            gates = image_part + word_part[:, t, None, None, :]
            new_hidden, new_carry = self._step(gates, hidden, carry, recurrent_kernel)
            if word_mask is None:
                hidden, carry = new_hidden, new_carry
            else:
                real = ops.reshape(ops.cast(word_mask[:, t], "bool"), (-1, 1, 1, 1))
                hidden = ops.where(real, new_hidden, hidden)
                carry = ops.where(real, new_carry, carry)
            states.append(hidden)
        return ops.stack(states, axis=1) if return_sequences else hidden

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            unit_forget_bias=self.unit_forget_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class ClippedArctanh(Float32Layer):
    """`0.5 * (log(1 + eps + h) - log(1 + eps - h))`: a finite arctanh of a tanh-bounded state.

    Undoes the last `tanh` of an LSTM hidden state before the score convolution; `eps` keeps the
    value finite at |h| = 1. Computed in float32.

    Args:
        epsilon: 0.001 in the authors' code.

    Call args:
        inputs: any tensor with values in [-1, 1].

    Example:
        >>> ClippedArctanh()(ops.zeros((1, 2)))  # [[0., 0.]]

    Reference:
        Liu et al. 2017, authors' code (TF-phrasecut-public `RMI_model.py`, the mLSTM output
        before `conv2`); the paper only says "a convolution layer" (Sec. 3.3).
    """

    def __init__(self, epsilon=0.001, **kwargs):
        super().__init__(epsilon, **kwargs)

    def compute(self, values):
        one = 1.0 + self.epsilon
        return 0.5 * (ops.log(one + values) - ops.log(one - values))

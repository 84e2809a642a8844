"""Recurrent refinement over a feature pyramid (Li et al. 2018, RRN) and its ablation updates."""

import keras
from keras import ops

from refseg_tf.layers.spatial import Float32Layer

REFINEMENT_UPDATES = ("plain", "rnn", "fpn", "lstm")
INITIAL_STATE_MODES = ("hidden", "input")
LSTM_CELLS = ("keras", "unrolled", "layer_norm")
PEEPHOLE_MODES = (None, "channel", "spatial")


@keras.saving.register_keras_serializable(package="refseg_tf")
class SampleLayerNormalization(Float32Layer):
    """Layer normalisation over all non-batch axes with a per-channel scale and offset.

    Statistics are taken per example over `[H, W, C]` (the default of TF1
    `tf.contrib.layers.layer_norm` used in the authors' ConvLSTM cell); `gamma` and `beta` have
    one value per channel. Computed in float32.

    Args:
        epsilon: variance floor (TF1's default 1e-12).

    Call args:
        inputs: `[B, ..., C]`.

    Example:
        >>> SampleLayerNormalization()(keras.ops.ones((2, 4, 4, 8))).shape
        (2, 4, 4, 8)

    Reference:
        Ba et al. 2016 (layer normalisation), as applied in the public code of Li et al. 2018.
    """

    def __init__(self, epsilon=1e-12, **kwargs):
        super().__init__(epsilon, **kwargs)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        self.built = True

    def compute(self, values):
        axes = tuple(range(1, len(values.shape)))
        mean = ops.mean(values, axis=axes, keepdims=True)
        variance = ops.mean(ops.square(values - mean), axis=axes, keepdims=True)
        normalized = (values - mean) * ops.rsqrt(variance + self.epsilon)
        return normalized * ops.cast(self.gamma, "float32") + ops.cast(self.beta, "float32")


@keras.saving.register_keras_serializable(package="refseg_tf")
class ConvLSTMStep(keras.layers.Layer):
    """One convolutional LSTM update, optionally with the details of the RRN authors' cell.

    Unlike `keras.layers.ConvLSTM2D` it works on maps of any (even unknown) size, and it adds
    the options of the authors' cell: layer normalisation, peepholes, a constant forget bias.
    `[j, i, f, o] = conv([x; h])` (bias only without layer norm); with peepholes
    `i += w_ci * c`, `f += w_cf * c`; layer norm on j, i, f;
    `c' = sigmoid(f + forget_bias) * c + sigmoid(i) * a(j)`; `o += w_co * c'`; layer norm on o
    and c'; `h' = sigmoid(o) * a(c')`. The normalised c' is the carried state, as in that code.

    Args:
        units: hidden channels.
        kernel_size: convolution size (1 in the authors' code).
        activation: `a` (tanh in Eq. 2 of the paper; the ablation also tries ReLU).
        forget_bias: constant added to the forget gate (1.0).
        layer_norm: normalise gates and cell (True in the authors' code). Without it the
            update is the standard ConvLSTM of Eq. 2 (plus `forget_bias`).
        peephole: None, "channel" (one weight per channel, any resolution) or "spatial" (one
            weight per position and channel, as the authors' code: needs a static map size).
        epsilon: layer-norm variance floor.

    Call args:
        inputs: `[B, H, W, C]` step input.
        hidden: `[B, H, W, units]` previous h.
        carry: `[B, H, W, units]` previous c.

    Returns:
        `(hidden, carry)` after the update.

    Example:
        >>> cell = ConvLSTMStep(4)
        >>> h, c = cell(keras.ops.ones((1, 3, 3, 2)), keras.ops.zeros((1, 3, 3, 4)),
        ...             keras.ops.zeros((1, 3, 3, 4)))

    Reference:
        Li et al. 2018 (RRN), Eq. 2; cell details (peepholes, layer norm, forget bias 1) from
        the authors' public code (`util/cell.py`), which the paper does not describe.
    """

    # A recurrent cell: its gate convolution is not a plain convolution for weight decay
    # (`refseg_tf.training.optimizers`, scope "conv_kernels").
    is_recurrent_cell = True

    def __init__(
        self,
        units,
        kernel_size=1,
        activation="tanh",
        forget_bias=1.0,
        layer_norm=True,
        peephole=None,
        epsilon=1e-12,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if peephole not in PEEPHOLE_MODES:
            raise ValueError(f"peephole must be one of {PEEPHOLE_MODES}; got {peephole!r}.")
        self.units = int(units)
        self.kernel_size = int(kernel_size)
        self.activation = keras.activations.get(activation)
        self.forget_bias = float(forget_bias)
        self.layer_norm = bool(layer_norm)
        self.peephole = peephole
        self.epsilon = float(epsilon)
        self.gates = keras.layers.Conv2D(
            4 * self.units,
            self.kernel_size,
            padding="same",
            use_bias=not self.layer_norm,
            dtype=self.dtype_policy,
            name="gates",
        )
        self.norms = {}
        if self.layer_norm:
            for part in ("candidate", "input", "forget", "output", "cell"):
                self.norms[part] = SampleLayerNormalization(
                    self.epsilon, dtype=self.dtype_policy, name=f"norm_{part}"
                )

    def build(self, inputs_shape, hidden_shape, carry_shape):
        self.gates.build(tuple(inputs_shape[:-1]) + (inputs_shape[-1] + self.units,))
        for norm in self.norms.values():
            norm.build(tuple(hidden_shape))
        self.peephole_weights = {}
        if self.peephole is not None:
            shape = self._peephole_shape(hidden_shape)
            for gate in ("input", "forget", "output"):
                self.peephole_weights[gate] = self.add_weight(
                    shape=shape, initializer="glorot_uniform", name=f"peephole_{gate}"
                )
        self.built = True

    def _peephole_shape(self, hidden_shape):
        if self.peephole == "channel":
            return (self.units,)
        height, width = hidden_shape[1], hidden_shape[2]
        if height is None or width is None:
            raise ValueError(
                "peephole='spatial' needs a static feature-map size (one weight per position); "
                f"got state shape {tuple(hidden_shape)}. Use peephole='channel' for any size."
            )
        return (height, width, self.units)

    def _norm(self, part, value):
        return self.norms[part](value) if self.layer_norm else value

    def _peep(self, gate, value, carry):
        if self.peephole is None:
            return value
        weight = ops.cast(self.peephole_weights[gate], value.dtype)
        return value + weight * ops.cast(carry, value.dtype)

    def call(self, inputs, hidden, carry):
        gates = self.gates(ops.concatenate([inputs, ops.cast(hidden, inputs.dtype)], axis=-1))
        candidate, input_gate, forget_gate, output_gate = ops.split(gates, 4, axis=-1)
        input_gate = self._norm("input", self._peep("input", input_gate, carry))
        forget_gate = self._norm("forget", self._peep("forget", forget_gate, carry))
        candidate = self._norm("candidate", candidate)
        carry = ops.sigmoid(forget_gate + self.forget_bias) * carry + ops.sigmoid(
            input_gate
        ) * self.activation(candidate)
        output_gate = self._norm("output", self._peep("output", output_gate, carry))
        carry = self._norm("cell", carry)
        hidden = ops.sigmoid(output_gate) * self.activation(carry)
        return hidden, carry

    def compute_output_shape(self, inputs_shape, hidden_shape, carry_shape):
        return tuple(hidden_shape), tuple(carry_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            kernel_size=self.kernel_size,
            activation=keras.activations.serialize(self.activation),
            forget_bias=self.forget_bias,
            layer_norm=self.layer_norm,
            peephole=self.peephole,
            epsilon=self.epsilon,
        )
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class RecurrentRefinement(keras.layers.Layer):
    """Refines a fused map h_0 = q by feeding pyramid features x_1..x_T: h_t = F(h_{t-1}, x_t).

    Update functions F (Table 1 of the paper):
    - "plain": `h_t = a(conv_t([h_{t-1}; x_t]))`, a separate convolution per step (unshared);
      a single convolution over the concatenation equals `W_h * h + U_x * x + b`.
    - "rnn": the same with one convolution shared by all steps.
    - "fpn": `h_t = h_{t-1} + x_t` (no weights, no activation).
    - "lstm": convolutional LSTM (Eq. 2) with shared weights; `a` is its activation, used for
      the candidate and for `h = o * a(c)`. The paper's "LSTM, a = tanh" (its final model, and
      the cell of the authors' code) is the standard ConvLSTM; "LSTM" without it is read here as
      the same cell with a = ReLU, the default activation of the other rows.

    Args:
        units: D_Q, the channels of q, of every x_t and of the hidden state (500).
        num_steps: T, the number of pyramid inputs per call.
        update: one of "plain", "rnn", "fpn", "lstm".
        activation: `a` ("relu" or "tanh"; must be None for "fpn").
        kernel_size: size of the update convolutions (1 in the authors' code; not in the paper).
        initial_state: "hidden" = the paper (h_0 = q, c_0 = 0, T updates); "input" = the
            authors' code (zero state, q fed as the first input, T + 1 updates).
        lstm_cell: "keras" (`keras.layers.ConvLSTM2D`, forget-gate bias initialised to 1; Keras
            requires static map sizes, so the layer then serves only the size of its first
            call), "unrolled" (`ConvLSTMStep` without layer norm: the same update for maps of
            any size) or "layer_norm" (`ConvLSTMStep` with layer norm, the authors' cell).
        peephole: peephole mode of the `ConvLSTMStep` cells (None, "channel", "spatial").
        forget_bias: constant forget bias of the `ConvLSTMStep` cells.
        return_sequences: return every h_t (`[B, steps, H, W, units]`) instead of the last one,
            e.g. to visualise how the mask is refined.

    Call args:
        initial: q, `[B, H, W, units]`.
        inputs: list of `num_steps` maps `[B, H, W, units]` (already resized and projected).
        training: Python bool.

    Returns:
        h_T `[B, H, W, units]` (or all steps, see `return_sequences`).

    Example:
        >>> refine = RecurrentRefinement(8, 3, update="lstm", activation="tanh")
        >>> q = keras.ops.ones((2, 5, 5, 8))
        >>> refine(q, [q, q, q]).shape
        (2, 5, 5, 8)

    Reference:
        Li et al. 2018 (RRN), Sec. 3.2 (Eq. 1-2) and Sec. 4.2.1 (Table 1).
    """

    def __init__(
        self,
        units,
        num_steps,
        *,
        update="lstm",
        activation="tanh",
        kernel_size=1,
        initial_state="hidden",
        lstm_cell="keras",
        peephole=None,
        forget_bias=1.0,
        return_sequences=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._validate(update, activation, initial_state, lstm_cell, peephole, num_steps)
        self.units = int(units)
        self.num_steps = int(num_steps)
        self.update = update
        self.activation = activation
        self.kernel_size = int(kernel_size)
        self.initial_state = initial_state
        self.lstm_cell = lstm_cell
        self.peephole = peephole
        self.forget_bias = float(forget_bias)
        self.return_sequences = bool(return_sequences)
        self.step_layers = self._make_step_layers()

    @staticmethod
    def _validate(update, activation, initial_state, lstm_cell, peephole, num_steps):
        if update not in REFINEMENT_UPDATES:
            raise ValueError(f"update must be one of {REFINEMENT_UPDATES}; got {update!r}.")
        if initial_state not in INITIAL_STATE_MODES:
            raise ValueError(
                f"initial_state must be one of {INITIAL_STATE_MODES}; got {initial_state!r}."
            )
        if lstm_cell not in LSTM_CELLS:
            raise ValueError(f"lstm_cell must be one of {LSTM_CELLS}; got {lstm_cell!r}.")
        if peephole not in PEEPHOLE_MODES:
            raise ValueError(f"peephole must be one of {PEEPHOLE_MODES}; got {peephole!r}.")
        if update == "fpn" and activation not in (None, "linear"):
            raise ValueError(f"update='fpn' adds h and x without activation; got {activation!r}.")
        if update != "fpn" and activation is None:
            raise ValueError(f"update={update!r} needs an activation ('relu' or 'tanh').")
        if peephole is not None and not (update == "lstm" and lstm_cell != "keras"):
            raise ValueError(
                "peephole needs update='lstm' with lstm_cell 'unrolled' or 'layer_norm'."
            )
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be at least 1; got {num_steps}.")

    @property
    def total_steps(self):
        """Recurrent updates per call: T, plus one when q is fed as the first input."""
        return self.num_steps + (1 if self.initial_state == "input" else 0)

    def _make_step_layers(self):
        def conv(name):
            return keras.layers.Conv2D(
                self.units, self.kernel_size, padding="same", activation=self.activation,
                dtype=self.dtype_policy, name=name,
            )

        if self.update == "plain":
            return [conv(f"step_{index}") for index in range(self.total_steps)]
        if self.update == "rnn":
            return [conv("shared_step")]
        if self.update == "lstm" and self.lstm_cell == "keras":
            return [
                keras.layers.ConvLSTM2D(
                    self.units,
                    self.kernel_size,
                    padding="same",
                    activation=self.activation,
                    return_sequences=self.return_sequences,
                    dtype=self.dtype_policy,
                    name="conv_lstm",
                )
            ]
        if self.update == "lstm":
            return [
                ConvLSTMStep(
                    self.units,
                    self.kernel_size,
                    activation=self.activation,
                    forget_bias=self.forget_bias,
                    layer_norm=self.lstm_cell == "layer_norm",
                    peephole=self.peephole,
                    dtype=self.dtype_policy,
                    name="conv_lstm_step",
                )
            ]
        return []

    def build(self, initial_shape, inputs_shape):
        initial_shape = tuple(initial_shape)
        input_shapes = [tuple(shape) for shape in inputs_shape]
        if self.initial_state == "input":
            input_shapes = [initial_shape] + input_shapes
        if self.update in ("plain", "rnn"):
            for index, shape in enumerate(input_shapes):
                layer = self.step_layers[index if self.update == "plain" else 0]
                if not layer.built:
                    layer.build(initial_shape[:-1] + (self.units + shape[-1],))
        elif self.update == "lstm" and self.lstm_cell == "keras":
            channels = input_shapes[0][-1]
            self.step_layers[0].build(
                (initial_shape[0], len(input_shapes)) + initial_shape[1:-1] + (channels,)
            )
        elif self.update == "lstm":
            self.step_layers[0].build(input_shapes[0], initial_shape, initial_shape)
        self.built = True

    def _sequence(self, initial, inputs):
        """(h_0, inputs of every update) for the chosen initial-state mode."""
        if self.initial_state == "hidden":
            return initial, list(inputs)
        return ops.zeros_like(initial), [initial] + list(inputs)

    def call(self, initial, inputs, training=None):
        inputs = list(inputs)
        if len(inputs) != self.num_steps:
            raise ValueError(
                f"RecurrentRefinement was built for {self.num_steps} pyramid inputs; "
                f"received {len(inputs)}."
            )
        hidden, sequence = self._sequence(initial, inputs)
        if self.update == "lstm" and self.lstm_cell == "keras":
            return self._run_keras_conv_lstm(hidden, sequence, training)
        states = []
        carry = ops.zeros_like(hidden)
        for index, step_input in enumerate(sequence):
            hidden, carry = self._step(index, hidden, carry, step_input)
            states.append(hidden)
        return ops.stack(states, axis=1) if self.return_sequences else hidden

    def step_states(self, initial, inputs, training=None):
        """The hidden state after every update, whatever `return_sequences` says: a list of
        `[B, H, W, units]` (`total_steps` of them; with `initial_state="input"` the first is the
        state after reading q). For per-step pictures (`RRN.explain`)."""
        if not self.built:
            self.build(tuple(initial.shape), [tuple(x.shape) for x in inputs])
        hidden, sequence = self._sequence(initial, list(inputs))
        if self.update == "lstm" and self.lstm_cell == "keras":
            # The Keras ConvLSTM returns the last state only: run it on each prefix.
            return [
                self._run_keras_conv_lstm(hidden, sequence[: count + 1], training)
                for count in range(len(sequence))
            ]
        states, carry = [], ops.zeros_like(hidden)
        for index, step_input in enumerate(sequence):
            hidden, carry = self._step(index, hidden, carry, step_input)
            states.append(hidden)
        return states

    def _step(self, index, hidden, carry, step_input):
        step_input = ops.cast(step_input, hidden.dtype)
        if self.update == "fpn":
            return hidden + step_input, carry
        if self.update == "lstm":
            return self.step_layers[0](step_input, hidden, carry)
        layer = self.step_layers[index if self.update == "plain" else 0]
        return layer(ops.concatenate([hidden, step_input], axis=-1)), carry

    def _run_keras_conv_lstm(self, hidden, sequence, training):
        stacked = ops.stack([ops.cast(x, hidden.dtype) for x in sequence], axis=1)
        initial_state = None
        if self.initial_state == "hidden":
            initial_state = [hidden, ops.zeros_like(hidden)]
        return self.step_layers[0](stacked, initial_state=initial_state, training=training)

    def compute_output_shape(self, initial_shape, inputs_shape):
        if self.return_sequences:
            return (initial_shape[0], self.total_steps) + tuple(initial_shape[1:])
        return tuple(initial_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            num_steps=self.num_steps,
            update=self.update,
            activation=self.activation,
            kernel_size=self.kernel_size,
            initial_state=self.initial_state,
            lstm_cell=self.lstm_cell,
            peephole=self.peephole,
            forget_bias=self.forget_bias,
            return_sequences=self.return_sequences,
        )
        return config

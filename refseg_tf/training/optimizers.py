"""Optimizers, learning-rate schedules and weight decay as the papers train.

- Schedules: "constant"; "staircase" (Hu et al.: x0.1 every `decay_steps`); "polynomial"
  (RMI/RRN: power 0.9 down to `end_learning_rate` over `decay_steps`); "piecewise"
  (LTS/MCN: x`decay_rate` at each of `boundaries`).
- Weight decay is Caffe/TF1 style (an L2 term on the loss, 0.5 * decay * ||w||^2; biases,
  normalisation parameters, peepholes and embeddings are never decayed), attached as variable
  regularizers so Keras scales it correctly under `tf.distribute`. Its scope
  (`train.weight_decay_scope`, `WEIGHT_DECAY_SCOPES`) is the authors' choice:
  "conv_kernels" (RMI/RRN/R,D+LSTM code: variables named `DW`, i.e. the kernels of plain
  convolutions; never the LSTM, ConvLSTM or embedding) or "matrices" (Hu et al.'s code: every
  `weights` and `Matrix` variable, the LSTM's included).
- Adam's `epsilon` is `train.optimizer.epsilon` (1e-8 in the TF1 code of RMI and RRN; Keras's
  default is 1e-7).
- `bias_lr_multiplier`: the authors' code doubled the gradient of biases. With SGD that doubles
  their learning rate; Adam is almost invariant to the scale of a gradient, so there it mostly
  matters through epsilon. We reproduce it faithfully either way.
"""

import keras


@keras.saving.register_keras_serializable(package="refseg_tf")
class SafePolynomialDecay(keras.optimizers.schedules.PolynomialDecay):
    """`keras.optimizers.schedules.PolynomialDecay` that stays finite under XLA.

    Keras computes `(1 - step / decay_steps) ** power`. XLA rewrites the division as a
    multiplication by `1 / decay_steps`, which can exceed 1 at `step == decay_steps` (e.g.
    3 * fl(1/3) = 1.0000001): a negative base to a fractional power is NaN, and one update with
    a NaN learning rate turns every weight into NaN. Here `1 - step / decay_steps` is clamped
    at 0, so the rate is `end_learning_rate` from `decay_steps` on (`cycle=True` is Keras's).
    """

    def __call__(self, step):
        if self.cycle:
            return super().__call__(step)
        from keras import ops

        initial = ops.convert_to_tensor(self.initial_learning_rate)
        dtype = initial.dtype
        end = ops.cast(self.end_learning_rate, dtype)
        decay_steps = ops.cast(self.decay_steps, dtype)
        step = ops.minimum(ops.cast(step, dtype), decay_steps)
        remaining = ops.maximum(1 - step / decay_steps, ops.cast(0, dtype))
        return (initial - end) * ops.power(remaining, ops.cast(self.power, dtype)) + end


def build_schedule(optimizer_config, total_steps: int):
    """Returns a learning rate (float) or a `keras.optimizers.schedules.LearningRateSchedule`."""
    name = optimizer_config.schedule
    learning_rate = float(optimizer_config.learning_rate)
    decay_steps = int(optimizer_config.decay_steps) or int(total_steps)
    if name == "constant":
        return learning_rate
    if name == "staircase":
        return keras.optimizers.schedules.ExponentialDecay(
            learning_rate,
            decay_steps=decay_steps,
            decay_rate=float(optimizer_config.decay_rate),
            staircase=True,
        )
    if name == "polynomial":
        return SafePolynomialDecay(
            learning_rate,
            decay_steps=decay_steps,
            end_learning_rate=float(optimizer_config.end_learning_rate),
            power=float(optimizer_config.power),
        )
    if name == "piecewise":
        boundaries = [int(b) for b in optimizer_config.boundaries]
        if not boundaries:
            raise ValueError("schedule='piecewise' needs `train.optimizer.boundaries` (in steps).")
        rate = float(optimizer_config.decay_rate)
        values = [learning_rate * rate**i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    raise ValueError(
        f"Unknown `train.optimizer.schedule` {name!r}; expected one of "
        "'constant', 'staircase', 'polynomial', 'piecewise'."
    )


def _is_bias(variable) -> bool:
    return variable.path.split("/")[-1] == "bias"


class _BiasGradientMultiplier:
    """Mixin scaling the gradient of every bias variable before the update."""

    def _init_multiplier(self, bias_lr_multiplier):
        self.bias_lr_multiplier = float(bias_lr_multiplier)

    def apply(self, grads, trainable_variables=None):
        if self.bias_lr_multiplier != 1.0:
            variables = (
                list(trainable_variables)
                if trainable_variables is not None
                else list(self._trainable_variables)
            )
            grads = [
                g * self.bias_lr_multiplier if g is not None and _is_bias(v) else g
                for g, v in zip(grads, variables)
            ]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        config = super().get_config()
        config["bias_lr_multiplier"] = self.bias_lr_multiplier
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class SGDWithBiasMultiplier(_BiasGradientMultiplier, keras.optimizers.SGD):
    """`keras.optimizers.SGD` whose bias gradients are scaled by `bias_lr_multiplier` (Caffe lr_mult)."""

    def __init__(self, *args, bias_lr_multiplier=2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_multiplier(bias_lr_multiplier)


@keras.saving.register_keras_serializable(package="refseg_tf")
class AdamWithBiasMultiplier(_BiasGradientMultiplier, keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose bias gradients are scaled by `bias_lr_multiplier`."""

    def __init__(self, *args, bias_lr_multiplier=2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_multiplier(bias_lr_multiplier)


def build_optimizer(optimizer_config, total_steps: int):
    """Builds the configured optimizer (`train.optimizer`)."""
    schedule = build_schedule(optimizer_config, total_steps)
    extra = {}
    if float(optimizer_config.get("clipnorm", 0.0)) > 0:
        extra["clipnorm"] = float(optimizer_config.clipnorm)
    multiplier = float(optimizer_config.get("bias_lr_multiplier", 1.0))
    name = optimizer_config.name
    if name == "sgd":
        return SGDWithBiasMultiplier(
            learning_rate=schedule,
            momentum=float(optimizer_config.momentum),
            bias_lr_multiplier=multiplier,
            **extra,
        )
    if name == "adam":
        epsilon = float(optimizer_config.get("epsilon", 1e-7))
        if epsilon <= 0:
            raise ValueError(f"`train.optimizer.epsilon` must be > 0; received {epsilon}.")
        return AdamWithBiasMultiplier(
            learning_rate=schedule, epsilon=epsilon, bias_lr_multiplier=multiplier, **extra
        )
    raise ValueError(f"Unknown `train.optimizer.name` {name!r}; expected 'sgd' or 'adam'.")


DECAYED_WEIGHT_NAMES = ("kernel", "recurrent_kernel", "depthwise_kernel", "pointwise_kernel")
WEIGHT_DECAY_SCOPES = ("conv_kernels", "matrices")
CONVOLUTION_TYPES = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)


def is_recurrent_layer(layer) -> bool:
    """True for a recurrent layer or cell: `keras.layers.RNN` (LSTM, GRU, ConvLSTM2D) or a
    layer that declares `is_recurrent_cell = True` (e.g. `refseg_tf.models.rrn.ConvLSTMStep`)."""
    return isinstance(layer, keras.layers.RNN) or bool(getattr(layer, "is_recurrent_cell", False))


def _all_layers(model):
    return model._flatten_layers(include_self=True, recursive=True)


def convolution_kernels(model) -> set:
    """Ids of the kernels of every convolution that is not part of a recurrent layer."""
    recurrent = set()
    for layer in _all_layers(model):
        if is_recurrent_layer(layer):
            recurrent.update(id(variable) for variable in layer.weights)
    kernels = set()
    for layer in _all_layers(model):
        if isinstance(layer, CONVOLUTION_TYPES):
            for variable in layer.weights:
                if _leaf_name(variable) in DECAYED_WEIGHT_NAMES and id(variable) not in recurrent:
                    kernels.add(id(variable))
    return kernels


def _leaf_name(variable) -> str:
    return variable.path.split("/")[-1]


def _check_scope(scope):
    if scope not in WEIGHT_DECAY_SCOPES:
        raise ValueError(
            f"`train.weight_decay_scope` must be one of {WEIGHT_DECAY_SCOPES}; received {scope!r}."
        )


def decayed_variables(model, scope: str = "matrices") -> list:
    """The trainable variables `apply_weight_decay` decays under `scope`.

    - "matrices": every trainable kernel (`DECAYED_WEIGHT_NAMES`: convolution and dense
      kernels, the LSTM's kernel and recurrent kernel): Hu et al.'s `weights` + `Matrix`.
    - "conv_kernels": only the kernels of convolution layers outside recurrent layers: the
      `DW` variables of the RMI/RRN code (a trainable backbone layer such as R+LSTM's fc1000
      counts; LSTM, ConvLSTM and embedding never do).
    """
    _check_scope(scope)
    if scope == "matrices":
        return [v for v in model.trainable_weights if _leaf_name(v) in DECAYED_WEIGHT_NAMES]
    kernels = convolution_kernels(model)
    return [v for v in model.trainable_weights if id(v) in kernels]


def apply_weight_decay(model, weight_decay: float, scope: str = "matrices") -> int:
    """Attaches an L2 regularizer (0.5 * decay * ||w||^2) to the trainable kernels of `scope`.

    Returns the number of decayed variables. Call after freezing: frozen variables are not
    trainable and are skipped. `scope`: see `decayed_variables`.
    """
    _check_scope(scope)
    if weight_decay <= 0:
        return 0
    regularizer = keras.regularizers.L2(0.5 * weight_decay)
    variables = decayed_variables(model, scope)
    for variable in variables:
        variable.regularizer = regularizer
    return len(variables)

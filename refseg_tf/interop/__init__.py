"""Interoperability with the authors' own code: their TF1 checkpoints and weight files.

This package is the only place in refseg-tf that knows the authors' variable names. The rest of
the library sees Keras models; `refseg-import` (refseg_tf/import_weights.py) turns an authors'
checkpoint into an ordinary model directory.

Core API (what a format module uses; one module per authors' code base):

- `read_checkpoint(path) -> CheckpointVariables` (checkpoint.py): a TF1 checkpoint read with
  `tf.train.load_checkpoint`, V1 single file or V2 prefix / `.index` / directory;
  `.shapes`, `.dtypes`, `.names`, `.read(name)`; a missing, truncated or corrupted file is a
  ValueError naming it.
- `AssignmentPlan(variables, ignore=TF1_TRAINING_STATE)` (assign.py): `take(name, layer,
  shape=None)` reads a variable and marks it used, `assign(keras_variable, value, source,
  layer)` plans a write, `require_complete(model)` demands every model weight be written,
  `apply()` raises ONE ValueError listing every missing / mis-shaped / unexpected variable
  and unfilled weight (file, variable, layer), or assigns everything. Shapes are all checked
  before anything is assigned. `has(name)`, `first_present(names)` for alternative namings.
- TF1 conventions (tf1.py): `tf1_lstm_to_keras(matrix, bias, input_dim, forget_bias)`
  (BasicLSTMCell / LSTMCell: inputs before states, gates i, j, f, o -> Keras i, f, c, o,
  forget_bias folded into the bias), `keras_lstm_to_tf1` (inverse), `tf1_lstm_names(scope,
  cell)` (TF 1.0 `RNN/MultiRNNCell/Cell0/BasicLSTMCell/Linear/{Matrix,Bias}`, later
  `rnn/multi_rnn_cell/cell_0/basic_lstm_cell/{kernel,bias}`, `lstm_cell`, without
  MultiRNNCell), `plan_tf1_lstm(plan, scope, keras_lstm, layer, input_dim, forget_bias)`,
  `dense_to_conv_kernel(weights, kernel_shape)`, `tf1_conv2d_transpose_kernel(weights,
  kernel_shape)` (TF1 `[kh, kw, out, in]` = Keras 3 Conv2DTranspose layout).
- Formats (registry.py): `register_format(name, assign, *, configure=None, check_model=None,
  ignore=TF1_TRAINING_STATE, defaults={}, description="", reference="")`; `assign(model,
  plan, options)` fills the plan, `configure(config)` sets what the weights imply before the
  model is built (normalisation, tokenizer), `check_model(model)` refuses a model the format
  cannot fill. `get_format(name)`, `list_formats()`. A format module registers on import and
  gets one import line below.
- `import_checkpoint(format_name, checkpoint, vocabulary, config, model_dir, *, options=None,
  overwrite=False)` (importer.py): builds the config's model, fills it, writes config.json,
  vocab.txt (the authors' file, byte for byte), preprocessor.json and model.keras into a
  temporary directory renamed to `model_dir` at the end (nothing at `model_dir` on error).
  `build_imported_model(...)` does the same without writing; `load_experiment_config(path)`.
- Backbone files (backbone_files.py): readers for the authors' backbone initialisations
  (Hu's `vgg_params.npz`), entries of `refseg_tf.backbones.load_weights`' format table.

Formats: "text_objseg" (Hu et al. 2016; text_objseg.py).
"""

from refseg_tf.interop.assign import TF1_TRAINING_STATE, AssignmentPlan
from refseg_tf.interop.checkpoint import CheckpointVariables, checkpoint_prefix, read_checkpoint
from refseg_tf.interop.importer import (
    build_imported_model,
    import_checkpoint,
    load_experiment_config,
)
from refseg_tf.interop.registry import ImportFormat, get_format, list_formats, register_format
from refseg_tf.interop.tf1 import (
    dense_to_conv_kernel,
    keras_lstm_to_tf1,
    plan_tf1_lstm,
    tf1_conv2d_transpose_kernel,
    tf1_lstm_names,
    tf1_lstm_to_keras,
)

# Format modules (each registers itself on import): one line per authors' code base.
from refseg_tf.interop import text_objseg  # noqa: E402,F401  (Hu et al. 2016)

__all__ = [
    "AssignmentPlan",
    "CheckpointVariables",
    "ImportFormat",
    "TF1_TRAINING_STATE",
    "build_imported_model",
    "checkpoint_prefix",
    "dense_to_conv_kernel",
    "get_format",
    "import_checkpoint",
    "keras_lstm_to_tf1",
    "list_formats",
    "load_experiment_config",
    "plan_tf1_lstm",
    "read_checkpoint",
    "register_format",
    "tf1_conv2d_transpose_kernel",
    "tf1_lstm_names",
    "tf1_lstm_to_keras",
]

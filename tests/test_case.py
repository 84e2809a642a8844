"""Shared test base for layers, backbones, referring segmenters, presets and export.

In the spirit of keras-hub's `keras_hub/src/tests/test_case.py`: one function per kind of
object runs the checks every such object must pass, so a new layer or model family gets them by
calling one function, and a registered preset gets them by being registered
(`refseg_tf.models.list_presets()`):

- `run_layer_test`: `get_config` -> `from_config` round trip (same config, same outputs with the
  same weights), registered serialisation, eager and symbolic (`keras.Input`) calls that agree,
  a training step (finite gradients that move the weights), mixed-precision dtypes (float32
  variables, the expected output dtype, the policy survives the config) and a `.keras` round trip.
- `run_segmenter_test`: logits of shape `[B, H / output_stride, W / output_stride, 1]` in
  float32, batch > 1 equals batch 1 with sentences of mixed lengths, front and back padding,
  compile defaults + `fit` + the loss going down, a `.keras` round trip, mixed precision.
- `run_preset_test`: a registered preset builds (tiny by default), runs, a training checkpoint
  restores every weight into a fresh model, survives
  `from_config(get_config())` and, where a formula is declared, its head has the declared
  parameter count.
- `run_export_test`: the exported SavedModel and TFLite model give the Keras logits (the
  machinery of `tests/test_export.py`, which runs it for every registered preset).

Inputs are tiny (64 px, few channels) so the default suite stays fast.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from keras import ops

VOCAB = 20
IMAGE = 64
LENGTH = 6
# Mixed lengths (5, 1, 3, 2 words): batching must not mix the padding of one row into another.
SENTENCES = [[5, 6, 7, 8, 9], [4], [3, 11, 12], [7, 7]]
TINY_HEAD = dict(embedding_dim=8, text_units=8)
# Smaller backbones than backbones.TINY_PRESETS (one block per stage) keep graph tracing short.
TINY_RESNET = dict(depths=(1, 1, 1, 1))
TINY_DARKNET = dict(widths=(8, 8, 16, 16, 32), depths=(1, 1, 1, 1, 1), stem_filters=4)
TINY_BACKBONE_KWARGS = {
    "resnet101_os8": TINY_RESNET,
    "darknet53": TINY_DARKNET,
    "darknet53_neck": TINY_DARKNET,
}
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


# --------------------------------------------------------------------------- data


def to_numpy(tensor):
    """A tensor (or array) as a numpy array."""
    return np.asarray(ops.convert_to_numpy(tensor))


def word_ids(count, padding="front", length=LENGTH):
    """`count` rows of `SENTENCES` (cycled), padded with 0 at the front or the back."""
    rows = []
    for sentence in (SENTENCES * count)[:count]:
        pad = [0] * (length - len(sentence))
        rows.append(pad + sentence if padding == "front" else sentence + pad)
    return np.array(rows, "int32")


def segmenter_inputs(count, padding="front", seed=0, image_size=IMAGE):
    """A model input dict `{"image", "word_ids"}` of `count` examples."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(count, image_size, image_size, 3)).astype("float32")
    return {"image": images, "word_ids": word_ids(count, padding)}


def segmenter_masks(count, seed=0, image_size=IMAGE):
    """`count` ground-truth masks `[count, H, W, 1]`, each a random rectangle."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, image_size, image_size, 1), "float32")
    for mask in masks:
        top, left = rng.integers(0, image_size // 2, size=2)
        mask[top : top + image_size // 2, left : left + image_size // 3] = 1.0
    return masks


def segmenter_dataset(count=4, batch_size=2, padding="front"):
    """As `refseg_tf.data.load(..., as_supervised=True)`: ({image, word_ids}, mask)."""
    pairs = (segmenter_inputs(count, padding), segmenter_masks(count))
    return tf.data.Dataset.from_tensor_slices(pairs).batch(batch_size)


def save_and_reload(obj, directory=None, name="model.keras"):
    """Saves a model to a `.keras` file and loads it back."""
    directory = directory or tempfile.mkdtemp(prefix="refseg-test-")
    path = os.path.join(str(directory), name)
    obj.save(path)
    return keras.saving.load_model(path)


class mixed_precision_policy:
    """Context manager: the global dtype policy `policy` inside, float32 afterwards."""

    def __init__(self, policy="mixed_float16"):
        self.policy = policy

    def __enter__(self):
        keras.mixed_precision.set_global_policy(self.policy)

    def __exit__(self, *exc_info):
        keras.mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------------------- structures


def _flatten(structure):
    """Leaves of nested dicts / lists / tuples, in a deterministic order."""
    if isinstance(structure, dict):
        return [leaf for key in sorted(structure) for leaf in _flatten(structure[key])]
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in _flatten(item)]
    return [structure]


def _is_array(value):
    return isinstance(value, np.ndarray)


def _map_arrays(structure, function):
    """`structure` with every numpy array replaced by `function(array)`; the rest kept."""
    if isinstance(structure, dict):
        return {key: _map_arrays(value, function) for key, value in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(_map_arrays(item, function) for item in structure)
    return function(structure) if _is_array(structure) else structure


def _tensor_leaves(outputs):
    return [leaf for leaf in _flatten(outputs) if leaf is not None and hasattr(leaf, "dtype")]


def _float_leaves(outputs):
    return [leaf for leaf in _tensor_leaves(outputs) if keras.backend.standardize_dtype(
        leaf.dtype) in FLOAT_DTYPES]


def _assert_outputs_close(actual, expected, atol, rtol=1e-5):
    actual, expected = _tensor_leaves(actual), _tensor_leaves(expected)
    assert len(actual) == len(expected)
    for ours, theirs in zip(actual, expected):
        np.testing.assert_allclose(
            to_numpy(ours).astype("float64"), to_numpy(theirs).astype("float64"),
            atol=atol, rtol=rtol,
        )


def _assert_shapes(outputs, expected_output_shape):
    if isinstance(expected_output_shape, dict):
        for key, shape in expected_output_shape.items():
            assert tuple(outputs[key].shape) == tuple(shape), (key, outputs[key].shape, shape)
    elif isinstance(expected_output_shape, list):
        for output, shape in zip(outputs, expected_output_shape):
            assert tuple(output.shape) == tuple(shape), (output.shape, shape)
    else:
        assert tuple(outputs.shape) == tuple(expected_output_shape), (
            outputs.shape, expected_output_shape,
        )


# --------------------------------------------------------------------------- layers


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    call_kwargs=None,
    expected_output_shape=None,
    expected_output_dtype="float32",
    mixed_precision_output_dtype="float16",
    float32_sublayers=(),
    run_symbolic=True,
    run_training=True,
    run_mixed_precision=True,
    run_saving=True,
    atol=1e-5,
):
    """Runs the checks every registered layer (or backbone model) must pass.

    Args:
        layer_cls: the layer class (a `keras.layers.Layer` or a functional `Backbone`).
        init_kwargs: constructor keyword arguments.
        input_data: the positional call arguments: numpy arrays, lists of arrays or static
            values (None, bools); a single array stands for one argument.
        call_kwargs: keyword call arguments (arrays become model inputs, others stay static).
        expected_output_shape: the output shape, or a dict / list of shapes for structured
            outputs.
        expected_output_dtype: dtype of every floating output under float32.
        mixed_precision_output_dtype: dtype of every floating output under "mixed_float16"
            (e.g. "float32" for layers that return float32 by design).
        float32_sublayers: names of sublayers that compute in float32 by design; every other
            sublayer must take the layer's "mixed_float16" policy.
        run_symbolic / run_training / run_mixed_precision / run_saving: switch checks off.
        atol: tolerance of the output comparisons.

    Returns:
        The built float32 layer.
    """
    args = tuple(input_data) if isinstance(input_data, tuple) else (input_data,)
    call_kwargs = dict(call_kwargs or {})

    def call(layer):
        return layer(*args, **call_kwargs)

    # Config round trip and registration.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == keras.saving.get_registered_name(layer_cls)
    assert type(keras.saving.deserialize_keras_object(serialized)) is layer_cls

    # Eager call: shapes and dtypes; the clone with the same weights gives the same outputs.
    outputs = call(layer)
    if expected_output_shape is not None:
        _assert_shapes(outputs, expected_output_shape)
    for output in _float_leaves(outputs):
        assert keras.backend.standardize_dtype(output.dtype) == expected_output_dtype
        assert np.isfinite(to_numpy(output)).all()
    call(clone)
    clone.set_weights(layer.get_weights())
    _assert_outputs_close(call(clone), outputs, atol)

    model = None
    if run_symbolic:
        model, model_inputs = _symbolic_model(layer, args, call_kwargs)
        _assert_outputs_close(model(model_inputs), outputs, atol)
    if run_training:
        _assert_training_step_moves_weights(layer, call)
        outputs = call(layer)  # the weights moved
    if run_mixed_precision:
        _assert_mixed_precision(
            layer_cls, init_kwargs, call, mixed_precision_output_dtype, float32_sublayers
        )
    if run_saving and model is not None:
        reloaded = save_and_reload(model)
        _assert_outputs_close(reloaded(model_inputs), model(model_inputs), atol)
        reloaded_layer = reloaded.get_layer(layer.name)
        assert type(reloaded_layer) is layer_cls
        assert reloaded_layer.get_config() == layer.get_config()
    return layer


def _symbolic_model(layer, args, call_kwargs):
    """A functional model around `layer` (one `keras.Input` per array argument) and the
    arrays to call it with, in the order of its inputs."""
    inputs, arrays = [], []

    def as_input(array):
        inputs.append(keras.Input(shape=array.shape[1:], dtype=str(array.dtype)))
        arrays.append(array)
        return inputs[-1]

    symbolic_args = _map_arrays(args, as_input)
    symbolic_kwargs = _map_arrays(call_kwargs, as_input)
    outputs = layer(*symbolic_args, **symbolic_kwargs)
    for output in _tensor_leaves(outputs):
        assert isinstance(output, keras.KerasTensor)
    return keras.Model(inputs, outputs), arrays


def _assert_training_step_moves_weights(layer, call):
    """One SGD step on the mean square of the outputs: finite gradients, moved weights."""
    variables = layer.trainable_variables
    if not variables:
        return
    with tf.GradientTape() as tape:
        outputs = call(layer)
        loss = sum(ops.mean(ops.square(ops.cast(o, "float32"))) for o in _float_leaves(outputs))
    gradients = tape.gradient(loss, variables)
    assert any(g is not None for g in gradients), "no gradient reaches the trainable weights"
    before = [to_numpy(v).copy() for v in variables]
    pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
    for gradient, _ in pairs:
        assert np.isfinite(to_numpy(gradient)).all()
    keras.optimizers.SGD(0.1).apply([g for g, _ in pairs], [v for _, v in pairs])
    assert any(not np.allclose(b, to_numpy(v)) for b, v in zip(before, variables))


def _assert_mixed_precision(layer_cls, init_kwargs, call, output_dtype, float32_sublayers):
    layer = layer_cls(**dict(init_kwargs, dtype="mixed_float16"))
    outputs = call(layer)
    for variable in layer.weights:
        if keras.backend.standardize_dtype(variable.dtype) in FLOAT_DTYPES:
            assert keras.backend.standardize_dtype(variable.dtype) == "float32", variable.path
    for output in _float_leaves(outputs):
        dtype = keras.backend.standardize_dtype(output.dtype)
        assert dtype == output_dtype, f"{layer_cls.__name__}: {dtype}, expected {output_dtype}"
        assert np.isfinite(to_numpy(output).astype("float32")).all()
    # A functional backbone hands the policy to its layers; float32_sublayers compute in
    # float32 on purpose (e.g. a score layer whose logits must be float32).
    for sublayer in layer._flatten_layers(include_self=not isinstance(layer, keras.Model)):
        if sublayer.name in float32_sublayers or isinstance(sublayer, keras.layers.InputLayer):
            assert sublayer.compute_dtype == "float32", sublayer.name
            continue
        policy = sublayer.dtype_policy.name
        assert policy == "mixed_float16", f"{layer_cls.__name__}: {sublayer.name} has {policy}"
    restored = layer_cls.from_config(layer.get_config())
    if isinstance(restored, keras.Model):
        policies = {
            sublayer.dtype_policy.name
            for sublayer in restored._flatten_layers(include_self=False)
            if sublayer.name not in float32_sublayers
            and not isinstance(sublayer, keras.layers.InputLayer)
        }
        assert policies == {"mixed_float16"}, policies
    else:
        assert restored.dtype_policy.name == "mixed_float16"


# --------------------------------------------------------------------------- segmenters


def head_weights(model):
    """Values of the weights outside the backbone (text encoder, fusion, recurrence, score)."""
    backbone = {id(variable) for variable in model.backbone.weights}
    return [np.array(v) for v in model.weights if id(v) not in backbone]


def assert_batch_equals_single_runs(model, padding="front", count=4, atol=1e-5):
    """Logits of a batch of sentences of mixed lengths equal those of each example alone."""
    inputs = segmenter_inputs(count, padding)
    batched = to_numpy(model(inputs, training=False))
    for index in range(count):
        single = {key: value[index : index + 1] for key, value in inputs.items()}
        np.testing.assert_allclose(
            batched[index], to_numpy(model(single, training=False))[0], atol=atol, rtol=1e-4
        )


def assert_logits_shape_and_dtype(model, count=2, padding="front", expected_stride=None):
    """Logits `[B, H / s, W / s, 1]` in float32 with `s = model.output_stride`; finite."""
    stride = model.output_stride
    if expected_stride is not None:
        assert stride == expected_stride
    logits = model(segmenter_inputs(count, padding), training=False)
    assert tuple(logits.shape) == (count, IMAGE // stride, IMAGE // stride, 1)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.isfinite(to_numpy(logits)).all()
    return logits


def assert_trains_and_round_trips(model, directory=None, padding="front", epochs=4):
    """compile() defaults, `fit` over the same two mixed-length batches for `epochs` epochs
    (the loss goes down, the head's weights move, no variable is created while the train step
    is traced), `.keras` round trip (outputs, type, config, compiled optimizer, trainable
    variables). Returns the reloaded model.

    One `fit` call: each epoch's loss is the mean over the same data, so a falling loss is seen
    without `train_on_batch`, which traced a second training function (tracing, not the steps,
    is the cost of this check; issue 21: suite time).
    """
    model.compile()
    model(segmenter_inputs(1, padding))  # build, to compare weights before and after training
    before = head_weights(model)
    assert before
    history, created = _with_graph_variables_created(lambda: model.fit(
        segmenter_dataset(padding=padding), epochs=epochs, verbose=0, shuffle=False
    ))
    # A variable created while tracing makes TensorFlow trace the train step twice
    # (`ReferringSegmenter.fit` builds the optimizer first).
    assert created == [], created
    assert {"loss", "overall_iou", "mean_iou", "precision@0.5"} <= set(history.history)
    losses = history.history["loss"]
    assert np.isfinite(losses).all(), losses
    assert losses[-1] < losses[0], losses
    after = head_weights(model)
    assert any(not np.allclose(b, a) for b, a in zip(before, after))

    inputs = segmenter_inputs(2, padding)
    reloaded = save_and_reload(model, directory)
    np.testing.assert_allclose(
        to_numpy(reloaded(inputs, training=False)), to_numpy(model(inputs, training=False)),
        atol=1e-5,
    )
    assert type(reloaded) is type(model)
    _assert_same_config(reloaded.get_config(), model.get_config())
    assert reloaded.compiled and type(reloaded.optimizer) is type(model.optimizer)
    assert len(reloaded.trainable_variables) == len(model.trainable_variables)
    return reloaded


def _with_graph_variables_created(function):
    """`(function(), names)`: the names of the variables created while a graph was traced."""
    created = []

    def creator(next_creator, **kwargs):
        if not tf.executing_eagerly():
            created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        result = function()
    return result, created


def assert_mixed_precision(build):
    """Under "mixed_float16" the model computes in float16 and its logits stay float32."""
    with mixed_precision_policy("mixed_float16"):
        model = build()
        logits = model(segmenter_inputs(2, "back"), training=False)
    assert model.compute_dtype == "float16"
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.isfinite(to_numpy(logits)).all()
    return model


def run_segmenter_test(
    build,
    directory=None,
    paddings=("front", "back"),
    padding_invariant=None,
    expected_stride=None,
    run_training=True,
    run_mixed_precision=True,
):
    """Runs the checks every `ReferringSegmenter` must pass.

    Args:
        build: a function of no arguments returning a new, uncompiled model (called again
            under the mixed-precision policy).
        directory: where the `.keras` file is written (a temporary directory by default).
        paddings: the text paddings the model supports ("front", "back").
        padding_invariant: front and back padding give the same logits (the model masks the
            pads; Hu's LSTM-CNN code, for one, reads the front pads). None: the model's
            `mask_text_padding` when it has one, else True.
        expected_stride: the model's `output_stride`, when the test knows it.
        run_training: compile + fit + `.keras` round trip (the slowest check).
        run_mixed_precision: build again under "mixed_float16".

    Returns:
        `(model, reloaded)`: the model (trained when `run_training`) and its `.keras` reload
        (None without `run_training`).
    """
    model = build()
    assert_logits_shape_and_dtype(model, padding=paddings[0], expected_stride=expected_stride)
    for padding in paddings:
        assert_batch_equals_single_runs(model, padding)
    if padding_invariant is None:
        padding_invariant = getattr(model, "mask_text_padding", True)
    if padding_invariant and len(paddings) > 1:
        np.testing.assert_allclose(
            to_numpy(model(segmenter_inputs(4, "front"), training=False)),
            to_numpy(model(segmenter_inputs(4, "back"), training=False)),
            atol=1e-5,
        )
    reloaded = None
    if run_training:
        reloaded = assert_trains_and_round_trips(model, directory, padding=paddings[0])
    if run_mixed_precision:
        assert_mixed_precision(build)
    return model, reloaded


# --------------------------------------------------------------------------- presets


def tiny_backbone_kwargs(name):
    """The small backbone keyword arguments the tests use for preset `name`'s backbone."""
    from refseg_tf.models import get_preset

    return dict(TINY_BACKBONE_KWARGS.get(get_preset(name).backbone, {}))


def build_tiny_preset(name, vocabulary_size=VOCAB, frozen_backbone=False, **overrides):
    """`build_preset(name, size="tiny")` on the tests' small backbone."""
    from refseg_tf.models import build_preset

    overrides.setdefault("backbone_kwargs", tiny_backbone_kwargs(name))
    model = build_preset(name, vocabulary_size, size="tiny", **overrides)
    if frozen_backbone:
        model.backbone.trainable = False  # RMI/RRN keep the CNN fixed; it also traces faster
    return model


def preset_text_padding(name):
    """The text paddings preset `name` reads: its declared input contract's."""
    from refseg_tf.models import get_preset

    return tuple(get_preset(name).input_contract.text_paddings)


def preset_image_size(name, near=IMAGE):
    """The smallest test image size >= `near` that preset `name`'s input contract accepts."""
    from refseg_tf.models import get_preset

    return get_preset(name).input_contract.valid_image_size(near)


def run_preset_test(name, vocabulary_size=VOCAB, size="tiny", backbone=None, head_formula=None,
                    image_size=IMAGE, **overrides):
    """A registered preset builds, runs and survives `from_config(get_config())`.

    Args:
        name: a name of `refseg_tf.models.list_presets()`.
        vocabulary_size: the model's vocabulary size.
        size: "tiny" (default) or "paper" (paper-scale head; pass a tiny `backbone`).
        backbone: a backbone to build on (default: the tests' small one).
        head_formula: optional `formula(vocabulary_size, backbone.feature_channels)`, the
            declared parameter count of everything outside the backbone.
        image_size: the test image size (raised to the next one the preset's input contract
            accepts, `preset_image_size`).
        **overrides: `build_preset` keyword arguments.

    Returns:
        The built model.
    """
    from refseg_tf.models import ReferringSegmenter, build_preset, get_preset

    preset = get_preset(name)
    if backbone is None:
        overrides.setdefault("backbone_kwargs", tiny_backbone_kwargs(name))
    model = build_preset(name, vocabulary_size, size=size, backbone=backbone, **overrides)
    assert isinstance(model, preset.model_class) and isinstance(model, ReferringSegmenter)
    padding = preset_text_padding(name)[0]
    image_size = preset_image_size(name, image_size)
    inputs = segmenter_inputs(1, padding, image_size=image_size)
    logits = model(inputs, training=False)
    stride = model.output_stride
    assert tuple(logits.shape) == (1, image_size // stride, image_size // stride, 1)
    if head_formula is not None:
        head = model.count_params() - model.backbone.count_params()
        assert head == head_formula(vocabulary_size, model.backbone.feature_channels)
    if size == "tiny":
        clone = type(model).from_config(model.get_config())
        clone(inputs, training=False)
        assert clone.get_config() == model.get_config()
        assert clone.count_params() == model.count_params()
        assert_training_checkpoint_restores_every_weight(model, clone)
    return model


def assert_training_checkpoint_restores_every_weight(model, fresh_model):
    """A training checkpoint of `model` restores every weight into `fresh_model`.

    `fresh_model` is a built model of the same config (as a resumed run builds it). Weights
    are set to distinct values first, so a weight the checkpoint misses keeps its own
    initial value and is named. Keras 3 hides layers held in lists and dicts from
    `tf.train.Checkpoint`; `refseg_tf.training.checkpointing` is what shows them.
    """

    from refseg_tf.training.checkpointing import training_checkpoint_items

    def weights(m):  # RNG states are not weights; their paths depend on creation order
        return [v for v in m.variables if "seed_generator" not in v.path]

    rng = np.random.default_rng(0)
    for variable in weights(model):
        values = rng.uniform(0.5, 1.5, variable.shape)
        variable.assign(values.astype(variable.dtype) if variable.dtype != "bool" else values > 1)
    directory = tempfile.mkdtemp(prefix="refseg-checkpoint-")
    path = tf.train.Checkpoint(**training_checkpoint_items({"model": model})).save(
        os.path.join(directory, "ckpt")
    )
    restored = tf.train.Checkpoint(**training_checkpoint_items({"model": fresh_model}))
    restored.restore(path).assert_existing_objects_matched()
    source, target = weights(model), weights(fresh_model)
    assert len(source) == len(target)
    missed = [
        t.path for s, t in zip(source, target) if not np.array_equal(to_numpy(s), to_numpy(t))
    ]
    assert not missed, f"weights missing from the training checkpoint: {missed}"


# --------------------------------------------------------------------------- export


def run_export_test(exported, batch=2, atol=1e-4):
    """The SavedModel's `segment_tensors` and the TFLite model give the Keras logits.

    Args:
        exported: a `tests.test_export.Exported` (a model directory exported by
            `refseg_tf.export.export_model`), or a preset name to export at its tiny size.
        batch: number of examples compared.
        atol: tolerance on the logits.

    Returns:
        The `Exported`.
    """
    from refseg_tf.export import TFLiteSegmenter
    from tests import test_export

    if isinstance(exported, str):
        exported = test_export.Exported(tempfile.mkdtemp(prefix="refseg-export-"), exported)
    images, ids = test_export._random_inputs(exported, batch)
    keras_logits = to_numpy(
        exported.predictor.model({"image": images, "word_ids": ids}, training=False)
    )
    served = exported.segment(image=images, word_ids=ids)["logits"].numpy()
    np.testing.assert_allclose(served, keras_logits, atol=atol)
    lite = TFLiteSegmenter(os.path.join(exported.output_dir, "model.tflite"))
    np.testing.assert_allclose(lite(images, ids), keras_logits, atol=atol)
    return exported


def _assert_same_config(actual, expected, path="config"):
    """Equal configs, or an AssertionError naming the first differing key path."""
    if isinstance(actual, dict) and isinstance(expected, dict):
        assert set(actual) == set(expected), (path, sorted(set(actual) ^ set(expected)))
        for key in expected:
            _assert_same_config(actual[key], expected[key], f"{path}/{key}")
    elif isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), (path, actual, expected)
        for index, (a, e) in enumerate(zip(actual, expected)):
            _assert_same_config(a, e, f"{path}[{index}]")
    else:
        assert actual == expected, (path, actual, expected)

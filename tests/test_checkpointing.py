"""Training checkpoints hold every weight (`refseg_tf.training.checkpointing`).

Regression: Keras 3 hides layers kept in lists and dicts from `tf.train.Checkpoint`: LTS's
ASPP batch-norm statistics were missing from training checkpoints (resuming reset them), and
RRN's lateral convolutions (a dict) and ConvLSTM and ASGN's discriminator and detail
convolutions were saved only through the optimizer's list of trained variables. Every registered preset is checked by `tests.test_case.run_preset_test`; this
file checks the mechanism, the old checkpoint layout and the trainer end to end.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from refseg_tf.training import trainer
from refseg_tf.training.checkpointing import CheckpointViews, training_checkpoint_items
from tests.test_case import (
    TINY_RESNET, build_tiny_preset, preset_text_padding, segmenter_inputs, to_numpy,
)
from tests.test_training import data, tiny_config  # noqa: F401  (the module's data fixture)


@keras.saving.register_keras_serializable(package="refseg_tf_tests")
class _HeldInContainers(keras.layers.Layer):
    """Sub-layers in a list, in a dict and in a list inside a dict, and one shared twice."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.shared = keras.layers.Dense(2, name="shared")
        self.listed = [keras.layers.Dense(3, name=f"listed_{i}") for i in range(2)]
        self.by_name = {"a": keras.layers.Dense(4, name="a"), "twice": self.shared}
        self.nested = {"deep": [keras.layers.Dense(5, name="deep")]}
        self.numbers = [1, 2, 3]  # a tracked list without trackables: no checkpoint node

    def call(self, x):
        outputs = [self.shared(x), self.by_name["a"](x), self.nested["deep"][0](x)]
        outputs += [layer(x) for layer in self.listed]
        return keras.ops.concatenate(outputs, axis=-1)


def _built_layer():
    layer = _HeldInContainers()
    layer(np.zeros((1, 6), "float32"))
    return layer


def _fill(variables, value):
    for variable in variables:
        variable.assign(np.full(variable.shape, value, variable.dtype))


def test_plain_tf_checkpoint_misses_container_held_weights(tmp_path):
    """The Keras 3 behaviour the views exist for (if this starts failing, Keras fixed it)."""
    layer = _built_layer()
    path = tf.train.Checkpoint(model=layer).save(str(tmp_path / "plain"))
    saved = {name for name, _ in tf.train.list_variables(path)}
    assert not any("listed" in name or "by_name" in name or "nested" in name for name in saved)


def test_views_save_and_restore_every_container_held_weight(tmp_path):
    layer, fresh = _built_layer(), _built_layer()
    _fill(layer.weights, 0.5)
    path = tf.train.Checkpoint(**training_checkpoint_items({"model": layer})).save(
        str(tmp_path / "views")
    )
    status = tf.train.Checkpoint(**training_checkpoint_items({"model": fresh})).restore(path)
    status.assert_existing_objects_matched()
    for source, target in zip(layer.weights, fresh.weights):
        np.testing.assert_array_equal(to_numpy(target), to_numpy(source), err_msg=target.path)
    names = {name for name, _ in tf.train.list_variables(path)}
    # TensorFlow's own list / dict layout: attribute, then index or key; a shared layer once.
    assert "model/listed/1/_kernel/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert "model/by_name/a/_kernel/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert "model/nested/deep/0/bias/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert not any(name.startswith("model/numbers") for name in names)
    assert sum(name.endswith("kernel/.ATTRIBUTES/VARIABLE_VALUE") for name in names) == 5


def test_one_view_per_layer():
    layer = _built_layer()
    views = CheckpointViews()
    assert views.view(layer) is views.view(layer)
    assert views.view(layer.shared) is views.view(layer.by_name["twice"])
    variable = layer.shared.kernel
    assert views.view(variable) is variable


def test_old_layout_checkpoint_of_a_model_without_containers_still_restores(tmp_path):
    model, fresh = build_tiny_preset("lstm_cnn"), build_tiny_preset("lstm_cnn")
    inputs = segmenter_inputs(1, preset_text_padding("lstm_cnn")[0])
    model(inputs), fresh(inputs)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "old"))
    restored = tf.train.Checkpoint(**training_checkpoint_items({"model": fresh})).restore(path)
    restored.assert_existing_objects_matched()
    np.testing.assert_allclose(to_numpy(fresh(inputs)), to_numpy(model(inputs)), atol=1e-6)


def test_old_layout_checkpoint_missing_weights_is_refused_not_half_restored(tmp_path):
    model, fresh = build_tiny_preset("rrn"), build_tiny_preset("rrn")
    inputs = segmenter_inputs(1)
    model(inputs), fresh(inputs)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "old"))
    with pytest.raises(ValueError, match="No checkpoint can be restored"):
        trainer.restore_first_readable(
            tf.train.Checkpoint(**training_checkpoint_items({"model": fresh})),
            [path],
            require_all=True,
        )


def test_resumed_rrn_checkpoint_is_the_trained_model(data, tmp_path):  # noqa: F811
    """End to end: the newest training checkpoint of an RRN run equals its `model.keras`."""
    data_dir, _ = data
    model_dir = str(tmp_path / "rrn")
    config = tiny_config(data_dir, "rrn")
    config.train.steps = 2
    config.train.log_images_every = 0  # no picture dataset (tests/test_training.py draws them)
    # RRN's own recipe (a fixed CNN) on the tests' one-block ResNet: half the graph to trace.
    config.train.freeze_backbone = True
    config.model.backbone.kwargs = dict(TINY_RESNET)
    model = trainer.train(config, model_dir, verbose=0)
    latest, _ = trainer.load_trained_model(model_dir, checkpoint="latest")
    lateral = "lateral_C5/kernel"
    trained = [v for v in model.weights if v.path.endswith(lateral)]
    reloaded = [v for v in latest.weights if v.path.endswith(lateral)]
    assert trained and reloaded
    np.testing.assert_array_equal(to_numpy(reloaded[0]), to_numpy(trained[0]))
    for source, target in zip(model.weights, latest.weights):
        np.testing.assert_array_equal(to_numpy(target), to_numpy(source), err_msg=target.path)
    assert os.path.exists(os.path.join(model_dir, "model.keras"))

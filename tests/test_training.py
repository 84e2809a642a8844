"""refseg_tf.training: schedules, optimizers, weight decay, weight copying, `train()` end to end,
resuming, the text-blind control, evaluation and `init_from`.

The end-to-end tests share one tiny training run (LSTM-CNN low-resolution stage, 3 steps on
40 synthetic 48 px images) made once per module. The resume-after-SIGKILL test runs two
subprocesses and is marked slow.
"""

import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from refseg_tf.models import ReferringSegmenter
from refseg_tf.training import callbacks as callbacks_lib
from refseg_tf.training import config as config_lib
from refseg_tf.training import experiments, optimizers, trainer
from refseg_tf.training.distribute import get_strategy

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNC_BUCKET_LABELS = ["1-2", "3", "4-5", "6-20"]


# --------------------------------------------------------------------------- helpers


def _optimizer_config(**values):
    config = config_lib.base_config().train.optimizer
    for key, value in values.items():
        config[key] = value
    return config


def _lr_at(schedule, step):
    if isinstance(schedule, float):
        return schedule
    return float(schedule(tf.constant(step, tf.int64)))


def _strict_json(path):
    """Parses JSON, failing on NaN / Infinity tokens (not valid JSON)."""

    def reject(token):
        raise ValueError(f"{path} contains the non-JSON token {token}")

    with open(path, encoding="utf-8") as f:
        return json.loads(f.read(), parse_constant=reject)


def _checkpoint_numbers(model_dir):
    directory = os.path.join(model_dir, callbacks_lib.CHECKPOINT_SUBDIR)
    if not os.path.isdir(directory):
        return set()
    return {
        int(m.group(1))
        for name in os.listdir(directory)
        if (m := re.fullmatch(r"ckpt-(\d+)\.index", name))
    }


def _checkpoint_iterations(path):
    """The optimizer step stored in a checkpoint (read without building a model)."""
    reader = tf.train.load_checkpoint(path)
    keys = [k for k in reader.get_variable_to_shape_map()
            if re.fullmatch(r"optimizer/_?iterations/.ATTRIBUTES/VARIABLE_VALUE", k)]
    assert keys, f"no optimizer/iterations in {path}"
    return int(reader.get_tensor(keys[0]))


# --------------------------------------------------------------------------- data + one run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """40 synthetic 48 px images, converted once: (tfrecord_dir, generate() summary)."""
    from refseg_tf.data.converters.refer import ReferReader
    from refseg_tf.data.converters.writer import write_dataset
    from refseg_tf.synthetic_data import generate

    root = tmp_path_factory.mktemp("training_data")
    summary = generate(str(root / "raw"), num_images=40, seed=3, image_size=48)
    reader = ReferReader(
        data_root=str(root / "raw"), dataset="synthetic", split_by="unc",
        image_root=summary["image_root"],
    )
    out = str(root / "tfrecords")
    write_dataset(reader, out, num_shards=2, show_progress=False)
    return out, summary


_SYNTHETIC_SIZE_KEYS = (
    "embedding_dim", "text_units", "classifier_units", "fused_channels", "visual_projection_dim",
)


def tiny_config(data_dir, model="lstm_cnn", **model_overrides):
    """A synthetic config at the presets' tiny size, a few steps, `jit_compile` as the CLI gives it."""
    config = experiments.synthetic(model, **model_overrides)
    config.model.backbone.kwargs = ml_collections.ConfigDict()
    for key in _SYNTHETIC_SIZE_KEYS:
        if key in config.model and key not in model_overrides:
            del config.model[key]
    config.data.dir = data_dir
    config.data.image_size = 64
    config.train.steps = 3
    config.train.checkpoint_every = 2  # not a divisor of steps on purpose
    config.train.batch_size = 4
    config.train.keep_checkpoints = 10
    config.train.jit_compile = "false"  # a string, as `--config.train.jit_compile=false` gives
    config.data.shuffle_buffer = 50
    config.eval.batch_size = 8
    return config


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """(model, config, model_dir) of a 3-step LSTM-CNN low-resolution run."""
    data_dir, _ = data
    model_dir = str(tmp_path_factory.mktemp("runs") / "lstm_cnn_low")
    config = tiny_config(data_dir, "lstm_cnn", stage="low")
    model = trainer.train(config, model_dir, verbose=0)
    return model, config, model_dir


# --------------------------------------------------------------------------- config


def test_validate_config_names_every_problem():
    config = config_lib.base_config()
    config_lib.validate_config(config)  # the defaults are valid without data
    config.train.steps = 0
    config.train.batch_size = -1
    with pytest.raises(ValueError) as error:
        config_lib.validate_config(config, require_data_dir=True)
    message = str(error.value)
    assert "train.steps" in message and "train.batch_size" in message and "data.dir" in message
    del config.model["backbone"]
    with pytest.raises(ValueError, match="missing key `model.backbone`"):
        config_lib.validate_config(config)


def test_save_and_load_config_round_trip(tmp_path):
    config = experiments.hu_lstm_cnn("referit", "high")
    config_lib.save_config(config, str(tmp_path))
    loaded = config_lib.load_config(str(tmp_path))
    assert loaded.train.trainable_backbone_layers == ("fc6", "fc7", "fc8")
    assert loaded.model.to_dict() == config.model.to_dict()
    assert loaded.train.optimizer.to_dict() == config.train.optimizer.to_dict()
    with pytest.raises(FileNotFoundError, match="config.json"):
        config_lib.load_config(str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------- schedules


def test_staircase_schedule_steps_at_the_boundaries():
    schedule = optimizers.build_schedule(
        _optimizer_config(schedule="staircase", learning_rate=0.01, decay_steps=10, decay_rate=0.1),
        total_steps=30,
    )
    expected = {0: 0.01, 9: 0.01, 10: 0.001, 19: 0.001, 20: 1e-4, 29: 1e-4}
    for step, value in expected.items():
        assert _lr_at(schedule, step) == pytest.approx(value, rel=1e-6), step


def test_hu_schedule_from_the_experiment_config():
    """Hu et al.: lr 0.01, x0.1 every 10k (low stage) / 6k (high stage) steps."""
    for stage, every in (("low", 10000), ("high", 6000)):
        config = experiments.hu_lstm_cnn("referit", stage)
        schedule = optimizers.build_schedule(config.train.optimizer, config.train.steps)
        assert _lr_at(schedule, every - 1) == pytest.approx(0.01)
        assert _lr_at(schedule, every) == pytest.approx(0.001)
        assert _lr_at(schedule, 2 * every) == pytest.approx(1e-4)


def test_polynomial_schedule_reaches_the_end_value():
    config = _optimizer_config(
        schedule="polynomial", learning_rate=2.5e-4, end_learning_rate=1e-5, power=0.9,
        decay_steps=0,  # 0: over train.steps
    )
    schedule = optimizers.build_schedule(config, total_steps=100)
    assert _lr_at(schedule, 0) == pytest.approx(2.5e-4)
    middle = (2.5e-4 - 1e-5) * 0.5**0.9 + 1e-5
    assert _lr_at(schedule, 50) == pytest.approx(middle, rel=1e-5)
    assert _lr_at(schedule, 100) == pytest.approx(1e-5, rel=1e-5)
    assert _lr_at(schedule, 1000) == pytest.approx(1e-5, rel=1e-5)  # held after the end


@pytest.mark.parametrize("decay_steps", [3, 700000])
def test_polynomial_schedule_is_finite_under_xla(decay_steps):
    """XLA turns step / decay_steps into step * (1 / decay_steps), which can exceed 1."""
    schedule = optimizers.build_schedule(
        _optimizer_config(schedule="polynomial", learning_rate=3e-3, end_learning_rate=1e-4,
                          power=0.9, decay_steps=decay_steps),
        total_steps=decay_steps,
    )
    compiled = tf.function(lambda step: schedule(step), jit_compile=True)
    for step in (decay_steps - 1, decay_steps, decay_steps + 7):
        value = float(compiled(tf.constant(step, tf.int64)))
        assert math.isfinite(value), (step, value)
        assert value == pytest.approx(_lr_at(schedule, step), rel=1e-4, abs=1e-9)
    assert float(compiled(tf.constant(decay_steps, tf.int64))) == pytest.approx(1e-4, rel=1e-5)


def test_piecewise_schedule_and_errors():
    config = _optimizer_config(
        schedule="piecewise", learning_rate=1e-3, decay_rate=0.1, boundaries=(30, 35, 40)
    )
    schedule = optimizers.build_schedule(config, total_steps=45)
    # Keras: values[i] while step <= boundaries[i].
    expected = {0: 1e-3, 30: 1e-3, 31: 1e-4, 35: 1e-4, 36: 1e-5, 40: 1e-5, 41: 1e-6, 1000: 1e-6}
    for step, value in expected.items():
        assert _lr_at(schedule, step) == pytest.approx(value, rel=1e-6), step
    with pytest.raises(ValueError, match="boundaries"):
        optimizers.build_schedule(_optimizer_config(schedule="piecewise"), 10)
    with pytest.raises(ValueError, match="Unknown `train.optimizer.schedule`"):
        optimizers.build_schedule(_optimizer_config(schedule="cosine"), 10)
    assert optimizers.build_schedule(
        _optimizer_config(schedule="constant", learning_rate=0.5), 10
    ) == 0.5


def test_optimizer_learning_rate_follows_its_iterations():
    optimizer = optimizers.build_optimizer(
        _optimizer_config(
            name="sgd", schedule="staircase", learning_rate=0.01, decay_steps=10, decay_rate=0.1
        ),
        total_steps=30,
    )
    assert isinstance(optimizer, optimizers.SGDWithBiasMultiplier)
    variable = keras.Variable(np.zeros(2, np.float32), name="kernel")
    optimizer.build([variable])
    optimizer.iterations.assign(10)
    assert float(optimizer.learning_rate) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="Unknown `train.optimizer.name`"):
        optimizers.build_optimizer(_optimizer_config(name="rmsprop"), 10)
    adam = optimizers.build_optimizer(_optimizer_config(name="adam", clipnorm=1.0), 10)
    assert isinstance(adam, optimizers.AdamWithBiasMultiplier)
    assert adam.clipnorm == 1.0


# --------------------------------------------------------------------------- bias multiplier


def _dense_and_batchnorm():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(2, name="dense")(inputs)
    outputs = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, outputs)


def _one_sgd_update(multiplier):
    keras.utils.set_random_seed(0)
    model = _dense_and_batchnorm()
    before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    optimizer = optimizers.SGDWithBiasMultiplier(
        learning_rate=0.1, momentum=0.0, bias_lr_multiplier=multiplier
    )
    grads = [tf.ones_like(v) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return {v.path: v.numpy() - before[v.path] for v in model.trainable_variables}


def test_bias_multiplier_doubles_only_bias_steps_with_sgd():
    doubled = _one_sgd_update(2.0)
    plain = _one_sgd_update(1.0)
    assert set(doubled) == {"dense/kernel", "dense/bias", "bn/gamma", "bn/beta"}
    np.testing.assert_allclose(plain["dense/bias"], -0.1, rtol=1e-6)
    np.testing.assert_allclose(doubled["dense/bias"], 2.0 * plain["dense/bias"], rtol=1e-6)
    for name in ("dense/kernel", "bn/gamma", "bn/beta"):  # not biases: unchanged
        np.testing.assert_allclose(doubled[name], plain[name], rtol=1e-6)
        np.testing.assert_allclose(plain[name], -0.1, rtol=1e-6)


def test_bias_multiplier_is_serialised():
    optimizer = optimizers.AdamWithBiasMultiplier(learning_rate=1e-3, bias_lr_multiplier=2.0)
    restored = optimizers.AdamWithBiasMultiplier.from_config(optimizer.get_config())
    assert restored.bias_lr_multiplier == 2.0
    assert optimizers.build_optimizer(
        _optimizer_config(name="sgd", bias_lr_multiplier=2.0), 10
    ).bias_lr_multiplier == 2.0


# --------------------------------------------------------------------------- weight decay


def _decay_model():
    inputs = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(10, 3, name="embedding")(inputs)
    x = keras.layers.LSTM(2, return_sequences=True, name="lstm")(x)
    x = keras.layers.Reshape((4, 2, 1))(x)
    x = keras.layers.Conv2D(2, 1, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(3, name="frozen")(x)
    outputs = keras.layers.Dense(1, name="head")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("frozen").trainable = False
    return model


def test_weight_decay_only_on_trainable_kernels():
    keras.utils.set_random_seed(1)
    model = _decay_model()
    assert optimizers.apply_weight_decay(model, 0.0) == 0
    assert model.losses == []
    count = optimizers.apply_weight_decay(model, 1e-3)
    decayed = sorted(v.path for v in model.weights if v.regularizer is not None)
    assert decayed == sorted(
        ["lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel", "conv/kernel", "head/kernel"]
    )
    assert count == 4
    # Caffe/TF1 style: 0.5 * decay * ||w||^2 summed over the decayed kernels.
    expected = sum(
        0.5 * 1e-3 * float(np.sum(np.square(v.numpy())))
        for v in model.weights if v.regularizer is not None
    )
    assert len(model.losses) == 4
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    # ... and it is part of the loss Keras trains on.
    model.compile(loss="mse")
    x = np.arange(8, dtype=np.int32).reshape(2, 4)
    y = np.zeros((2, 1), np.float32)
    y_pred = model(x)
    data_loss = float(keras.losses.MeanSquaredError()(y, y_pred))
    total = float(model.compute_loss(x=x, y=y, y_pred=y_pred))
    assert total - data_loss == pytest.approx(expected, rel=1e-4)


def test_conv_kernels_scope_decays_only_convolution_kernels():
    """RMI/RRN code: only `DW` (convolution) variables; not the LSTM, Dense or embedding."""
    model = _decay_model()
    assert optimizers.apply_weight_decay(model, 1e-3, "conv_kernels") == 1
    assert [v.path for v in model.weights if v.regularizer is not None] == ["conv/kernel"]
    with pytest.raises(ValueError, match="weight_decay_scope"):
        optimizers.apply_weight_decay(_decay_model(), 1e-3, "everything")


def _tiny_rrn_authors():
    from refseg_tf.models import RRN_AUTHORS_CODE, build_preset

    model = build_preset("rrn", 20, size="tiny", **RRN_AUTHORS_CODE)
    model({"image": np.zeros((1, 64, 64, 3), np.float32),
           "word_ids": np.ones((1, 4), np.int32)}, training=False)
    model.backbone.trainable = False
    return model


def test_weight_decay_scopes_select_exactly_the_authors_variables_of_an_rrn():
    model = _tiny_rrn_authors()
    # The `DW` variables of referseg_rrn LSTM_model_convlstm_p543.py, by the library's names.
    conv = sorted(
        f"{model.name}/{name}/kernel"
        for name in ("fusion/visual_projection", "fusion/fusion_conv", "lateral_C5",
                     "lateral_C4", "lateral_C3", "score")
    )
    assert sorted(v.path for v in optimizers.decayed_variables(model, "conv_kernels")) == conv
    # Hu's rule would add the word LSTM's matrices and the ConvLSTM's gate kernel.
    matrices = sorted(v.path for v in optimizers.decayed_variables(model, "matrices"))
    extra = {p.split(model.name + "/", 1)[1] for p in set(matrices) - set(conv)}
    assert extra == {
        "fusion/text_encoder/lstm/lstm_cell/kernel",
        "fusion/text_encoder/lstm/lstm_cell/recurrent_kernel",
        "refinement/conv_lstm_step/gates/kernel",
    }


def test_conv_kernels_scope_decays_the_trained_fc1000_of_r_lstm():
    """R+LSTM trains fc1000 (in the RMI code's tvars, a `DW` variable) and decays it."""
    from refseg_tf.models import build_preset

    config = experiments.rmi_baseline("r_lstm", "unc")
    model = build_preset("r_lstm", 20, size="tiny")
    model({"image": np.zeros((1, 64, 64, 3), np.float32),
           "word_ids": np.ones((1, 4), np.int32)}, training=False)
    trainer._freeze(model, config)
    trainable = {v.path.split("/")[-2] for v in model.backbone.trainable_weights}
    assert trainable == {"fc1000"}
    paths = [v.path for v in optimizers.decayed_variables(model, config.train.weight_decay_scope)]
    assert any(p.endswith("fc1000/kernel") for p in paths)
    assert not any("text_encoder" in p for p in paths)  # word embedding and LSTM


def test_adam_epsilon_comes_from_the_config():
    assert optimizers.build_optimizer(_optimizer_config(epsilon=1e-8), 10).epsilon == 1e-8
    assert experiments.rrn("unc").train.optimizer.epsilon == 1e-8
    assert experiments.hu_lstm_cnn("referit").train.weight_decay_scope == "matrices"
    with pytest.raises(ValueError, match="epsilon"):
        optimizers.build_optimizer(_optimizer_config(epsilon=0.0), 10)


# --------------------------------------------------------------------------- copying weights


def _named_model(name, units):
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="shared")(inputs)
    outputs = keras.layers.Dense(units, name="head")(x)
    return keras.Model(inputs, outputs, name=name)


def test_copy_matching_weights_by_path_and_shape():
    keras.utils.set_random_seed(2)
    source = _named_model("source", units=2)
    target = _named_model("target", units=5)  # head/kernel and head/bias differ in shape
    head_before = target.get_layer("head").kernel.numpy().copy()
    copied = trainer.copy_matching_weights(source, target)
    assert copied == 2
    np.testing.assert_array_equal(
        target.get_layer("shared").kernel.numpy(), source.get_layer("shared").kernel.numpy()
    )
    np.testing.assert_array_equal(
        target.get_layer("shared").bias.numpy(), source.get_layer("shared").bias.numpy()
    )
    np.testing.assert_array_equal(target.get_layer("head").kernel.numpy(), head_before)

    inputs = keras.Input((3,))
    other = keras.Model(inputs, keras.layers.Dense(7, name="other")(inputs), name="other")
    with pytest.raises(ValueError, match="No weight"):
        trainer.copy_matching_weights(source, other)


# --------------------------------------------------------------------------- small pieces


@pytest.mark.parametrize(
    "value, expected",
    [("auto", "auto"), ("AUTO", "auto"), ("false", False), ("False", False), ("0", False),
     ("true", True), ("True", True), (True, True), (False, False)],
)
def test_jit_compile_option(value, expected):
    assert trainer.jit_compile_option(value) is expected if isinstance(expected, bool) else \
        trainer.jit_compile_option(value) == expected


def test_jit_compile_option_rejects_other_words():
    with pytest.raises(ValueError, match="jit_compile"):
        trainer.jit_compile_option("sometimes")


@pytest.mark.parametrize(
    "step, steps, per_epoch, plan",
    [
        (0, 6, 2, [(0, 3, 2)]),
        (0, 3, 2, [(0, 1, 2), (1, 2, 1)]),  # 3 steps, not 4
        (2, 3, 2, [(1, 2, 1)]),  # resumed after the first checkpoint
        (3, 5, 2, [(1, 2, 2)]),  # resumed off a boundary: still exactly 5
        (4, 4, 2, []),  # finished
        (6, 4, 2, []),
        (0, 1, 1, [(0, 1, 1)]),
    ],
)
def test_fit_plan_reaches_exactly_the_configured_steps(step, steps, per_epoch, plan):
    assert trainer.fit_plan(step, steps, per_epoch) == plan
    assert step + sum((end - start) * n for start, end, n in plan) == max(steps, step)


def test_get_strategy_choices():
    assert get_strategy("default") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="Unknown `train.distribution`"):
        get_strategy("horovod")
    # Two or more workers are trained by `training.loop` (tests/test_multiworker.py).


def test_restore_latest_without_checkpoint_is_step_zero(tmp_path):
    from refseg_tf.models import build_preset

    # The manager saves `model.checkpoint_items()`: every trained model is a ReferringSegmenter.
    model = build_preset("d_lstm", 20, size="tiny")
    model.compile()
    manager = callbacks_lib.checkpoint_manager(model, str(tmp_path))
    assert callbacks_lib.restore_latest(manager) == 0


def test_load_trained_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        trainer.load_trained_model(str(tmp_path))
    config_lib.save_config(config_lib.base_config(), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        trainer.load_trained_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="training has not finished"):
        trainer.load_trained_model(str(tmp_path), checkpoint="final")


def test_train_refuses_data_dir_without_vocabulary(tmp_path):
    config = tiny_config(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        trainer.train(config, str(tmp_path / "run"))
    config.data.dir = ""
    with pytest.raises(ValueError, match="data.dir"):
        trainer.train(config, str(tmp_path / "run"))


# --------------------------------------------------------------------------- train() end to end


def test_train_writes_a_complete_model_dir(trained, data):
    model, config, model_dir = trained
    data_dir, _ = data
    for name in ("config.json", "vocab.txt", "model.keras", "checkpoints", "logs"):
        assert os.path.exists(os.path.join(model_dir, name)), name
    with open(os.path.join(data_dir, "vocab.txt"), encoding="utf-8") as f:
        vocabulary = f.read()
    with open(os.path.join(model_dir, "vocab.txt"), encoding="utf-8") as f:
        assert f.read() == vocabulary
    saved = _strict_json(os.path.join(model_dir, "config.json"))
    assert saved["model"]["vocabulary_size"] == len(vocabulary.splitlines())
    assert saved["model"]["stage"] == "low"
    assert saved["train"]["steps"] == 3
    # TensorBoard scalars and the mask pictures.
    logs = os.path.join(model_dir, "logs")
    events = [f for _, _, files in os.walk(logs) for f in files if "tfevents" in f]
    assert events, os.listdir(logs)
    assert os.path.isdir(os.path.join(logs, "images"))
    assert any("tfevents" in f for f in os.listdir(os.path.join(logs, "images")))


def test_train_runs_exactly_the_configured_steps(trained):
    model, config, model_dir = trained
    assert int(model.optimizer.iterations.numpy()) == config.train.steps == 3
    # One checkpoint per `checkpoint_every` steps, and one at the end.
    assert _checkpoint_numbers(model_dir) == {2, 3}
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert latest.endswith("ckpt-3")
    assert _checkpoint_iterations(latest) == 3


def test_jit_compile_string_from_the_command_line_is_honoured(trained):
    model, _, _ = trained
    assert model.jit_compile is False  # config.train.jit_compile = "false"


def test_trained_model_reloads_with_identical_outputs(trained):
    from refseg_tf.training.evaluation import evaluation_dataset

    model, config, model_dir = trained
    batch = next(iter(evaluation_dataset(config, "val", 4)))
    inputs = {"image": batch["image"], "word_ids": batch["word_ids"]}
    expected = model(inputs, training=False).numpy()
    assert np.all(np.isfinite(expected))
    final, loaded_config = trainer.load_trained_model(model_dir)
    assert type(final) is type(model)
    with open(os.path.join(model_dir, "vocab.txt"), encoding="utf-8") as f:
        assert loaded_config.model.vocabulary_size == len(f.read().splitlines())
    np.testing.assert_allclose(final(inputs, training=False).numpy(), expected, atol=1e-6)
    latest, _ = trainer.load_trained_model(model_dir, checkpoint="latest")
    np.testing.assert_allclose(latest(inputs, training=False).numpy(), expected, atol=1e-6)
    # An earlier checkpoint holds other weights (the test can tell checkpoints apart).
    early, _ = trainer.load_trained_model(
        model_dir, checkpoint=os.path.join(model_dir, "checkpoints", "ckpt-2")
    )
    assert not np.allclose(early(inputs, training=False).numpy(), expected, atol=1e-7)


def test_damaged_newest_checkpoint_loads_the_previous_one(trained, tmp_path, caplog):
    """Before: `load_trained_model(checkpoint="latest")` raised on a cut newest checkpoint."""
    from refseg_tf.training.evaluation import evaluation_dataset

    _, config, model_dir = trained
    copy = str(tmp_path / "copy")
    shutil.copytree(model_dir, copy)
    newest = os.path.join(copy, "checkpoints", "ckpt-3.data-00000-of-00001")
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    batch = next(iter(evaluation_dataset(config, "val", 2)))
    inputs = {"image": batch["image"], "word_ids": batch["word_ids"]}
    with caplog.at_level("WARNING"):
        fallback, _ = trainer.load_trained_model(copy, checkpoint="latest")
    assert os.path.join(copy, "checkpoints", "ckpt-3") in caplog.text
    early, _ = trainer.load_trained_model(
        model_dir, checkpoint=os.path.join(model_dir, "checkpoints", "ckpt-2")
    )
    np.testing.assert_allclose(
        fallback(inputs, training=False).numpy(), early(inputs, training=False).numpy()
    )


def test_train_resumes_from_the_newest_checkpoint(trained, tmp_path, caplog):
    _, config, model_dir = trained
    resumed_dir = str(tmp_path / "resumed")
    shutil.copytree(model_dir, resumed_dir)
    os.remove(os.path.join(resumed_dir, "model.keras"))
    config = config.copy_and_resolve_references()
    config.train.steps = 5
    with caplog.at_level("INFO", logger="absl"):
        model = trainer.train(config, resumed_dir, verbose=0)
    assert "resuming at step 3 of 5" in caplog.text
    assert int(model.optimizer.iterations.numpy()) == 5
    numbers = _checkpoint_numbers(resumed_dir)
    # Restarted from 0 it would have written ckpt-4; resumed from 3 it writes only ckpt-5.
    assert numbers == {2, 3, 5}
    assert _checkpoint_iterations(os.path.join(resumed_dir, "checkpoints", "ckpt-5")) == 5
    assert os.path.exists(os.path.join(resumed_dir, "model.keras"))


def test_text_blind_control_replaces_word_ids(trained):
    from refseg_tf.text import Vocabulary, encode_sentence
    from refseg_tf.training.evaluation import evaluation_dataset

    _, config, _ = trained
    vocabulary = Vocabulary.load(os.path.join(config.data.dir, "vocab.txt"))
    blind = config.copy_and_resolve_references()
    blind.data.blind_expression = "shape"
    expected = encode_sentence("shape", vocabulary, 12, "front")
    assert expected[-1] == vocabulary.id_of("shape") and expected[0] == 0

    features, _ = next(iter(trainer.training_dataset(blind, 8)))
    np.testing.assert_array_equal(features["word_ids"].numpy(), np.tile(expected, (8, 1)))
    eval_batch = next(iter(evaluation_dataset(blind, "val", 8)))
    np.testing.assert_array_equal(
        eval_batch["word_ids"].numpy(), np.tile(expected, (len(eval_batch["word_ids"]), 1))
    )
    assert len(set(eval_batch["sentence"].numpy().tolist())) > 1  # sentences kept for reporting
    # Without the control the same sentences have other word ids (the checks above can fail).
    plain = next(iter(evaluation_dataset(config, "val", 8)))
    np.testing.assert_array_equal(plain["sentence"].numpy(), eval_batch["sentence"].numpy())
    assert len({tuple(row) for row in plain["word_ids"].numpy().tolist()}) > 1


def test_evaluate_model_dir_writes_valid_scores(trained, data):
    from refseg_tf.training.evaluation import evaluate_model_dir

    _, config, model_dir = trained
    _, summary = data
    report, table = evaluate_model_dir(model_dir, split="val")
    path = os.path.join(model_dir, "eval_val.json")
    document = _strict_json(path)
    scores = document["scores"]
    assert scores["count"] == summary["splits"]["val"]["sentences"]  # every sentence once
    for key in ("overall_iou", "mean_iou", "precision@0.5", "precision@0.9"):
        assert 0.0 <= scores[key] <= 1.0, key
    assert scores["precision@0.9"] <= scores["precision@0.5"]
    assert list(document["by_length"]) == UNC_BUCKET_LABELS
    assert sum(b["count"] for b in document["by_length"].values()) == scores["count"]
    assert document["metadata"]["split"] == "val"
    assert document["metadata"]["model"] == "lstm_cnn"
    assert report["scores"]["overall_iou"] == pytest.approx(scores["overall_iou"])
    assert "overall" in table.lower()


def test_evaluation_with_empty_length_buckets_is_still_json(trained):
    from refseg_tf.training.evaluation import evaluate_model_dir

    _, _, model_dir = trained
    evaluate_model_dir(model_dir, split="testA", batch_size=2, max_batches=1)
    document = _strict_json(os.path.join(model_dir, "eval_testA.json"))
    assert document["scores"]["count"] == 2
    counts = [bucket["count"] for bucket in document["by_length"].values()]
    assert sum(counts) == 2 and counts.count(0) >= 2
    for bucket in document["by_length"].values():
        if bucket["count"] == 0:
            assert bucket["overall_iou"] is None  # NaN written as null
        else:
            assert 0.0 <= bucket["overall_iou"] <= 1.0


def test_init_from_copies_the_low_stage_into_the_high_stage(trained):
    """Hu et al.: the high-resolution stage starts from the low-resolution model_dir."""
    low, config, model_dir = trained
    high_config = trainer.resolve_config(
        tiny_config(config.data.dir, "lstm_cnn", stage="high")
    )
    high_config.train.init_from = model_dir
    high = trainer.build_model(high_config)
    trainer._init_from(high, high_config)

    def relative(model):
        return {v.path.split("/", 1)[1] if v.path.startswith(model.name + "/") else v.path: v
                for v in model.weights}

    low_weights, high_weights = relative(low), relative(high)
    new = set(high_weights) - set(low_weights)
    assert new and all(path.startswith("upsample/") for path in new), new
    for path, variable in high_weights.items():
        if path in low_weights:
            np.testing.assert_array_equal(variable.numpy(), low_weights[path].numpy(), err_msg=path)

    high_config.train.init_from = ""
    fresh = trainer.build_model(high_config)
    trainer._init_from(fresh, high_config)  # no init_from: nothing copied
    score = relative(fresh)["score/kernel"].numpy()
    assert not np.array_equal(score, low_weights["score/kernel"].numpy())


# --------------------------------------------------------------------------- resume after SIGKILL

_TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    from absl import logging
    from refseg_tf.training import experiments
    from refseg_tf.training.trainer import train

    logging.set_verbosity(logging.INFO)
    logging.use_absl_handler()
    config = experiments.synthetic("lstm_cnn", stage="low")
    config.data.dir = sys.argv[1]
    config.data.image_size = 64
    config.train.steps = int(sys.argv[3])
    config.train.checkpoint_every = 2
    config.train.batch_size = 2
    config.train.keep_checkpoints = 100
    config.train.log_images_every = 0
    config.train.jit_compile = "false"
    model = train(config, sys.argv[2], verbose=0)
    print("FINAL_ITERATIONS", int(model.optimizer.iterations.numpy()), flush=True)
    """
)


@pytest.mark.slow
def test_resume_after_sigkill(data, tmp_path):
    data_dir, _ = data
    script = tmp_path / "train_script.py"
    script.write_text(_TRAIN_SCRIPT)
    model_dir = str(tmp_path / "killed")
    steps = 400  # far more than the run can do before it is killed
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    command = [sys.executable, str(script), data_dir, model_dir, str(steps)]
    index = os.path.join(model_dir, "checkpoints", "checkpoint")
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 240
        while not os.path.exists(index):
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        time.sleep(1.0)  # let it get past the first checkpoint
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    saved_step = _checkpoint_iterations(latest)
    assert 2 <= saved_step < steps and saved_step % 2 == 0
    before = {n: os.path.getmtime(os.path.join(model_dir, "checkpoints", f"ckpt-{n}.index"))
              for n in _checkpoint_numbers(model_dir) if n <= saved_step}

    # Rerun the same command with fewer remaining steps: it must go on from `saved_step`.
    final_steps = saved_step + 4
    command[-1] = str(final_steps)
    rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=400)
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-3000:]
    assert f"resuming at step {saved_step} of {final_steps}" in output, output[-3000:]
    assert f"FINAL_ITERATIONS {final_steps}" in output
    numbers = _checkpoint_numbers(model_dir)
    assert {saved_step + 2, saved_step + 4} <= numbers
    # Checkpoints up to the resumed step were not rewritten (no restart from 0).
    for number, mtime in before.items():
        path = os.path.join(model_dir, "checkpoints", f"ckpt-{number}.index")
        assert os.path.getmtime(path) == mtime
    assert _checkpoint_iterations(
        os.path.join(model_dir, "checkpoints", f"ckpt-{final_steps}")
    ) == final_steps
    assert os.path.exists(os.path.join(model_dir, "model.keras"))


# --------------------------------------------------------------------------- review regressions


def test_evaluation_uses_the_model_vocabulary_not_the_data_dir_one(trained, tmp_path):
    """Scoring on another conversion must number words with the model's vocabulary."""
    from refseg_tf.text import Vocabulary, encode_sentence
    from refseg_tf.training.evaluation import evaluation_dataset

    _, config, model_dir = trained
    model_vocabulary = os.path.join(model_dir, "vocab.txt")
    other = tmp_path / "other_conversion"
    shutil.copytree(config.data.dir, other)
    words = Vocabulary.load(model_vocabulary).words
    Vocabulary(list(words[:4]) + list(reversed(words[4:]))).save(str(other / "vocab.txt"))

    batch = next(iter(evaluation_dataset(config, "val", 4, str(other), model_vocabulary)))
    vocabulary = Vocabulary.load(model_vocabulary)
    for sentence, ids in zip(batch["sentence"].numpy(), batch["word_ids"].numpy()):
        assert ids.tolist() == encode_sentence(sentence, vocabulary, 12, "front")
    shuffled = next(iter(evaluation_dataset(config, "val", 4, str(other))))
    assert shuffled["word_ids"].numpy().tolist() != batch["word_ids"].numpy().tolist()


def test_resumed_training_data_starts_elsewhere(trained):
    _, config, _ = trained
    first = next(iter(trainer.training_dataset(config, 4, step=0)))[0]["word_ids"].numpy()
    again = next(iter(trainer.training_dataset(config, 4, step=0)))[0]["word_ids"].numpy()
    later = next(iter(trainer.training_dataset(config, 4, step=2)))[0]["word_ids"].numpy()
    np.testing.assert_array_equal(first, again)
    assert first.tolist() != later.tolist()


def test_paper_configs_decay_over_their_own_horizon():
    """RMI decays over the 750k steps it trains; RRN over 800k of which it trains 700k."""
    for config, horizon, steps in (
        (experiments.rrn("unc"), 800000, 700000),
        (experiments.rmi_baseline("d_lstm", "unc"), 750000, 750000),
    ):
        optimizer = config.train.optimizer
        assert (int(optimizer.decay_steps), int(config.train.steps)) == (horizon, steps)
        schedule = optimizers.build_schedule(optimizer, int(config.train.steps))
        assert _lr_at(schedule, horizon) == pytest.approx(optimizer.end_learning_rate)
        expected = (2.5e-4 - 1e-5) * (1 - steps / horizon) ** 0.9 + 1e-5
        assert _lr_at(schedule, steps) == pytest.approx(expected, rel=1e-4)


def test_model_options_are_reachable_from_the_command_line():
    """`--config.a.b=v` needs `a.b` to exist in the config (ml_collections cannot add keys)."""
    config = experiments.rrn("unc")
    for dotted, value in [
        ("model.loss.label_mode", "soft"),
        ("model.lstm_cell", "layer_norm"),
        ("model.peephole", "spatial"),
        ("model.initial_state", "input"),
        ("model.threshold", 0.4),
    ]:
        parent, key = dotted.rsplit(".", 1)
        config_lib.get_by_path(config, dotted)  # KeyError if the key is missing
        config_lib.get_by_path(config, parent)[key] = value  # TypeError if the type is wrong
    assert config.model.peephole == "spatial"
    for name in ("lstm_cnn_low_referit", "r_lstm_unc", "d_lstm_ours_unc"):
        path = os.path.join(REPO_ROOT, "experiments", f"{name}.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert "label_mode" in module.get_config().model.loss


def test_text_lstm_never_takes_the_cudnn_path():
    """cuDNN rejects the front-padded masks of Hu/RMI/RRN at run time on a GPU."""
    from refseg_tf.layers import LSTMTextEncoder

    encoder = LSTMTextEncoder(20, embedding_dim=4, units=4)
    assert encoder.lstm.use_cudnn is False


def test_predictor_of_a_text_blind_model_ignores_the_sentence(trained):
    from refseg_tf.inference import Predictor
    from refseg_tf.text import Vocabulary

    model, config, model_dir = trained
    vocabulary = Vocabulary.load(os.path.join(model_dir, "vocab.txt"))
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    reading = Predictor(model, config, vocabulary)
    blind_config = config.copy_and_resolve_references()
    blind_config.data.blind_expression = "shape"
    blind = Predictor(model, blind_config, vocabulary)
    first, second = blind.predict(image, ["the red circle", "small blue square on the left"])
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, reading.predict(image, "shape"), atol=1e-5)
    assert np.abs(first - reading.predict(image, "the red circle")).max() > 1e-4


def test_dense_crf_snaps_a_blurred_map_to_the_object_edges():
    """RMI/RRN's DenseCRF (optional extra `[crf]`): a blurry, shifted probability blob over a red
    square on grey becomes a mask that follows the square's edges."""
    pytest.importorskip("pydensecrf.densecrf")
    from scipy import ndimage

    from refseg_tf.metrics import intersection_union
    from refseg_tf.training.evaluation import dense_crf

    image = np.full((64, 64, 3), 120, np.uint8)
    truth = np.zeros((64, 64), bool)
    truth[16:44, 20:48] = True
    image[truth] = (220, 30, 30)
    blob = np.zeros((64, 64), np.float32)
    blob[20:48, 16:44] = 1.0  # shifted by 4 px
    probability = np.clip(ndimage.gaussian_filter(blob, 4) * 0.9 + 0.05, 0, 1)

    refined = dense_crf(image, probability)
    assert refined.shape == (64, 64) and set(np.unique(refined)) <= {0.0, 1.0}
    before = np.divide(*intersection_union(probability >= 0.5, truth))
    after = np.divide(*intersection_union(refined > 0.5, truth))
    assert after > before + 0.05, (before, after)


def test_unused_classifier_head_is_frozen_for_c5_models(data):
    data_dir, _ = data
    for model_name, frozen in (("d_lstm", True), ("r_lstm", False)):
        config = trainer.resolve_config(tiny_config(data_dir, model_name))
        model = trainer.build_model(config)
        trainer._freeze(model, config)  # the synthetic configs train the backbone
        trainable = {v.path.split("/")[-2] for v in model.trainable_weights}
        assert ("fc1000" not in trainable) == frozen, model_name
        assert "conv1_conv" in trainable


# ------------------------------------------------------------------ model-owned training hooks


@keras.saving.register_keras_serializable(package="refseg_tf_tests")
class TwoOptimizerSegmenter(ReferringSegmenter):
    """A tiny segmenter trained by two optimizers through the training hooks: the score
    convolution by "optimizer", a scalar logit bias by "bias_optimizer" (a GAN's generator and
    discriminator in miniature)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("name", "two_optimizer_segmenter")
        super().__init__(**kwargs)
        self.score = keras.layers.Conv2D(1, 1, name="score")
        self.bias = self.add_weight(shape=(), initializer="zeros", name="logit_bias")

    def call(self, inputs, training=None):
        image, _ = self.check_inputs(inputs)
        return self.score(image) + self.bias

    def make_optimizers(self, build_optimizer):
        return {"optimizer": build_optimizer("model"), "bias_optimizer": build_optimizer("bias")}

    def compile_for_training(self, optimizers, **compile_kwargs):
        self.bias_optimizer = optimizers["bias_optimizer"]
        self.compile(optimizer=optimizers["optimizer"], metrics=[], **compile_kwargs)

    def build_optimizers(self):
        self.optimizer.build(self.score.trainable_variables)
        self.bias_optimizer.build([self.bias])

    def checkpoint_items(self):
        return dict(super().checkpoint_items(), bias_optimizer=self.bias_optimizer)

    def train_step(self, data):
        inputs, mask = data
        with tf.GradientTape(persistent=True) as tape:
            logits = self(inputs, training=True)
            loss = self.compute_loss(x=inputs, y=mask, y_pred=logits)
        score_variables = self.score.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, score_variables), score_variables))
        self.bias_optimizer.apply_gradients([(tape.gradient(loss, self.bias), self.bias)])
        return self.compute_metrics(inputs, mask, logits)


def _two_optimizer_config():
    config = config_lib.base_config()
    config.train.optimizer.name = "adam"
    config.train.optimizer.learning_rate = 1e-2
    config.train.optimizer.schedule = "constant"
    config.train.optimizer.bias = ml_collections.ConfigDict({"learning_rate": 0.5})
    return config


def _trained_two_optimizer_model(config, steps):
    model = TwoOptimizerSegmenter(loss_config={"label_mode": "binary"})
    rng = np.random.default_rng(0)
    inputs = {"image": rng.uniform(size=(4, 8, 8, 3)).astype(np.float32),
              "word_ids": np.ones((4, 2), np.int32)}
    masks = (rng.uniform(size=(4, 8, 8, 1)) > 0.5).astype(np.float32)
    model(inputs)
    model.compile_for_training(model.make_optimizers(trainer.optimizer_builder(config, 100)))
    model.build_optimizers()
    if steps:
        model.fit(inputs, masks, batch_size=4, epochs=steps, verbose=0)
    return model


def test_a_model_with_two_optimizers_trains_checkpoints_and_restores_through_the_hooks(tmp_path):
    config = _two_optimizer_config()
    model = _trained_two_optimizer_model(config, steps=3)
    # The role "bias" takes train.optimizer.bias's learning rate, the rest from train.optimizer.
    assert np.isclose(float(model.bias_optimizer.learning_rate), 0.5)
    assert np.isclose(float(model.optimizer.learning_rate), 1e-2)
    assert int(model.optimizer.iterations) == 3 and int(model.bias_optimizer.iterations) == 3
    manager = callbacks_lib.checkpoint_manager(model, str(tmp_path))
    assert set(model.checkpoint_items()) == {
        "model", "optimizer", "bias_optimizer"
    }
    manager.save()

    fresh = _trained_two_optimizer_model(config, steps=0)
    assert int(fresh.bias_optimizer.iterations) == 0
    fresh_manager = callbacks_lib.checkpoint_manager(fresh, str(tmp_path))
    assert trainer.restore_newest_readable(fresh_manager) == 3
    assert int(fresh.bias_optimizer.iterations) == 3
    np.testing.assert_allclose(float(fresh.bias), float(model.bias))
    for restored, saved in zip(fresh.bias_optimizer.variables, model.bias_optimizer.variables):
        np.testing.assert_allclose(np.asarray(restored), np.asarray(saved))
    for restored, saved in zip(fresh.optimizer.variables, model.optimizer.variables):
        np.testing.assert_allclose(np.asarray(restored), np.asarray(saved))


def test_default_training_hooks_of_a_segmenter():
    from refseg_tf.models import build_preset

    model = build_preset("d_lstm", 20, size="tiny")
    built = []
    optimizers_by_role = model.make_optimizers(lambda role: built.append(role) or "sgd")
    assert optimizers_by_role == {"optimizer": "sgd"} and built == ["model"]
    model.compile()
    assert model.checkpoint_items() == {"model": model, "optimizer": model.optimizer}
    model.freeze_for_training(config_lib.base_config().train)
    assert not model.backbone.get_layer("fc1000").trainable  # d_lstm reads C5, not fc1000


def test_training_refuses_a_model_optimizer_section():
    """One source of the recipe: `train.optimizer`; `model.optimizer` would be ignored."""
    config = experiments.synthetic("rrn")
    config.model.optimizer = ml_collections.ConfigDict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="`model.optimizer` must be unset"):
        config_lib.validate_config(config)

"""Training with Keras `fit`: resumable, distributed, logged (TensorFlow only).

`train(config, model_dir)` is what `refseg-train` runs:
1. resolves the config against the data (vocabulary size, dataset name) and writes it, with the
   vocabulary, into `model_dir` so evaluation and prediction need nothing else;
2. builds the model inside the distribution strategy, loads backbone weights, copies weights from
   `train.init_from` (e.g. Hu et al.'s high-resolution stage starts from the low-resolution one),
   freezes what the paper froze and attaches weight decay;
3. restores the newest checkpoint of `model_dir` if any, so a killed run goes on where it stopped;
4. fits for `train.steps` steps in epochs of `train.checkpoint_every` steps, checkpointing after
   each, with TensorBoard scalars and mask pictures in `model_dir/logs`;
5. saves the final model as `model_dir/model.keras`.
"""

import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from refseg_tf.training import callbacks as callbacks_lib
from refseg_tf.training import config as config_lib
from refseg_tf.training.distribute import get_strategy
from refseg_tf.training.optimizers import apply_weight_decay, build_optimizer

MODEL_FILENAME = "model.keras"
VOCAB_FILENAME = "vocab.txt"


def _data_file(config, name):
    return os.path.join(config.data.dir, name)


def resolve_config(config):
    """Returns a copy with `model.vocabulary_size` read from the data's `vocab.txt`."""
    from refseg_tf.text import Vocabulary

    config = config.copy_and_resolve_references()
    vocab_path = _data_file(config, VOCAB_FILENAME)
    if not os.path.exists(vocab_path):
        raise FileNotFoundError(
            f"{vocab_path} not found: `data.dir` must be a directory written by refseg-convert."
        )
    vocabulary_size = len(Vocabulary.load(vocab_path))
    if int(config.model.vocabulary_size) not in (0, vocabulary_size):
        logging.warning(
            "model.vocabulary_size=%d differs from %s (%d words); using the vocabulary file.",
            config.model.vocabulary_size, vocab_path, vocabulary_size,
        )
    config.model.vocabulary_size = vocabulary_size
    from refseg_tf.training.epochs import resolve_epochs

    return resolve_epochs(config)  # train.epochs -> train.steps (LTS / MCN schedules)


def dummy_inputs(config, batch_size=1):
    size = int(config.data.image_size)
    return {
        "image": np.zeros((batch_size, size, size, 3), np.float32),
        "word_ids": np.zeros((batch_size, int(config.data.max_length)), np.int32),
    }


def build_model(config):
    """Builds the configured model and creates its weights."""
    from refseg_tf.models import build_model as build_from_config

    model = build_from_config(config)
    model(dummy_inputs(config), training=False)
    return model


def load_backbone_weights(model, config) -> None:
    """Loads `train.backbone_weights`: "imagenet" or a file in the backbone's native format."""
    source = config.train.get("backbone_weights", "")
    if not source:
        return
    from refseg_tf.backbones import weights as weights_lib

    backbone = model.backbone
    name = config.model.backbone.name
    if source == "imagenet":
        weights_lib.load_imagenet_weights(backbone)
    elif name.startswith("resnet"):
        weights_lib.load_deeplab_resnet_weights(backbone, source)
    elif name.startswith("darknet"):
        from refseg_tf.backbones import load_darknet_family_weights

        load_darknet_family_weights(backbone, source)  # .weights, or MCN's Keras .h5
    else:
        raise ValueError(
            f"train.backbone_weights={source!r}: backbone {name!r} loads only 'imagenet'."
        )
    logging.info("Loaded %s weights into the %s backbone.", source, name)


def load_word_vectors(model, config) -> None:
    """Initialises the word embedding from `train.word_vectors` (a GloVe text file), if set."""
    path = config.train.get("word_vectors", "")
    if not path:
        return
    if not hasattr(model, "load_word_vectors"):
        raise ValueError(
            f"train.word_vectors={path!r}: model {config.model.name!r} takes no word vectors."
        )
    from refseg_tf.text.glove import load_glove_embeddings

    vocabulary = _data_file(config, VOCAB_FILENAME)
    model.load_word_vectors(load_glove_embeddings(path, vocabulary))
    logging.info("Initialised the word embedding from %s.", path)


def _relative_path(variable, model_name):
    path = variable.path
    prefix = model_name + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def copy_matching_weights(source, target) -> int:
    """Copies every variable of `source` into the `target` variable of the same path and shape.

    Returns the number copied; raises ValueError when nothing matches (a wrong `init_from`).
    """
    by_path = {_relative_path(v, source.name): v for v in source.weights}
    copied = 0
    for variable in target.weights:
        match = by_path.get(_relative_path(variable, target.name))
        if match is not None and tuple(match.shape) == tuple(variable.shape):
            variable.assign(match.value)
            copied += 1
    if copied == 0:
        raise ValueError(f"No weight of {source.name!r} matches {target.name!r} by path and shape.")
    logging.info("Copied %d of %d weights from %s.", copied, len(target.weights), source.name)
    return copied


def load_trained_model(model_dir: str, checkpoint: str = "auto"):
    """Loads a model written by `train`: `model.keras`, or the newest checkpoint.

    Args:
        model_dir: the training directory.
        checkpoint: "auto" (model.keras if present, else the newest checkpoint), "final"
            (model.keras), "latest" (newest checkpoint), or a checkpoint path.

    Returns:
        (model, config)
    """
    config = config_lib.load_config(model_dir)
    final_path = os.path.join(model_dir, MODEL_FILENAME)
    if checkpoint == "final" or (checkpoint == "auto" and os.path.exists(final_path)):
        if not os.path.exists(final_path):
            raise FileNotFoundError(f"{final_path} not found: training has not finished.")
        # Registers the model and backbone classes with Keras before deserialising them.
        import refseg_tf.backbones  # noqa: F401
        import refseg_tf.models  # noqa: F401

        return keras.saving.load_model(final_path, compile=False), config
    if checkpoint in ("auto", "latest"):
        checkpoint = tf.train.latest_checkpoint(os.path.join(model_dir, callbacks_lib.CHECKPOINT_SUBDIR))
        if checkpoint is None:
            raise FileNotFoundError(f"No {MODEL_FILENAME} and no checkpoint in {model_dir}.")
    model = build_model(config)
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    return model, config


def _init_from(model, config) -> None:
    source_dir = config.train.get("init_from", "")
    if not source_dir:
        return
    source, _ = load_trained_model(source_dir, checkpoint="auto")
    copy_matching_weights(source, model)


def _freeze(model, config) -> None:
    """Freezes the backbone as the paper did (Hu: all but fc6-fc8; RMI/RRN: all)."""
    from refseg_tf.backbones import set_trainable

    frozen = bool(config.train.freeze_backbone)
    freeze_batchnorm = bool(config.train.freeze_batchnorm)
    set_trainable(model.backbone, trainable=not frozen, freeze_batchnorm=freeze_batchnorm)
    kept = tuple(config.train.get("trainable_backbone_layers", ()))
    if frozen and kept:
        set_trainable(model.backbone, True, freeze_batchnorm=freeze_batchnorm, layers=kept)
    _freeze_unused_classifier(model)


def _freeze_unused_classifier(model) -> None:
    """Freezes the backbone's ImageNet classifier head when the model reads another feature.

    ResNetOS8 always computes `fc1000`; D+LSTM, D-LSTM-ours and RRN read C5 instead, so the head
    gets no gradient (and Keras warns about it) when the backbone is trainable.
    """
    feature = getattr(model, "visual_feature", None)
    names = {layer.name for layer in model.backbone.layers}
    if feature is not None and feature != "fc1000" and "fc1000" in names:
        model.backbone.get_layer("fc1000").trainable = False


def _copy_atomic(source, destination):
    directory = os.path.dirname(os.path.abspath(destination))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    os.close(fd)
    shutil.copyfile(source, tmp)
    os.replace(tmp, destination)


def save_model_atomic(model, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def blind_word_ids(config, vocabulary_path=None):
    """The fixed word ids of the text-blind control, or None when `data.blind_expression` is off.

    `vocabulary_path` is the model's vocabulary (default: the training data's `vocab.txt`).
    """
    expression = config.data.get("blind_expression", "")
    if not expression:
        return None
    from refseg_tf.text import Vocabulary, encode_sentence

    vocabulary = Vocabulary.load(vocabulary_path or _data_file(config, VOCAB_FILENAME))
    return tf.constant(
        encode_sentence(
            expression, vocabulary, int(config.data.max_length), config.data.text_padding
        ),
        tf.int32,
    )


def replace_word_ids(features, word_ids):
    """Gives every example of the batch `features` the same `word_ids` (text-blind control)."""
    batch = tf.shape(features["word_ids"])[0]
    features = dict(features)
    features["word_ids"] = tf.tile(word_ids[tf.newaxis], [batch, 1])
    return features


def training_dataset(config, batch_size, step=0):
    """The training batches; the seed moves with `step` so a resumed run sees new batches."""
    from refseg_tf.data import load

    dataset = load(
        config.data.dir,
        config.data.split_train,
        mode="train",
        batch_size=batch_size,
        sentences=config.data.sentences,
        shuffle_buffer=int(config.data.shuffle_buffer),
        seed=int(config.train.seed) + int(step),
        as_supervised=True,
        **config_lib.preprocessing_kwargs(config),
    )
    blind = blind_word_ids(config)
    if blind is not None:
        dataset = dataset.map(lambda features, mask: (replace_word_ids(features, blind), mask))
    return dataset


def _image_callback(config, model_dir, dataset, model):
    from refseg_tf.data.transforms import denormalize_image

    inputs, masks = next(iter(dataset.take(1)))
    inputs = {key: value[:4] for key, value in inputs.items()}
    preset = config.data.normalization
    return callbacks_lib.MaskImageSummary(
        os.path.join(model_dir, "logs"),
        inputs,
        masks[:4],
        denormalize=lambda images: denormalize_image(images, preset),
        threshold=getattr(model, "threshold", 0.5),
        every=int(config.train.log_images_every),
    )


def jit_compile_option(value):
    """`train.jit_compile` as Keras takes it: "auto", True or False.

    The config field is a string, so `--config.train.jit_compile=false` arrives as "false",
    which Keras would take as true (a non-empty string).
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "none", ""):
        return False
    raise ValueError(f"`train.jit_compile` must be 'auto', true or false; got {value!r}.")


def fit_plan(step: int, steps: int, steps_per_epoch: int):
    """The `fit` calls that take the optimizer from `step` to exactly `steps`.

    Returns a list of `(initial_epoch, epochs, steps_per_epoch)`: whole epochs of
    `steps_per_epoch` steps, then one shorter epoch for the remainder (`fit` cannot change
    `steps_per_epoch` between epochs). Empty when `step >= steps`.
    """
    remaining = int(steps) - int(step)
    if remaining <= 0:
        return []
    epoch = int(step) // steps_per_epoch
    whole, rest = divmod(remaining, steps_per_epoch)
    plan = []
    if whole:
        plan.append((epoch, epoch + whole, steps_per_epoch))
        epoch += whole
    if rest:
        plan.append((epoch, epoch + 1, rest))
    return plan


def train(config, model_dir: str, verbose="auto"):
    """Trains (or resumes) the configured model into `model_dir`; returns the trained model."""
    config_lib.validate_config(config, require_data_dir=True)
    os.makedirs(model_dir, exist_ok=True)
    config = resolve_config(config)
    config_lib.save_config(config, model_dir)
    _copy_atomic(_data_file(config, VOCAB_FILENAME), os.path.join(model_dir, VOCAB_FILENAME))
    keras.utils.set_random_seed(int(config.train.seed))
    if config.train.mixed_precision != "float32":
        keras.mixed_precision.set_global_policy(config.train.mixed_precision)

    steps = int(config.train.steps)
    steps_per_epoch = min(int(config.train.checkpoint_every), steps)
    strategy = get_strategy(config.train.distribution)

    with strategy.scope():
        model = build_model(config)
        load_backbone_weights(model, config)
        load_word_vectors(model, config)
        _init_from(model, config)
        _freeze(model, config)
        decayed = apply_weight_decay(model, float(config.train.weight_decay))
        model.compile(
            optimizer=build_optimizer(config.train.optimizer, steps),
            jit_compile=jit_compile_option(config.train.jit_compile),
        )
        model.optimizer.build(model.trainable_variables)
        manager = callbacks_lib.checkpoint_manager(
            model, model_dir, max_to_keep=int(config.train.keep_checkpoints)
        )
        step = callbacks_lib.restore_latest(manager)
    logging.info(
        "Model %s: %d parameters (%d trainable, %d decayed kernels); resuming at step %d of %d.",
        config.model.name, model.count_params(),
        sum(int(np.prod(v.shape)) for v in model.trainable_weights), decayed, step, steps,
    )
    dataset = training_dataset(config, int(config.train.batch_size), step)
    callbacks = [
        callbacks_lib.CheckpointEveryEpoch(manager),
        keras.callbacks.TensorBoard(os.path.join(model_dir, "logs"), update_freq="epoch"),
        keras.callbacks.TerminateOnNaN(),
    ]
    if int(config.train.log_images_every) > 0:
        callbacks.append(_image_callback(config, model_dir, dataset, model))
    for initial_epoch, epochs, epoch_steps in fit_plan(step, steps, steps_per_epoch):
        model.fit(
            dataset,
            epochs=epochs,
            steps_per_epoch=epoch_steps,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the tf.data pipeline shuffles
        )
    save_model_atomic(model, os.path.join(model_dir, MODEL_FILENAME))
    return model

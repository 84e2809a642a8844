"""Training with Keras `fit` or `training.loop`: resumable, distributed, logged (TensorFlow only).

`train(config, model_dir)` is what `refseg-train` runs:
1. resolves the config against the data (vocabulary size, dataset name), checks it against the
   config and vocabulary already in `model_dir` (keys that change what the weights mean are
   refused before anything is written, `check_resumable`) and the data's shards against their
   metadata, then writes config and vocabulary into `model_dir` so evaluation and prediction
   need nothing else;
2. builds the model inside the distribution strategy, loads backbone weights, copies weights from
   `train.init_from` (e.g. Hu et al.'s high-resolution stage starts from the low-resolution one),
   freezes what the paper froze and attaches weight decay;
3. restores the newest readable checkpoint of `model_dir` if any, so a killed run goes on where
   it stopped (a damaged newest checkpoint is named and the previous kept one used;
   `ckpt-N_temp/` leftovers of a killed save are removed);
4. fits for `train.steps` steps in epochs of `train.checkpoint_every` steps, checkpointing after
   each, with TensorBoard scalars and mask pictures in `model_dir/logs`: with Keras `fit`, or
   under MultiWorkerMirroredStrategy with several workers with `training.loop` (the model's
   own `train_step` under `strategy.run`; `train.engine`), where the chief writes and every
   worker restores from `model_dir`;
5. saves the final model as `model_dir/model.keras`.
"""

import glob
import os
import shutil

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from refseg_tf.files import atomic_copy, atomic_output
from refseg_tf.training import callbacks as callbacks_lib
from refseg_tf.training import config as config_lib
from refseg_tf.training import loop as loop_lib
from refseg_tf.training.distribute import DEFAULT_WORKER_TIMEOUT_SECONDS, get_strategy
from refseg_tf.training.model_dir import (  # noqa: F401  (re-exported)
    load_trained_model,
    restore_first_readable,
)
from refseg_tf.training.optimizers import apply_weight_decay, build_optimizer
from refseg_tf.filenames import MODEL_FILENAME, VOCABULARY_FILENAME

VOCAB_FILENAME = VOCABULARY_FILENAME


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


def build_model(config):
    """The configured model with its weights created (`refseg_tf.models.build_model`)."""
    from refseg_tf.models import build_model as build_from_config

    return build_from_config(config, build=True)


def load_backbone_weights(model, config) -> None:
    """Loads `train.backbone_weights` into the model's backbone (`backbones.load_weights`)."""
    source = config.train.get("backbone_weights", "")
    if not source:
        return
    from refseg_tf.backbones import load_weights, weight_source

    entry = weight_source(model.backbone, source, argument="train.backbone_weights")
    normalization = config.data.get("normalization", "vgg_rgb")
    if entry.normalization and entry.normalization != normalization:
        raise ValueError(
            f"train.backbone_weights={source!r} ({entry.name}) was trained on "
            f"data.normalization={entry.normalization!r} inputs; the config has "
            f"{normalization!r}: pass --config.data.normalization={entry.normalization}."
        )
    load_weights(model.backbone, source, argument="train.backbone_weights")
    logging.info("Loaded %s weights into the %s backbone.", source, model.backbone.name)


def load_word_vectors(model, config) -> None:
    """Initialises the word embedding from `train.word_vectors` (a GloVe text file), if set."""
    path = config.train.get("word_vectors", "")
    if not path:
        return
    if not model.takes_word_vectors:
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
    model.freeze_for_training(config.train)  # what the model's paper froze besides


def optimizer_builder(config, steps):
    """`build_optimizer(role)` for `ReferringSegmenter.make_optimizers`.

    Every role is built from `config.train.optimizer`; a sub-section named after the role
    (e.g. `train.optimizer.discriminator`) overrides its keys for that role.
    """

    def build(role):
        section = config.train.optimizer
        if role in section and section[role] is not None:
            section = section.copy_and_resolve_references()
            overrides = section[role]
            overrides = overrides.to_dict() if hasattr(overrides, "to_dict") else dict(overrides)
            with section.unlocked():
                del section[role]
                section.update(overrides)
        return build_optimizer(section, steps)

    return build


def save_model_atomic(model, path: str) -> None:
    """Saves `model` as a `.keras` file at `path` atomically, with the mode of every output."""
    with atomic_output(path, suffix=".keras") as temporary:
        model.save(temporary)


def check_resumable(config, model_dir: str) -> None:
    """Refuses to train into a `model_dir` whose weights mean something else than `config` says.

    Compares the resolved `config` with `model_dir/config.json` and the data's vocabulary with
    `model_dir/vocab.txt`, before anything is written. Keys under
    `config.WEIGHT_MEANING_PREFIXES` (architecture, preprocessing, text handling) and the
    vocabulary must be the same; others (a larger `train.steps`, the learning rate) may differ.

    Raises:
        ValueError: listing the changed keys (or naming the vocabulary), with what to do.
    """
    saved_path = os.path.join(model_dir, config_lib.CONFIG_FILENAME)
    if not os.path.exists(saved_path):
        return
    saved = config_lib.load_config(model_dir)
    changed = config_lib.weight_meaning_changes(saved, config)
    saved_vocabulary = os.path.join(model_dir, VOCAB_FILENAME)
    if os.path.exists(saved_vocabulary) and not _same_file_content(
        saved_vocabulary, _data_file(config, VOCAB_FILENAME)
    ):
        changed.append(f"the vocabulary ({_data_file(config, VOCAB_FILENAME)})")
    if changed:
        saved_values = config_lib.flat_values(saved)
        new_values = config_lib.flat_values(config)
        details = [
            f"{key} ({saved_values.get(key)!r} -> {new_values.get(key)!r})"
            if key in saved_values or key in new_values
            else key
            for key in changed
        ]
        raise ValueError(
            f"{model_dir!r} holds a model trained with another setting of: {'; '.join(details)}. "
            f"Its weights would no longer match; nothing was written. Train into a new "
            f"--model_dir, or use --config.train.init_from={model_dir} to start from it."
        )


def _same_file_content(first: str, second: str) -> bool:
    with open(first, "rb") as a, open(second, "rb") as b:
        return a.read() == b.read()


def remove_temporary_checkpoints(model_dir: str) -> list:
    """Removes the `ckpt-N_temp/` folders a killed checkpoint save leaves; returns their paths."""
    pattern = os.path.join(model_dir, callbacks_lib.CHECKPOINT_SUBDIR, "*_temp")
    removed = [path for path in sorted(glob.glob(pattern)) if os.path.isdir(path)]
    for path in removed:
        logging.warning("Removing %s, left by a checkpoint save that did not finish.", path)
        shutil.rmtree(path)
    return removed


def restore_newest_readable(manager) -> int:
    """Restores the newest kept checkpoint that loads; returns its optimizer step (0 if none).

    A checkpoint that fails to load (damaged or cut files) is named in a warning and the next
    older kept one is tried.

    Raises:
        ValueError: every kept checkpoint failed to load (each is named with its error).
    """
    if not manager.checkpoints:
        return 0
    restore_first_readable(
        manager.checkpoint,
        list(reversed(manager.checkpoints)),
        require_all=True,
        hint="Remove the checkpoints folder to train from the start.",
    )
    return int(manager.checkpoint.optimizer.iterations.numpy())


def _verify_training_data(config) -> None:
    """Checks the training shards against metadata.json before anything is written."""
    from refseg_tf.data import pipeline

    paths = pipeline.find_shards(config.data.dir, config.data.split_train)
    pipeline.verify_split(config.data.dir, config.data.split_train, paths)


def training_preprocessor(config):
    """The one `ReferringPreprocessor` of a training run: `config.data`'s settings (text-blind
    control and resolved threshold included) over the training data's `vocab.txt`."""
    from refseg_tf.preprocessing import ReferringPreprocessor

    settings = ReferringPreprocessor.config_from_training_config(config)
    return ReferringPreprocessor.from_data_dir(config.data.dir, **settings)


def training_dataset(config, batch_size, step=0, preprocessor=None):
    """The training batches; the seed moves with `step` so a resumed run sees new batches.

    `preprocessor`: the run's `training_preprocessor(config)` (built here when None); its
    `tokenize` gives the text-blind control's fixed ids when `data.blind_expression` is set.
    """
    from refseg_tf.data import load

    return load(
        config.data.dir,
        config.data.split_train,
        mode="train",
        batch_size=batch_size,
        preprocessor=training_preprocessor(config) if preprocessor is None else preprocessor,
        sentences=config.data.sentences,
        shuffle_buffer=int(config.data.shuffle_buffer),
        interleave_all_files=bool(config.data.get("interleave_all_files", False)),
        seed=int(config.train.seed) + int(step),
        as_supervised=True,
    )


def _image_callback(config, model_dir, model, step, preprocessor):
    """The TensorBoard mask pictures of a fixed training batch.

    The batch comes from a dataset of its own: a second iterator over the training dataset
    would advance its shuffle (`reshuffle_each_iteration`), so training would see other batches
    with pictures on than off, and under multi-worker the chief (which alone draws pictures)
    other batches than the other workers.
    """
    from refseg_tf.data.transforms import denormalize_image

    dataset = training_dataset(config, int(config.train.batch_size), step, preprocessor)
    inputs, masks = next(iter(dataset.take(1)))
    inputs = {key: value[:4] for key, value in inputs.items()}
    preset = preprocessor.normalization
    return callbacks_lib.MaskImageSummary(
        os.path.join(model_dir, "logs"),
        inputs,
        masks[:4],
        denormalize=lambda images: denormalize_image(images, preset),
        threshold=preprocessor.threshold_for(model),
        every=int(config.train.log_images_every),
        scoring_rule=preprocessor.scoring_rule,
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


def write_model_dir_files(config, model_dir: str, vocabulary_path=None) -> None:
    """config.json, vocab.txt and preprocessor.json: what evaluation and prediction read.

    `vocabulary_path`: the vocabulary copied (byte for byte) as `vocab.txt`; default the
    data's `vocab.txt` (`refseg-train`); `refseg-import` passes the authors' file.
    """
    os.makedirs(model_dir, exist_ok=True)
    config_lib.save_config(config, model_dir)
    source = vocabulary_path or _data_file(config, VOCAB_FILENAME)
    atomic_copy(source, os.path.join(model_dir, VOCAB_FILENAME))
    from refseg_tf.preprocessing import ReferringPreprocessor

    # preprocessor.json beside the vocabulary: the model directory's preprocessing (Predictor).
    ReferringPreprocessor.from_config(config, os.path.join(model_dir, VOCAB_FILENAME)).save(model_dir)


def _write_model_dir_files(config, model_dir: str) -> None:
    write_model_dir_files(config, model_dir)
    remove_temporary_checkpoints(model_dir)


INPUT_SHARDINGS = ("auto", "data")


def _input_sharding(config) -> str:
    sharding = config.train.get("input_sharding", "auto")
    if sharding not in INPUT_SHARDINGS:
        raise ValueError(
            f"`train.input_sharding` must be one of {INPUT_SHARDINGS}; received {sharding!r}."
        )
    return sharding


def distributed_training_dataset(config, batch_size, step, strategy, preprocessor=None):
    """`training_dataset` of global batches, with `train.input_sharding` for several workers.

    "auto" keeps the pipeline's policy (FILE when every worker gets a shard file, else DATA);
    "data" makes every worker read everything and keep its part of each global batch, so the
    workers together train on exactly the batches one worker would.
    """
    sharding = _input_sharding(config)
    dataset = training_dataset(config, batch_size, step, preprocessor)
    if sharding == "data" and loop_lib.is_multi_worker(strategy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        dataset = dataset.with_options(options)
    return dataset


def _log_every_steps(config) -> int:
    every = int(config.train.get("log_every_steps", 0) or 0)
    if every < 0:
        raise ValueError(f"`train.log_every_steps` must be >= 0; received {every}.")
    return every


def _training_callbacks(config, model_dir, manager, strategy, engine, verbose, model, step,
                        preprocessor):
    """Checkpoints on every worker; TensorBoard, pictures on the chief; progress lines."""
    chief = loop_lib.is_chief(strategy)
    callbacks = [callbacks_lib.CheckpointEveryEpoch(manager, discard=not chief)]
    if chief:
        # The loop has no `train_function` graph for TensorBoard to draw.
        callbacks.append(keras.callbacks.TensorBoard(
            os.path.join(model_dir, "logs"), update_freq="epoch", write_graph=engine == "fit"
        ))
    callbacks.append(keras.callbacks.TerminateOnNaN())
    every = _log_every_steps(config)
    if every and verbose == 2:
        callbacks.append(callbacks_lib.StepLogLines(every, int(config.train.steps)))
    if chief and int(config.train.log_images_every) > 0:
        callbacks.append(_image_callback(config, model_dir, model, step, preprocessor))
    return callbacks


def _save_final_model(model, model_dir, strategy) -> None:
    """`model.keras` by the chief; every other worker saves too, to a directory it deletes."""
    directory = loop_lib.worker_directory(model_dir, strategy)
    try:
        save_model_atomic(model, os.path.join(directory, MODEL_FILENAME))
    finally:
        loop_lib.discard_worker_directory(directory, strategy)


def train(config, model_dir: str, verbose="auto"):
    """Trains (or resumes) the configured model into `model_dir`; returns the trained model.

    `verbose`: "auto" shows the progress bar when stdout is a terminal and one line per epoch
    (plus one every `train.log_every_steps` steps) otherwise (`callbacks.progress_verbosity`);
    0, 1, 2 as Keras `fit`. Every worker of a multi-worker job runs `train` with the same
    config and `model_dir` (see `training.loop`).
    """
    config_lib.validate_config(config, require_data_dir=True)
    # First: MultiWorkerMirroredStrategy configures the collective ops when it is created, which
    # must happen before any other TensorFlow operation of the process.
    strategy = get_strategy(
        config.train.distribution,
        config.train.get("worker_timeout_seconds", DEFAULT_WORKER_TIMEOUT_SECONDS),
    )
    engine = loop_lib.choose_engine(config.train.get("engine", "auto"), strategy)
    verbose = callbacks_lib.progress_verbosity(verbose)
    _log_every_steps(config)  # the training settings are checked before anything is written
    _input_sharding(config)
    config = resolve_config(config)
    check_resumable(config, model_dir)
    _verify_training_data(config)
    if loop_lib.is_chief(strategy):
        _write_model_dir_files(config, model_dir)
    keras.utils.set_random_seed(int(config.train.seed))
    if config.train.mixed_precision != "float32":
        keras.mixed_precision.set_global_policy(config.train.mixed_precision)

    steps = int(config.train.steps)
    steps_per_epoch = min(int(config.train.checkpoint_every), steps)

    with strategy.scope():
        model = build_model(config)
        load_backbone_weights(model, config)
        load_word_vectors(model, config)
        _init_from(model, config)
        _freeze(model, config)
        decayed = apply_weight_decay(
            model.trainable_for_weight_decay(),
            float(config.train.weight_decay),
            config.train.get("weight_decay_scope", "matrices"),
        )
        model.compile_for_training(
            model.make_optimizers(optimizer_builder(config, steps)),
            jit_compile=jit_compile_option(config.train.jit_compile),
        )
        model.build_optimizers()
        # Every worker restores from model_dir; only the chief writes into it.
        manager = callbacks_lib.checkpoint_manager(
            model, model_dir, max_to_keep=int(config.train.keep_checkpoints)
        )
        step = restore_newest_readable(manager)
    logging.info(
        "Model %s: %d parameters (%d trainable, %d decayed kernels); resuming at step %d of %d.",
        config.model.name, model.count_params(),
        sum(int(np.prod(v.shape)) for v in model.trainable_weights), decayed, step, steps,
    )
    logging.info("Training with %s (engine %r).", loop_lib.describe_cluster(strategy), engine)
    preprocessor = training_preprocessor(config)  # one for every dataset of the run
    dataset = distributed_training_dataset(
        config, int(config.train.batch_size), step, strategy, preprocessor
    )
    callbacks = _training_callbacks(
        config, model_dir, manager, strategy, engine, verbose, model, step, preprocessor
    )
    train_function = loop_lib.make_train_function(model, strategy) if engine == "loop" else None
    for initial_epoch, epochs, epoch_steps in fit_plan(step, steps, steps_per_epoch):
        if engine == "loop":
            loop_lib.run_epochs(
                model, dataset, strategy, epochs=epochs, steps_per_epoch=epoch_steps,
                initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                train_function=train_function,
            )
            continue
        model.fit(
            dataset,
            epochs=epochs,
            steps_per_epoch=epoch_steps,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the tf.data pipeline shuffles
        )
    _save_final_model(model, model_dir, strategy)
    return model

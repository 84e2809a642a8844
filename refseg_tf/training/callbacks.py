"""Training callbacks: resumable checkpoints, progress lines and TensorBoard mask pictures
(TensorFlow only)."""

import os
import shutil
import sys
import tempfile

import keras
import tensorflow as tf

from refseg_tf import scoring
from refseg_tf.training.checkpointing import training_checkpoint_items

CHECKPOINT_SUBDIR = "checkpoints"


def checkpoint_items(model) -> dict:
    """`model.checkpoint_items()`: the model and its optimizers (`ReferringSegmenter`)."""
    return model.checkpoint_items()


def checkpoint_manager(model, model_dir: str, max_to_keep: int = 3) -> tf.train.CheckpointManager:
    """A manager over `model.checkpoint_items()` (the model and its optimizers) in
    `model_dir/checkpoints`, holding every weight Keras tracks (`checkpointing`: Keras 3 hides
    layers kept in lists and dicts from `tf.train.Checkpoint`).

    TensorFlow writes each checkpoint to temporary names and renames it, and updates the
    `checkpoint` index last, so a run killed mid-save resumes from the previous checkpoint.
    """
    checkpoint = tf.train.Checkpoint(**training_checkpoint_items(checkpoint_items(model)))
    return tf.train.CheckpointManager(
        checkpoint, os.path.join(model_dir, CHECKPOINT_SUBDIR), max_to_keep=max_to_keep
    )


def restore_latest(manager: tf.train.CheckpointManager) -> int:
    """Restores the newest checkpoint if there is one; returns the optimizer step it holds."""
    path = manager.latest_checkpoint
    if not path:
        return 0
    status = manager.checkpoint.restore(path)
    status.assert_existing_objects_matched()
    return int(manager.checkpoint.optimizer.iterations.numpy())


class CheckpointEveryEpoch(keras.callbacks.Callback):
    """Saves a checkpoint at the end of every epoch (an epoch is `train.checkpoint_every` steps).

    Args:
        manager: the `checkpoint_manager` of the model directory.
        discard: a non-chief worker of a multi-worker job: it takes part in the save (as every
            worker must) but writes into a temporary directory of its own, deleted right after
            (TensorFlow's multi-worker guide); only the chief writes into `manager.directory`.
    """

    def __init__(self, manager: tf.train.CheckpointManager, discard: bool = False):
        super().__init__()
        self.manager = manager
        self.discard = bool(discard)

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if not self.discard:
            self.manager.save(checkpoint_number=step)
            return
        directory = tempfile.mkdtemp(prefix="refseg-worker-checkpoint-")
        try:
            temporary = tf.train.CheckpointManager(self.manager.checkpoint, directory, max_to_keep=1)
            temporary.save(checkpoint_number=step)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def progress_verbosity(verbose="auto", stream=None):
    """The `verbose` of `fit` / `loop.run_epochs`: "auto" is 1 (the progress bar) when `stream`
    (default `sys.stdout`) is a terminal, else 2 (one line per epoch); 0, 1, 2 are kept.

    Keras's own "auto" is always the bar, which in a log file is a new line of every metric
    at every step (about 120 KB per 250 steps).
    """
    if verbose != "auto":
        if verbose not in (0, 1, 2):
            raise ValueError(f"`verbose` must be 'auto', 0, 1 or 2; received {verbose!r}.")
        return verbose
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return 1 if isatty is not None and isatty() else 2


def format_log_line(step: int, total_steps: int, logs) -> str:
    """`step 250/1000 - loss: 0.1234 - mean_iou: 0.5678`: one progress line."""
    values = " - ".join(f"{name}: {float(value):.4f}" for name, value in (logs or {}).items())
    line = f"step {int(step)}/{int(total_steps)}"
    return f"{line} - {values}" if values else line


class StepLogLines(keras.callbacks.Callback):
    """Prints one `format_log_line` to stdout every `every` optimizer steps (`train.log_every_steps`).

    For logs that are not a terminal, between the per-epoch lines; the step is the optimizer's
    `iterations`, so the lines keep their place across a resume.

    Args:
        every: steps between lines (> 0).
        total_steps: `train.steps`, printed after the step.
    """

    def __init__(self, every: int, total_steps: int):
        super().__init__()
        if int(every) <= 0:
            raise ValueError(f"`every` must be > 0; received {every!r}.")
        self.every = int(every)
        self.total_steps = int(total_steps)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            print(format_log_line(step, self.total_steps, logs), flush=True)


def _overlay(image_uint8, mask, color):
    """Blends `color` into the pixels where `mask` is 1 (both [B, H, W, ...])."""
    color = tf.constant(color, tf.float32)
    image = tf.cast(image_uint8, tf.float32)
    blended = image * 0.5 + color * 0.5
    return tf.cast(tf.where(mask > 0.5, blended, image), tf.uint8)


class MaskImageSummary(keras.callbacks.Callback):
    """Writes [image | ground truth | prediction] pictures of a fixed batch to TensorBoard.

    Args:
        log_dir: TensorBoard directory.
        inputs: a dict batch `{"image", "word_ids"}` (normalised images).
        masks: the ground-truth masks [B, S, S, 1] of that batch.
        denormalize: a function mapping normalised images back to [0, 255].
        threshold: probability threshold for the predicted mask.
        every: write every `every` epochs.
        scoring_rule: how logits become the pictured mask (`refseg_tf.scoring`, at the input
            size).
    """

    def __init__(self, log_dir, inputs, masks, denormalize, threshold=0.5, every=1,
                 scoring_rule=scoring.DEFAULT_SCORING_RULE):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.inputs = inputs
        self.masks = tf.cast(masks, tf.float32)
        self.denormalize = denormalize
        self.threshold = float(threshold)
        self.every = max(int(every), 1)
        self.scoring_rule = scoring.check_scoring_rule(scoring_rule)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        logits = self.model(self.inputs, training=False)
        size = tuple(int(v) for v in self.inputs["image"].shape[1:3])
        predicted = scoring.input_resolution_masks(logits, size, self.scoring_rule, self.threshold)
        image = tf.cast(tf.clip_by_value(self.denormalize(self.inputs["image"]), 0, 255), tf.uint8)
        panels = tf.concat(
            [image, _overlay(image, self.masks, (0, 255, 0)), _overlay(image, predicted, (255, 0, 0))],
            axis=2,
        )
        with self.writer.as_default():
            tf.summary.image("image|truth|prediction", panels, step=int(self.model.optimizer.iterations.numpy()), max_outputs=4)
        self.writer.flush()

"""Training callbacks: resumable checkpoints and TensorBoard mask pictures (TensorFlow only)."""

import os

import keras
import tensorflow as tf

from refseg_tf import scoring
from refseg_tf.training.checkpointing import training_checkpoint_items

CHECKPOINT_SUBDIR = "checkpoints"


def checkpoint_items(model) -> dict:
    """`model.checkpoint_items()` (a `ReferringSegmenter`), else the model and its optimizer."""
    if hasattr(model, "checkpoint_items"):
        return model.checkpoint_items()
    return {"model": model, "optimizer": model.optimizer}


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
    """Saves a checkpoint at the end of every epoch (an epoch is `train.checkpoint_every` steps)."""

    def __init__(self, manager: tf.train.CheckpointManager):
        super().__init__()
        self.manager = manager

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self.manager.save(checkpoint_number=step)


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

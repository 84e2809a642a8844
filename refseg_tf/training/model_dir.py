"""Reading a model directory written by `refseg-train`: its model (`model.keras` or a checkpoint).

`refseg_tf.inference`, the evaluation and the export load trained models through
`load_trained_model`, without importing the trainer.
"""

import os

import keras
import tensorflow as tf
from absl import logging

from refseg_tf.filenames import MODEL_FILENAME
from refseg_tf.training import config as config_lib
from refseg_tf.training.callbacks import CHECKPOINT_SUBDIR
from refseg_tf.training.checkpointing import training_checkpoint_items


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
        state = tf.train.get_checkpoint_state(
            os.path.join(model_dir, CHECKPOINT_SUBDIR)
        )
        if state is None or not state.all_model_checkpoint_paths:
            raise FileNotFoundError(f"No {MODEL_FILENAME} and no checkpoint in {model_dir}.")
        candidates = list(reversed(state.all_model_checkpoint_paths))
    else:
        candidates = [checkpoint]
    from refseg_tf.models import build_model

    model = build_model(config, build=True)
    restore_first_readable(
        tf.train.Checkpoint(**training_checkpoint_items({"model": model})), candidates
    )
    return model, config


def restore_first_readable(checkpoint, paths, require_all: bool = False, hint: str = "") -> str:
    """Restores into `checkpoint` the first of `paths` that loads; returns that path.

    Args:
        checkpoint: a `tf.train.Checkpoint`.
        paths: checkpoint prefixes, newest first.
        require_all: every object of `checkpoint` must be in the file (resuming training);
            False allows a partial restore (a model without its optimizer).
        hint: what to do, appended to the error when no checkpoint loads.

    Raises:
        ValueError: none of `paths` loads (each is named with its error).
    """
    failures = []
    for path in paths:
        try:
            status = checkpoint.restore(path)
            if require_all:
                status.assert_existing_objects_matched()
            else:
                status.expect_partial()
        # A damaged file shows as any of OpError, IndexError ("Read less bytes than requested"),
        # ValueError...: every failure is named, and all are listed if no checkpoint loads.
        except Exception as error:  # noqa: BLE001
            text = str(error).strip()
            message = text.splitlines()[0] if text else repr(error)
            failures.append(f"{path}: {message}")
            logging.warning("Checkpoint %s cannot be restored (%s); trying the previous one.",
                            path, message)
            continue
        if failures:
            logging.warning("Restored %s: the newer checkpoint(s) %s are damaged.", path,
                            ", ".join(f.split(": ")[0] for f in failures))
        return path
    raise ValueError(f"No checkpoint can be restored: {'; '.join(failures)}. {hint}".strip())

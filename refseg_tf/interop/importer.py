"""`import_checkpoint`: an authors' checkpoint -> a complete refseg-tf model directory."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile

from refseg_tf.interop.assign import AssignmentPlan
from refseg_tf.interop.checkpoint import read_checkpoint
from refseg_tf.interop.registry import get_format

logger = logging.getLogger(__name__)


def load_experiment_config(path):
    """The ConfigDict of an `experiments/<row>.py` file (its `get_config()`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such experiment config file.")
    spec = importlib.util.spec_from_file_location("_refseg_import_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path}: an experiment config must define get_config().")
    return module.get_config()


def build_imported_model(format_name, checkpoint, vocabulary, config, options=None):
    """Builds the config's model and fills every weight from `checkpoint` (nothing written).

    Args:
        format_name: a registered format (`list_formats()`).
        checkpoint: the TF1 checkpoint (V1 file, V2 prefix / `.index`, or a directory).
        vocabulary: the authors' vocabulary file (one word a line, the line number is the
            id, `<pad> <go> <eos> <unk>` first); its size is the embedding's row count.
        config: an experiment ConfigDict (or the path of an `experiments/*.py` file).
        options: format options (see the format's `defaults`).

    Returns:
        `(model, config, report)`: the model with the checkpoint's weights, the resolved
        config (vocabulary size set, the format's settings applied, `imported` section
        recording the sources) and the `AssignmentPlan.apply` counts.

    Raises:
        ValueError: an unknown format or option, an invalid vocabulary, an unreadable
            checkpoint, or a checkpoint that does not fill the model (every problem named:
            file, variable, layer).
    """
    import ml_collections

    from refseg_tf.text import Vocabulary
    from refseg_tf.training import config as config_lib
    from refseg_tf.training.trainer import build_model

    entry = get_format(format_name)
    resolved_options = entry.options(options)
    if isinstance(config, (str, os.PathLike)):
        config = load_experiment_config(config)
    config = config.copy_and_resolve_references()
    config_lib.validate_config(config)
    vocabulary = os.fspath(vocabulary)
    words = Vocabulary.load(vocabulary)  # VocabularyError (a ValueError) names the file
    with config.unlocked():  # configs from --config (config_flags) are locked
        config.model.vocabulary_size = len(words)
        if entry.configure is not None:
            entry.configure(config)
        config.imported = ml_collections.ConfigDict(
            {
                "format": format_name,
                "checkpoint": os.path.abspath(os.fspath(checkpoint)),
                "vocabulary": os.path.abspath(vocabulary),
                "options": ml_collections.ConfigDict(resolved_options),
            }
        )
    variables = read_checkpoint(checkpoint)  # before the (slow) model build: errors first
    model = build_model(config)
    if entry.check_model is not None:
        entry.check_model(model)
    plan = AssignmentPlan(variables, ignore=entry.ignore)
    entry.assign(model, plan, resolved_options)
    plan.require_complete(model)
    report = plan.apply()
    logger.info(
        "%s: %d weights of %s assigned from %d variables (%d training-state variables skipped).",
        variables.path, report["assigned"], model.name, report["variables"], report["ignored"],
    )
    return model, config, report


def import_checkpoint(
    format_name, checkpoint, vocabulary, config, model_dir, *, options=None, overwrite=False
):
    """Writes a complete model directory from an authors' checkpoint (what refseg-import runs).

    The directory holds `config.json` (the experiment row's config with the authors' settings
    and an `imported` section), `vocab.txt` (a byte copy of the authors' vocabulary: their
    ids), `preprocessor.json` and `model.keras`, the files `refseg-train` writes, so
    `refseg-evaluate`, `refseg-predict`, `refseg-export` and `refseg-serve` use it unchanged.

    Everything is built in a temporary directory beside `model_dir` and renamed into place
    at the end: on any error nothing is left at `model_dir`.

    Args:
        format_name, checkpoint, vocabulary, config, options: see `build_imported_model`.
        model_dir: the directory to create; it must not exist or be empty, unless
            `overwrite` (then it is replaced as a whole, after the import succeeded).

    Returns:
        dict: `model_dir`, `model` (name), `format`, and the assignment counts.
    """
    from refseg_tf.training.trainer import MODEL_FILENAME, save_model_atomic, write_model_dir_files

    model_dir = os.path.abspath(os.fspath(model_dir))
    if os.path.isfile(model_dir):
        raise ValueError(f"--model_dir {model_dir} is a file, not a directory.")
    if os.path.isdir(model_dir) and os.listdir(model_dir) and not overwrite:
        raise ValueError(
            f"--model_dir {model_dir} exists and is not empty; choose a new directory "
            "(or pass overwrite=True / --overwrite to replace it)."
        )
    model, config, report = build_imported_model(
        format_name, checkpoint, vocabulary, config, options=options
    )
    parent = os.path.dirname(model_dir)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(model_dir)}.import-")
    try:
        write_model_dir_files(config, temporary, vocabulary_path=vocabulary)
        save_model_atomic(model, os.path.join(temporary, MODEL_FILENAME))
        os.chmod(temporary, 0o755)
        _move_into_place(temporary, model_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return {"model_dir": model_dir, "model": model.name, "format": format_name, **report}


def _move_into_place(temporary, model_dir):
    if not os.path.exists(model_dir):
        os.rename(temporary, model_dir)
        return
    if not os.listdir(model_dir):
        os.rmdir(model_dir)
        os.rename(temporary, model_dir)
        return
    old = tempfile.mkdtemp(dir=os.path.dirname(model_dir), prefix=f".{os.path.basename(model_dir)}.old-")
    os.rmdir(old)
    os.rename(model_dir, old)
    os.rename(temporary, model_dir)
    shutil.rmtree(old, ignore_errors=True)

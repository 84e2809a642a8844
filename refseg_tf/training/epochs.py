"""Schedules given in epochs (LTS / MCN), converted to steps from the data's `metadata.json`.

An experiment may set `train.epochs` (> 0) and `train.optimizer.boundary_epochs` instead of
`train.steps` and `train.optimizer.boundaries`. At training time `resolve_epochs` reads the
number of refs (`data.sentences="sample"`: an epoch is one pass over the refs with one random
sentence each, as MCN's loader) or of sentences (`"all"`) of `data.split_train` from
`data.dir/metadata.json` and sets `train.steps = epochs * ceil(count / batch_size)` and the
boundaries likewise. Configs keep a `train.steps` worked out from the published counts, so
they validate and read without data.
"""

import json
import math
import os

from refseg_tf.filenames import METADATA_FILENAME


def epoch_size(config) -> int:
    """Examples per epoch of `data.split_train`: refs ("sample") or sentences ("all")."""
    path = os.path.join(config.data.dir, METADATA_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: `train.epochs` needs the counts refseg-convert writes there."
        )
    with open(path, encoding="utf-8") as handle:
        try:
            metadata = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
    split = config.data.split_train
    key = "sentences" if config.data.get("sentences", "sample") == "all" else "refs"
    try:
        count = int(metadata["splits"][split][key])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: no `splits.{split}.{key}` count ({error!r}).") from error
    if count <= 0:
        raise ValueError(f"{path}: `splits.{split}.{key}` must be positive; received {count}.")
    return count


def steps_per_epoch(count: int, batch_size: int) -> int:
    """`ceil(count / batch_size)`: the last, partial batch of an epoch counts as a step."""
    return int(math.ceil(int(count) / int(batch_size)))


def resolve_epochs(config):
    """Sets `train.steps` (and piecewise boundaries) from `train.epochs`; returns `config`.

    No-op when `train.epochs` is absent or 0. Changes `config` in place.
    """
    epochs = int(config.train.get("epochs", 0) or 0)
    if epochs <= 0:
        return config
    per_epoch = steps_per_epoch(epoch_size(config), int(config.train.batch_size))
    config.train.steps = epochs * per_epoch
    boundary_epochs = tuple(config.train.optimizer.get("boundary_epochs", ()) or ())
    if boundary_epochs:
        config.train.optimizer.boundaries = tuple(int(e) * per_epoch for e in boundary_epochs)
    config.train.steps_per_epoch = per_epoch
    return config

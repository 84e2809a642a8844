"""Reading TF1 checkpoints without building a TF1 graph (`tf.train.load_checkpoint`).

Both formats TF1 wrote are accepted through the same call: the single-file V1 format of
TF <= 1.2 (`referit_fc8_seg_highres_iter_18000.tfmodel`, an sstable of tensor slices) and the
V2 format (`<prefix>.index` + `<prefix>.data-00000-of-00001`, the default from TF 1.2 on);
a V2 checkpoint is named by its prefix (the `.index` / `.data-*` suffix may be given too, and
a directory with a `checkpoint` file resolves to its newest checkpoint).

Every failure (no such file, a truncated or corrupted file, a tensor that cannot be read) is a
`ValueError` naming the file, and the variable when one is at fault.
"""

from __future__ import annotations

import os
import re

import numpy as np

_V2_SUFFIX = re.compile(r"\.(index|data-\d{5}-of-\d{5})$")


def checkpoint_prefix(path) -> str:
    """The name `tf.train.load_checkpoint` takes for `path` (V1 file, V2 prefix or file, dir).

    Raises:
        ValueError: nothing at `path` looks like a checkpoint (the message names `path`).
    """
    import tensorflow as tf

    path = os.fspath(path)
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise ValueError(f"{path}: a directory without a TF checkpoint (no `checkpoint` file).")
        return latest
    if os.path.isfile(path) and _V2_SUFFIX.search(path):
        return _V2_SUFFIX.sub("", path)
    if os.path.isfile(path) or os.path.isfile(path + ".index"):
        return path
    raise ValueError(
        f"{path}: no checkpoint there (neither a V1 checkpoint file nor a V2 `{path}.index`)."
    )


class CheckpointVariables:
    """The variables of one TF1 checkpoint: names, shapes and values, read on demand.

    Args:
        path: a V1 checkpoint file, a V2 prefix (or its `.index` / `.data-*` file) or a
            directory holding a `checkpoint` file.

    Attributes:
        path: the path as given (named in every error).
        shapes: `{variable name: shape tuple}` of every variable in the file.
        dtypes: `{variable name: numpy dtype}`.

    Example:
        >>> variables = CheckpointVariables("referit_fc8_seg_lowres_iter_30000.tfmodel")
        >>> variables.shapes["classifier/mlp_l1/weights"]
        (1, 1, 2008, 500)
        >>> variables.read("classifier/mlp_l1/biases").shape
        (500,)

    Raises:
        ValueError: the file is missing, truncated or corrupted (names the file).
    """

    def __init__(self, path):
        import tensorflow as tf

        self.path = os.fspath(path)
        prefix = checkpoint_prefix(self.path)
        try:
            self._reader = tf.train.load_checkpoint(prefix)
            shapes = self._reader.get_variable_to_shape_map()
            dtypes = self._reader.get_variable_to_dtype_map()
        except (tf.errors.OpError, ValueError, OSError) as error:
            raise ValueError(
                f"{self.path}: not a readable TF checkpoint (truncated, corrupted or another "
                f"format): {_first_line(error)}"
            ) from error
        self.shapes = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
        self.dtypes = {name: np.dtype(dtypes[name].as_numpy_dtype) for name in shapes}

    def __contains__(self, name) -> bool:
        return name in self.shapes

    def __len__(self) -> int:
        return len(self.shapes)

    @property
    def names(self) -> list:
        """Every variable name, sorted."""
        return sorted(self.shapes)

    def read(self, name) -> np.ndarray:
        """The value of variable `name` (a numpy array).

        Raises:
            ValueError: no such variable, or its data cannot be read (names file and variable).
        """
        import tensorflow as tf

        if name not in self.shapes:
            raise ValueError(f"{self.path}: no variable {name!r} in the checkpoint.")
        try:
            value = np.asarray(self._reader.get_tensor(name))
        except (tf.errors.OpError, ValueError, OSError) as error:
            raise ValueError(
                f"{self.path}: variable {name!r} cannot be read (truncated or corrupted "
                f"checkpoint): {_first_line(error)}"
            ) from error
        if tuple(value.shape) != self.shapes[name]:
            raise ValueError(
                f"{self.path}: variable {name!r} holds {value.shape} values, its header says "
                f"{self.shapes[name]} (corrupted checkpoint)."
            )
        return value


def read_checkpoint(path) -> CheckpointVariables:
    """`CheckpointVariables(path)`: the variables of a TF1 (V1 or V2) checkpoint."""
    return CheckpointVariables(path)


def _first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

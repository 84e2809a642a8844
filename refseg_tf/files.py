"""Atomic file writes: the data goes to a temporary file beside the target, then is renamed over it.

A reader never sees a half-written file, and a crash leaves the previous version in place.
Every output gets the same mode, `FILE_MODE` (mkstemp alone would leave it readable by its
owner only). Writers that produce the file themselves (Keras `model.save`, a copy) write into
`atomic_output(path)`.
"""

import contextlib
import json
import os
import shutil
import tempfile

# mkstemp creates files readable by their owner only; outputs are meant to be shared.
FILE_MODE = 0o644


def atomic_write_bytes(path, data: bytes) -> str:
    """Writes `data` to `path` atomically (creating its folder); returns the path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


@contextlib.contextmanager
def atomic_output(path, suffix: str = ".tmp"):
    """Yields a temporary path beside `path`; on success it gets `FILE_MODE` and replaces `path`.

    `suffix` is kept at the end of the temporary name for writers that look at it (Keras
    `model.save` wants ".keras"). On an error the temporary file is removed and `path` is left
    as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=suffix
    )
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def atomic_copy(source, path) -> str:
    """Copies the file `source` to `path` atomically, with `FILE_MODE`; returns the path."""
    with atomic_output(path) as temporary:
        shutil.copyfile(source, temporary)
    return os.fspath(path)


def atomic_write_text(path, text: str) -> str:
    """Writes UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, value, **dump_options) -> str:
    """Writes `value` as indented JSON (strict: NaN is refused) to `path` atomically."""
    options = {"indent": 2, "allow_nan": False, **dump_options}
    return atomic_write_text(path, json.dumps(value, **options) + "\n")

"""Shared behaviour of the absl entry points."""

import atexit
import functools
import os
import re
import sys
import threading
from typing import Optional

# OSError covers a missing file and a read-only or full output folder (its message names the
# path and the OS error); ValueError a bad value or bad data.
USER_ERRORS = (OSError, ValueError)
# TensorFlow's own errors that are about the user's files rather than the library.
_TENSORFLOW_FILE_ERRORS = ("NotFoundError", "PermissionDeniedError", "DataLossError")


def user_errors_as_messages(program: str):
    """Turns a user error (missing file, bad value, unwritable output) into one line on stderr.

    The exit status is then 1. Errors of the library itself still show their traceback.
    """

    def decorate(main):
        @functools.wraps(main)
        def wrapped(argv):
            try:
                return main(argv)
            except USER_ERRORS as error:
                print(f"{program}: error: {error}", file=sys.stderr)
                return 1
            except Exception as error:
                message = tensorflow_file_error_message(error)
                if message is None:
                    raise
                print(f"{program}: error: {message}", file=sys.stderr)
                return 1

        return wrapped

    return decorate


def tensorflow_file_error_message(error) -> Optional[str]:
    """One line for a TensorFlow file error (unreadable record, unwritable path), else None."""
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is None:
        return None
    kinds = tuple(getattr(tensorflow.errors, name) for name in _TENSORFLOW_FILE_ERRORS)
    if not isinstance(error, kinds):
        return None
    text = " ".join(str(getattr(error, "message", "") or error).split())
    if isinstance(error, tensorflow.errors.DataLossError):
        return (
            f"a file being read is damaged ({text}). If it is a TFRecord shard, re-run "
            f"refseg-convert with the same flags (it resumes and rewrites damaged shards)."
        )
    return text


# --------------------------------------------------------------------------- start-up noise

# TensorFlow's C++ lines that are start-up or environment noise, not news for the user: written
# by its logging before absl::InitializeLog(), so TF_CPP_MIN_LOG_LEVEL does not reach them in
# TF 2.21 (oneDNN notice, CUDA probing on a machine without a GPU, CPU-feature notice), and
# oneDNN's fallback notice. Other C++ lines (real errors) pass.
_NOISE_SOURCES = (
    "port.cc", "cudart_stub.cc", "cpu_feature_guard.cc", "cuda_platform.cc", "cuda_executor.cc",
    "cuda_dnn.cc", "cuda_fft.cc", "cuda_blas.cc", "util.cc", "tf_record_dataset_op.cc",
)
_NOISE_LINE = re.compile(
    rb"^(?:[IWE]\d{4} [\d:.]+ +\d+ (?:%s):\d+\] .*"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .*in other operations, rebuild TensorFlow .*)$"
    % b"|".join(re.escape(name.encode()) for name in _NOISE_SOURCES)
)
_filter_state = {}


def is_startup_noise(line: bytes) -> bool:
    """Whether one stderr line (bytes, without its newline) is TensorFlow start-up noise."""
    return bool(_NOISE_LINE.match(line.rstrip(b"\r")))


def _verbosity(argv) -> int:
    """The absl `--verbosity` / `-v` value in `argv` (0 when absent or not a number)."""
    for index, argument in enumerate(argv):
        for name in ("--verbosity", "-v"):
            if argument == name and index + 1 < len(argv):
                value = argv[index + 1]
            elif argument.startswith(name + "="):
                value = argument.split("=", 1)[1]
            else:
                continue
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def quiet_tensorflow_startup(module_name: str, argv=None) -> bool:
    """Keeps TensorFlow's start-up noise out of a command's output (before TF is imported).

    Acts only when the module runs as a command (`python -m refseg_tf.<name>`, where
    `module_name` is "__main__", or a `refseg-<name>` console script), never when imported, and
    not when `--verbosity` is 1 or more. Then it sets `TF_CPP_MIN_LOG_LEVEL=2` (unless set) and
    routes file descriptor 2 through a filter that drops the lines `is_startup_noise` names,
    passing every other line (the command's own messages, errors, tracebacks) unchanged.

    Returns:
        Whether the filter was installed.
    """
    argv = sys.argv if argv is None else argv
    command = module_name == "__main__" or os.path.basename(argv[0] if argv else "").startswith(
        "refseg-")
    if not command or _verbosity(argv[1:]) >= 1 or _filter_state:
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no usable stderr: nothing to keep clean
        return False

    def pump():
        with os.fdopen(read_end, "rb", buffering=0) as source:
            pending = b""
            while True:
                chunk = source.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = b"".join(line + b"\n" for line in lines if not is_startup_noise(line))
                if kept:
                    os.write(original, kept)
            if pending and not is_startup_noise(pending):
                os.write(original, pending)

    thread = threading.Thread(target=pump, name="refseg-stderr-filter", daemon=True)
    thread.start()
    _filter_state.update(original=original, thread=thread)
    atexit.register(_restore_stderr)
    return True


def _restore_stderr():
    """Flushes what the filter holds and gives file descriptor 2 back (at exit)."""
    if not _filter_state:
        return
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(_filter_state["original"], 2)  # closes the pipe's last write end: the pump ends
    _filter_state["thread"].join(timeout=5)

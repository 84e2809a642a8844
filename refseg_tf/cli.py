"""Shared behaviour of the absl entry points."""

import functools
import sys
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

"""Loading the refer `refs(<split_by>).p` pickles without letting them run code.

A pickle can call any importable function while it loads (`__reduce__` returning `os.system`,
for example), so `pickle.load` on a downloaded file is remote code execution. The refs files
only hold lists, dicts, strings and numbers, which pickle encodes with opcodes that need no
import at all; `RestrictedUnpickler.find_class` therefore admits only `set` and `frozenset` and
refuses every other global with an error naming the file.

The public refs files were written by Python 2 `cPickle`, whose `str` objects are byte strings
of unknown encoding. They are loaded as bytes and decoded as UTF-8, falling back to Latin-1 for
byte strings that are not valid UTF-8 (which is what `encoding="latin1"` would do for all of
them, garbling any UTF-8 text). Python 3 pickles (protocol 3 and later) load unchanged, except
that `bytes` values are decoded the same way, as refs files hold text only.

A pickle can also be small and still expand without bound: memo references let one list hold
the same list twice, twenty levels deep (a 169-byte file that decodes into 2**20 lists), or
hold itself. Loading keeps the sharing (cheap), but turning the value into plain text and
containers copies every reference, so the objects and text characters of that copy are counted
first, once per distinct object, and a value over the budget is refused (`PickleBudget`): by default 1,000,000 objects plus two per byte
of the file (each object of a pickle without shared references costs at least one opcode byte,
a memo reference two), and 64 Mi characters plus 8 per byte. A recursive structure or one
nested too deeply is refused as well. Every refusal names the file.
"""

import dataclasses
import io
import os
import pickle
from typing import Optional, Union

from refseg_tf.data.converters.report import ConversionError

PathLike = Union[str, os.PathLike]

# (module, name) pairs a refs pickle may reference. Python 2 pickles name the builtins module
# "__builtin__"; the restricted unpickler sees that raw name, before any Python 2 -> 3 mapping.
ALLOWED_GLOBALS = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
    }
)
_BUILTINS = {"set": set, "frozenset": frozenset}
BASE_OBJECTS = 1_000_000
OBJECTS_PER_BYTE = 2
BASE_TEXT_CHARACTERS = 64 * 2**20
TEXT_CHARACTERS_PER_BYTE = 8


class UnsafePickleError(ConversionError):
    """A pickle referenced a global outside the allow-list (it could run code) or is malformed."""


class RestrictedUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` that resolves no globals except `set` and `frozenset`.

    Args:
        file: a binary file object holding the pickle.
        source: the file name, used in error messages.

    Example:
        >>> import io, pickle
        >>> data = pickle.dumps([{"ref_id": 1}], protocol=2)
        >>> RestrictedUnpickler(io.BytesIO(data), source="refs(unc).p").load()
        [{'ref_id': 1}]

    Reference:
        Python documentation, "Restricting Globals" (pickle module).
    """

    def __init__(self, file, source: str = "<pickle>"):
        # encoding="bytes": Python 2 `str` objects arrive as bytes and `decode_text` decides.
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            return _BUILTINS[name]
        raise UnsafePickleError(
            f"{self.source}: refused to load the global '{module}.{name}'. A refs pickle holds "
            f"only lists, dicts, strings and numbers; this file could run code when loaded and "
            f"was not opened. Re-download it from a trusted source."
        )


@dataclasses.dataclass(frozen=True)
class PickleBudget:
    """How much a decoded pickle may hold (see the module docstring).

    Args:
        max_objects: containers, strings and numbers the decoded value may hold.
        max_text_characters: characters of all its strings together.
    """

    max_objects: int
    max_text_characters: int

    @classmethod
    def for_data(cls, data: bytes, max_objects: Optional[int] = None) -> "PickleBudget":
        """The default budget for a pickle of `len(data)` bytes; `max_objects` overrides it."""
        if max_objects is not None and max_objects < 1:
            raise ValueError(f"max_objects must be >= 1; received {max_objects}.")
        objects = max_objects or BASE_OBJECTS + OBJECTS_PER_BYTE * len(data)
        return cls(objects, BASE_TEXT_CHARACTERS + TEXT_CHARACTERS_PER_BYTE * len(data))

    def check(self, value, source: str) -> None:
        """Refuses `value` if copying its shared references would exceed the budget.

        The expanded size is computed once per distinct object (shared ones are looked up), so
        the check costs the size of the pickle, not of its expansion.
        """
        objects, characters = _expanded_size(value, {}, set(), source)
        if objects > self.max_objects:
            raise UnsafePickleError(
                f"{source}: the pickle expands to {objects} objects, more than the limit of "
                f"{self.max_objects} (shared references copied over and over); refused. A "
                f"genuine refs file this large loads with a larger --max_pickle_objects."
            )
        if characters > self.max_text_characters:
            raise UnsafePickleError(
                f"{source}: the pickle expands to {characters} characters of text, more than "
                f"the limit of {self.max_text_characters} (shared references copied over and "
                f"over); refused."
            )


_CONTAINERS = (dict, list, tuple, set, frozenset)
_SCALARS = frozenset((int, float, bool, type(None)))


def _expanded_size(value, sizes: dict, path: set, source: str) -> tuple:
    """(objects, text characters) of `value` once every shared reference is copied."""
    if isinstance(value, (bytes, str)):
        return 1, len(value)
    if not isinstance(value, _CONTAINERS):
        return 1, 0
    key = id(value)
    if key in sizes:
        return sizes[key]
    if key in path:
        raise UnsafePickleError(f"{source}: the pickle holds a recursive structure; refused.")
    path.add(key)
    children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    objects, characters = 1, 0
    for child in children:
        kind = type(child)  # the leaves, inline (most of a refs pickle): no call each
        if kind is str or kind is bytes:
            objects += 1
            characters += len(child)
            continue
        if kind in _SCALARS:
            objects += 1
            continue
        child_objects, child_characters = _expanded_size(child, sizes, path, source)
        objects += child_objects
        characters += child_characters
    path.discard(key)
    sizes[key] = (objects, characters)
    return sizes[key]


def loads_restricted(data: bytes, source: str = "<pickle>", max_objects: Optional[int] = None):
    """Unpickles `data` with `RestrictedUnpickler` and decodes byte strings to `str`.

    Args:
        data: the pickle.
        source: the file name, for error messages.
        max_objects: objects the decoded value may hold; None: `PickleBudget.for_data`.

    Raises:
        UnsafePickleError: a forbidden global, data that is not a valid pickle, or a value
            over the budget, recursive or nested too deeply.
    """
    try:
        value = RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as error:
        raise UnsafePickleError(f"{source}: not a valid pickle ({error}).") from error
    try:
        PickleBudget.for_data(data, max_objects).check(value, source)
        return decode_text(value)
    except RecursionError:
        raise UnsafePickleError(f"{source}: the pickle is nested too deeply; refused.") from None


def load_pickle(path: PathLike, max_objects: Optional[int] = None):
    """Loads a pickle file safely (see the module docstring); errors name the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConversionError(f"Cannot read {path}: {error}") from error
    return loads_restricted(data, source=path, max_objects=max_objects)


_ATOMS = _SCALARS | {str}


def decode_text(value):
    """Recursively turns byte strings (Python 2 `str`) into `str`: UTF-8, else Latin-1."""
    if type(value) in _ATOMS:  # the bulk of a refs pickle's values: returned as they are
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, dict):
        return {decode_text(key): decode_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_text(item) for item in value]
    if isinstance(value, tuple):
        return tuple(decode_text(item) for item in value)
    if isinstance(value, (set, frozenset)):
        return type(value)(decode_text(item) for item in value)
    return value

"""The in-graph tokenizer's character tables: built once per machine and Python, then cached.

The TensorFlow `Tokenizer` applies the rules of `refseg_tf.text.rules` through tables over
every code point (lowercase pairs, class ranges of each mode, control-character ranges).
Building them calls those rules for all 1.1 million code points, 1-4 s of Python, which used
to be paid by every process that built a tokenizer (training, evaluation, prediction, export).
They are now built once and stored in `<cache dir>/tokenizer_tables-<fingerprint>.npz`; later
processes read that file in milliseconds.

The fingerprint covers everything the tables are computed from: the Python implementation and
version, the Unicode version of `unicodedata` (which `str.lower`, `str.isspace`, `re`'s `\\w`
and the general categories all follow) and the source of `rules.py` and of this module. So
the cache can never serve another interpreter's tables: Python 3.11 has Unicode 14.0, 3.12
15.0, 3.13 15.1, and the in-graph side must equal the Python reference `split_words` of the
running interpreter for every code point. That is why the tables are cached rather than
committed to the package: a committed table would be exact on one Unicode version only.

A file that is missing, unreadable or not what this module writes (wrong keys, dtypes, order
or fingerprint) is rebuilt and rewritten atomically (`refseg_tf.files.atomic_output`);
processes that build at the same time each write a complete file, and the last rename wins.
An unwritable cache directory costs only the build time (logged once).

The cache directory is `$REFSEG_TF_CACHE_DIR`, else `$XDG_CACHE_HOME/refseg_tf`, else
`~/.cache/refseg_tf`; `REFSEG_TF_CACHE_DIR=""` turns the file cache off.
"""

import functools
import hashlib
import logging
import os
import sys
import threading
import unicodedata
import zipfile

import numpy as np

from refseg_tf.text import rules

CACHE_ENVIRONMENT_VARIABLE = "REFSEG_TF_CACHE_DIR"
TABLE_NAMES = (
    "lowercase_keys",
    "lowercase_values",
    "control_range_starts",
    "refseg_class_starts",
    "refseg_class_values",
    "authors_class_starts",
    "authors_class_values",
)
_FILE_PREFIX = "tokenizer_tables-"
_LOCK = threading.Lock()
_LOGGER = logging.getLogger(__name__)


def cache_directory():
    """The directory of the table file, or None when the file cache is turned off."""
    configured = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    if configured is not None:
        return configured or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "refseg_tf")


def fingerprint() -> str:
    """Hex digest of what the tables depend on (interpreter, Unicode version, rule sources)."""
    digest = hashlib.sha256()
    for part in (sys.implementation.name, sys.version, unicodedata.unidata_version):
        digest.update(part.encode("utf-8") + b"\0")
    for path in (rules.__file__, __file__):
        with open(path, "rb") as source:
            digest.update(source.read() + b"\0")
    return digest.hexdigest()[:32]


def cache_path():
    """The table file of this interpreter and these rules, or None without a cache directory."""
    directory = cache_directory()
    if directory is None:
        return None
    try:
        return os.path.join(directory, f"{_FILE_PREFIX}{fingerprint()}.npz")
    except OSError as error:  # sources not readable (e.g. a zipped install): no file cache
        _LOGGER.warning("Tokenizer tables are not cached: %s", error)
        return None


def character_tables() -> dict:
    """The tables (name -> read-only int32 numpy array, `TABLE_NAMES`), read from the cache
    file or built and cached; computed at most once per process."""
    with _LOCK:
        return _tables_of_this_process()


@functools.lru_cache(maxsize=None)
def _tables_of_this_process() -> dict:
    path = cache_path()
    tables = _read(path) if path is not None else None
    if tables is None:
        tables = build_tables()
        if path is not None:
            _write(path, tables)
    for table in tables.values():
        table.setflags(write=False)
    return tables


def clear_memory_cache() -> None:
    """Forgets this process's tables (the next `character_tables()` reads the file again)."""
    _tables_of_this_process.cache_clear()


# ----------------------------------------------------------------------------- building
def build_tables() -> dict:
    """Computes every table from the rules of `refseg_tf.text.rules` (1-4 s)."""
    lowercase_keys, lowercase_values = _lowercase_arrays()
    refseg_starts, refseg_values = _class_range_arrays(rules.char_class)
    authors_starts, authors_values = _class_range_arrays(rules.authors_char_class)
    return {
        "lowercase_keys": lowercase_keys,
        "lowercase_values": lowercase_values,
        "control_range_starts": _control_range_starts(),
        "refseg_class_starts": refseg_starts,
        "refseg_class_values": refseg_values,
        "authors_class_starts": authors_starts,
        "authors_class_values": authors_values,
    }


def _lowercase_arrays():
    """Sorted int32 keys and values: every code point `lower_char` changes, and its result."""
    keys, values = [], []
    for code_point in rules.all_code_points():
        lowered = ord(rules.lower_char(chr(code_point)))
        if lowered != code_point:
            keys.append(code_point)
            values.append(lowered)
    return np.array(keys, dtype=np.int32), np.array(values, dtype=np.int32)


def _control_range_starts() -> np.ndarray:
    """Sorted int32 boundaries [s0, e0, s1, e1, ...]: control characters lie in [s_i, e_i)."""
    boundaries = []
    inside = False
    for code_point in range(rules.MAX_CODE_POINT + 2):
        control = code_point <= rules.MAX_CODE_POINT and rules.is_control_char(chr(code_point))
        if control != inside:
            boundaries.append(code_point)
            inside = control
    return np.array(boundaries, dtype=np.int32)


def _class_range_arrays(classify):
    """`classify` (`char_class` or `authors_char_class`) as ranges: int32 range starts (the
    first is 0) and the class of each range.

    Surrogates never reach the classifier (UTF-8 decoding replaces them), so they join
    whichever range surrounds them.
    """
    starts, values = [], []
    for code_point in rules.all_code_points():
        kind = classify(chr(code_point))
        if not values or values[-1] != kind:
            starts.append(code_point)
            values.append(kind)
    return np.array(starts, dtype=np.int32), np.array(values, dtype=np.int32)


# ----------------------------------------------------------------------------- the file
def _read(path):
    """The tables of `path`, or None (logged) when it is missing or not a valid table file."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            contents = {name: stored[name] for name in stored.files}
        problem = _problem_with(contents)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        problem = f"unreadable ({type(error).__name__}: {error})"
    if problem is not None:
        _LOGGER.warning("Tokenizer table cache %s is %s; rebuilding it.", path, problem)
        return None
    return {name: contents[name] for name in TABLE_NAMES}


def _problem_with(contents: dict):
    """What makes `contents` not a table file of this fingerprint, or None."""
    if set(contents) != {*TABLE_NAMES, "fingerprint"}:
        return f"missing or extra arrays ({sorted(contents)})"
    if str(contents["fingerprint"]) != fingerprint():
        return "of another interpreter or rule version"
    for name in TABLE_NAMES:
        table = contents[name]
        if table.dtype != np.int32 or table.ndim != 1 or table.size == 0:
            return f"damaged: {name} is not a non-empty 1-D int32 array"
        if name != "lowercase_values" and not name.endswith("class_values"):
            if np.any(np.diff(table.astype(np.int64)) <= 0):
                return f"damaged: {name} is not strictly increasing"
    for mode in ("refseg", "authors"):
        starts, values = contents[f"{mode}_class_starts"], contents[f"{mode}_class_values"]
        if starts.shape != values.shape or starts[0] != 0:
            return f"damaged: the {mode} class ranges are inconsistent"
    if contents["lowercase_keys"].shape != contents["lowercase_values"].shape:
        return "damaged: lowercase keys and values differ in length"
    return None


def _write(path, tables: dict) -> None:
    from refseg_tf.files import atomic_output

    try:
        with atomic_output(path, suffix=".npz") as temporary:
            with open(temporary, "wb") as stream:
                np.savez(stream, fingerprint=np.array(fingerprint()), **tables)
    except OSError as error:
        _LOGGER.warning(
            "Cannot write the tokenizer table cache %s (%s): every process builds the tables "
            "(1-4 s); set %s to a writable directory.", path, error, CACHE_ENVIRONMENT_VARIABLE,
        )

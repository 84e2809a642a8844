"""The word-splitting rules of `refseg_tf.text` in plain Python (no TensorFlow, no vocabulary).

`split_words(sentence, mode)` is the reference of both tokenisers: "refseg" (the library's
Unicode-aware rule) and "authors" (the Hu/RMI/RRN `re.split(r'(\\W+)')`); the rules are
spelled out in `refseg_tf.text.tokenizer`'s docstring, which also holds the in-graph
TensorFlow version built from the tables here. `Vocabulary.build` and the tokenizer both import
this module, so neither imports the other.

Reference: the authors' `util/text_processing.py` (ronghanghu/text_objseg,
chenxi116/TF-phrasecut-public, liruiyu/referseg_rrn); Hu et al. 2016, Sec. 3.1.
"""

import functools
import itertools
import re
import unicodedata
from typing import Union

SPACE, WORD, OTHER = 0, 1, 2
TOKENIZER_MODES = ("refseg", "authors")
# The authors' split (Python 3 `re`, Unicode `\W` for str patterns).
AUTHORS_SPLIT_REGEX = re.compile(r"(\W+)")
MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def lower_char(char: str) -> str:
    """Lowercases one code point: `str.lower`, first code point of a multi-code-point result."""
    return char.lower()[0]


def char_class(char: str) -> int:
    """SPACE, WORD or OTHER for one (already lowercased) code point; see the module docstring."""
    if char.isspace():
        return SPACE
    category = unicodedata.category(char)
    if category[0] in "LMN" or category == "Pc":
        return WORD
    return OTHER


def is_control_char(char: str) -> bool:
    """True for control characters (category Cc) that are not whitespace: they are deleted."""
    return unicodedata.category(char) == "Cc" and not char.isspace()


def authors_char_class(char: str) -> int:
    """WORD for Python's `\w` (Unicode), SPACE for other whitespace, OTHER for the rest."""
    if AUTHORS_SPLIT_REGEX.match(char) is None:
        return WORD
    return SPACE if char.isspace() else OTHER


def check_tokenizer_mode(mode) -> str:
    """Returns `mode` if it is one of `TOKENIZER_MODES`, else raises a ValueError naming it."""
    if isinstance(mode, str) and mode in TOKENIZER_MODES:
        return mode
    raise ValueError(f"`tokenizer` must be one of {TOKENIZER_MODES}; received {mode!r}.")


def strip_control_characters(text: str) -> str:
    """`text` without its control characters (whitespace is kept)."""
    return text.translate(_control_deletion())


def as_text(sentence: Union[str, bytes]) -> str:
    """A sentence as str; bytes are decoded as UTF-8 with U+FFFD for invalid sequences."""
    if isinstance(sentence, bytes):
        return sentence.decode("utf-8", errors="replace")
    if isinstance(sentence, str):
        return sentence
    raise TypeError(f"A sentence must be str or bytes; received {type(sentence).__name__}.")


def split_words(sentence: Union[str, bytes], mode: str = "refseg") -> list:
    """Tokenises one sentence (plain-Python reference of the rules in the module docstring).

    Args:
        sentence: str, or UTF-8 bytes.
        mode: "refseg" (the library's rule) or "authors" (Hu/RMI/RRN `re.split(r'(\W+)')`).

    Example:
        >>> split_words("The man's LEFT arm, please.")
        ['the', 'man', "'", 's', 'left', 'arm', ',', 'please']
        >>> split_words("The man's LEFT arm, please .", mode="authors")
        ['the', 'man', "'", 's', 'left', 'arm', ', ', 'please', ' .']
    """
    if check_tokenizer_mode(mode) == "authors":
        return _split_words_authors(sentence)
    text = strip_control_characters(as_text(sentence)).translate(_lowercase_translation())
    tokens = [
        "".join(run)
        for kind, run in itertools.groupby(text, key=char_class)
        if kind != SPACE
    ]
    if tokens and tokens[-1] == ".":
        tokens.pop()
    return tokens


def _split_words_authors(sentence: Union[str, bytes]) -> list:
    text = strip_control_characters(as_text(sentence))
    words = AUTHORS_SPLIT_REGEX.split(text.strip())
    words = [word.translate(_lowercase_translation()) for word in words if word.strip()]
    if words and words[-1] == ".":
        words.pop()
    return words


def all_code_points():
    """Every code point but the surrogates (which UTF-8 text cannot hold), in order."""
    return (cp for cp in range(MAX_CODE_POINT + 1) if cp not in _SURROGATES)


class _LazyTranslation(dict):
    """A `str.translate` table filled per code point on first sight: `rule(char)` is the
    character's replacement (itself to keep it, None to delete it).

    Building a full table means calling the rule for all 1.1 million code points (seconds);
    this one costs a call per distinct character a process meets, with the same result.
    """

    def __init__(self, rule):
        super().__init__()
        self._rule = rule

    def __missing__(self, code_point):
        replacement = self._rule(chr(code_point))
        self[code_point] = replacement
        return replacement


def _kept_unless_control(char: str):
    return None if is_control_char(char) else char


@functools.lru_cache(maxsize=None)
def _lowercase_translation() -> dict:
    """`str.translate` table: code point -> `lower_char` of it (filled lazily)."""
    return _LazyTranslation(lower_char)


@functools.lru_cache(maxsize=None)
def _control_deletion() -> dict:
    """`str.translate` table deleting every control character (`is_control_char`; lazy)."""
    return _LazyTranslation(_kept_unless_control)

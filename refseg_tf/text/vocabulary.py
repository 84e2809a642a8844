"""Word vocabulary with the four special tokens at fixed ids.

The on-disk format is the one of the authors' vocabulary files: UTF-8 text, one word per line,
the line number (from 0) is the id, the special tokens `<pad> <go> <eos> <unk>` come first.
"""

import collections
import collections.abc
import os
from typing import Iterable, Mapping, Optional, Sequence, Union

from refseg_tf.files import atomic_write_bytes
from refseg_tf.text.rules import split_words

SPECIAL_TOKENS = ("<pad>", "<go>", "<eos>", "<unk>")
PAD_ID, GO_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
PAD_TOKEN, GO_TOKEN, EOS_TOKEN, UNK_TOKEN = SPECIAL_TOKENS

PathLike = Union[str, os.PathLike]


class VocabularyError(ValueError):
    """A vocabulary (a word list or a vocabulary file) is invalid."""


class Vocabulary:
    """An immutable word <-> id mapping whose first four words are the special tokens.

    Args:
        words: every word in id order, starting with `SPECIAL_TOKENS`. Words must be non-empty,
            unique, without line breaks (they would corrupt the one-word-per-line file) and
            without whitespace at either end (the authors' loader strips every line). Spaces
            inside a word are allowed: the authors' tokeniser makes tokens such as ". ." and
            their G-Ref word list holds one.

    Example:
        >>> vocab = Vocabulary.build(["the man on the left", "left dog"])
        >>> vocab.words[:6]
        ('<pad>', '<go>', '<eos>', '<unk>', 'left', 'the')
        >>> vocab.id_of("zebra") == UNK_ID
        True

    Reference:
        Hu et al. 2016 (authors' code, `text_processing.py`): specials at ids 0..3, unknown
        words mapped to `<unk>`, as the authors' `util/text_processing.py` (Hu et al. 2016, Sec. 3.1).
    """

    def __init__(self, words: Iterable[str]):
        words = tuple(words)
        _validate_words(words, source="the word list", line_of=lambda index: None)
        self._words = words
        self._word_to_id = {word: index for index, word in enumerate(words)}

    @property
    def words(self) -> tuple:
        """All words in id order (a tuple; specials first)."""
        return self._words

    @property
    def word_to_id(self) -> Mapping[str, int]:
        """A read-only mapping word -> id."""
        return _ReadOnlyDict(self._word_to_id)

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word) -> bool:
        return word in self._word_to_id

    def __iter__(self):
        return iter(self._words)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self._words == other._words

    def __hash__(self) -> int:
        return hash(self._words)

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    def id_of(self, word: str) -> int:
        """The id of `word`, or `UNK_ID` when the word is not in the vocabulary."""
        return self._word_to_id.get(word, UNK_ID)

    def ids_of(self, words: Iterable[str]) -> list:
        """The ids of `words` (unknown words -> `UNK_ID`)."""
        return [self._word_to_id.get(word, UNK_ID) for word in words]

    def word_of(self, index: int) -> str:
        """The word with id `index` (raises IndexError when out of range)."""
        if not 0 <= index < len(self._words):
            raise IndexError(f"Word id {index} is outside the vocabulary of size {len(self)}.")
        return self._words[index]

    @classmethod
    def build(
        cls, sentences: Iterable, min_count: int = 1, max_size: Optional[int] = None,
        tokenizer: str = "refseg",
    ) -> "Vocabulary":
        """Builds a vocabulary from raw sentences with the tokenisation rules of `split_words`.

        Args:
            sentences: raw sentences (str, or UTF-8 bytes).
            min_count: keep words occurring at least this many times.
            max_size: the largest vocabulary size **including** the four special tokens
                (None: no limit). The most frequent words are kept.
            tokenizer: "refseg" or "authors" (see `split_words`). Authors' tokens with spaces
                at either end (", ") are left out: they can never match a word of a vocabulary
                file, so they stay `<unk>` as in the authors' code.

        Returns:
            A Vocabulary: specials, then words by count (descending), ties by word
            (code point order), so the result does not depend on the sentence order.
        """

        _check_limits(min_count, max_size)
        counts = collections.Counter()
        for sentence in sentences:
            counts.update(
                word for word in split_words(sentence, tokenizer) if word == word.strip()
            )
        return cls.from_counts(counts, min_count=min_count, max_size=max_size)

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], min_count: int = 1, max_size: Optional[int] = None
    ) -> "Vocabulary":
        """Builds a vocabulary from word counts (same ordering rules as `build`)."""
        _check_limits(min_count, max_size)
        kept = [
            (word, count)
            for word, count in counts.items()
            if count >= min_count and word not in SPECIAL_TOKENS
        ]
        kept.sort(key=lambda item: (-item[1], item[0]))
        words = [word for word, _ in kept]
        if max_size is not None:
            words = words[: max_size - len(SPECIAL_TOKENS)]
        return cls(SPECIAL_TOKENS + tuple(words))

    def save(self, path: PathLike) -> None:
        """Writes one word per line (UTF-8, "\\n" line ends) atomically: temp file, then rename.

        Paths with a URL scheme (e.g. "gs://") are written through `tf.io.gfile`.
        """
        path = os.fspath(path)
        data = "".join(word + "\n" for word in self._words).encode("utf-8")
        if _is_remote(path):
            _write_remote_atomically(path, data)
        else:
            atomic_write_bytes(path, data)

    @classmethod
    def load(cls, path: PathLike) -> "Vocabulary":
        """Reads a vocabulary file; errors name the file and the (1-based) line.

        Lines end with "\\n" (a "\\r" before it is tolerated); one final empty line is allowed.
        Paths with a URL scheme (e.g. "gs://") are read through `tf.io.gfile`.
        """
        path = os.fspath(path)
        try:
            data = _read_bytes(path)
        except OSError as error:
            raise VocabularyError(f"Cannot read vocabulary file {path!r}: {error}") from error
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise VocabularyError(
                f"Vocabulary file {path!r}, line {line}: invalid UTF-8 ({error.reason})."
            ) from error
        if text.startswith("\ufeff"):
            text = text[1:]  # tolerate a byte order mark written by some editors
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        words = [line[:-1] if line.endswith("\r") else line for line in lines]
        _validate_words(words, source=f"Vocabulary file {path!r}", line_of=lambda i: i + 1)
        return cls(words)


def as_vocabulary(vocabulary: Union["Vocabulary", Sequence[str], PathLike]) -> Vocabulary:
    """Accepts a Vocabulary, a sequence of words (specials first) or a vocabulary file path."""
    if isinstance(vocabulary, Vocabulary):
        return vocabulary
    if isinstance(vocabulary, (str, bytes, os.PathLike)):
        return Vocabulary.load(os.fsdecode(vocabulary))
    return Vocabulary(vocabulary)


def _check_limits(min_count: int, max_size: Optional[int]) -> None:
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1; received {min_count}.")
    if max_size is not None and max_size < len(SPECIAL_TOKENS):
        raise ValueError(
            f"max_size must be at least {len(SPECIAL_TOKENS)} (the special tokens); "
            f"received {max_size}."
        )


def _is_remote(path: str) -> bool:
    return "://" in path


def _read_bytes(path: str) -> bytes:
    if _is_remote(path):
        import tensorflow as tf  # only for remote file systems; keeps this module TF-free

        try:
            with tf.io.gfile.GFile(path, "rb") as stream:
                return stream.read()
        except tf.errors.OpError as error:
            raise OSError(str(error)) from error
    with open(path, "rb") as stream:
        return stream.read()


def _write_remote_atomically(path: str, data: bytes) -> None:
    import tensorflow as tf

    temp_path = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temp_path, "wb") as stream:
        stream.write(data)
    tf.io.gfile.rename(temp_path, path, overwrite=True)


def _validate_words(words: Sequence[str], source: str, line_of) -> None:
    def where(index: int) -> str:
        line = line_of(index)
        return f"{source}, line {line}" if line is not None else f"{source}, index {index}"

    if len(words) < len(SPECIAL_TOKENS):
        raise VocabularyError(
            f"{source}: a vocabulary needs at least the special tokens {SPECIAL_TOKENS}; "
            f"found {len(words)} words."
        )
    for index, special in enumerate(SPECIAL_TOKENS):
        if words[index] != special:
            raise VocabularyError(
                f"{where(index)}: expected the special token {special!r} at id {index}, "
                f"found {words[index]!r}."
            )
    first_index = {}
    for index, word in enumerate(words):
        if not isinstance(word, str):
            raise VocabularyError(f"{where(index)}: words must be str; found {type(word)}.")
        if not word:
            raise VocabularyError(f"{where(index)}: empty word.")
        if "\n" in word or "\r" in word:
            raise VocabularyError(f"{where(index)}: the word {word!r} contains a line break.")
        if word != word.strip():
            raise VocabularyError(
                f"{where(index)}: the word {word!r} contains whitespace at its start or end."
            )
        if word in first_index:
            raise VocabularyError(
                f"{where(index)}: duplicate word {word!r} (first at {where(first_index[word])})."
            )
        first_index[word] = index


class _ReadOnlyDict(collections.abc.Mapping):
    def __init__(self, data):
        self._data = data

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

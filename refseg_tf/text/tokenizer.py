"""Sentence tokenisation: a plain-Python reference and an in-graph TensorFlow version.

The rule (the authors' `re.split(r'(\\W+)')` made precise and Unicode-aware):

1. Text is UTF-8; invalid bytes become U+FFFD.
2. Lowercase **each code point on its own** with Python's `str.lower`, keeping the first code
   point where the full mapping has several (only U+0130 "İ" -> "i"). No context rules, so a
   final capital sigma becomes "σ", never "ς".
3. Classify each lowered code point: *space* when `str.isspace()` is true; *word* when its
   Unicode general category is a letter (L*), mark (M*), number (N*) or connector punctuation
   (Pc, e.g. "_"); *other* otherwise (punctuation, symbols, controls, unassigned, ...).
4. A token is a maximal run of word characters or a maximal run of other characters; space
   separates tokens and is never part of one.
5. A final token equal to "." is dropped.

Before either rule, control characters (Unicode category Cc, except whitespace such as "\t"
and "\n") are deleted, so that "\x00" or "\x1b" never becomes a token or a vocabulary word
(format characters, Cf, such as U+200B, are kept as before).

`mode="authors"` reproduces the tokeniser of the Hu/RMI/RRN code instead
(`util/text_processing.py` of ronghanghu/text_objseg, chenxi116/TF-phrasecut-public and
liruiyu/referseg_rrn): `re.split(r'(\W+)', sentence.strip())` keeps the separators *with
their spaces* as tokens (", " is one token; a final " ." is kept, only a final "." exactly is
dropped), tokens that are only whitespace are dropped, the rest lowercased. `\W` is Python 3's
Unicode rule (not `\w` = `str.isalnum()` or "_"). Lowercasing is per code point as above, which
differs from Python's `str.lower()` only for "İ" (U+0130, "i" here, "i̇" there) and a word-final
capital sigma ("σ" here, "ς" there). A token with surrounding spaces (", ") never matches a
vocabulary word (the authors' vocabulary loader strips every line): it maps to `<unk>`.

Character properties come from Python's `unicodedata` (Unicode 14.0 on Python 3.11). The
TensorFlow side uses tables derived from the same functions (compressed into code point
ranges, searched with `tf.searchsorted`), so both sides agree exactly, for every code point,
instead of depending on the Unicode versions of TensorFlow's own libraries. Checked with
TF 2.21: RE2's `\\w`/`\\s` are ASCII-only and its `\\p{..}` tables are newer (Unicode 15.x:
about 4,400 code points classify differently); `tf.strings.lower(encoding="utf-8")` uses an
older ICU (42 code points differ: new Unicode 14 capitals are not lowered, "İ" becomes two code
points, NUL is dropped). The tables are built once per machine and interpreter and read from a
cache file afterwards (`refseg_tf.text.tables`); the Python reference needs none (it applies
the rules to each character it meets).

The Python rules (steps 1-5, and `mode="authors"`) are `refseg_tf.text.rules`; this module
encodes sentences with them and holds their in-graph TensorFlow version.

Reference: Hu et al. 2016, Sec. 3.1 and the authors' `util/text_processing.py`
(ronghanghu/text_objseg; the same file in chenxi116/TF-phrasecut-public and
liruiyu/referseg_rrn): split on `(\\W+)`, lowercase, drop a trailing ".", unknown words ->
`<unk>`, first 20 tokens, front padding.
"""

import os
from typing import Sequence, Union

import tensorflow as tf

from refseg_tf.text.rules import (  # noqa: F401  (re-exported: the rules' public names)
    AUTHORS_SPLIT_REGEX,
    OTHER,
    SPACE,
    TOKENIZER_MODES,
    WORD,
    as_text,
    authors_char_class,
    char_class,
    check_tokenizer_mode,
    is_control_char,
    lower_char,
    split_words,
    strip_control_characters,
)
from refseg_tf.text.tables import character_tables
from refseg_tf.text.vocabulary import PAD_ID, UNK_ID, Vocabulary, as_vocabulary

PADDING_MODES = ("front", "back")


def tokenization_fingerprint(vocabulary, mode: str = "refseg") -> str:
    """Hex digest of what a sentence's word ids depend on besides the sentence: the
    vocabulary's words (and so their ids), the tokeniser mode, the Unicode version of the
    character rules and the rules' source (`refseg_tf.text.rules`).

    `refseg-convert --word_ids` stores it in `metadata.json` beside the ids it stores;
    `refseg_tf.data.load` uses the stored ids only when its preprocessor's fingerprint is the
    same, so stored ids are never read with another vocabulary or rule. (Truncation to
    `max_length` and the padding are applied when the ids are read: stored ids are whole.)
    """
    import hashlib
    import json
    import unicodedata

    from refseg_tf.text import rules

    words = hashlib.sha256("\n".join(as_vocabulary(vocabulary).words).encode("utf-8"))
    with open(rules.__file__, "rb") as source:
        rule_source = hashlib.sha256(source.read())
    document = {
        "format": 1,
        "vocabulary_sha256": words.hexdigest(),
        "tokenizer": check_tokenizer_mode(mode),
        "unicode": unicodedata.unidata_version,
        "rules_sha256": rule_source.hexdigest(),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode("utf-8")).hexdigest()


def encode_sentence(
    sentence: Union[str, bytes],
    vocabulary: Vocabulary,
    max_length: int = 20,
    padding: str = "front",
    mode: str = "refseg",
) -> list:
    """Word ids of one sentence: first `max_length` tokens, unknown -> `<unk>`, padded with `<pad>`.

    `padding="front"` (the authors' choice) puts the last word at the last step; `mode` is the
    tokeniser ("refseg" or "authors", see `split_words`).
    """
    _check_length_and_padding(max_length, padding)
    ids = vocabulary.ids_of(split_words(sentence, mode))[:max_length]
    pads = [PAD_ID] * (max_length - len(ids))
    return pads + ids if padding == "front" else ids + pads


class Tokenizer(tf.Module):
    """In-graph tokenizer: `tf.string` sentences -> int32 word ids, identical to `encode_sentence`.

    Works eagerly, inside `tf.function` (e.g. with a `[None]` string input signature) and
    inside `tf.data.Dataset.map`. The vocabulary table is a tracked `tf.lookup.StaticHashTable`
    and the character tables are constants, so the module can be saved as part of a SavedModel.

    Args:
        vocabulary: a `Vocabulary`, a sequence of words (specials first) or a vocabulary file path.
        max_length: number of word ids per sentence (longer sentences keep their first tokens).
        padding: "front" (the last word at the last step; Hu/RMI/RRN) or "back" (MCN/LTS).
        mode: "refseg" (the library's rule) or "authors" (the Hu/RMI/RRN code's
            `re.split(r'(\W+)')`); see the module docstring.
        name: module name.

    Call args:
        strings: a scalar or `[B]` `tf.string` tensor (or Python str/bytes/list of them).

    Returns:
        int32 `[max_length]` for a scalar, `[B, max_length]` for a vector.

    Example:
        >>> tokenizer = Tokenizer(Vocabulary.build(["the man on the left"]), max_length=4)
        >>> tokenizer(tf.constant(["The man."])).numpy().tolist()
        [[0, 0, 4, 6]]

    Reference:
        the authors' `util/text_processing.py`; Hu et al. 2016, Sec. 3.1 (words as one-hot ids, front padding).
    """

    def __init__(
        self,
        vocabulary: Union[Vocabulary, Sequence[str], str, os.PathLike],
        max_length: int = 20,
        padding: str = "front",
        name: str = "tokenizer",
        mode: str = "refseg",
    ):
        super().__init__(name=name)
        _check_length_and_padding(max_length, padding)
        self.mode = check_tokenizer_mode(mode)
        self.vocabulary = as_vocabulary(vocabulary)
        self.max_length = int(max_length)
        self.padding = padding
        with self.name_scope:
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    keys=tf.constant(self.vocabulary.words, dtype=tf.string),
                    values=tf.range(len(self.vocabulary), dtype=tf.int64),
                ),
                default_value=tf.constant(UNK_ID, dtype=tf.int64),
                name="vocabulary",
            )
            tables = character_tables()
            self._lower_keys = tf.constant(tables["lowercase_keys"], name="lowercase_keys")
            self._lower_values = tf.constant(tables["lowercase_values"], name="lowercase_values")
            self._class_starts = tf.constant(
                tables[f"{self.mode}_class_starts"], name="class_range_starts"
            )
            self._class_values = tf.constant(
                tables[f"{self.mode}_class_values"], name="class_range_values"
            )
            self._control_starts = tf.constant(
                tables["control_range_starts"], name="control_ranges"
            )

    def __call__(self, strings) -> tf.Tensor:
        strings, is_scalar = _as_string_vector(strings)
        tokens = self._tokenize_vector(strings)
        ids = tf.cast(tokens.with_flat_values(self.table.lookup(tokens.flat_values)), tf.int32)
        ids = self._truncate_and_pad(ids)
        return ids[0] if is_scalar else ids

    def tokenize(self, strings) -> Union[tf.Tensor, tf.RaggedTensor]:
        """String tokens as `split_words`: a `[B, None]` RaggedTensor (1-D Tensor for a scalar)."""
        strings, is_scalar = _as_string_vector(strings)
        tokens = self._tokenize_vector(strings)
        return tokens[0] if is_scalar else tokens

    def _tokenize_vector(self, strings: tf.Tensor) -> tf.RaggedTensor:
        code_points = tf.strings.unicode_decode(
            strings, "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        code_points = tf.ragged.boolean_mask(
            code_points, code_points.with_flat_values(~self._is_control(code_points.flat_values))
        )
        if self.mode == "authors":
            return self._tokenize_authors(code_points)
        chars = self._lowercase(code_points.flat_values)
        classes = self._classify(chars)
        char_rows = code_points.value_rowids()

        previous_class = tf.concat([[-1], classes[:-1]], axis=0)
        previous_row = tf.concat([tf.constant([-1], tf.int64), char_rows[:-1]], axis=0)
        in_token = tf.not_equal(classes, SPACE)
        starts = in_token & (
            tf.not_equal(classes, previous_class) | tf.not_equal(char_rows, previous_row)
        )
        token_of_char = tf.cumsum(tf.cast(starts, tf.int64)) - 1
        num_tokens = tf.reduce_sum(tf.cast(starts, tf.int64))
        token_chars = tf.RaggedTensor.from_value_rowids(
            values=tf.boolean_mask(chars, in_token),
            value_rowids=tf.boolean_mask(token_of_char, in_token),
            nrows=num_tokens,
        )
        token_strings = tf.strings.unicode_encode(token_chars, "UTF-8")
        token_rows = tf.boolean_mask(char_rows, starts)
        num_rows = code_points.nrows()
        return _drop_final_period(token_strings, token_rows, num_rows)

    def _tokenize_authors(self, code_points: tf.RaggedTensor) -> tf.RaggedTensor:
        """`re.split(r'(\W+)', s.strip())`, whitespace-only pieces dropped, pieces lowercased."""
        chars = code_points.flat_values
        classes = self._classify(chars)
        char_rows = code_points.value_rowids()
        num_rows = code_points.nrows()
        # `strip()`: keep the characters between the first and the last non-space of each row.
        solid = tf.cast(tf.not_equal(classes, SPACE), tf.int64)
        row_starts = tf.gather(code_points.row_splits, char_rows)
        inclusive = tf.cumsum(solid)
        solid_before = inclusive - tf.gather(
            tf.concat([tf.constant([0], tf.int64), inclusive], 0), row_starts
        )
        row_solid = tf.math.unsorted_segment_sum(solid, char_rows, num_rows)
        solid_after = tf.gather(row_solid, char_rows) - solid_before + solid
        kept = (solid_before > 0) & (solid_after > 0)
        # Pieces: maximal runs of `\w` characters and maximal runs of the others.
        is_word = tf.equal(classes, WORD)
        previous_word = tf.concat([[False], is_word[:-1]], axis=0)
        previous_kept = tf.concat([[False], kept[:-1]], axis=0)
        previous_row = tf.concat([tf.constant([-1], tf.int64), char_rows[:-1]], axis=0)
        starts = kept & (
            tf.not_equal(is_word, previous_word)
            | tf.not_equal(char_rows, previous_row)
            | ~previous_kept
        )
        piece_of_char = tf.cumsum(tf.cast(starts, tf.int64)) - 1
        num_pieces = tf.reduce_sum(tf.cast(starts, tf.int64))
        kept_pieces = tf.boolean_mask(piece_of_char, kept)
        piece_solid = tf.math.unsorted_segment_max(
            tf.boolean_mask(solid, kept), kept_pieces, num_pieces
        )
        piece_chars = tf.RaggedTensor.from_value_rowids(
            values=self._lowercase(tf.boolean_mask(chars, kept)),
            value_rowids=kept_pieces,
            nrows=num_pieces,
        )
        keep_piece = piece_solid > 0
        token_strings = tf.boolean_mask(tf.strings.unicode_encode(piece_chars, "UTF-8"), keep_piece)
        token_rows = tf.boolean_mask(tf.boolean_mask(char_rows, starts), keep_piece)
        return _drop_final_period(token_strings, token_rows, num_rows)

    def _is_control(self, chars: tf.Tensor) -> tf.Tensor:
        # Even-numbered ranges of `control_range_starts` are control characters.
        index = tf.searchsorted(self._control_starts, chars, side="right", out_type=tf.int32)
        return tf.equal(index % 2, 1)

    def _lowercase(self, chars: tf.Tensor) -> tf.Tensor:
        position = tf.searchsorted(self._lower_keys, chars, side="left", out_type=tf.int32)
        position = tf.minimum(position, tf.size(self._lower_keys) - 1)
        found = tf.equal(tf.gather(self._lower_keys, position), chars)
        return tf.where(found, tf.gather(self._lower_values, position), chars)

    def _classify(self, chars: tf.Tensor) -> tf.Tensor:
        # Range i covers [starts[i], starts[i + 1]); starts[0] == 0 so the index is never -1.
        index = tf.searchsorted(self._class_starts, chars, side="right", out_type=tf.int32) - 1
        return tf.gather(self._class_values, index)

    def pad(self, ids: tf.RaggedTensor) -> tf.Tensor:
        """Whole word ids `[B, None]` (ragged; e.g. stored at conversion) -> int32
        `[B, max_length]`: the first `max_length` ids, padded as `padding` says; exactly what
        calling the tokenizer on the sentences gives."""
        return self._truncate_and_pad(tf.cast(ids, tf.int32))

    def _truncate_and_pad(self, ids: tf.RaggedTensor) -> tf.Tensor:
        ids = ids[:, : self.max_length]
        back_padded = ids.to_tensor(default_value=PAD_ID, shape=[None, self.max_length])
        if self.padding == "back":
            return back_padded
        lengths = ids.row_lengths(axis=1)
        source = tf.range(self.max_length, dtype=tf.int64)[tf.newaxis, :] - (
            self.max_length - lengths[:, tf.newaxis]
        )
        gathered = tf.gather(back_padded, tf.maximum(source, 0), batch_dims=1)
        return tf.where(source >= 0, gathered, PAD_ID)


def _drop_final_period(
    token_strings: tf.Tensor, token_rows: tf.Tensor, num_rows: tf.Tensor
) -> tf.RaggedTensor:
    tokens = tf.RaggedTensor.from_value_rowids(token_strings, token_rows, nrows=num_rows)
    last_of_row = tokens.row_limits() - 1
    position = tf.range(tf.size(token_strings, out_type=tf.int64), dtype=tf.int64)
    is_last = tf.equal(position, tf.gather(last_of_row, token_rows))
    keep = ~(is_last & tf.equal(token_strings, "."))
    return tf.RaggedTensor.from_value_rowids(
        values=tf.boolean_mask(token_strings, keep),
        value_rowids=tf.boolean_mask(token_rows, keep),
        nrows=num_rows,
    )


def _as_string_vector(strings):
    strings = tf.convert_to_tensor(strings, dtype=tf.string)
    rank = strings.shape.rank
    if rank == 0:
        return strings[tf.newaxis], True
    if rank == 1:
        return strings, False
    raise ValueError(
        f"Tokenizer expects a scalar or a [batch] string tensor; received shape {strings.shape}."
    )


def _check_length_and_padding(max_length: int, padding: str) -> None:
    if int(max_length) < 1:
        raise ValueError(f"max_length must be >= 1; received {max_length}.")
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}; received {padding!r}.")

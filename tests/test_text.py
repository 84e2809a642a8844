"""Tests of refseg_tf.text: vocabulary, tokenisation rules, in-graph Tokenizer, GloVe loader."""

import logging
import os
import unicodedata

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refseg_tf.text import (
    EOS_ID,
    GO_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    GloveFormatError,
    Tokenizer,
    Vocabulary,
    VocabularyError,
    as_vocabulary,
    char_class,
    encode_sentence,
    load_glove_embeddings,
    lower_char,
    split_words,
)
from refseg_tf.text import tables
from refseg_tf.text import tokenizer as tokenizer_module

EXAMPLE = "The man's LEFT arm, please."
EXAMPLE_WORDS = ("the", "man", "left", "arm", "'", ",", "please", "s")
# ids:            4      5      6       7      8    9    10        11


@pytest.fixture(scope="module")
def example_vocabulary():
    return Vocabulary(SPECIAL_TOKENS + EXAMPLE_WORDS)


# --------------------------------------------------------------------------- split_words


@pytest.mark.parametrize(
    "sentence, expected",
    [
        (EXAMPLE, ["the", "man", "'", "s", "left", "arm", ",", "please"]),
        ("man on the left.", ["man", "on", "the", "left"]),
        ("man on the left .", ["man", "on", "the", "left"]),
        ("left...", ["left", "..."]),  # only a final token equal to "." is dropped
        ("a . b.", ["a", ".", "b"]),
        ("a.)", ["a", ".)"]),
        ("", []),
        (" \t\n ", []),
        (".", []),
        ("x_1 2nd,(3)", ["x_1", "2nd", ",(", "3", ")"]),
        ("Café naïve", ["café", "naïve"]),
        # Decomposed (NFD) letters: combining marks are word characters and stay in the word.
        ("Cafe\u0301 nai\u0308ve", ["cafe\u0301", "nai\u0308ve"]),
        ("左边的人,穿红衣服。", ["左边的人", ",", "穿红衣服", "。"]),
        ("“Quoted” dog's", ["“", "quoted", "”", "dog", "'", "s"]),
        ("a\u00a0b\u3000c\u2028d\x85e\x1cf", ["a", "b", "c", "d", "e", "f"]),
        ("a\u200bb", ["a", "\u200b", "b"]),  # zero-width space is a format char, not space
        ("İSTANBUL", ["istanbul"]),  # per code point: U+0130 -> "i", no combining dot
        ("ΟΔΟΣ", ["οδοσ"]),  # no final-sigma context rule
        ("Ⅻ ½ ٣", ["ⅻ", "½", "٣"]),
        ("smile 😀😀!", ["smile", "😀😀!"]),
    ],
)
def test_split_words_examples(sentence, expected):
    assert split_words(sentence) == expected


def test_split_words_accepts_utf8_bytes_and_replaces_invalid_bytes():
    assert split_words("Café".encode("utf-8")) == ["café"]
    assert split_words(b"a\xffb") == ["a", "\ufffd", "b"]
    with pytest.raises(TypeError, match="str or bytes"):
        split_words(12)


def test_lower_char_and_char_class_rules():
    assert lower_char("İ") == "i"
    assert lower_char("Σ") == "σ"
    assert lower_char("ẞ") == "ß"
    assert lower_char("7") == "7"
    assert [char_class(c) for c in "a\u0301٣_ ,\x00"] == [1, 1, 1, 1, 0, 2, 2]


# --------------------------------------------------------------------------- encode_sentence


def test_encode_sentence_hand_written_ids(example_vocabulary):
    assert encode_sentence(EXAMPLE, example_vocabulary, max_length=10) == [
        PAD_ID, PAD_ID, 4, 5, 8, 11, 6, 7, 9, 10
    ]
    assert encode_sentence(EXAMPLE, example_vocabulary, max_length=10, padding="back") == [
        4, 5, 8, 11, 6, 7, 9, 10, PAD_ID, PAD_ID
    ]
    # Truncation keeps the first tokens; unknown words map to <unk>.
    assert encode_sentence("The zebra's arm", example_vocabulary, max_length=3) == [4, UNK_ID, 8]
    assert encode_sentence("", example_vocabulary, max_length=2) == [PAD_ID, PAD_ID]


def test_encode_sentence_rejects_bad_arguments(example_vocabulary):
    with pytest.raises(ValueError, match="padding"):
        encode_sentence(EXAMPLE, example_vocabulary, padding="left")
    with pytest.raises(ValueError, match="max_length"):
        encode_sentence(EXAMPLE, example_vocabulary, max_length=0)


# --------------------------------------------------------------------------- Vocabulary


def test_vocabulary_basic_api(example_vocabulary):
    vocab = example_vocabulary
    assert len(vocab) == 12
    assert vocab.words[:4] == SPECIAL_TOKENS
    assert (vocab.id_of("<pad>"), vocab.id_of("<go>"), vocab.id_of("<eos>")) == (
        PAD_ID, GO_ID, EOS_ID
    )
    assert vocab.id_of("arm") == 7 and vocab.word_to_id["arm"] == 7
    assert vocab.id_of("zebra") == UNK_ID
    assert vocab.word_of(7) == "arm"
    assert "arm" in vocab and "zebra" not in vocab
    with pytest.raises(IndexError):
        vocab.word_of(12)
    with pytest.raises(TypeError):
        vocab.word_to_id["zebra"] = 99


def test_vocabulary_build_orders_by_count_then_word():
    sentences = ["b a c.", "a b", "a d", "c"]
    vocab = Vocabulary.build(sentences)
    assert vocab.words == SPECIAL_TOKENS + ("a", "b", "c", "d")
    assert Vocabulary.build(list(reversed(sentences))) == vocab
    assert Vocabulary.build(sentences, min_count=2).words == SPECIAL_TOKENS + ("a", "b", "c")
    assert Vocabulary.build(sentences, max_size=6).words == SPECIAL_TOKENS + ("a", "b")
    assert Vocabulary.build([]).words == SPECIAL_TOKENS


def test_vocabulary_build_counts_split_words_tokens():
    vocab = Vocabulary.build(["The man's arm.", "the MAN, left."])
    # "." is dropped at the ends; "'" and "," are tokens of their own.
    assert vocab.words == SPECIAL_TOKENS + ("man", "the", "'", ",", "arm", "left", "s")


def test_vocabulary_build_rejects_bad_limits():
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(["a"], min_count=0)
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build(["a"], max_size=3)
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.from_counts({"a": 1}, max_size=2)


def test_vocabulary_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build(["Café naïve 東京 “x”", "café"])
    path = tmp_path / "sub" / "vocab.txt"
    vocab.save(path)
    assert path.read_bytes().decode("utf-8").split("\n")[:5] == list(SPECIAL_TOKENS) + ["café"]
    assert Vocabulary.load(path) == vocab
    assert as_vocabulary(str(path)) == vocab and as_vocabulary(path) == vocab
    # Overwrites atomically and leaves no temporary file behind.
    Vocabulary(SPECIAL_TOKENS + ("z",)).save(path)
    assert Vocabulary.load(path).words == SPECIAL_TOKENS + ("z",)
    assert os.listdir(path.parent) == ["vocab.txt"]


def test_vocabulary_save_load_through_tf_gfile():
    vocab = Vocabulary(SPECIAL_TOKENS + ("café", "東京"))
    path = "ram://refseg_tf_test_text/vocab.txt"
    vocab.save(path)
    assert Vocabulary.load(path) == vocab
    assert tf.io.gfile.listdir("ram://refseg_tf_test_text") == ["vocab.txt"]
    with pytest.raises(VocabularyError, match="ram://refseg_tf_test_text/missing.txt"):
        Vocabulary.load("ram://refseg_tf_test_text/missing.txt")


def test_vocabulary_save_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "vocab.txt"
    Vocabulary(SPECIAL_TOKENS + ("old",)).save(path)

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        Vocabulary(SPECIAL_TOKENS + ("new",)).save(path)
    monkeypatch.undo()
    assert Vocabulary.load(path).words == SPECIAL_TOKENS + ("old",)
    assert os.listdir(tmp_path) == ["vocab.txt"]


def test_vocabulary_load_tolerates_crlf_and_missing_final_newline(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"<pad>\r\n<go>\r\n<eos>\r\n<unk>\r\nman")
    assert Vocabulary.load(path).words == SPECIAL_TOKENS + ("man",)


@pytest.mark.parametrize(
    "content, message",
    [
        ("<pad>\n<go>\n<unk>\n<eos>\nman\n", r"line 3: expected the special token '<eos>'"),
        ("<pad>\n<go>\n<eos>\n<unk>\nman\nleft\nman\n", r"line 7: duplicate word 'man'.*line 5"),
        ("<pad>\n<go>\n<eos>\n<unk>\nman\n\nleft\n", r"line 6: empty word"),
        ("<pad>\n<go>\n<eos>\n<unk>\nman \n", r"line 5: the word 'man ' contains whitespace"),
        ("<pad>\n<go>\n", r"at least the special tokens"),
    ],
)
def test_vocabulary_load_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad_vocab.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(VocabularyError, match=message) as info:
        Vocabulary.load(path)
    assert "bad_vocab.txt" in str(info.value)


def test_vocabulary_load_invalid_utf8_and_missing_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"<pad>\n<go>\n<eos>\n<unk>\nca\xfft\n")
    with pytest.raises(VocabularyError, match=r"vocab.txt.*line 5: invalid UTF-8"):
        Vocabulary.load(path)
    with pytest.raises(VocabularyError, match="missing.txt"):
        Vocabulary.load(tmp_path / "missing.txt")


def test_vocabulary_constructor_validates():
    with pytest.raises(VocabularyError, match="index 0"):
        Vocabulary(("man",) + SPECIAL_TOKENS)
    with pytest.raises(VocabularyError, match="duplicate"):
        Vocabulary(SPECIAL_TOKENS + ("a", "a"))


# --------------------------------------------------------------------------- Tokenizer


@pytest.fixture(scope="module")
def example_tokenizer(example_vocabulary):
    return Tokenizer(example_vocabulary, max_length=10)


def test_tokenizer_hand_written_ids(example_tokenizer):
    expected = [PAD_ID, PAD_ID, 4, 5, 8, 11, 6, 7, 9, 10]
    scalar = example_tokenizer(tf.constant(EXAMPLE))
    assert scalar.dtype == tf.int32 and scalar.shape == (10,)
    assert scalar.numpy().tolist() == expected
    batch = example_tokenizer([EXAMPLE, "", "zebra arm"])
    assert batch.shape == (3, 10)
    assert batch.numpy().tolist() == [expected, [PAD_ID] * 10, [PAD_ID] * 8 + [UNK_ID, 7]]


def test_tokenizer_back_padding_and_truncation(example_vocabulary):
    tokenizer = Tokenizer(example_vocabulary, max_length=3, padding="back")
    ids = tokenizer(["The man's LEFT arm", "arm"]).numpy().tolist()
    assert ids == [[4, 5, 8], [7, PAD_ID, PAD_ID]]


def test_tokenizer_tokenize_returns_ragged_tokens(example_tokenizer):
    tokens = example_tokenizer.tokenize(["The man.", "", "a . ."])
    assert isinstance(tokens, tf.RaggedTensor)
    assert tokens.to_list() == [[b"the", b"man"], [], [b"a", b"."]]
    assert example_tokenizer.tokenize(EXAMPLE).numpy().tolist()[-1] == b"please"


def test_tokenizer_inside_tf_function_and_dataset_map(example_tokenizer):
    encode = tf.function(
        example_tokenizer, input_signature=[tf.TensorSpec([None], tf.string)]
    )
    ids = encode(tf.constant([EXAMPLE, "arm"]))
    assert ids.shape == (2, 10)
    assert ids.numpy()[0].tolist() == encode_sentence(EXAMPLE, example_tokenizer.vocabulary, 10)
    assert encode(tf.constant([], tf.string)).shape == (0, 10)

    dataset = tf.data.Dataset.from_tensor_slices([EXAMPLE, "left arm"]).map(example_tokenizer)
    assert dataset.element_spec.shape == (10,)
    rows = [row.tolist() for row in dataset.as_numpy_iterator()]
    assert rows[1] == [PAD_ID] * 8 + [6, 7]
    batched = tf.data.Dataset.from_tensor_slices([EXAMPLE, "left arm"]).batch(2)
    assert next(iter(batched.map(example_tokenizer))).numpy().tolist() == rows


def test_tokenizer_accepts_word_list_and_path(tmp_path, example_vocabulary):
    path = tmp_path / "vocab.txt"
    example_vocabulary.save(path)
    for source in (example_vocabulary, list(example_vocabulary.words), str(path), path):
        tokenizer = Tokenizer(source, max_length=4)
        assert tokenizer("left arm").numpy().tolist() == [0, 0, 6, 7]


def test_tokenizer_rejects_bad_input(example_vocabulary):
    with pytest.raises(ValueError, match="padding"):
        Tokenizer(example_vocabulary, padding="middle")
    with pytest.raises(ValueError, match="max_length"):
        Tokenizer(example_vocabulary, max_length=0)
    with pytest.raises(ValueError, match="scalar or a"):
        Tokenizer(example_vocabulary)(tf.constant([["a"]]))


def test_tokenizer_survives_saved_model(tmp_path, example_tokenizer):
    module = tf.Module()
    module.tokenizer = example_tokenizer
    module.encode = tf.function(
        lambda strings: module.tokenizer(strings),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    tf.saved_model.save(module, str(tmp_path / "saved"))
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    ids = restored.encode(tf.constant([EXAMPLE, "zebra"])).numpy().tolist()
    assert ids[0] == [PAD_ID, PAD_ID, 4, 5, 8, 11, 6, 7, 9, 10]
    assert ids[1] == [PAD_ID] * 9 + [UNK_ID]


def test_graph_character_tables_match_reference_for_every_code_point(example_tokenizer):
    code_points = np.array(
        [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000], dtype=np.int32
    )
    lowered = example_tokenizer._lowercase(tf.constant(code_points)).numpy()
    classes = example_tokenizer._classify(tf.constant(lowered)).numpy()
    expected_lowered = np.array([ord(lower_char(chr(cp))) for cp in code_points], np.int32)
    np.testing.assert_array_equal(lowered, expected_lowered)
    expected_classes = np.array([char_class(chr(cp)) for cp in expected_lowered], np.int32)
    np.testing.assert_array_equal(classes, expected_classes)


# --------------------------------------------------------------------------- table cache


@pytest.fixture
def table_cache(tmp_path, monkeypatch):
    """An empty cache directory and a forgotten in-process copy; counts the table builds."""
    built = tables.character_tables()  # this process's tables, to stand in for a rebuild
    monkeypatch.setenv(tables.CACHE_ENVIRONMENT_VARIABLE, str(tmp_path / "cache"))
    builds = []

    def counted_build():
        builds.append(1)
        return {name: np.array(table) for name, table in built.items()}

    monkeypatch.setattr(tables, "build_tables", counted_build)
    tables.clear_memory_cache()
    yield builds
    tables.clear_memory_cache()


def _assert_tables_equal(found, expected):
    assert set(found) == set(expected) == set(tables.TABLE_NAMES)
    for name in tables.TABLE_NAMES:
        np.testing.assert_array_equal(found[name], expected[name], err_msg=name)


def test_character_tables_are_built_once_then_read_from_the_cache_file(table_cache):
    first = tables.character_tables()
    path = tables.cache_path()
    assert table_cache == [1] and os.path.isfile(path)
    assert tables.character_tables() is first  # once per process
    tables.clear_memory_cache()
    second = tables.character_tables()  # a new process: read, not built
    assert table_cache == [1]
    _assert_tables_equal(second, first)
    assert not second["lowercase_keys"].flags.writeable
    # Another interpreter or Unicode version gets its own file.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tables.unicodedata, "unidata_version", "99.0.0")
        assert tables.cache_path() != path


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_fingerprint", "unsorted"])
def test_damaged_table_cache_is_rebuilt_and_rewritten(table_cache, caplog, damage):
    expected = tables.character_tables()
    path = tables.cache_path()
    contents = {name: np.array(expected[name]) for name in tables.TABLE_NAMES}
    if damage == "truncate":
        with open(path, "r+b") as stream:
            stream.truncate(os.path.getsize(path) // 2)
    elif damage == "garbage":
        with open(path, "wb") as stream:
            stream.write(b"not a table file")
    elif damage == "other_fingerprint":
        np.savez(path, fingerprint=np.array("0" * 32), **contents)
    else:
        contents["refseg_class_starts"] = contents["refseg_class_starts"][::-1].copy()
        with open(path, "wb") as stream:
            np.savez(stream, fingerprint=np.array(tables.fingerprint()), **contents)
    tables.clear_memory_cache()
    with caplog.at_level(logging.WARNING, logger=tables.__name__):
        rebuilt = tables.character_tables()
    assert path in caplog.text and "rebuilding" in caplog.text
    assert table_cache == [1, 1]
    _assert_tables_equal(rebuilt, expected)
    tables.clear_memory_cache()
    _assert_tables_equal(tables.character_tables(), expected)  # the rewritten file is valid
    assert table_cache == [1, 1]


def test_unwritable_or_disabled_table_cache_still_gives_the_tables(table_cache, monkeypatch,
                                                                   tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(tables.CACHE_ENVIRONMENT_VARIABLE, str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger=tables.__name__):
        assert set(tables.character_tables()) == set(tables.TABLE_NAMES)
    assert "Cannot write the tokenizer table cache" in caplog.text
    monkeypatch.setenv(tables.CACHE_ENVIRONMENT_VARIABLE, "")
    tables.clear_memory_cache()
    assert tables.cache_path() is None and set(tables.character_tables()) == set(tables.TABLE_NAMES)
    assert table_cache == [1, 1]


def test_lazy_translation_tables_equal_the_rules_on_every_script():
    """The Python reference fills its `str.translate` tables per character it meets."""
    from refseg_tf.text import rules

    # Every code point below U+3000 (controls, cased scripts) and every 11th above, lone
    # surrogates included (kept as they are).
    code_points = sorted({*range(0x3000), *range(0x3000, 0x110000, 11), 0x10FFFF})
    text = "".join(map(chr, code_points))
    lowered = text.translate(rules._lowercase_translation())
    assert lowered == "".join(lower_char(char) for char in text)
    stripped = rules.strip_control_characters(text)
    assert stripped == "".join(char for char in text if not rules.is_control_char(char))
    # The 65 Cc characters but the 10 that are whitespace (\t-\r, \x1c-\x1f, \x85).
    assert len(text) - len(stripped) == 55


# --------------------------------------------------------------------------- property tests

# Characters that exercise the rule's corners, mixed into otherwise arbitrary Unicode text:
# every kind of whitespace, "." (final-token rule), case mappings with no 1:1 full form,
# combining marks, connector punctuation, number categories, format and control characters.
_TRICKY_CHARS = (
    list("aZq09_.,'\"!?-()") + list(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000")
    + list("\u2009\u200a\u2028\u2029\u202f\u205f\u3000\u180e\u200b\u200d\ufeff\x00")
    + list("İIıΣσςẞßǅǄﬀÅåK\u0130\u0345\u0301\u0308\u20dd")
    + list("é東京“”‿＿Ⅻⅻ½٣²\ufffd\ufffe\uffff\U0010ffff\U0001f600")
)
# Lone surrogates (category Cs) cannot be encoded as UTF-8, so they cannot reach the Tokenizer
# as text; the bytes strategy below covers encoded surrogates (decoded to U+FFFD on both sides).
_CHARS = st.one_of(
    st.sampled_from(_TRICKY_CHARS),
    st.characters(exclude_categories=("Cs",)),
)
_SENTENCES = st.text(_CHARS, max_size=30)
_RAW_BYTES = st.lists(
    st.one_of(st.binary(max_size=4), _SENTENCES.map(lambda text: text.encode("utf-8"))),
    max_size=5,
).map(b"".join)

_PROPERTY_VOCABULARY = Vocabulary.build(
    ["the man's left arm, please. Café cafe\u0301 naïve 東京 “x” ... İ ΟΔΟΣ 2nd x_1 😀"]
    + [" ".join(_TRICKY_CHARS)]
)


@pytest.fixture(scope="module")
def property_encoders():
    """Graph functions with a [None] string signature, front and back padding."""
    front = Tokenizer(_PROPERTY_VOCABULARY, max_length=6, padding="front")
    back = Tokenizer(_PROPERTY_VOCABULARY, max_length=6, padding="back")
    signature = [tf.TensorSpec([None], tf.string)]
    return {
        "tokenize": tf.function(front.tokenize, input_signature=signature),
        "front": tf.function(front, input_signature=signature),
        "back": tf.function(back, input_signature=signature),
    }


def _check_batch_against_reference(encoders, sentences):
    batch = tf.constant(sentences, dtype=tf.string, shape=[len(sentences)])
    tokens = encoders["tokenize"](batch).to_list()
    front = encoders["front"](batch).numpy().tolist()
    back = encoders["back"](batch).numpy().tolist()
    for index, sentence in enumerate(sentences):
        expected_tokens = [token.encode("utf-8") for token in split_words(sentence)]
        assert tokens[index] == expected_tokens, repr(sentence)
        assert front[index] == encode_sentence(sentence, _PROPERTY_VOCABULARY, 6, "front")
        assert back[index] == encode_sentence(sentence, _PROPERTY_VOCABULARY, 6, "back")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sentences=st.lists(_SENTENCES, min_size=1, max_size=4))
def test_tokenizer_matches_reference_on_unicode_text(property_encoders, sentences):
    _check_batch_against_reference(property_encoders, sentences)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sentences=st.lists(_RAW_BYTES, min_size=1, max_size=4))
def test_tokenizer_matches_reference_on_arbitrary_bytes(property_encoders, sentences):
    _check_batch_against_reference(property_encoders, sentences)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sentences=st.lists(_SENTENCES, min_size=2, max_size=5))
def test_tokenizer_batch_equals_single_runs(property_encoders, sentences):
    batch = property_encoders["front"](tf.constant(sentences)).numpy()
    singles = [property_encoders["front"](tf.constant([s])).numpy()[0] for s in sentences]
    np.testing.assert_array_equal(batch, np.stack(singles))


def test_reference_rule_is_not_ascii_only():
    # Guards the property test's meaning: non-ASCII letters, marks and numbers are word chars.
    for char in "é\u0301東٣ⅻ":
        assert unicodedata.category(char)[0] in "LMN"
        assert char_class(char) == tokenizer_module.WORD


# --------------------------------------------------------------------------- GloVe


def _write_glove(path, lines, newline="\n"):
    path.write_bytes(newline.join(lines).encode("utf-8") + newline.encode())
    return path


@pytest.fixture
def glove_vocabulary():
    return Vocabulary(SPECIAL_TOKENS + ("man", "café", "left", "zebra"))


def test_load_glove_embeddings_found_missing_and_pad(tmp_path, glove_vocabulary, caplog):
    path = _write_glove(
        tmp_path / "glove.txt",
        [
            "the 0.1 0.2 0.3",
            "<pad> 9 9 9",
            "man 1 2 3",
            "café -1.5 0 2.5e-1",
            "man 7 7 7",  # a later duplicate is ignored
            ". . . 4 5 6",  # a word containing spaces (as in GloVe 840B)
        ],
    )
    with caplog.at_level(logging.INFO, logger="refseg_tf.text.glove"):
        vectors = load_glove_embeddings(path, glove_vocabulary, seed=3)
    assert vectors.shape == (8, 3) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[PAD_ID], [0, 0, 0])
    np.testing.assert_allclose(vectors[4], [1, 2, 3])
    np.testing.assert_allclose(vectors[5], [-1.5, 0, 0.25])
    missing = vectors[[1, 2, 3, 6, 7]]
    assert np.all(np.abs(missing) < 1.0) and np.all(missing != 0)
    assert len({tuple(row) for row in missing}) == 5
    assert "found 2 of 8" in caplog.text

    again = load_glove_embeddings(path, glove_vocabulary, seed=3)
    np.testing.assert_array_equal(vectors, again)
    other_seed = load_glove_embeddings(path, glove_vocabulary, seed=4)
    assert not np.allclose(vectors[6], other_seed[6])
    np.testing.assert_array_equal(vectors[4], other_seed[4])


def test_load_glove_embeddings_words_with_spaces_header_and_crlf(tmp_path):
    vocab = Vocabulary(SPECIAL_TOKENS + ("man",))
    path = _write_glove(tmp_path / "g.txt", ["2 2", ". . 1 2", "man 3 4"], newline="\r\n")
    vectors = load_glove_embeddings(path, vocab, dim=2)
    np.testing.assert_allclose(vectors[4], [3, 4])
    # The word is everything before the last `dim` fields: ". ." is not ".".
    dotted = Vocabulary(SPECIAL_TOKENS + (".",))
    path = _write_glove(tmp_path / "s.txt", ["x 0 0", ". . 1 2", ". 5 6"])
    np.testing.assert_allclose(load_glove_embeddings(path, dotted)[4], [5, 6])


@pytest.mark.parametrize(
    "lines, dim, message",
    [
        (["man 1 2 3", "left 1 2"], None, r"g.txt', line 2: expected a word and 3 floats"),
        (["man 1 2 3", "left 1 x 3"], None, r"g.txt', line 2: not a number"),
        (["man 1 2 3", "left 1 nan 3"], None, r"g.txt', line 2: non-finite"),
        (["man 1 2 3"], 4, r"g.txt', line 1: expected a word and 4 floats"),
        (["man"], None, r"g.txt', line 1: expected a word and floats"),
        ([""], None, r"g.txt', line 1"),
    ],
)
def test_load_glove_embeddings_malformed_lines(tmp_path, glove_vocabulary, lines, dim, message):
    path = _write_glove(tmp_path / "g.txt", lines)
    with pytest.raises(GloveFormatError, match=message):
        load_glove_embeddings(path, glove_vocabulary, dim=dim)


def test_load_glove_embeddings_empty_file_and_vocab_sources(tmp_path, glove_vocabulary):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(GloveFormatError, match="empty.txt.*no vectors"):
        load_glove_embeddings(empty, glove_vocabulary)
    path = _write_glove(tmp_path / "g.txt", ["man 1 2"])
    vocab_path = tmp_path / "vocab.txt"
    glove_vocabulary.save(vocab_path)
    from_path = load_glove_embeddings(path, vocab_path)
    from_list = load_glove_embeddings(path, list(glove_vocabulary.words))
    np.testing.assert_array_equal(from_path, from_list)
    np.testing.assert_allclose(from_path[4], [1, 2])


# --------------------------------------------------------------------------- authors' mode
# A reference written from the authors' `util/text_processing.py` (Hu / RMI / RRN code), with
# the one addition of issue 7 (control characters deleted first).
import re  # noqa: E402

_AUTHORS_SPLIT = re.compile(r"(\W+)")


def _authors_reference_words(sentence):
    sentence = "".join(
        c for c in sentence if not (unicodedata.category(c) == "Cc" and not c.isspace())
    )
    words = _AUTHORS_SPLIT.split(sentence.strip())
    words = [w.lower() for w in words if len(w.strip()) > 0]
    if words and words[-1] == ".":  # the authors' code indexes words[-1] unguarded
        words = words[:-1]
    return words


def _authors_reference_ids(sentence, words, T):
    vocab_dict = {words[n]: n for n in range(len(words))}
    ids = [vocab_dict.get(w, vocab_dict["<unk>"]) for w in _authors_reference_words(sentence)]
    ids = ids[:T]
    return [vocab_dict["<pad>"]] * (T - len(ids)) + ids


# "İ" and "Σ" are left out: per code point lowercasing differs from `str.lower()` there
# (documented in refseg_tf.text.tokenizer); everything else must agree exactly.
_AUTHORS_POOL = (
    ["the", "Man", "LEFT", "dog's", "x_1", "2nd", "Café", "nai\u0308ve", "東京", "ßtraße",
     "Ω", "٣", "½", "Ⅻ", "😀", "e\u0301", "ǅ", "ﬀ", "K"]
    + [" ", " ", " ", ", ", " .", ".", "...", "'", "?!", " - ", "(", ")", "\t", "\n", "\xa0",
       "\u2003", "“", "”", "\x00", "\x07", "\x1b", "\u200b", "\ufeff", "\x85", "\u2028", ". ."]
)


def _generated_sentences(count=200, seed=0):
    rng = np.random.default_rng(seed)
    sentences = ["The man's LEFT arm, please .", "dog. .", "  , hi there.", ".", "\x00\x07",
                 "?!", "a\x00b", "Left, man."]
    while len(sentences) < count:
        pieces = rng.choice(len(_AUTHORS_POOL), size=int(rng.integers(0, 12)))
        sentences.append("".join(_AUTHORS_POOL[i] for i in pieces))
    return sentences


@pytest.fixture(scope="module")
def authors_words():
    """A vocabulary in the authors' file layout, with a token holding a space (". .")."""
    return list(SPECIAL_TOKENS) + ["the", "man", "left", "'", "s", "dog", ". .", "x_1", "東京",
                                   "...", "café", "?!"]


def test_authors_mode_examples():
    assert split_words("The man's LEFT arm, please .", mode="authors") == [
        "the", "man", "'", "s", "left", "arm", ", ", "please", " ."
    ]
    assert split_words("Left, man.", mode="authors") == ["left", ", ", "man"]
    assert split_words("dog. .", mode="authors") == ["dog", ". ."]
    assert split_words("\x00?!\x07", mode="authors") == ["?!"]
    assert split_words(" \x00 ", mode="authors") == []
    with pytest.raises(ValueError, match="`tokenizer` must be one of"):
        split_words("a", mode="hu")


def test_authors_mode_equals_re_split_reference_on_200_sentences(authors_words):
    sentences = _generated_sentences()
    vocabulary = Vocabulary(authors_words)
    tokenizer = Tokenizer(vocabulary, max_length=6, mode="authors")
    graph = tf.function(tokenizer, input_signature=[tf.TensorSpec([None], tf.string)])
    graph_tokens = tokenizer.tokenize(tf.constant(sentences)).to_list()
    graph_ids = graph(tf.constant(sentences)).numpy().tolist()
    for index, sentence in enumerate(sentences):
        expected = _authors_reference_words(sentence)
        assert split_words(sentence, mode="authors") == expected, repr(sentence)
        assert graph_tokens[index] == [w.encode("utf-8") for w in expected], repr(sentence)
        reference_ids = _authors_reference_ids(sentence, authors_words, 6)
        assert graph_ids[index] == reference_ids, repr(sentence)
        assert encode_sentence(sentence, vocabulary, 6, "front", mode="authors") == reference_ids
    # The generated text exercises separators with spaces and the kept ". ." token.
    assert any(", " in _authors_reference_words(s) for s in sentences)
    assert any(". ." in _authors_reference_words(s) for s in sentences)


def test_authors_mode_differs_from_str_lower_only_for_dotted_i_and_final_sigma():
    assert split_words("İ", mode="authors") == ["i"] != [w.lower() for w in ["İ"]]
    assert split_words("ΟΔΟΣ", mode="authors") == ["οδοσ"] != ["ΟΔΟΣ".lower()]


def test_authors_graph_class_table_matches_python_re_for_every_code_point():
    code_points = np.array(
        [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000], dtype=np.int32
    )
    tokenizer = Tokenizer(Vocabulary(SPECIAL_TOKENS), mode="authors")
    classes = tokenizer._classify(tf.constant(code_points)).numpy()
    is_word = np.array([_AUTHORS_SPLIT.match(chr(cp)) is None for cp in code_points])
    np.testing.assert_array_equal(classes == tokenizer_module.WORD, is_word)
    controls = tokenizer._is_control(tf.constant(code_points)).numpy()
    expected = np.array(
        [unicodedata.category(chr(cp)) == "Cc" and not chr(cp).isspace() for cp in code_points]
    )
    np.testing.assert_array_equal(controls, expected)


@pytest.mark.parametrize("mode", ["refseg", "authors"])
def test_control_characters_never_become_tokens_or_words(mode):
    sentences = ["\x00\x01", "the\x1b[31m dog\x7f", "?!\x00"]
    vocabulary = Vocabulary.build(sentences, tokenizer=mode)
    assert not any(
        any(unicodedata.category(c) == "Cc" for c in word) for word in vocabulary.words
    )
    assert split_words("\x00\x01", mode) == []
    tokens = Tokenizer(vocabulary, mode=mode).tokenize(tf.constant(sentences)).to_list()
    assert tokens[0] == [] and tokens == [
        [w.encode() for w in split_words(s, mode)] for s in sentences
    ]


def test_authors_vocabulary_build_leaves_out_tokens_with_outer_spaces():
    vocabulary = Vocabulary.build(["left, man .", "dog. ."], tokenizer="authors")
    assert ", " not in vocabulary and " ." not in vocabulary
    assert ". ." in vocabulary and "left" in vocabulary
    ids = Tokenizer(vocabulary, max_length=4, mode="authors")(tf.constant("left, man .")).numpy()
    assert ids.tolist() == [vocabulary.id_of("left"), UNK_ID, vocabulary.id_of("man"), UNK_ID]


def test_vocabulary_with_inner_space_round_trips_and_line_breaks_are_refused(tmp_path):
    path = tmp_path / "vocabulary_Gref.txt"
    path.write_text("<pad>\n<go>\n<eos>\n<unk>\n. .\nman\n", encoding="utf-8")
    vocabulary = Vocabulary.load(path)
    assert vocabulary.id_of(". .") == 4
    with pytest.raises(VocabularyError, match="line break"):
        Vocabulary(SPECIAL_TOKENS + ("a\nb",))


def test_tokenizer_mode_travels_with_the_config():
    """`data.tokenizer` of a model dir's config.json decides how Predictor tokenises."""
    from refseg_tf.inference import Predictor
    from refseg_tf.preprocessing import ReferringPreprocessor
    from refseg_tf.training.config import base_config, validate_config

    config = base_config()
    settings = ReferringPreprocessor.config_from_training_config(config)
    assert config.data.tokenizer == "refseg" and settings["tokenizer"] == "refseg"
    config.data.tokenizer = "authors"
    vocabulary = Vocabulary.build(["left, man ."], tokenizer="authors")
    predictor = Predictor(model=None, config=config, vocabulary=vocabulary)
    assert predictor.tokenizer.mode == "authors"
    expected = encode_sentence("Left, man .", vocabulary, 20, "front", mode="authors")
    assert predictor.tokenizer(tf.constant("Left, man .")).numpy().tolist() == expected
    config.data.tokenizer = "hu"
    with pytest.raises(ValueError, match="`data.tokenizer` must be one of"):
        validate_config(config)

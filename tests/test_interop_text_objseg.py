"""Hu et al.'s text_objseg checkpoints imported into LSTMCNN give the authors' numbers.

Each test builds the authors' graph in tf.compat.v1 (tests/tf1_reference.py, written from their
published variable names, shapes and equations), saves it with random weights as a TF1
checkpoint (V1 single file as the released `.tfmodel`s, or V2; TF 1.0 or later LSTM names),
imports it with `refseg_tf.interop` and compares the logits on the same image and sentence.
The tolerance (1e-4 max abs) absorbs float32 summation-order differences (oneDNN, a different
convolution algorithm), never a wrong weight.
"""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from refseg_tf import interop
from refseg_tf.backbones import TINY_PRESETS
from refseg_tf.data.transforms import VGG_RGB_MEAN
from refseg_tf.models.recipes import TINY_TEXT
from refseg_tf.text import Vocabulary, encode_sentence
from tests import tf1_reference

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4  # float32 summation order (oneDNN); see the module docstring
MAX_LENGTH = 20
SENTENCE = "The man on the LEFT, in red."
WORDS = ("the", "man", "on", "left", ",", "in", "red", "dog", "sky", "tree")

TINY_VGG = TINY_PRESETS["vgg16_fcn"]
TINY = dict(
    widths=TINY_VGG["widths"], depths=(2, 2, 3, 3, 3), fc_units=TINY_VGG["fc_units"],
    num_classes=TINY_VGG["num_classes"], embed_dim=TINY_TEXT["embedding_dim"],
    lstm_dim=TINY_TEXT["text_units"], mlp_dim=8, image_size=64,
)
PAPER = dict(
    widths=(64, 128, 256, 512, 512), depths=(2, 2, 3, 3, 3), fc_units=4096, num_classes=1000,
    embed_dim=1000, lstm_dim=1000, mlp_dim=500, image_size=512,
)


def hu_word_ids(sentence, words, max_length):
    """Hu's `preprocess_sentence` (text_objseg util/text_processing.py), from its description:
    split on `(\\W+)`, drop blanks, lower-case, drop a final ".", unknown -> <unk>, keep the
    first T, pad at the FRONT with <pad>."""
    vocabulary = {word: index for index, word in enumerate(words)}
    tokens = [t.lower() for t in re.split(r"(\W+)", sentence.strip()) if t.strip()]
    if tokens[-1] == ".":
        tokens = tokens[:-1]
    ids = [vocabulary.get(t, vocabulary["<unk>"]) for t in tokens][:max_length]
    return [vocabulary["<pad>"]] * (max_length - len(ids)) + ids


def write_vocabulary(path, size):
    words = ["<pad>", "<go>", "<eos>", "<unk>", *WORDS]
    words += [f"word{i}" for i in range(size - len(words))]
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return words


def make_checkpoint(directory, dims, *, high_res, naming="tf1.0", version=1, momentum=True,
                    vocabulary_size=40, seed=0):
    """Builds Hu's graph, saves it; returns (checkpoint, vocabulary, image, word_ids, scores)."""
    vocabulary = directory / "vocabulary_referit.txt"
    words = write_vocabulary(vocabulary, vocabulary_size)
    word_ids = np.asarray(hu_word_ids(SENTENCE, words, MAX_LENGTH), np.int32)
    assert 0 < int(np.sum(word_ids != 0)) < MAX_LENGTH  # a sentence shorter than T
    rng = np.random.default_rng(seed)
    size = dims["image_size"]
    pixels = rng.integers(0, 256, size=(1, size, size, 3)).astype(np.float32)
    image = pixels - np.asarray(VGG_RGB_MEAN, np.float32)  # vgg_net.channel_mean, RGB
    graph = tf.Graph()
    with graph.as_default():
        text = tf.compat.v1.placeholder(tf.int32, [MAX_LENGTH, 1])
        picture = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3])
        scores = tf1_reference.hu_text_objseg(
            rng, text, picture, vocabulary_size=vocabulary_size, embed_dim=dims["embed_dim"],
            lstm_dim=dims["lstm_dim"], mlp_dim=dims["mlp_dim"], widths=dims["widths"],
            depths=dims["depths"], fc_units=dims["fc_units"], num_classes=dims["num_classes"],
            high_res=high_res, naming=naming,
        )
        if momentum:
            tf1_reference.add_momentum_slots(rng)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            values = session.run(scores, {text: word_ids[:, None], picture: image})
            stage = "highres" if high_res else "lowres"
            checkpoint = tf1_reference.save(
                session, str(directory / f"referit_fc8_seg_{stage}_iter_1.tfmodel"), version
            )
    return checkpoint, str(vocabulary), image, word_ids, values


def experiment_config(high_res, dims, tiny):
    config = interop.load_experiment_config(
        os.path.join(REPO_ROOT, "experiments", f"lstm_cnn_{'high' if high_res else 'low'}_referit.py")
    )
    config.data.image_size = dims["image_size"]
    if tiny:
        config.model.size = "tiny"
        config.model.classifier_units = dims["mlp_dim"]
    return config


def check_equal(tmp_path, dims, tiny, high_res, naming, version):
    checkpoint, vocabulary, image, word_ids, expected = make_checkpoint(
        tmp_path, dims, high_res=high_res, naming=naming, version=version,
        vocabulary_size=40 if tiny else 8803,
    )
    model, config, report = interop.build_imported_model(
        "text_objseg", checkpoint, vocabulary, experiment_config(high_res, dims, tiny)
    )
    assert report["ignored"] > 0  # the Momentum slots and global_step were skipped
    assert config.data.normalization == "vgg_rgb" and config.data.tokenizer == "authors"
    logits = model({"image": image, "word_ids": word_ids[None]}, training=False)
    logits = np.asarray(logits)
    assert logits.shape == expected.shape
    assert np.max(np.abs(logits - expected)) < TOLERANCE, np.max(np.abs(logits - expected))
    assert np.std(expected) > 1e-3  # a real signal, not constant scores
    return model


# Default run: one tiny variant of each stage, together covering both file formats (V1 as the
# released .tfmodel files, V2) and both LSTM namings; the other two combinations are slow.
@pytest.mark.parametrize(
    "high_res,naming,version",
    [
        (False, "tf1.0", 1),
        (True, "tf1.x", 2),
        pytest.param(True, "tf1.0", 1, marks=pytest.mark.slow),
        pytest.param(False, "tf1.x", 2, marks=pytest.mark.slow),
    ],
)
def test_tiny_hu_checkpoint_gives_the_tf1_graph_logits(tmp_path, high_res, naming, version):
    check_equal(tmp_path, TINY, True, high_res, naming, version)


@pytest.mark.slow
@pytest.mark.parametrize("high_res,naming,version", [(False, "tf1.0", 1), (True, "tf1.0", 1),
                                                     (True, "tf1.x", 2)])
def test_paper_size_hu_checkpoint_gives_the_tf1_graph_logits(tmp_path, high_res, naming, version):
    check_equal(tmp_path, PAPER, False, high_res, naming, version)


def test_authors_tokenizer_gives_hu_word_ids(tmp_path):
    """The imported model dir tokenises as Hu's preprocess_sentence (front <pad>, <unk>)."""
    words = write_vocabulary(tmp_path / "v.txt", 40)
    vocabulary = Vocabulary.load(str(tmp_path / "v.txt"))
    for sentence in (SENTENCE, "a zebra on the left .", "Tree!"):
        ours = encode_sentence(sentence, vocabulary, MAX_LENGTH, padding="front", mode="authors")
        assert list(ours) == hu_word_ids(sentence, words, MAX_LENGTH), sentence


def test_lstm_conversion_round_trip_and_forget_bias():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(3 + 2, 8)).astype(np.float32)
    bias = rng.normal(size=(8,)).astype(np.float32)
    kernel, recurrent, keras_bias = interop.tf1_lstm_to_keras(matrix, bias, 3, forget_bias=1.0)
    # TF1 block f (columns 4..5) is Keras block 1 (columns 2..3), with the forget bias added.
    np.testing.assert_array_equal(kernel[:, 2:4], matrix[:3, 4:6])
    np.testing.assert_allclose(keras_bias[2:4], bias[4:6] + 1.0)
    back_matrix, back_bias = interop.keras_lstm_to_tf1(kernel, recurrent, keras_bias, 1.0)
    np.testing.assert_allclose(back_matrix, matrix)
    np.testing.assert_allclose(back_bias, bias, atol=1e-6)  # +1 then -1 rounds in float32
    with pytest.raises(ValueError, match="D_in = 4"):
        interop.tf1_lstm_to_keras(matrix, bias, 4)

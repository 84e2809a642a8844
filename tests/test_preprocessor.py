"""`ReferringPreprocessor`: its config and asset round trip, and one definition of the inputs.

The last test feeds the same image and sentence through the tf.data pipeline, `Predictor`,
the evaluation dataset and the export's serving graph and asserts the same network inputs.
"""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from refseg_tf.data import schema
from refseg_tf.preprocessing import PREPROCESSOR_FILENAME, ReferringPreprocessor
from refseg_tf.text import Vocabulary, encode_sentence

SENTENCE = "The red ball, left."
WORDS = ["the", "red", "ball", "left", "of", "box", ","]
# Every setting away from its default, so a path that ignores one of them differs.
SETTINGS = dict(
    image_size=40,
    max_length=7,
    text_padding="back",
    resize_method="bicubic",
    pad_value="grey",
    normalization="unit",
    tokenizer="authors",
    blind_expression="",
    scoring_rule="resize_probability",
    threshold=0.4,
)


def _vocabulary():
    return Vocabulary(["<pad>", "<go>", "<eos>", "<unk>"] + WORDS)


def _training_config(**data):
    from refseg_tf.training.config import base_config

    config = base_config()
    for key, value in SETTINGS.items():
        if key == "scoring_rule":
            config.eval.scoring_rule = value
        elif key == "threshold":
            config.eval.threshold = value
        else:
            config.data[key] = value
    for key, value in data.items():
        config.data[key] = value
    return config


def test_config_round_trip_and_vocabulary_asset(tmp_path):
    preprocessor = ReferringPreprocessor(_vocabulary(), **SETTINGS)
    config = preprocessor.get_config()
    assert config == SETTINGS
    assert json.loads(json.dumps(config)) == config
    again = ReferringPreprocessor.from_config(config, _vocabulary())
    assert again.get_config() == config and again.vocabulary == preprocessor.vocabulary

    path = preprocessor.save(str(tmp_path))
    assert os.path.basename(path) == PREPROCESSOR_FILENAME
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    assert document["config"] == SETTINGS and document["assets"] == {"vocabulary": "vocab.txt"}
    assert Vocabulary.load(str(tmp_path / "vocab.txt")) == _vocabulary()
    loaded = ReferringPreprocessor.load(str(tmp_path))
    assert loaded.get_config() == SETTINGS and loaded.vocabulary == _vocabulary()
    np.testing.assert_array_equal(
        loaded.tokenize([SENTENCE]).numpy(), preprocessor.tokenize([SENTENCE]).numpy()
    )


def test_save_keeps_an_equal_vocabulary_file_byte_for_byte(tmp_path):
    """`refseg-train` compares vocab.txt bytes when resuming: saving must not rewrite it."""
    original = ("\r\n".join(_vocabulary().words) + "\r\n").encode("utf-8")
    (tmp_path / "vocab.txt").write_bytes(original)
    ReferringPreprocessor(_vocabulary(), **SETTINGS).save(str(tmp_path))
    assert (tmp_path / "vocab.txt").read_bytes() == original
    other = Vocabulary(list(_vocabulary().words) + ["green"])
    ReferringPreprocessor(other, **SETTINGS).save(str(tmp_path))
    assert Vocabulary.load(str(tmp_path / "vocab.txt")) == other


def test_from_training_config_and_model_dir(tmp_path):
    from refseg_tf.training import config as config_lib

    config = _training_config()
    preprocessor = ReferringPreprocessor.from_config(config, _vocabulary())
    assert preprocessor.get_config() == SETTINGS
    # A model directory written before preprocessor.json: config.json + vocab.txt.
    config_lib.save_config(config, str(tmp_path))
    _vocabulary().save(str(tmp_path / "vocab.txt"))
    assert ReferringPreprocessor.from_model_dir(str(tmp_path)).get_config() == SETTINGS
    # preprocessor.json, when present, is what the directory's preprocessing is.
    ReferringPreprocessor(_vocabulary(), **dict(SETTINGS, image_size=24)).save(str(tmp_path))
    assert ReferringPreprocessor.from_model_dir(str(tmp_path)).image_size == 24
    # eval.threshold < 0: the model's own threshold, resolved from `model.threshold` when the
    # preprocessor is built (no 0.5 fallback later).
    config.eval.threshold = -1.0
    config.model.threshold = 0.25
    own = ReferringPreprocessor.from_config(config, _vocabulary())
    assert own.threshold == 0.25 and own.threshold_for(None) == 0.25


def test_lts_threshold_reaches_the_saved_preprocessor_and_its_scores(tmp_path):
    """LTS scores at 0.25: the experiment's threshold survives preprocessor.json and `score`."""
    from refseg_tf.training import experiments

    config = experiments.lts("refcoco")
    assert config.eval.threshold < 0 and config.model.threshold == 0.25
    ReferringPreprocessor.from_config(config, _vocabulary()).save(str(tmp_path))
    loaded = ReferringPreprocessor.load(str(tmp_path))
    assert loaded.threshold == 0.25
    # A logit between logit(0.25) and 0 is foreground at 0.25, background at 0.5.
    size = loaded.image_size
    logits = np.full((1, size // 8, size // 8, 1), -0.5, np.float32)  # p = 0.38
    window, original = [[0, 0, size, size]], [[size, size]]
    assert loaded.score(logits, window, original)[0].all()
    assert not loaded.score(logits, window, original, threshold=0.5)[0].any()


def test_a_preprocessor_without_a_threshold_refuses_to_guess_one():
    preprocessor = ReferringPreprocessor(_vocabulary(), **dict(SETTINGS, threshold=None))
    assert preprocessor.threshold_for(type("Model", (), {"threshold": 0.3})()) == 0.3
    with pytest.raises(ValueError, match="no threshold"):
        preprocessor.score(np.zeros((1, 5, 5, 1), np.float32), [[0, 0, 40, 40]], [[40, 40]])


def test_text_blind_control_and_bad_settings(tmp_path):
    blind = ReferringPreprocessor(_vocabulary(), **dict(SETTINGS, blind_expression="the ball"))
    expected = encode_sentence("the ball", _vocabulary(), 7, "back", mode="authors")
    np.testing.assert_array_equal(blind.tokenize(["a", "b c"]).numpy(), [expected, expected])
    np.testing.assert_array_equal(blind.tokenize("a").numpy(), expected)
    with pytest.raises(ValueError, match="`vocabulary` must be"):
        ReferringPreprocessor(None)
    with pytest.raises(ValueError, match="`normalization` must be one of"):
        ReferringPreprocessor(_vocabulary(), normalization="imagenet")
    with pytest.raises(ValueError, match="`scoring_rule` must be one of"):
        ReferringPreprocessor(_vocabulary(), scoring_rule="argmax")
    with pytest.raises(ValueError, match="`image_size` must be a positive integer"):
        ReferringPreprocessor(_vocabulary(), image_size=True)
    (tmp_path / PREPROCESSOR_FILENAME).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="preprocessor.json must hold an object"):
        ReferringPreprocessor.load(str(tmp_path))
    (tmp_path / PREPROCESSOR_FILENAME).write_text('{"config": {"size": 3}}', encoding="utf-8")
    _vocabulary().save(str(tmp_path / "vocab.txt"))
    with pytest.raises(ValueError, match="unknown preprocessor setting"):
        ReferringPreprocessor.load(str(tmp_path))


def test_score_uses_the_rule_and_inverts_the_letterbox():
    from refseg_tf import scoring

    preprocessor = ReferringPreprocessor(_vocabulary(), **SETTINGS)
    logits = np.random.default_rng(0).normal(size=[1, 5, 5, 1]).astype(np.float32)
    window = [[6, 0, 28, 40]]  # letterbox of a 21 x 30 image into 40
    mask = preprocessor.score(logits, window, [[21, 30]])[0]
    expected = scoring.score_masks(logits, window, [[21, 30]], 40, "resize_probability", 0.4)[0]
    np.testing.assert_array_equal(mask, expected)
    probability, graph_mask = preprocessor.score_tf(logits[0], tf.constant([21, 30]))
    np.testing.assert_array_equal(graph_mask.numpy(), mask)
    np.testing.assert_allclose(
        probability.numpy(), preprocessor.probabilities(logits, window, [[21, 30]])[0], atol=1e-6
    )
    assert preprocessor.restore(tf.zeros([40, 40]), (21, 30)).shape == (21, 30)


def _write_one_record(directory, image, sentence):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[3:10, 4:20] = 1
    record = schema.ImageRecord(
        image_id=1, file_name="images/0001.png", encoded=buffer.getvalue(), image_format="png",
        height=image.shape[0], width=image.shape[1],
        refs=[schema.RefRecord(ref_id=7, mask=mask, sentences=[schema.Sentence(3, sentence)])],
    )
    name = schema.SHARD_PATTERN.format(split="val", index=0, count=1)
    with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
        writer.write(schema.encode_example(record))
    return buffer.getvalue()


class _NoModel:
    """A stand-in for the model: these checks run only the preprocessing."""

    variables = []
    threshold = 0.5

    def inference_model(self):
        return self


def test_pipeline_predictor_evaluation_and_export_prepare_identical_inputs(tmp_path):
    from refseg_tf.data import load
    from refseg_tf.export.serving import ServingModule
    from refseg_tf.inference import Predictor
    from refseg_tf.training.evaluation import evaluation_dataset

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, [21, 30, 3], dtype=np.uint8)
    data_dir = str(tmp_path)
    encoded = _write_one_record(data_dir, image, SENTENCE)
    _vocabulary().save(os.path.join(data_dir, "vocab.txt"))
    config = _training_config(dir=data_dir)
    preprocessor = ReferringPreprocessor.from_config(config, os.path.join(data_dir, "vocab.txt"))

    pipeline = next(iter(load(data_dir, "val", mode="eval", batch_size=1, preprocessor=preprocessor)))
    evaluation = next(iter(evaluation_dataset(config, "val", 1)))
    predictor = Predictor(_NoModel(), config, _vocabulary())
    inputs, window = predictor.model_inputs(image, SENTENCE)
    module = ServingModule(predictor, os.path.join(data_dir, "vocab.txt"))
    served_image, served_size = tf.function(module._prepare)((tf.constant(0), tf.constant(encoded)))
    served_word_ids = tf.function(module._word_ids)(tf.constant([SENTENCE]))

    expected_ids = encode_sentence(SENTENCE, _vocabulary(), 7, "back", mode="authors")
    # Back padding; the authors' tokens keep ", " (unknown) as one token.
    assert expected_ids == [4, 5, 6, 3, 7, 0, 0]
    for word_ids in (pipeline["word_ids"], evaluation["word_ids"], inputs["word_ids"], served_word_ids):
        np.testing.assert_array_equal(np.asarray(word_ids), [expected_ids])
    # Same ops; eager (Predictor) and graph (tf.data, serving) float rounding differ by ~1 ulp.
    for prepared in (evaluation["image"][0], inputs["image"][0], served_image):
        np.testing.assert_allclose(np.asarray(prepared), pipeline["image"][0].numpy(), rtol=0, atol=1e-6)
    assert pipeline["image"].shape == (1, 40, 40, 3)
    # Grey padding after the 1/255 normalisation, bicubic values clipped to [0, 1].
    np.testing.assert_allclose(pipeline["image"][0, 0].numpy(), 128 / 255, atol=1e-6)
    assert 0.0 <= pipeline["image"].numpy().min() and pipeline["image"].numpy().max() <= 1.0
    np.testing.assert_array_equal(window.numpy(), pipeline["image_window"][0].numpy())
    np.testing.assert_array_equal(served_size.numpy(), [21, 30])
    # One interface: the preprocessor defines the preprocessing; the settings are not arguments.
    with pytest.raises(TypeError, match="image_size"):
        load(data_dir, "val", mode="eval", image_size=64, preprocessor=preprocessor)
    with pytest.raises(ValueError, match="must be a ReferringPreprocessor"):
        load(data_dir, "val", mode="eval", preprocessor=preprocessor.get_config())


def test_one_preprocessing_definition_gives_every_default():
    """`base_config`, `load` and `ReferringPreprocessor` read one definition (before, the
    config said caffe_bgr where `load` and the preprocessor said vgg_rgb)."""
    import inspect

    from refseg_tf.data import pipeline, settings
    from refseg_tf.training.config import WEIGHT_MEANING_PREFIXES, base_config

    defaults = settings.PREPROCESSING_DEFAULTS
    assert defaults["normalization"] == "caffe_bgr"
    data = base_config().data
    assert {key: data[key] for key in defaults} == defaults
    # `load` takes a preprocessor, none of the settings (`load`'s double interface is gone).
    assert not set(defaults) & set(inspect.signature(pipeline.load).parameters)
    config = ReferringPreprocessor(_vocabulary()).get_config()
    assert {key: config[key] for key in defaults} == defaults
    assert {f"data.{key}" for key in defaults} <= set(WEIGHT_MEANING_PREFIXES)



def test_data_dir_preprocessor_takes_the_data_vocabulary_and_its_tokenizer(tmp_path, caplog):
    """`from_data_dir` (what `load` uses without a preprocessor): vocab.txt, the tokeniser
    metadata.json says it was built with, a warning when another is asked for."""
    import logging

    data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="No vocabulary file 'vocab.txt'"):
        ReferringPreprocessor.from_data_dir(data_dir)
    _vocabulary().save(os.path.join(data_dir, "vocab.txt"))
    preprocessor = ReferringPreprocessor.from_data_dir(data_dir, image_size=64)
    assert preprocessor.vocabulary == _vocabulary() and preprocessor.tokenizer_mode == "refseg"
    assert preprocessor.image_size == 64 and preprocessor.normalization == "caffe_bgr"
    with open(os.path.join(data_dir, schema.METADATA_FILENAME), "w", encoding="utf-8") as stream:
        json.dump({"vocabulary": {"tokenizer": "authors"}}, stream)
    assert ReferringPreprocessor.from_data_dir(data_dir).tokenizer_mode == "authors"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        chosen = ReferringPreprocessor.from_data_dir(data_dir, tokenizer="refseg")
    assert chosen.tokenizer_mode == "refseg"
    assert any("built with tokenizer='authors'" in r.getMessage() for r in caplog.records)
    other = Vocabulary.build(["a zebra"])  # a model's vocabulary: no tokenizer taken from the data
    assert ReferringPreprocessor.from_data_dir(data_dir, other).vocabulary == other

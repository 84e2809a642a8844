"""TF-phrasecut-public checkpoints (R+LSTM, D+LSTM, R+RMI, D+RMI) imported number for number.

Each test builds the authors' TF1 graph (tests/tf1_phrasecut.py, written here from their
variable names, shapes and equations) with random weights, saves its checkpoint, imports it with
`import_checkpoint` into a model directory, loads that directory's `model.keras` and compares
the logits on the same image and sentence (shorter than the maximum length: front `<pad>`
steps). Tolerance 1e-4 max abs: two implementations of the same float32 maths (and oneDNN)
differ in the last bits, nothing more.
"""

import os

import keras
import numpy as np
import pytest

from refseg_tf.interop import import_checkpoint, load_experiment_config
from tests import tf1_phrasecut as graphs
from tests.shared_cache import shared_directory

CASES = [
    ("LSTM", "resnet", "r_lstm_unc"),
    ("LSTM", "deeplab", "d_lstm_unc"),
    ("RMI", "resnet", "r_rmi_unc"),
    ("RMI", "deeplab", "d_rmi_unc"),
]
# The default run keeps one case per family and per backbone (R+LSTM, D+RMI; D+RMI again
# through preprocessing and scoring in `test_imported_model_dir_predicts_the_authors_...`);
# the two crossings are `slow` (issue 21: suite time).
DEFAULT_CASES = (("LSTM", "resnet", "r_lstm_unc"), ("RMI", "deeplab", "d_rmi_unc"))
TINY_CASES = [case if case in DEFAULT_CASES else pytest.param(*case, marks=pytest.mark.slow)
              for case in CASES]
TINY = dict(size=64, steps=7, vocab=10, backbone=graphs.TINY_RESNET, emb=8, rnn=16, mlp=8, v_emb=8)
# ResNetOS8 widths of TINY_RESNET's filters (bottleneck width = stage output / 4).
TINY_WIDTHS = (4, 8, 12, 16)
TOLERANCE = 1e-4


def _inputs(size, steps, vocab, seed=1):
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 50.0, (size, size, 3)).astype(np.float32)  # a Caffe-BGR-like image
    words = np.zeros((steps,), np.int32)
    words[3:] = rng.integers(4, vocab, steps - 3)  # 3 front pads: shorter than max length
    return image, words


def _tiny_config(row):
    config = load_experiment_config(os.path.join("experiments", f"{row}.py"))
    config.model.size = "tiny"
    config.model.backbone.kwargs = {"widths": TINY_WIDTHS}
    config.data.image_size = TINY["size"]
    config.data.max_length = TINY["steps"]
    return config


def tiny_authors_checkpoint(tmp_path_factory, model, weights):
    """The tiny snapshot of the authors' graph (`train=True`: with Adam slots and the step, as
    main.py's) and its logits on `_inputs`, built once per run and shared by this module and
    tests/test_bad_inputs.py (tests/shared_cache.py; issue 21: suite time).

    Returns:
        `(checkpoint prefix, reference logits)`; the files are read only.
    """
    name = f"unc_{weights}_{model}_iter_1.tfmodel"

    def build(path):
        image, words = _inputs(TINY["size"], TINY["steps"], TINY["vocab"])
        reference, _ = graphs.run_reference(model, weights, os.path.join(path, name),
                                            word_ids=words, image=image, train=True, **TINY)
        np.save(os.path.join(path, "reference.npy"), reference)

    path, _ = shared_directory(tmp_path_factory, f"phrasecut-tiny-{model}-{weights}", build)
    return os.path.join(path, name), np.load(os.path.join(path, "reference.npy"))


def _import_and_compare(tmp_path, model, weights, row, config, dims, train, authors=None):
    image, words = _inputs(dims["size"], dims["steps"], dims["vocab"])
    if authors is None:
        prefix = str(tmp_path / "authors" / f"unc_{weights}_{model}_iter_1.tfmodel")
        reference, _ = graphs.run_reference(model, weights, prefix, word_ids=words, image=image,
                                            train=train, **dims)
    else:
        prefix, reference = authors
    vocabulary = graphs.write_vocabulary(str(tmp_path / "vocabulary.txt"), dims["vocab"])
    model_dir = tmp_path / "imported"
    report = import_checkpoint(f"phrasecut_{model.lower()}", prefix, vocabulary, config, model_dir)
    assert report["format"] == f"phrasecut_{model.lower()}"
    assert sorted(os.listdir(model_dir)) == ["config.json", "model.keras", "preprocessor.json", "vocab.txt"]
    imported = keras.saving.load_model(str(model_dir / "model.keras"), compile=False)
    logits = np.asarray(imported({"image": image[None], "word_ids": words[None]}))
    assert logits.shape == reference.shape
    np.testing.assert_allclose(logits, reference, rtol=0, atol=TOLERANCE)
    # The comparison must be able to fail: a different sentence changes the logits.
    other = words.copy()
    other[-1] = 4 if words[-1] != 4 else 5
    changed = np.asarray(imported({"image": image[None], "word_ids": other[None]}))
    assert np.abs(changed - reference).max() > 10 * TOLERANCE
    return report


@pytest.mark.parametrize("model,weights,row", TINY_CASES)
def test_tiny_checkpoint_imports_to_the_same_logits(tmp_path, tmp_path_factory, model, weights,
                                                    row):
    # train=True: the snapshot also holds Adam slots and the step counter, as main.py's.
    authors = tiny_authors_checkpoint(tmp_path_factory, model, weights)
    report = _import_and_compare(tmp_path, model, weights, row, _tiny_config(row), TINY,
                                 train=True, authors=authors)
    assert report["ignored"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("model,weights,row", CASES)
def test_paper_size_checkpoint_imports_to_the_same_logits(tmp_path, model, weights, row):
    # The authors' sizes: ResNet-101 at 320 px (40x40 features), T = 20, vocabulary 12112.
    dims = dict(size=320, steps=20, vocab=12112, backbone=graphs.PAPER_RESNET)
    config = load_experiment_config(os.path.join("experiments", f"{row}.py"))
    _import_and_compare(tmp_path, model, weights, row, config, dims, train=False)


def test_imported_model_dir_predicts_the_authors_probabilities(tmp_path):
    """refseg-predict on an imported D+RMI directory: its preprocessing (Caffe BGR, the authors'
    tokenizer, front padding) and scoring (TF1 `resize_bilinear` of the logits) give the TF1
    graph's `sigm` on the same picture and expression (1e-4: float32 reordering only)."""
    import tensorflow as tf
    from PIL import Image

    from refseg_tf.inference import read_image
    from refseg_tf.predict import predict_to_files
    from refseg_tf.preprocessing import ReferringPreprocessor

    pixels = np.random.default_rng(5).integers(0, 256, (TINY["size"], TINY["size"], 3), np.uint8)
    picture = str(tmp_path / "picture.png")
    Image.fromarray(pixels).save(picture)
    sentence = "Word7 word5, word9."
    vocabulary = graphs.write_vocabulary(str(tmp_path / "vocabulary.txt"), TINY["vocab"])
    prefix = str(tmp_path / "authors" / "unc_deeplab_RMI_iter_1.tfmodel")
    model_dir = str(tmp_path / "imported")
    # One TF1 graph: its checkpoint is imported, then it runs on the imported directory's inputs.
    with graphs.reference_session("RMI", "deeplab", prefix, **TINY) as authors_graph:
        import_checkpoint("phrasecut_rmi", prefix, vocabulary, _tiny_config("d_rmi_unc"), model_dir)
        preprocessor = ReferringPreprocessor.from_model_dir(model_dir)
        inputs, _ = preprocessor.model_inputs(read_image(picture), [sentence])
        word_ids = np.asarray(inputs["word_ids"])[0]
        # The authors' split keeps "," as a token (<unk> = 3) and drops the final ".".
        assert list(word_ids) == [0, 0, 0, 7, 5, 3, 9]
        image = np.asarray(inputs["image"])[0]
        caffe_mean = np.float32([104.008, 116.669, 122.679])
        expected_bgr = pixels[..., ::-1].astype(np.float32) - caffe_mean
        assert np.abs(image - expected_bgr).max() < 0.01  # main.py: BGR minus the Caffe mean
        # The imported weights' own graph on these inputs: the authors' `sigm`.
        pred, _ = authors_graph(word_ids, image)
    up = tf.compat.v1.image.resize_bilinear(pred, [TINY["size"], TINY["size"]])
    expected = 1.0 / (1.0 + np.exp(-np.asarray(up)[0, :, :, 0]))
    probabilities = str(tmp_path / "p.npy")
    predict_to_files(model_dir, picture, sentence, str(tmp_path / "mask.png"),
                     probabilities_path=probabilities)
    found = np.load(probabilities)
    assert found.shape == expected.shape
    assert np.abs(found - expected).max() < TOLERANCE

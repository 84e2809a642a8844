"""`refseg-import` writes a model directory the other tools use unchanged (issue 18).

A tiny Hu high-resolution checkpoint (V1, TF 1.0 names, as the released files) is imported
(`import_checkpoint`, what the CLI runs; the CLI itself in a slow test); `refseg-predict`'s library call on an S x S picture then gives the TF1 graph's
probabilities (letterboxing an S x S picture is the identity, and the preprocessor's
"vgg_rgb" + authors' tokenizer reproduce the graph's inputs), and `refseg-evaluate` and
`refseg-export` run on the directory.
"""

import os

import numpy as np
import pytest
from PIL import Image

from tests.test_entry_points import _explain, raw, run_cli, tfrecords, workdir  # noqa: F401
from tests.test_interop_text_objseg import REPO_ROOT, SENTENCE, TINY, make_checkpoint

TOLERANCE = 1e-4  # float32 summation order (oneDNN) between the TF1 graph and Keras


CONFIG = os.path.join(REPO_ROOT, "experiments", "lstm_cnn_high_referit.py")


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hu_import")
    checkpoint, vocabulary, image, _, scores = make_checkpoint(directory, TINY, high_res=True)
    pixels = (image + np.asarray([123.68, 116.779, 103.939], np.float32)).round().astype(np.uint8)
    picture = str(directory / "picture.png")
    Image.fromarray(pixels[0]).save(picture)
    return directory, checkpoint, vocabulary, picture, scores


@pytest.fixture(scope="module")
def imported(checkpoint_files):
    """The library call refseg-import makes (in-process: the CLI itself is a slow test)."""
    from refseg_tf import interop

    directory, checkpoint, vocabulary, picture, scores = checkpoint_files
    config = interop.load_experiment_config(CONFIG)
    config.model.size = "tiny"  # the tiny preset: D_cls = 8 = TINY["mlp_dim"]
    config.data.image_size = TINY["image_size"]
    model_dir = str(directory / "model")
    result = interop.import_checkpoint("text_objseg", checkpoint, vocabulary, config, model_dir)
    assert result["ignored"] > 0 and result["model_dir"] == model_dir
    return model_dir, vocabulary, picture, scores


@pytest.mark.slow
def test_refseg_import_cli(checkpoint_files, tmp_path):
    """`python -m refseg_tf.import_weights` as a user runs it (a subprocess: TF import)."""
    _, checkpoint, vocabulary, _, _ = checkpoint_files
    model_dir = str(tmp_path / "model")
    result = run_cli(
        "import_weights", "--format=text_objseg", f"--checkpoint={checkpoint}",
        f"--vocabulary={vocabulary}",
        f"--config={CONFIG}", "--config.model.size=tiny",
        f"--config.data.image_size={TINY['image_size']}", f"--model_dir={model_dir}",
    )
    assert result.returncode == 0, _explain(result)
    assert "training-state variables skipped" in result.stdout
    assert sorted(os.listdir(model_dir)) == [
        "config.json", "model.keras", "preprocessor.json", "vocab.txt"
    ]
    again = run_cli(
        "import_weights", "--format=text_objseg", f"--checkpoint={checkpoint}",
        f"--vocabulary={vocabulary}", f"--config={CONFIG}", f"--model_dir={model_dir}",
    )
    assert again.returncode == 1 and "not empty" in again.stderr, _explain(again)


def test_model_dir_holds_the_authors_vocabulary_and_settings(imported):
    from refseg_tf.preprocessing import ReferringPreprocessor
    from refseg_tf.training import config as config_lib

    model_dir, vocabulary, _, _ = imported
    assert sorted(os.listdir(model_dir)) == [
        "config.json", "model.keras", "preprocessor.json", "vocab.txt"
    ]
    with open(vocabulary, "rb") as a, open(os.path.join(model_dir, "vocab.txt"), "rb") as b:
        assert a.read() == b.read()  # the authors' ids, byte for byte
    config = config_lib.load_config(model_dir)
    assert config.imported.format == "text_objseg"
    preprocessor = ReferringPreprocessor.from_model_dir(model_dir)
    assert preprocessor.normalization == "vgg_rgb"
    assert preprocessor.tokenizer_mode == "authors"
    assert preprocessor.scoring_rule == "upsample_logits"  # the high-res row's rule


def test_predict_on_imported_model_gives_the_tf1_graph_probabilities(imported, tmp_path):
    from refseg_tf.predict import predict_to_files

    model_dir, _, picture, scores = imported
    output = str(tmp_path / "mask.png")
    probabilities = str(tmp_path / "p.npy")
    predict_to_files(model_dir, picture, SENTENCE, output, probabilities_path=probabilities)
    expected = 1.0 / (1.0 + np.exp(-scores[0, :, :, 0]))
    found = np.load(probabilities)
    assert found.shape == expected.shape
    assert np.max(np.abs(found - expected)) < TOLERANCE


@pytest.mark.slow  # converts the synthetic data in two subprocesses first (about 20 s)
def test_evaluate_and_export_run_on_imported_model(imported, tfrecords, tmp_path):  # noqa: F811
    from refseg_tf.export import export_model
    from refseg_tf.training.evaluation import evaluate_model_dir

    model_dir, _, _, _ = imported
    data_dir, _ = tfrecords
    report, table = evaluate_model_dir(model_dir, split="val", data_dir=data_dir, max_batches=1)
    assert 0.0 <= report["scores"]["overall_iou"] <= 1.0
    assert report["scoring_rule"] == "upsample_logits"
    assert os.path.exists(os.path.join(model_dir, "eval_val.json"))
    contract = export_model(model_dir, str(tmp_path / "exported"), formats=["saved_model"])
    assert contract["saved_model"]["signatures"]["serving_default"]["outputs"]["mask"]

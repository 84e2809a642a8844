"""The command-line tools as a user runs them: `python -m refseg_tf.<name>` in a subprocess.

Default run: `synthetic` and `convert --format=refer` (shared by the module), `predict` on
images of several formats and sizes with a freshly built (untrained) model directory, and the
main error cases. Slow: `train` -> `evaluate` -> `predict` on a trained model, `refseg-demo`,
and more error cases (each subprocess costs a TensorFlow import, about 4 s of CPU).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tests.helpers import assert_mask_near, strict_json, subprocess_env

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ("train", "val", "testA", "testB")


def run_cli(module, *args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    return subprocess.run(
        [sys.executable, "-m", f"refseg_tf.{module}", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def predict_in_process(*args):
    """`refseg-predict` with `args` in this process: absl parses the flags, then the CLI's
    `main` (with its one-line user-error handling) runs; returns `(exit status, stderr)`.

    A subprocess costs a TensorFlow import (~4 s of CPU, more on a loaded machine); the
    subprocess tests below keep the real command line covered (issue 21: suite time).
    """
    import contextlib
    import io

    from absl import flags

    from refseg_tf import predict

    predict.define_flags()
    values = flags.FLAGS
    stderr = io.StringIO()
    values.unparse_flags()
    try:
        with contextlib.redirect_stderr(stderr):
            try:
                values(["refseg-predict", *args])
            except flags.Error as error:  # what app.run prints as a usage error, exit 1
                print(f"FATAL Flags parsing error: {error}", file=sys.stderr)
                return 1, stderr.getvalue()
            status = predict.main(["refseg-predict"])
    finally:
        values.unparse_flags()
    return status, stderr.getvalue()


def _explain(result):
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


def _last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------- data via the CLIs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("entry_points")


@pytest.fixture(scope="module")
def raw(workdir):
    """`python -m refseg_tf.synthetic`: 40 images of 48 px in the refer format."""
    out = str(workdir / "raw")
    result = run_cli("synthetic", f"--output_dir={out}", "--num_images=40", "--image_size=48",
                     "--seed=5")
    assert result.returncode == 0, _explain(result)
    return out, result


@pytest.fixture(scope="module")
def tfrecords(raw, workdir):
    """`python -m refseg_tf.convert --format=refer` of the synthetic data."""
    raw_dir, _ = raw
    out = str(workdir / "tfrecords")
    result = run_cli(
        "convert", "--format=refer", f"--data_root={raw_dir}", "--dataset=synthetic",
        "--split_by=unc", f"--image_root={raw_dir}/images", f"--output_dir={out}",
        "--num_shards=2", "--noprogress",
    )
    assert result.returncode == 0, _explain(result)
    return out, result


def test_synthetic_cli(raw):
    raw_dir, result = raw
    assert os.path.isfile(os.path.join(raw_dir, "synthetic", "instances.json"))
    assert os.path.isfile(os.path.join(raw_dir, "synthetic", "refs(unc).p"))
    images = os.listdir(os.path.join(raw_dir, "images"))
    assert len(images) == 40 and all(name.endswith(".jpg") for name in images)
    with Image.open(os.path.join(raw_dir, "images", sorted(images)[0])) as image:
        assert max(image.size) == 48
    assert "Wrote 40 images" in result.stdout
    with open(os.path.join(raw_dir, "synthetic", "instances.json"), encoding="utf-8") as f:
        assert len(json.load(f)["images"]) == 40


def test_synthetic_cli_rejects_bad_flags(workdir):
    result = run_cli("synthetic", f"--output_dir={workdir / 'bad'}", "--image_size=8")
    assert result.returncode != 0
    assert "image_size" in result.stderr
    result = run_cli("synthetic", "--num_images=3")
    assert result.returncode != 0
    assert "output_dir" in result.stderr


def test_convert_cli(tfrecords, raw):
    out, result = tfrecords
    raw_dir, _ = raw
    names = os.listdir(out)
    for split in SPLITS:
        assert f"{split}-00000-of-00002.tfrecord" in names, names
        assert f"{split}-00001-of-00002.tfrecord" in names, names
    assert "vocab.txt" in names
    metadata = strict_json(os.path.join(out, "metadata.json"))
    assert sum(metadata["splits"][split]["images"] for split in SPLITS) == 40
    assert metadata["options"]["data_root"] == raw_dir
    with open(os.path.join(out, "vocab.txt"), encoding="utf-8") as f:
        words = f.read().splitlines()
    assert words[:4] == ["<pad>", "<go>", "<eos>", "<unk>"] and "circle" in words
    assert "train" in result.stdout or "train" in result.stderr


@pytest.mark.slow
def test_convert_cli_missing_data_root(workdir):
    missing = str(workdir / "no_such_root")
    result = run_cli(
        "convert", "--format=refer", f"--data_root={missing}", "--dataset=synthetic",
        f"--output_dir={workdir / 'never'}", "--noprogress",
    )
    assert result.returncode != 0
    assert "no_such_root" in result.stderr
    assert not os.path.exists(workdir / "never" / "metadata.json")


# --------------------------------------------------------------------------- predict


def _write_images(folder):
    """Images of several formats and sizes; returns {name: (path, (height, width) shown)}."""
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    images = {}

    def save(name, array, mode=None, shown=None, **options):
        path = os.path.join(folder, name)
        picture = Image.fromarray(array, mode) if mode else Image.fromarray(array)
        picture.save(path, **options)
        images[name] = (path, shown or array.shape[:2])

    save("rgb.png", rng.integers(0, 256, (40, 64, 3), dtype=np.uint8))
    save("gray.jpg", rng.integers(0, 256, (70, 50), dtype=np.uint8))
    save("rgba.png", rng.integers(0, 256, (47, 33, 4), dtype=np.uint8))
    save("large.jpg", rng.integers(0, 256, (170, 300, 3), dtype=np.uint8), quality=90)
    palette = Image.fromarray(rng.integers(0, 256, (36, 52, 3), dtype=np.uint8)).convert("P")
    palette.save(os.path.join(folder, "palette.gif"))
    images["palette.gif"] = (os.path.join(folder, "palette.gif"), (36, 52))
    # Stored 80 wide and 30 high with EXIF orientation 6 (rotate 90): shown 30 wide, 80 high.
    rotated = Image.fromarray(rng.integers(0, 256, (30, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(os.path.join(folder, "exif_rotated.jpg"), exif=exif)
    images["exif_rotated.jpg"] = (os.path.join(folder, "exif_rotated.jpg"), (80, 30))
    return images


@pytest.fixture(scope="module")
def images(workdir):
    return _write_images(str(workdir / "images"))


@pytest.fixture(scope="module")
def untrained_model_dir(tfrecords, workdir):
    """A model directory laid out as refseg-train writes it, with an untrained synthetic RRN."""
    from refseg_tf.training import config as config_lib
    from refseg_tf.training import experiments, trainer

    data_dir, _ = tfrecords
    model_dir = str(workdir / "untrained_rrn")
    os.makedirs(model_dir)
    config = experiments.synthetic("rrn")
    config.data.dir = data_dir
    config = trainer.resolve_config(config)
    config_lib.save_config(config, model_dir)
    with open(os.path.join(data_dir, "vocab.txt"), "rb") as f:
        vocabulary = f.read()
    with open(os.path.join(model_dir, "vocab.txt"), "wb") as f:
        f.write(vocabulary)
    model = trainer.build_model(config)
    trainer.save_model_atomic(model, os.path.join(model_dir, "model.keras"))
    return model_dir


@pytest.fixture(scope="module")
def predictor(untrained_model_dir):
    from refseg_tf.inference import Predictor

    return Predictor.from_model_dir(untrained_model_dir)


def _check_mask_file(path, shown):
    height, width = shown
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        assert picture.mode == "L"
        assert picture.size == (width, height)
        mask = np.asarray(picture)
    assert set(np.unique(mask).tolist()) <= {0, 255}
    return mask


def _check_overlay(path, shown):
    height, width = shown
    assert os.path.isfile(path)
    with Image.open(path) as picture:
        picture.load()
        assert picture.size[0] == width and picture.size[1] >= height


@pytest.mark.parametrize(
    "name", ["rgb.png", "gray.jpg", "rgba.png", "large.jpg", "palette.gif", "exif_rotated.jpg"]
)
def test_predict_on_other_formats_and_sizes(name, images, predictor, untrained_model_dir,
                                            tmp_path):
    """`predict_to_files` is what `refseg-predict` runs; the Predictor is shared for speed."""
    from refseg_tf.predict import predict_to_files

    path, shown = images[name]
    output = str(tmp_path / "mask.png")
    probabilities = str(tmp_path / "p.npy")
    mask, overlay = predict_to_files(
        untrained_model_dir, path, "the big red circle", output,
        probabilities_path=probabilities, predictor=predictor,
    )
    assert mask.shape == shown
    written = _check_mask_file(output, shown)
    probability = np.load(probabilities)
    assert probability.shape == shown and probability.dtype == np.float32
    assert np.all((probability >= 0) & (probability <= 1))
    from refseg_tf.inference import read_image

    # The mask is the scoring rule's (refseg_tf.scoring), not a threshold of the probabilities.
    expected = predictor.predict_mask(read_image(path), "the big red circle")
    # Two forward passes: equal away from the threshold (one input pixel covers up to
    # `radius` pixels of the image).
    radius = -(-max(shown) // predictor.image_size)
    assert_mask_near(written > 0, expected, probability, predictor.threshold, radius)
    assert overlay == str(tmp_path / "mask_overlay.jpg")
    _check_overlay(overlay, shown)

    # A threshold inside the range of probabilities: both 0 and 255 are written, exactly
    # where the probability map says.
    threshold = float(np.median(probability))
    if probability.max() > probability.min():
        predict_to_files(untrained_model_dir, path, "the big red circle", output,
                         threshold=threshold, predictor=predictor)
        written = _check_mask_file(output, shown)
        expected = predictor.predict_mask(read_image(path), "the big red circle", threshold)
        assert_mask_near(written > 0, expected, probability, threshold, radius)


@pytest.mark.slow
def test_predict_cli_on_a_large_rgba_png(untrained_model_dir, workdir, tmp_path):
    rng = np.random.default_rng(1)
    image_path = str(tmp_path / "large_rgba.png")
    Image.fromarray(rng.integers(0, 256, (170, 300, 4), dtype=np.uint8)).save(image_path)
    output = str(tmp_path / "out" / "mask.png")
    overlay = str(tmp_path / "pictures" / "overlay.png")
    result = run_cli(
        "predict", f"--model_dir={untrained_model_dir}", f"--image={image_path}",
        "--expression=the small blue square on the left", f"--output={output}",
        f"--overlay={overlay}", "--threshold=0",
    )
    assert result.returncode == 0, _explain(result)
    mask = _check_mask_file(output, (170, 300))
    assert np.all(mask == 255)  # every probability is >= 0
    _check_overlay(overlay, (170, 300))
    assert "300x170" in result.stdout and output in result.stdout


# --------------------------------------------------------------------------- clear failures


def test_predict_missing_image(untrained_model_dir, tmp_path):
    missing = str(tmp_path / "no_such_photo.jpg")
    output = str(tmp_path / "mask.png")
    status, stderr = predict_in_process(f"--model_dir={untrained_model_dir}", f"--image={missing}",
                                        "--expression=the dog", f"--output={output}")
    assert status == 1, stderr
    assert missing in _last_line(stderr) and _last_line(stderr).startswith("refseg-predict: error:")
    assert not os.path.exists(output)


@pytest.mark.slow
def test_predict_missing_image_on_the_command_line(untrained_model_dir, tmp_path):
    missing = str(tmp_path / "no_such_photo.jpg")
    output = str(tmp_path / "mask.png")
    result = run_cli("predict", f"--model_dir={untrained_model_dir}", f"--image={missing}",
                     "--expression=the dog", f"--output={output}")
    assert result.returncode != 0
    assert missing in _last_line(result.stderr), _explain(result)
    assert not os.path.exists(output)


@pytest.mark.slow
def test_predict_unreadable_image(untrained_model_dir, tmp_path):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not a picture")
    result = run_cli("predict", f"--model_dir={untrained_model_dir}", f"--image={not_an_image}",
                     "--expression=the dog", f"--output={tmp_path / 'mask.png'}")
    assert result.returncode != 0
    assert str(not_an_image) in _last_line(result.stderr), _explain(result)


def test_predict_model_dir_without_config(images, tmp_path):
    empty = tmp_path / "not_a_model_dir"
    empty.mkdir()
    path, _ = images["rgb.png"]
    status, stderr = predict_in_process(f"--model_dir={empty}", f"--image={path}",
                                        "--expression=the dog", f"--output={tmp_path / 'mask.png'}")
    assert status == 1, stderr
    assert os.path.join(str(empty), "config.json") in _last_line(stderr), stderr
    assert _last_line(stderr).startswith("refseg-predict: error:"), stderr
    assert not os.path.exists(tmp_path / "mask.png")


def test_predict_model_dir_whose_config_is_not_a_config(images, tmp_path):
    """Before: `{}` as config.json gave an AttributeError traceback (issue 7, item 9)."""
    model_dir = tmp_path / "odd_model_dir"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    path, _ = images["rgb.png"]
    status, stderr = predict_in_process(f"--model_dir={model_dir}", f"--image={path}",
                                        "--expression=the dog", f"--output={tmp_path / 'mask.png'}")
    assert status == 1, stderr
    line = _last_line(stderr)
    assert str(model_dir / "config.json") in line and "lacks" in line, stderr
    assert line.startswith("refseg-predict: error:"), stderr


@pytest.mark.slow
def test_evaluate_on_a_damaged_shard_names_it(untrained_model_dir, tfrecords, tmp_path):
    """Before: a zero-byte shard was read as empty and the evaluation exited 0 (issue 7, item 2)."""
    import shutil

    data_dir, _ = tfrecords
    damaged = tmp_path / "damaged"
    shutil.copytree(data_dir, damaged)
    shard = sorted(damaged.glob("val-*.tfrecord"))[0]
    shard.write_bytes(b"")
    result = run_cli("evaluate", f"--model_dir={untrained_model_dir}", "--split=val",
                     f"--data_dir={damaged}")
    assert result.returncode == 1, _explain(result)
    line = _last_line(result.stderr)
    assert str(shard) in line and "re-run refseg-convert" in line, _explain(result)


def test_predict_requires_its_flags(tmp_path):
    status, stderr = predict_in_process(f"--model_dir={tmp_path}", "--image=x.png",
                                        "--output=o.png")
    assert status != 0
    assert "expression" in stderr


@pytest.mark.slow
def test_predict_requires_its_flags_on_the_command_line(tmp_path):
    result = run_cli("predict", f"--model_dir={tmp_path}", "--image=x.png", "--output=o.png")
    assert result.returncode != 0
    assert "expression" in result.stderr


@pytest.mark.slow
def test_evaluate_model_dir_without_config(tmp_path):
    result = run_cli("evaluate", f"--model_dir={tmp_path}", "--split=val")
    assert result.returncode != 0
    assert os.path.join(str(tmp_path), "config.json") in _last_line(result.stderr), _explain(result)


@pytest.mark.slow
def test_train_data_dir_without_vocabulary(tmp_path):
    empty = tmp_path / "not_converted"
    empty.mkdir()
    result = run_cli("train", "--config=experiments/synthetic_rrn.py",
                     f"--config.data.dir={empty}", f"--model_dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert os.path.join(str(empty), "vocab.txt") in _last_line(result.stderr), _explain(result)


# --------------------------------------------------------------------------- train -> evaluate -> predict


@pytest.fixture(scope="module")
def trained_cli(tfrecords, workdir):
    data_dir, _ = tfrecords
    model_dir = str(workdir / "rrn")
    args = [
        "--config=experiments/synthetic_rrn.py", f"--config.data.dir={data_dir}",
        "--config.train.steps=3", "--config.train.checkpoint_every=3",
        "--config.train.batch_size=4", "--config.eval.batch_size=8", f"--model_dir={model_dir}",
    ]
    result = run_cli("train", *args)
    assert result.returncode == 0, _explain(result)
    return model_dir, args, result


@pytest.mark.slow
def test_train_cli(trained_cli, tfrecords):
    model_dir, args, result = trained_cli
    data_dir, _ = tfrecords
    assert f"{model_dir}/model.keras" in result.stdout
    for name in ("config.json", "vocab.txt", "model.keras", "logs"):
        assert os.path.exists(os.path.join(model_dir, name)), name
    assert os.path.isfile(os.path.join(model_dir, "checkpoints", "ckpt-3.index"))
    config = strict_json(os.path.join(model_dir, "config.json"))
    assert config["data"]["dir"] == data_dir
    assert config["train"]["steps"] == 3 and config["train"]["batch_size"] == 4
    assert config["eval"]["batch_size"] == 8
    assert config["model"]["name"] == "rrn"
    # The same command again resumes: nothing left to train, the model is written again.
    again = run_cli("train", *args)
    assert again.returncode == 0, _explain(again)
    assert "resuming at step 3 of 3" in again.stderr
    assert sorted(n for n in os.listdir(os.path.join(model_dir, "checkpoints"))
                  if n.endswith(".index")) == ["ckpt-3.index"]


@pytest.mark.slow
def test_evaluate_cli(trained_cli, raw):
    model_dir, _, _ = trained_cli
    result = run_cli("evaluate", f"--model_dir={model_dir}", "--split=val")
    assert result.returncode == 0, _explain(result)
    document = strict_json(os.path.join(model_dir, "eval_val.json"))
    scores = document["scores"]
    for key in ("overall_iou", "mean_iou", "precision@0.5"):
        assert 0.0 <= scores[key] <= 1.0
    assert scores["count"] > 0
    assert sum(bucket["count"] for bucket in document["by_length"].values()) == scores["count"]
    assert "rrn on" in result.stdout and "eval_val.json" in result.stdout
    assert document["metadata"]["scoring_rule"] == "upsample_logits"
    assert "Scoring rule: upsample_logits" in result.stdout


@pytest.mark.slow
def test_predict_cli_with_trained_model(trained_cli, images, tmp_path):
    model_dir, _, _ = trained_cli
    path, shown = images["large.jpg"]
    output = str(tmp_path / "mask.png")
    result = run_cli("predict", f"--model_dir={model_dir}", f"--image={path}",
                     "--expression=the red circle", f"--output={output}",
                     f"--probabilities={tmp_path / 'p.npy'}")
    assert result.returncode == 0, _explain(result)
    mask = _check_mask_file(output, shown)
    probability = np.load(tmp_path / "p.npy")
    np.testing.assert_array_equal(mask, (probability >= 0.5) * 255)
    _check_overlay(str(tmp_path / "mask_overlay.jpg"), shown)


# --------------------------------------------------------------------------- demo


@pytest.mark.slow
def test_demo(tmp_path):
    out = str(tmp_path / "demo")
    result = run_cli("demo", f"--output_dir={out}", "--num_images=30", "--steps=4",
                     "--image_size=48", "--num_pictures=4")
    assert result.returncode == 0, _explain(result)
    for relative in (
        "raw/synthetic/instances.json",
        "tfrecords/vocab.txt",
        "tfrecords/metadata.json",
        "models/rrn/model.keras",
        "models/rrn/config.json",
        "pictures/ground_truth_val.jpg",
        "pictures/predictions_val.jpg",
        "pictures/predict_first_val.png",
        "pictures/predict_first_val_overlay.jpg",
    ):
        assert os.path.isfile(os.path.join(out, relative)), relative
    document = strict_json(os.path.join(out, "models", "rrn", "eval_val.json"))
    assert 0.0 <= document["scores"]["overall_iou"] <= 1.0
    config = strict_json(os.path.join(out, "models", "rrn", "config.json"))
    assert config["train"]["steps"] == 4
    with Image.open(os.path.join(out, "pictures", "predict_first_val.png")) as mask:
        assert mask.mode == "L" and max(mask.size) == 48
    assert "Done in" in result.stdout


# --------------------------------------------------------------------------- the user's terminal

# What a command printed into the user's terminal before issue 21 (refseg-demo, TF 2.21 on CPU).
_NOISE = (
    "absl::InitializeLog", "port.cc", "cudart_stub.cc", "cpu_feature_guard.cc", "cuInit",
    "cuda_platform.cc", "resize_bilinear", "deprecated", "buffer_size", "oneDNN",
)


def test_predict_command_prints_no_tensorflow_noise(untrained_model_dir, images, tmp_path):
    """A user's terminal (no TF_CPP_MIN_LOG_LEVEL set): stderr holds none of TensorFlow's
    start-up lines nor the deprecation warning of the resize the scoring rule runs."""
    path, _ = images["rgb.png"]
    env = subprocess_env()
    del env["TF_CPP_MIN_LOG_LEVEL"]
    result = subprocess.run(
        [sys.executable, "-m", "refseg_tf.predict", f"--model_dir={untrained_model_dir}",
         f"--image={path}", "--expression=the red circle", f"--output={tmp_path / 'mask.png'}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, _explain(result)
    noisy = [line for line in result.stderr.splitlines() if any(n in line for n in _NOISE)]
    assert not noisy, _explain(result)
    assert os.path.exists(tmp_path / "mask.png")


def test_startup_noise_filter_drops_tensorflow_lines_and_keeps_the_rest():
    from refseg_tf.cli import _verbosity, is_startup_noise, quiet_tensorflow_startup

    noise = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"I0000 00:00:1796629936.519327   10429 port.cc:153] oneDNN custom operations are on.",
        b"I0000 00:00:1796629936.519654   10429 cudart_stub.cc:31] Could not find cuda drivers",
        b"E0000 00:00:1796629944.952113   10429 cuda_platform.cc:52] failed call to cuInit: x",
        b"I0000 00:00:1796629949.343448   10691 tf_record_dataset_op.cc:390] TFRecordDataset "
        b"`buffer_size` is unspecified, default to 262144",
        b"To enable the following instructions: AVX2 FMA, in other operations, rebuild "
        b"TensorFlow with the appropriate compiler flags.",
    ]
    kept = [
        b"refseg-predict: error: /tmp/x.png: No such file",
        b"E0000 00:00:1796629944.952113   10429 op_kernel.cc:1830] OP_REQUIRES failed: real",
        b"Traceback (most recent call last):",
        b"",
    ]
    assert all(is_startup_noise(line) for line in noise)
    assert not any(is_startup_noise(line) for line in kept)
    assert _verbosity(["--verbosity=1"]) == 1 and _verbosity(["-v", "2"]) == 2
    assert _verbosity(["--model_dir=x"]) == 0
    # Imported (not run as a command), or asked for by --verbosity: stderr is left alone.
    assert not quiet_tensorflow_startup("refseg_tf.predict", ["pytest"])
    assert not quiet_tensorflow_startup("__main__", ["refseg-demo", "--verbosity=1"])

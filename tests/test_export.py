"""Export: the SavedModel and the TFLite model equal the Keras path (`Predictor`) for every model.

One exported model per preset is shared by the module (`exported`, a module-scoped fixture):
exporting costs ~10-20 s of CPU. The default run covers `DEFAULT_PRESETS` fully; the other
presets, RRN's variants and cells, a model trained by `refseg-train` and the command lines run
with `-m slow`. Models joining `refseg_tf.models.PRESETS` later join the sweep automatically.
"""

import base64
import importlib.util
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from refseg_tf.models import RRN_VARIANTS, list_presets
from tests.helpers import FLOAT_NOISE, assert_mask_near, encode_image, preset_params
from tests.shared_cache import shared_directory

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PRESETS = ("rrn",)
SENTENCES = ["the red circle on the left", "a blue square", "the big green thing"]
# (name, fixture overrides of experiments.synthetic) for the slow sweep over RRN's options.
RRN_OPTIONS = [(f"rrn_{v}", {"variant": v}) for v in sorted(RRN_VARIANTS) if v != "lstm_tanh"] + [
    ("rrn_unrolled", {"lstm_cell": "unrolled"}),
    ("rrn_layer_norm_peephole", {"lstm_cell": "layer_norm", "peephole": "spatial"}),
]


def _load_client():
    spec = importlib.util.spec_from_file_location("refseg_export_client", f"{REPO_ROOT}/export/client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = _load_client()


# ------------------------------------------------------------------------------ fixtures


def _tiny_config(preset, overrides):
    """The preset's registered synthetic recipe (`experiments.synthetic`: each family's input
    contract included, e.g. LTS's pixels / 255 and back padding), else its tiny size at 64 px."""
    from refseg_tf.models import get_preset
    from refseg_tf.training import experiments
    from refseg_tf.training.config import base_config

    try:
        return experiments.synthetic(preset, **overrides)
    except KeyError:  # a preset without a synthetic recipe (yet): its tiny size at 64 px
        config = base_config()
        config.model.name = preset
        config.model.size = "tiny"
        backbone = get_preset(preset).backbone
        config.model.backbone.name = backbone
        config.model.backbone.kwargs = dict(experiments.SYNTHETIC_BACKBONES.get(backbone, {}))
        config.data.image_size = 64
        config.data.max_length = 10
        for key, value in overrides.items():
            config.model[key] = value
        return config


def make_model_dir(root, preset, overrides=None, seed=0, config=None):
    """A model directory as refseg-train writes it (config.json, vocab.txt, model.keras), of an
    untrained model: `config` (default: the preset's `_tiny_config` with `overrides`) with this
    file's vocabulary."""
    import keras

    from refseg_tf.text import Vocabulary
    from refseg_tf.training import config as config_lib
    from refseg_tf.training import trainer

    keras.utils.set_random_seed(seed)
    model_dir = os.path.join(root, preset)
    os.makedirs(model_dir)
    if config is not None and overrides:
        raise ValueError(
            f"make_model_dir takes `config` or `overrides`, not both; received {overrides}."
        )
    if config is None:
        config = _tiny_config("rrn" if preset.startswith("rrn_") else preset, overrides or {})
    vocabulary = Vocabulary.build(SENTENCES)
    config.model.vocabulary_size = len(vocabulary)
    config.data.dir = model_dir
    with open(os.path.join(model_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocabulary.words) + "\n")
    config_lib.save_config(config, model_dir)
    model = trainer.build_model(config)
    _randomise_batchnorm(model)
    trainer.save_model_atomic(model, os.path.join(model_dir, "model.keras"))
    return model_dir


def _randomise_batchnorm(model):
    """Non-trivial moving statistics, so a SavedModel that lost them cannot pass."""
    rng = np.random.default_rng(1)
    for variable in model.non_trainable_weights:
        if "moving_mean" in variable.path:
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))
        elif "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))


class Exported:
    """A model directory, its export and the loaded pieces a test needs."""

    def __init__(self, root, preset, overrides=None, reuse=False):
        from refseg_tf.export import export_model
        from refseg_tf.inference import Predictor

        returned = os.path.join(root, preset + "_contract.json")  # export_model's return value
        self.output_dir = os.path.join(root, preset + "_exported")
        if reuse:  # the directories another process made (tests/shared_cache.py)
            self.model_dir = os.path.join(root, preset)
            with open(returned, encoding="utf-8") as f:
                self.contract = json.load(f)
        else:
            self.model_dir = make_model_dir(root, preset, overrides)
            self.contract = export_model(self.model_dir, self.output_dir)
            with open(returned, "w", encoding="utf-8") as f:
                json.dump(self.contract, f)
        self.saved_model_dir = os.path.join(self.output_dir, "saved_model", "1")
        self.loaded = tf.saved_model.load(self.saved_model_dir)
        self.serve = self.loaded.signatures["serving_default"]
        self.segment = self.loaded.signatures["segment_tensors"]
        self.predictor = Predictor.from_model_dir(self.model_dir)


def _preset_params():
    params = [
        pytest.param(name, marks=() if name in DEFAULT_PRESETS else pytest.mark.slow)
        for name in list_presets()
    ]
    return params


_EXPORTS = {}  # preset -> Exported: one export per preset for the whole module


def _shared_export(tmp_path_factory, preset):
    """One export per preset for the whole run: built by the first xdist worker, read by all."""
    if preset not in _EXPORTS:
        built = {}

        def build(root):
            built["exported"] = Exported(root, preset)

        root, _ = shared_directory(tmp_path_factory, f"export-{preset}", build)
        _EXPORTS[preset] = built.get("exported") or Exported(root, preset, reuse=True)
    return _EXPORTS[preset]


@pytest.fixture(scope="module", params=_preset_params())
def exported(request, tmp_path_factory):
    return _shared_export(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def default_exported(tmp_path_factory):
    return _shared_export(tmp_path_factory, DEFAULT_PRESETS[0])


def _smooth_image(height, width, channels, seed):
    """A picture-like image (smooth gradients plus shapes), not noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [127 + 100 * np.sin(x / (5 + 3 * c) + y / (7 + c) + rng.uniform(0, 6)) for c in range(channels)]
    image = np.stack(planes, axis=-1)
    image[height // 4 : height // 2, width // 3 : 2 * width // 3] = rng.uniform(0, 255, channels)
    return np.clip(image, 0, 255).astype(np.uint8)


# (name, encoded bytes); odd sizes, grey and RGBA included.
IMAGES = {
    "rgb.jpg": encode_image(_smooth_image(37, 53, 3, 0), "JPEG"),
    "grey.jpg": encode_image(_smooth_image(61, 29, 1, 1)[..., 0], "JPEG"),
    "rgba.png": encode_image(_smooth_image(45, 45, 4, 2), "PNG"),
    "grey.png": encode_image(_smooth_image(23, 71, 1, 3)[..., 0], "PNG"),
    "rgb.png": encode_image(_smooth_image(97, 33, 3, 4), "PNG"),
}


def _decoded(image_bytes):
    """What `refseg-predict --model_dir` segments: `inference.read_image` of the file."""
    from refseg_tf.inference import read_image

    path = f"/tmp/refseg-export-test-{os.getpid()}.img"
    with open(path, "wb") as f:
        f.write(image_bytes)
    try:
        return read_image(path)
    finally:
        os.remove(path)


def _assert_matches_predictor(exported, outputs, index, image_bytes, expression):
    """The served probability and mask equal `Predictor.predict` / `predict_mask` (the Keras
    path, under the model directory's scoring rule)."""
    picture = _decoded(image_bytes)
    probability = exported.predictor.predict(picture, expression)
    keras_mask = exported.predictor.predict_mask(picture, expression)
    height, width = probability.shape
    assert keras_mask.shape == (height, width)
    np.testing.assert_array_equal(outputs["image_size"][index].numpy(), [height, width])
    served = outputs["probability"][index].numpy()
    mask = outputs["mask"][index].numpy()
    np.testing.assert_allclose(served[:height, :width], probability, atol=1e-4)
    agreement = np.mean(mask[:height, :width].astype(bool) == keras_mask)
    assert agreement >= 0.999, agreement
    # Zero padding outside the image.
    assert not served[height:].any() and not served[:, width:].any()
    assert not mask[height:].any() and not mask[:, width:].any()
    assert set(np.unique(mask)) <= {0, 1}


def _assert_same_serving(outputs, expected, threshold):
    """Two calls of `serving_default` on the same request give the same answer, up to float noise.

    Not bit for bit (two forward passes, see `tests.helpers.FLOAT_NOISE`): the probabilities
    agree to FLOAT_NOISE, and the masks away from the threshold (`tests.helpers.assert_mask_near`).
    """
    np.testing.assert_array_equal(outputs["image_size"].numpy(), expected["image_size"].numpy())
    probability = expected["probability"].numpy()
    np.testing.assert_allclose(outputs["probability"].numpy(), probability, atol=FLOAT_NOISE)
    assert_mask_near(outputs["mask"].numpy(), expected["mask"].numpy(), probability, threshold)


def _serve(exported, images, expressions):
    return exported.serve(image_bytes=tf.constant(images), expression=tf.constant(expressions))


# ------------------------------------------------------------------------------ stored once


def _stored_values(prefix):
    """Values in a checkpoint / SavedModel `variables/variables` (the object graph excluded)."""
    return {
        name: int(np.prod(shape))
        for name, shape in tf.train.list_variables(prefix)
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def _inference_model(model):
    return model.inference_model()


def _expected_values(model):
    """What the export stores: the inference network's parameters plus its documented
    non-weight state (`refseg_tf.export.STORED_STATE`: random-seed generator states)."""
    from refseg_tf.export import stored_state_size

    model = _inference_model(model)
    return model.count_params() + stored_state_size(model)


def test_saved_model_stores_each_weight_once(exported):
    """Issue 21: every weight was stored twice (`model/...` and `model_variables/...`)."""
    stored = _stored_values(os.path.join(exported.saved_model_dir, "variables", "variables"))
    assert sum(stored.values()) == _expected_values(exported.predictor.model)
    assert not [name for name in stored if not name.startswith("model_variables/")]


@pytest.mark.parametrize("preset", preset_params())
def test_serving_module_of_every_preset_stores_each_weight_once(preset, tmp_path):
    """The object graph `tf.saved_model.save` stores, written as a checkpoint (no tracing):
    for every preset, the inference network's parameter count plus the documented state."""
    from refseg_tf.export import ServingModule
    from refseg_tf.inference import Predictor
    from refseg_tf.text import Vocabulary
    from refseg_tf.training import trainer

    config = _tiny_config(preset, {})
    vocabulary = Vocabulary.build(SENTENCES)
    config.model.vocabulary_size = len(vocabulary)
    vocabulary_path = str(tmp_path / "vocab.txt")
    vocabulary.save(vocabulary_path)
    model = trainer.build_model(config)
    module = ServingModule(Predictor(model, config, vocabulary), vocabulary_path)
    prefix = tf.train.Checkpoint(root=module).write(str(tmp_path / "module"))
    stored = _stored_values(prefix)
    assert sum(stored.values()) == _expected_values(model), preset
    if _inference_model(model) is not model:  # ASGN: its discriminator is not exported
        assert sum(stored.values()) < sum(int(np.prod(v.shape)) for v in model.weights)


# ------------------------------------------------------------------------------ parity


def test_serving_default_equals_predictor_one_image_at_a_time(exported):
    for i, (name, image_bytes) in enumerate(IMAGES.items()):
        expression = SENTENCES[i % len(SENTENCES)]
        outputs = _serve(exported, [image_bytes], [expression])
        assert outputs["mask"].dtype == tf.uint8 and outputs["probability"].dtype == tf.float32
        _assert_matches_predictor(exported, outputs, 0, image_bytes, expression)


def test_serving_default_equals_predictor_on_a_batch_of_three_sizes(exported):
    names = ["rgb.jpg", "rgba.png", "grey.png"]
    images = [IMAGES[n] for n in names]
    outputs = _serve(exported, images, SENTENCES)
    sizes = outputs["image_size"].numpy()
    assert outputs["mask"].shape == (3, sizes[:, 0].max(), sizes[:, 1].max())
    for i, image_bytes in enumerate(images):
        _assert_matches_predictor(exported, outputs, i, image_bytes, SENTENCES[i])


def _random_inputs(exported, batch, seed=0):
    from refseg_tf.data import preprocess_image

    size = exported.contract["image_size"]
    config = exported.predictor.config.data
    images = [
        preprocess_image(
            _smooth_image(30 + 7 * i, 50 - 5 * i, 3, seed + i), size,
            resize_method=config.resize_method, pad_value=config.pad_value,
            normalization=config.normalization,
        )[0]
        for i in range(batch)
    ]
    word_ids = exported.predictor.tokenizer(tf.constant(SENTENCES[:batch])).numpy()
    return np.stack(images).astype(np.float32), word_ids


def test_segment_tensors_and_tflite_equal_keras_logits(exported):
    from tests.test_case import run_export_test

    run_export_test(exported)  # every registered preset: `exported` iterates list_presets()


def test_float16_tflite_is_close_to_keras(exported, tmp_path, monkeypatch):
    """float16 weights keep the logits within 1e-2 (absolute) of the float32 model.

    The rounding error is about 1e-3 of the logits' magnitude, so the inputs must be what the
    preset is trained on: LTS fed mean-subtracted pixels instead of its pixels / 255 gave
    untrained logits of ~11.5 and errors of ~0.011 (`_tiny_config` takes the registered recipe).
    Exported by `export_model(formats=["tflite"])`: the TFLite-only export is checked here too,
    and that it traces the network once (through `keras.export.ExportArchive` it traced it three
    times, twice through `model_logits`).
    """
    from refseg_tf.export import TFLiteSegmenter, export_model
    from refseg_tf.export.serving import ServingModule

    traces = []
    original = ServingModule.model_logits

    def counted(self, image, word_ids):
        traces.append(tuple(image.shape))
        return original(self, image, word_ids)

    monkeypatch.setattr(ServingModule, "model_logits", counted)
    contract = export_model(
        exported.model_dir, str(tmp_path), formats=["tflite"], tflite_quantization="float16",
    )
    size = exported.contract["image_size"]
    assert traces == [(1, size, size, 3)]
    assert contract["tflite"]["quantization"] == "float16" and contract["saved_model"] is None
    assert not os.path.exists(tmp_path / "saved_model")
    model = exported.predictor.model
    images, word_ids = _random_inputs(exported, 1, seed=7)
    keras_logits = np.asarray(model({"image": images, "word_ids": word_ids}, training=False))
    lite = TFLiteSegmenter(str(tmp_path / contract["tflite"]["file"]))
    np.testing.assert_allclose(lite(images, word_ids), keras_logits, atol=1e-2)


@pytest.mark.slow  # a third TFLite conversion; the TFLite-only export runs by default (float16)
def test_dynamic_range_tflite_runs(default_exported, tmp_path):
    from refseg_tf.export import TFLiteSegmenter, export_model

    contract = export_model(
        default_exported.model_dir, str(tmp_path), formats=["tflite"],
        tflite_quantization="dynamic_range",
    )
    assert contract["tflite"]["quantization"] == "dynamic_range" and contract["saved_model"] is None
    assert not os.path.exists(tmp_path / "saved_model")
    images, word_ids = _random_inputs(default_exported, 1)
    logits = TFLiteSegmenter(str(tmp_path / "model.tflite"))(images, word_ids)
    keras_logits = np.asarray(default_exported.predictor.model({"image": images, "word_ids": word_ids}))
    assert logits.shape == keras_logits.shape and np.isfinite(logits).all()


# ------------------------------------------------------------------------------ as TF Serving runs it


def test_predict_request_of_tensorflow_serving_api(default_exported):
    """A gRPC PredictRequest and a REST body, decoded as TF Serving does, fed to the signature."""
    from tensorflow_serving.apis import predict_pb2

    exported = default_exported
    images = [IMAGES["rgb.jpg"], IMAGES["grey.png"]]
    expected = _serve(exported, images, SENTENCES[:2])

    request = client.build_grpc_request(images, SENTENCES[:2], "refseg", version=1)
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())  # over the wire
    assert request.model_spec.signature_name == "serving_default"
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    assert sorted(inputs) == ["expression", "image_bytes"]
    outputs = exported.serve(**{name: tf.constant(value) for name, value in inputs.items()})
    _assert_same_serving(outputs, expected, exported.predictor.threshold)
    response = predict_pb2.PredictResponse()
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
    parsed = client.parse_grpc_response(predict_pb2.PredictResponse.FromString(response.SerializeToString()))
    _check_parsed(parsed, expected)

    body = json.loads(json.dumps(client.build_rest_request(images, SENTENCES[:2])))
    rest_inputs = body["inputs"]
    decoded = [base64.b64decode(item["b64"]) for item in rest_inputs["image_bytes"]]
    assert decoded == images
    outputs = exported.serve(image_bytes=tf.constant(decoded), expression=tf.constant(rest_inputs["expression"]))
    rest_response = json.loads(json.dumps({"outputs": {k: v.numpy().tolist() for k, v in outputs.items()}}))
    _check_parsed(client.parse_rest_response(rest_response), expected)


def _check_parsed(parsed, expected):
    assert len(parsed) == len(expected["image_size"])
    for (mask, probability), size, full_mask, full_probability in zip(
        parsed, expected["image_size"].numpy(), expected["mask"].numpy(), expected["probability"].numpy()
    ):
        assert mask.shape == tuple(size) == probability.shape
        np.testing.assert_array_equal(mask, full_mask[: size[0], : size[1]])
        np.testing.assert_allclose(probability, full_probability[: size[0], : size[1]], atol=1e-6)


def _saved_model_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    executable = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return subprocess.run([executable, *args], capture_output=True, text=True, env=env, timeout=300)


def test_tf1_session_loader_runs_the_tensor_signature_as_tf_serving(default_exported):
    """What `saved_model_cli run` and TF Serving do, in this process: load the `serve` tag set
    into a TF1 graph and session, then feed and fetch the signature's tensor names (the
    subprocess test below runs the real command; `-m slow`, issue 21: suite time)."""
    exported = default_exported
    images, word_ids = _random_inputs(exported, 1)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            session, [tf.saved_model.SERVING], exported.saved_model_dir
        )
        assert {"serving_default", "segment_tensors"} <= set(meta_graph.signature_def)
        signature = meta_graph.signature_def["segment_tensors"]
        assert set(signature.inputs) == {"image", "word_ids"}
        assert set(signature.outputs) == {"logits"}
        logits = session.run(
            signature.outputs["logits"].name,
            feed_dict={
                signature.inputs["image"].name: images,
                signature.inputs["word_ids"].name: word_ids,
            },
        )
    keras_logits = np.asarray(exported.predictor.model({"image": images, "word_ids": word_ids}))
    # Two forward passes (graph vs Keras): oneDNN may change the last bits.
    np.testing.assert_allclose(logits, keras_logits, atol=1e-4)


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures_and_runs_them_as_tf_serving(default_exported, tmp_path):
    exported = default_exported
    shown = _saved_model_cli("show", "--dir", exported.saved_model_dir, "--all")
    assert shown.returncode == 0, shown.stderr[-2000:]
    for text in ("signature_def['serving_default']", "signature_def['segment_tensors']",
                 "inputs['image_bytes']", "inputs['expression']", "outputs['mask']",
                 "outputs['probability']", "outputs['image_size']", "inputs['image']",
                 "inputs['word_ids']", "outputs['logits']"):
        assert text in shown.stdout, text
    # `saved_model_cli run` loads with the TF1 session loader, as TF Serving does.
    images, word_ids = _random_inputs(exported, 1)
    np.save(tmp_path / "image.npy", images)
    np.save(tmp_path / "word_ids.npy", word_ids)
    ran = _saved_model_cli(
        "run", "--dir", exported.saved_model_dir, "--tag_set", "serve",
        "--signature_def", "segment_tensors", "--outdir", str(tmp_path / "out"),
        "--inputs", f"image={tmp_path / 'image.npy'};word_ids={tmp_path / 'word_ids.npy'}",
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    logits = np.load(tmp_path / "out" / "logits.npy")
    keras_logits = np.asarray(exported.predictor.model({"image": images, "word_ids": word_ids}))
    np.testing.assert_allclose(logits, keras_logits, atol=1e-4)


# ------------------------------------------------------------------------------ bad payloads


def _oversized_png():
    """A valid small PNG whose header claims 8000 x 6000 pixels (checked before decoding)."""
    data = bytearray(IMAGES["rgb.png"])
    data[16:24] = (8000).to_bytes(4, "big") + (6000).to_bytes(4, "big")
    return bytes(data)


BAD_PAYLOADS = {
    "empty bytes": ([b"", IMAGES["rgb.png"]], SENTENCES[:2], "image_bytes[0] is empty"),
    "not an image": ([IMAGES["rgb.png"], b"hello world"], SENTENCES[:2], "image_bytes[1] is not a JPEG"),
    "truncated jpeg": ([IMAGES["rgb.jpg"][:200]], SENTENCES[:1], "image_bytes"),
    "truncated png": ([IMAGES["rgb.png"][:100]], SENTENCES[:1], "image_bytes"),
    "empty expression": ([IMAGES["rgb.png"]] * 2, ["a square", "  "], "expression must be non-empty"),
    "different lengths": ([IMAGES["rgb.png"]] * 2, SENTENCES[:1], "image_bytes and expression must have the same length"),
    "empty batch": ([], [], "at least one example"),
    "over the pixel limit": ([_oversized_png()], SENTENCES[:1], "image_bytes[0] has"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAYLOADS))
def test_bad_payload_names_the_input_and_the_model_still_serves(default_exported, case):
    exported = default_exported
    images, expressions, message = BAD_PAYLOADS[case]
    good = _serve(exported, [IMAGES["rgba.png"]], SENTENCES[:1])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        exported.serve(
            image_bytes=tf.constant(images, tf.string), expression=tf.constant(expressions, tf.string)
        )
    again = _serve(exported, [IMAGES["rgba.png"]], SENTENCES[:1])
    _assert_same_serving(again, good, exported.predictor.threshold)


def _with_header_size(data, offset, width, height, byteorder, length):
    data = bytearray(data)
    data[offset : offset + 2 * length] = width.to_bytes(length, byteorder) + height.to_bytes(
        length, byteorder
    )
    return bytes(data)


def test_gif_and_bmp_are_served_and_their_headers_checked(default_exported):
    exported = default_exported
    gif = encode_image(_smooth_image(27, 35, 3, 5), "GIF")
    bmp = encode_image(_smooth_image(31, 22, 3, 6), "BMP")
    outputs = _serve(exported, [gif, bmp], SENTENCES[:2])
    _assert_matches_predictor(exported, outputs, 0, gif, SENTENCES[0])
    _assert_matches_predictor(exported, outputs, 1, bmp, SENTENCES[1])
    for huge in (
        _with_header_size(gif, 6, 65000, 65000, "little", 2),
        _with_header_size(bmp, 18, 9000, 9000, "little", 4),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match="image_bytes.0. has"):
            _serve(exported, [huge], SENTENCES[:1])


def test_pixel_limit_is_configurable(default_exported):
    from refseg_tf.export import ServingModule

    module = ServingModule(
        default_exported.predictor, os.path.join(default_exported.model_dir, "vocab.txt"), max_pixels=1500
    )
    small = encode_image(_smooth_image(30, 40, 3, 0), "PNG")  # 1200 pixels
    large = encode_image(_smooth_image(40, 40, 3, 0), "JPEG")  # 1600 pixels
    assert module.serve(tf.constant([small]), tf.constant(["x"]))["mask"].shape == (1, 30, 40)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than the limit of 1500"):
        module.serve(tf.constant([large]), tf.constant(["x"]))
    with pytest.raises(ValueError, match="`max_pixels` must be a positive integer"):
        ServingModule(default_exported.predictor, "vocab.txt", max_pixels=0)


# ------------------------------------------------------------------------------ contract and files


def test_export_json_is_the_contract(exported):
    from refseg_tf.export import TFLiteSegmenter, describe_signature

    with open(os.path.join(exported.output_dir, "export.json"), encoding="utf-8") as f:
        contract = json.load(f)
    assert contract == json.loads(json.dumps(exported.contract))
    config = exported.predictor.config
    assert contract["model"]["name"] == config.model.name
    assert contract["model"]["config"]["model"]["vocabulary_size"] == config.model.vocabulary_size
    assert contract["image_size"] == config.data.image_size
    assert contract["max_length"] == config.data.max_length
    assert contract["text_padding"] == config.data.text_padding
    assert contract["preprocessing"]["normalization"] == config.data.normalization
    assert contract["scoring"]["threshold"] == exported.predictor.threshold
    assert contract["scoring"]["rule"] == config.eval.scoring_rule == exported.predictor.scoring_rule
    assert contract["preprocessor"] == exported.predictor.preprocessor.get_config()
    convlstm = config.model.name == "rrn" and config.model.get("lstm_cell", "keras") == "keras"
    assert ("ConvLSTM2D fixed its map size" in contract["image_size_note"]) == convlstm
    with open(os.path.join(exported.output_dir, contract["vocabulary_file"]), encoding="utf-8") as f:
        exported_vocabulary = f.read()
    with open(os.path.join(exported.model_dir, "vocab.txt"), encoding="utf-8") as f:
        assert exported_vocabulary == f.read()
    signatures = contract["saved_model"]["signatures"]
    for name in ("serving_default", "segment_tensors"):
        assert signatures[name] == describe_signature(exported.loaded.signatures[name])
    size, length = contract["image_size"], contract["max_length"]
    assert signatures["serving_default"]["inputs"] == {
        "expression": {"dtype": "string", "shape": [None]},
        "image_bytes": {"dtype": "string", "shape": [None]},
    }
    assert signatures["serving_default"]["outputs"]["image_size"] == {"dtype": "int32", "shape": [None, 2]}
    assert signatures["segment_tensors"]["inputs"]["image"] == {"dtype": "float32", "shape": [None, size, size, 3]}
    assert signatures["segment_tensors"]["inputs"]["word_ids"] == {"dtype": "int32", "shape": [None, length]}
    lite = contract["tflite"]
    assert lite["batch_size"] == 1 and lite["quantization"] == "none"
    assert lite["signature"] == TFLiteSegmenter(os.path.join(exported.output_dir, lite["file"])).signature()
    assert lite["signature"]["inputs"]["image"] == {"dtype": "float32", "shape": [1, size, size, 3]}
    assert lite["signature"]["inputs"]["word_ids"] == {"dtype": "int32", "shape": [1, length]}


def test_export_refuses_an_existing_version_and_bad_arguments(default_exported, tmp_path):
    from refseg_tf.export import export_model

    with pytest.raises(FileExistsError, match="pass another --version"):
        export_model(default_exported.model_dir, default_exported.output_dir, formats=["saved_model"])
    with pytest.raises(ValueError, match="`formats` must be"):
        export_model(default_exported.model_dir, str(tmp_path), formats=["onnx"])
    with pytest.raises(ValueError, match="`version` must be a positive integer"):
        export_model(default_exported.model_dir, str(tmp_path), version=0)
    with pytest.raises(ValueError, match="`tflite_quantization` must be one of"):
        export_model(default_exported.model_dir, str(tmp_path), tflite_quantization="int4")
    assert os.listdir(tmp_path) == []


def test_predict_with_saved_model_writes_what_model_dir_writes(default_exported, tmp_path):
    from refseg_tf.predict import predict_to_files, predict_with_saved_model_to_files

    path = str(tmp_path / "photo.png")
    with open(path, "wb") as f:
        f.write(IMAGES["rgba.png"])
    keras_mask, _ = predict_to_files(
        default_exported.model_dir, path, SENTENCES[0], str(tmp_path / "keras.png"),
        probabilities_path=str(tmp_path / "keras.npy"), predictor=default_exported.predictor,
    )
    served_mask, overlay = predict_with_saved_model_to_files(
        default_exported.saved_model_dir, path, SENTENCES[0], str(tmp_path / "served.png"),
        probabilities_path=str(tmp_path / "served.npy"),
    )
    assert np.mean(served_mask == keras_mask) >= 0.999
    np.testing.assert_allclose(np.load(tmp_path / "served.npy"), np.load(tmp_path / "keras.npy"), atol=1e-4)
    with Image.open(tmp_path / "served.png") as mask:
        assert mask.mode == "L" and mask.size == (45, 45)
    assert os.path.isfile(overlay)


def test_saved_model_threshold_goes_through_the_scoring_rule(default_exported, tmp_path, monkeypatch):
    """`refseg-predict --saved_model --threshold`: the model dir's scoring rule at that threshold
    (`serving_threshold`), as `--model_dir --threshold`; before, it cut the probability map."""
    from refseg_tf import export
    from refseg_tf.export import THRESHOLD_SIGNATURE
    from refseg_tf.predict import predict_to_files, predict_with_saved_model_to_files

    # One SavedModel load for the three thresholds (a load costs ~1.5 s); the same code path.
    loaded = export.SavedModelPredictor(default_exported.saved_model_dir)
    monkeypatch.setattr(export, "SavedModelPredictor", lambda directory: loaded)

    assert default_exported.predictor.scoring_rule == "upsample_logits"
    assert THRESHOLD_SIGNATURE in default_exported.loaded.signatures
    path = str(tmp_path / "photo.png")
    with open(path, "wb") as f:
        f.write(IMAGES["rgba.png"])
    served = {}
    for threshold in (0.0, 0.48, 1.0):
        keras_mask, _ = predict_to_files(
            default_exported.model_dir, path, SENTENCES[0], str(tmp_path / "keras.png"),
            threshold=threshold, predictor=default_exported.predictor,
        )
        served[threshold], _ = predict_with_saved_model_to_files(
            default_exported.saved_model_dir, path, SENTENCES[0], str(tmp_path / "served.png"),
            threshold=threshold,
        )
        # Float logits of two graphs: a pixel at the cut may differ in the last bits.
        assert np.mean(served[threshold] == keras_mask) >= 0.999
    assert served[0.0].all() and not served[1.0].any()


def test_export_vocabulary_asset_is_the_preprocessors(default_exported):
    from refseg_tf.text import Vocabulary

    asset = os.path.join(default_exported.saved_model_dir, "assets", "vocab.txt")
    assert Vocabulary.load(asset) == default_exported.predictor.preprocessor.vocabulary


def test_image_bytes_for_serving_reencodes_rotated_and_other_formats(tmp_path):
    from refseg_tf.export import image_bytes_for_serving
    from refseg_tf.inference import read_image

    picture = _smooth_image(20, 30, 3, 0)
    plain = tmp_path / "plain.png"
    Image.fromarray(picture).save(plain)
    assert image_bytes_for_serving(str(plain)) == plain.read_bytes()
    for name, options in (("photo.tiff", {}), ("rotated.jpg", {"exif": _rotation_exif()})):
        path = tmp_path / name
        Image.fromarray(picture).save(path, **options)
        data = image_bytes_for_serving(str(path))
        assert data.startswith(b"\x89PNG")
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), read_image(str(path)))
    with pytest.raises(FileNotFoundError):
        image_bytes_for_serving(str(tmp_path / "missing.jpg"))


def _rotation_exif():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    return exif.tobytes()


def test_client_writes_mask_and_overlay(tmp_path):
    mask = np.zeros([12, 20], np.uint8)
    mask[3:6, 4:9] = 1
    picture = _smooth_image(12, 20, 3, 0)
    output, overlay = client.write_mask_and_overlay(mask, picture, str(tmp_path / "m.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(output)), mask * 255)
    assert Image.open(overlay).size == (20, 12)
    path = tmp_path / "image.tiff"
    Image.fromarray(picture).save(path)
    data, shown = client.read_image_bytes(str(path))
    assert data.startswith(b"\x89PNG")
    np.testing.assert_array_equal(shown, picture)


@pytest.mark.slow
def test_export_follows_the_resize_probability_rule(tmp_path):
    """`eval.scoring_rule="resize_probability"` (MCN/LTS): the served mask is that rule's."""
    from refseg_tf.export import export_model
    from refseg_tf.inference import Predictor
    from refseg_tf.training import config as config_lib

    model_dir = make_model_dir(str(tmp_path), DEFAULT_PRESETS[0])
    config = config_lib.load_config(model_dir)
    config.eval.scoring_rule = "resize_probability"
    config_lib.save_config(config, model_dir)
    contract = export_model(model_dir, str(tmp_path / "out"), formats=["saved_model"])
    assert contract["scoring"]["rule"] == "resize_probability"
    assert contract["preprocessor"]["scoring_rule"] == "resize_probability"
    exported = Exported.__new__(Exported)
    exported.predictor = Predictor.from_model_dir(model_dir)
    serve = tf.saved_model.load(str(tmp_path / "out" / "saved_model" / "1")).signatures["serving_default"]
    images = [IMAGES["rgb.jpg"], IMAGES["grey.png"]]
    outputs = serve(image_bytes=tf.constant(images), expression=tf.constant(SENTENCES[:2]))
    for i, image_bytes in enumerate(images):
        _assert_matches_predictor(exported, outputs, i, image_bytes, SENTENCES[i])
        height, width = outputs["image_size"][i].numpy()
        probability = outputs["probability"][i, :height, :width].numpy()
        mask = outputs["mask"][i, :height, :width].numpy()
        np.testing.assert_array_equal(mask, probability >= exported.predictor.threshold)


# ------------------------------------------------------------------------------ slow: more models, CLIs


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides", RRN_OPTIONS, ids=[n for n, _ in RRN_OPTIONS])
def test_every_rrn_variant_exports_and_matches(name, overrides, tmp_path):
    exported = Exported(str(tmp_path), name, overrides)
    test_serving_default_equals_predictor_on_a_batch_of_three_sizes(exported)
    test_segment_tensors_and_tflite_equal_keras_logits(exported)


def _run_module(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    return subprocess.run(
        [sys.executable, "-m", f"refseg_tf.{module}", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.mark.slow
def test_trained_model_exports_and_the_commands_work(tmp_path):
    """refseg-train on the synthetic data -> refseg-export -> refseg-predict --saved_model."""
    raw, records, model_dir, out = (str(tmp_path / n) for n in ("raw", "records", "model", "out"))
    steps = [
        ("synthetic", f"--output_dir={raw}", "--num_images=24", "--image_size=48", "--seed=3"),
        ("convert", "--format=refer", f"--data_root={raw}", "--dataset=synthetic", "--split_by=unc",
         f"--image_root={raw}/images", f"--output_dir={records}", "--num_shards=1", "--noprogress"),
        ("train", "--config=experiments/synthetic_rrn.py", f"--config.data.dir={records}",
         "--config.train.steps=3", "--config.train.checkpoint_every=3",
         "--config.train.batch_size=4", f"--model_dir={model_dir}"),
        ("export_model", f"--model_dir={model_dir}", f"--output_dir={out}"),
    ]
    for step in steps:
        result = _run_module(*step)
        assert result.returncode == 0, (step[0], result.stderr[-3000:])
    assert "TF Serving base path" in result.stdout
    again = _run_module("export_model", f"--model_dir={model_dir}", f"--output_dir={out}")
    assert again.returncode == 1 and "pass another --version" in again.stderr
    exported_image = os.path.join(raw, "images", sorted(os.listdir(os.path.join(raw, "images")))[0])
    masks = {}
    for flag in (f"--saved_model={out}/saved_model/1", f"--model_dir={model_dir}"):
        output = str(tmp_path / f"{len(masks)}.png")
        result = _run_module("predict", flag, f"--image={exported_image}",
                             "--expression=the red circle", f"--output={output}")
        assert result.returncode == 0, result.stderr[-3000:]
        masks[flag] = np.asarray(Image.open(output))
    first, second = masks.values()
    assert first.shape == second.shape and np.mean(first == second) >= 0.999

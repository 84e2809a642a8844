"""Tests of refseg_tf.data.load on small TFRecords written here with known images and masks."""

import collections
import io
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from refseg_tf.data import (
    available_splits,
    choose_auto_shard_policy,
    detect_worker_count,
    find_shards,
    load,
    preprocess_image,
    resize_and_pad_mask,
)
from refseg_tf.data import schema
from refseg_tf.data.settings import PREPROCESSING_DEFAULTS
from refseg_tf.data.transforms import CAFFE_BGR_MEAN, VGG_RGB_MEAN
from refseg_tf.preprocessing import ReferringPreprocessor

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 32
MAX_LENGTH = 6
WORDS_BEFORE_SENTENCE_WORDS = 6  # <pad> <go> <eos> <unk> the thing
CONSTANT_COLOUR = (200, 17, 90)
_SETTING_KEYS = set(PREPROCESSING_DEFAULTS) | {"vocabulary"}

Ref = collections.namedtuple("Ref", "ref_id image_id mask sent_ids")

# image_id: (height, width, [(ref_id, number of sentences), ...]); image 1 is one flat colour.
TRAIN_IMAGES = {
    1: (40, 64, [(10, 2), (11, 1)]),
    2: (64, 32, [(20, 3), (21, 1)]),
    3: (50, 50, [(30, 1)]),
    4: (30, 90, [(40, 2), (41, 3), (42, 1)]),
}
TRAIN_SHARDS = [[1, 3], [2, 4]]
VAL_IMAGES = {
    5: (48, 36, [(50, 2)]),
    6: (36, 48, [(60, 1), (61, 2)]),
    7: (33, 70, [(70, 1)]),
}


class Corpus:
    """What the test dataset holds, in plain numpy, to check the pipeline against."""

    def __init__(self):
        self.images = {}  # image_id -> uint8 [h, w, 3]
        self.refs = {}  # ref_id -> Ref
        self.sentence_ref = {}  # sent_id -> ref_id
        self.next_sent_id = 0

    def add_image(self, image_id, height, width, ref_specs, rng):
        if image_id == 1:
            image = np.broadcast_to(np.array(CONSTANT_COLOUR, np.uint8), [height, width, 3])
        else:
            image = rng.integers(0, 256, [height, width, 3], dtype=np.uint8)
        self.images[image_id] = np.ascontiguousarray(image)
        refs = []
        for index, (ref_id, count) in enumerate(ref_specs):
            mask = np.zeros([height, width], np.uint8)
            mask[2 + 3 * index : height // 2 + 3 * index, 4 + 2 * index : width - 5] = 1
            sent_ids = list(range(self.next_sent_id, self.next_sent_id + count))
            self.next_sent_id += count
            self.refs[ref_id] = Ref(ref_id, image_id, mask, sent_ids)
            self.sentence_ref.update({sent_id: ref_id for sent_id in sent_ids})
            refs.append(self.refs[ref_id])
        return refs

    def refs_of(self, image_ids):
        return [ref for ref in self.refs.values() if ref.image_id in image_ids]

    def sentences_of(self, image_ids):
        return sorted(s for ref in self.refs_of(image_ids) for s in ref.sent_ids)


def sentence_text(sent_id):
    return f"The w{sent_id} thing."


def sent_id_from_word_ids(word_ids):
    # Front padding: [... <pad>, the, w<id>, thing].
    return int(word_ids[-2]) - WORDS_BEFORE_SENTENCE_WORDS


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image_record(corpus, image_id, refs):
    image = corpus.images[image_id]
    return schema.ImageRecord(
        image_id=image_id,
        file_name=f"images/{image_id:04d}.png",
        encoded=png_bytes(image),
        image_format="png",
        height=image.shape[0],
        width=image.shape[1],
        refs=[
            schema.RefRecord(
                ref_id=ref.ref_id,
                mask=ref.mask,
                sentences=[schema.Sentence(s, sentence_text(s)) for s in ref.sent_ids],
            )
            for ref in refs
        ],
    )


def write_split(directory, split, shards):
    for index, records in enumerate(shards):
        name = schema.SHARD_PATTERN.format(split=split, index=index, count=len(shards))
        with tf.io.TFRecordWriter(str(directory / name)) as writer:
            for record in records:
                writer.write(schema.encode_example(record))


def write_vocabulary(directory, corpus):
    words = ["<pad>", "<go>", "<eos>", "<unk>", "the", "thing"]
    words += [f"w{i}" for i in range(corpus.next_sent_id)]
    (directory / schema.VOCAB_FILENAME).write_text("\n".join(words) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    directory = tmp_path_factory.mktemp("converted")
    corpus = Corpus()
    rng = np.random.default_rng(0)
    records = {}
    for image_id, (height, width, refs) in {**TRAIN_IMAGES, **VAL_IMAGES}.items():
        records[image_id] = image_record(
            corpus, image_id, corpus.add_image(image_id, height, width, refs, rng)
        )
    write_split(directory, "train", [[records[i] for i in shard] for shard in TRAIN_SHARDS])
    write_split(directory, "val", [[records[i] for i in VAL_IMAGES]])
    write_vocabulary(directory, corpus)
    return directory, corpus


@pytest.fixture(scope="module")
def train_split_eval(dataset):
    """The train split read in eval mode (batch 3), unbatched: shared by several tests."""
    directory, _ = dataset
    return examples(load_small(directory, "train", "eval", batch_size=3))


def small_preprocessor(directory, vocabulary=None, **settings):
    """The data directory's preprocessor at the tests' small sizes (S = 32, T = 6)."""
    settings.setdefault("image_size", SIZE)
    settings.setdefault("max_length", MAX_LENGTH)
    return ReferringPreprocessor.from_data_dir(directory, vocabulary, **settings)


def load_small(directory, split, mode="train", batch_size=3, **kwargs):
    """`load` with the tests' small preprocessor; preprocessing settings among `kwargs` go to
    `small_preprocessor` (`load` itself takes only a preprocessor)."""
    settings = {key: kwargs.pop(key) for key in list(kwargs) if key in _SETTING_KEYS}
    kwargs.setdefault("shuffle_buffer", 16)
    if "preprocessor" not in kwargs:
        kwargs["preprocessor"] = small_preprocessor(directory, **settings)
    return load(directory, split, mode, batch_size, **kwargs)


def examples(dataset_):
    """Unbatches a dataset of dict batches into a list of dicts of numpy values."""
    out = []
    for batch in dataset_:
        count = len(next(iter(batch.values())))
        out.extend({key: value[i].numpy() for key, value in batch.items()} for i in range(count))
    return out


# ---------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize("batch_size", [1, 3])
def test_train_batches_have_documented_shapes(dataset, batch_size):
    directory, _ = dataset
    data = load_small(directory, "train", batch_size=batch_size, label_grid=8, seed=1)
    spec = data.element_spec
    assert set(spec) == {"image", "word_ids", "mask", "image_window", "label"}
    batch = next(iter(data))
    expected = {
        "image": ([batch_size, SIZE, SIZE, 3], tf.float32),
        "word_ids": ([batch_size, MAX_LENGTH], tf.int32),
        "mask": ([batch_size, SIZE, SIZE, 1], tf.float32),
        "image_window": ([batch_size, 4], tf.int32),
        "label": ([batch_size, 8, 8, 1], tf.float32),
    }
    for key, (shape, dtype) in expected.items():
        assert spec[key].shape.as_list() == shape, key  # static: drop_remainder in train
        assert batch[key].dtype == dtype, key
    assert set(np.unique(batch["mask"].numpy())) <= {0.0, 1.0}


@pytest.mark.parametrize("batch_size", [1, 3])
def test_eval_batches_have_documented_shapes(dataset, batch_size):
    directory, corpus = dataset
    batches = list(load_small(directory, "val", "eval", batch_size=batch_size))
    total = len(corpus.sentences_of(VAL_IMAGES))
    assert sum(len(b["sent_id"]) for b in batches) == total  # final partial batch kept
    for batch in batches:
        count = len(batch["sent_id"])
        assert batch["image"].shape == (count, SIZE, SIZE, 3)
        assert batch["word_ids"].shape == (count, MAX_LENGTH)
        assert batch["original_mask"].dtype == tf.uint8
        assert batch["original_size"].dtype == tf.int32
        sizes = batch["original_size"].numpy()
        assert batch["original_mask"].shape == (count, sizes[:, 0].max(), sizes[:, 1].max())
        for key in ("ref_id", "sent_id", "image_id"):
            assert batch[key].dtype == tf.int64 and batch[key].shape == (count,)
        assert batch["sentence"].dtype == tf.string
        assert "label" not in batch


# ---------------------------------------------------------------- sentences


def test_eval_yields_every_sentence_once_in_a_fixed_order(dataset, train_split_eval):
    directory, corpus = dataset
    first = train_split_eval
    second = examples(load_small(directory, "train", "eval", batch_size=2))
    sent_ids = [int(e["sent_id"]) for e in first]
    assert sorted(sent_ids) == corpus.sentences_of(TRAIN_IMAGES)
    assert sent_ids == [int(e["sent_id"]) for e in second]
    for example in first:
        ref = corpus.refs[corpus.sentence_ref[int(example["sent_id"])]]
        height, width = corpus.images[ref.image_id].shape[:2]
        assert int(example["ref_id"]) == ref.ref_id and int(example["image_id"]) == ref.image_id
        assert example["sentence"].decode() == sentence_text(int(example["sent_id"]))
        assert sent_id_from_word_ids(example["word_ids"]) == int(example["sent_id"])
        np.testing.assert_array_equal(example["original_size"], [height, width])
        original = example["original_mask"]
        np.testing.assert_array_equal(original[:height, :width], ref.mask)
        assert not original[height:].any() and not original[:, width:].any()


def check_train_example(corpus, example, normalization=PREPROCESSING_DEFAULTS["normalization"]):
    """Returns (ref_id, sent_id) of a train example after checking image and mask match them."""
    sent_id = sent_id_from_word_ids(example["word_ids"])
    ref = corpus.refs[corpus.sentence_ref[sent_id]]
    image, window = preprocess_image(corpus.images[ref.image_id], SIZE, normalization=normalization)
    np.testing.assert_allclose(example["image"], image.numpy(), atol=1e-4)
    np.testing.assert_array_equal(example["image_window"], window.numpy())
    np.testing.assert_array_equal(example["mask"], resize_and_pad_mask(ref.mask, SIZE).numpy())
    return ref.ref_id, sent_id


def test_sample_mode_gives_one_sentence_per_ref_per_epoch(dataset):
    directory, corpus = dataset
    data = load_small(directory, "train", batch_size=1, repeat=1, seed=7)
    pairs = [check_train_example(corpus, e) for e in examples(data)]
    expected_refs = sorted(ref.ref_id for ref in corpus.refs_of(TRAIN_IMAGES))
    assert sorted(ref_id for ref_id, _ in pairs) == expected_refs
    for ref_id, sent_id in pairs:
        assert sent_id in corpus.refs[ref_id].sent_ids


def test_sample_mode_draws_every_sentence_over_epochs(dataset):
    directory, corpus = dataset
    epochs = 24
    data = load_small(directory, "train", batch_size=4, repeat=epochs, seed=3, drop_remainder=False)
    sent_ids = [sent_id_from_word_ids(ids) for b in data for ids in b["word_ids"].numpy()]
    refs = corpus.refs_of(TRAIN_IMAGES)
    assert len(sent_ids) == epochs * len(refs)
    counts = collections.Counter(corpus.sentence_ref[s] for s in sent_ids)
    assert set(counts.values()) == {epochs}
    # (2/3)^24 * 3 < 1e-4: with a fixed seed this cannot flake.
    assert set(sent_ids) == set(corpus.sentences_of(TRAIN_IMAGES))


def test_all_mode_in_train_gives_every_sentence(dataset):
    directory, corpus = dataset
    data = load_small(
        directory,
        "train",
        batch_size=2,
        sentences="all",
        repeat=1,
        seed=5,
        drop_remainder=False,
        normalization="caffe_bgr",
    )
    pairs = [check_train_example(corpus, e, "caffe_bgr") for e in examples(data)]
    assert sorted(s for _, s in pairs) == corpus.sentences_of(TRAIN_IMAGES)


def test_train_is_reproducible_with_a_seed_and_shuffled(dataset, train_split_eval):
    directory, _ = dataset

    def order(seed):
        data = load_small(directory, "train", batch_size=1, sentences="all", repeat=2, seed=seed)
        return [sent_id_from_word_ids(b["word_ids"][0].numpy()) for b in data]

    first = order(11)
    assert first == order(11)
    # 28 elements: a different seed or the unshuffled eval order coincide with odds ~ 1/28!.
    assert first != order(12)
    eval_order = [int(e["sent_id"]) for e in train_split_eval]
    assert first[: len(eval_order)] != eval_order


def test_parallel_and_sequential_pipelines_agree(dataset):
    directory, _ = dataset
    fast = examples(load_small(directory, "val", "eval", batch_size=2))
    slow = examples(
        load_small(directory, "val", "eval", batch_size=2, num_parallel_calls=1, prefetch=False)
    )
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        for key in ("image", "mask", "word_ids", "sent_id", "original_mask"):
            np.testing.assert_array_equal(a[key], b[key])


def test_train_batches_equal_padded_batches(dataset, monkeypatch):
    # Train mode batches with `batch` (faster); it must give what `padded_batch` gave.
    from refseg_tf.data import pipeline

    directory, _ = dataset
    options = dict(batch_size=3, label_grid=8, seed=4, repeat=1)
    batched = examples(load_small(directory, "train", **options))
    monkeypatch.setattr(
        pipeline, "_batch",
        lambda data, size, training, drop: data.padded_batch(size, drop_remainder=True),
    )
    padded = examples(load_small(directory, "train", **options))
    assert len(batched) == len(padded) > 0
    for a, b in zip(batched, padded):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


# ---------------------------------------------------------------- values


def flat_colour_examples(directory, **kwargs):
    data = load_small(directory, "train", "eval", batch_size=4, **kwargs).unbatch()
    return [e for e in data.as_numpy_iterator() if int(e["image_id"]) == 1]


@pytest.mark.parametrize(
    "normalization, pad_value, inside, outside",
    [
        # vgg_rgb and none (the arithmetic of each is in tests/test_transforms.py) run with
        # `-m slow`; caffe_bgr (channel swap, zero pad) and unit (grey pad) by default (issue 21).
        pytest.param("vgg_rgb", "zero", np.subtract(CONSTANT_COLOUR, VGG_RGB_MEAN),
                     -np.array(VGG_RGB_MEAN), marks=pytest.mark.slow),
        (
            "caffe_bgr",
            "zero",
            np.subtract(CONSTANT_COLOUR[::-1], CAFFE_BGR_MEAN),
            -np.array(CAFFE_BGR_MEAN),
        ),
        ("unit", "grey", np.divide(CONSTANT_COLOUR, 255.0), np.full(3, 128.0 / 255.0)),
        pytest.param("none", "grey", np.array(CONSTANT_COLOUR, float), np.full(3, 128.0),
                     marks=pytest.mark.slow),
    ],
)
def test_image_window_padding_and_normalisation(dataset, normalization, pad_value, inside, outside):
    directory, _ = dataset
    method = "bicubic" if pad_value == "grey" else "bilinear"
    (example, *_) = flat_colour_examples(
        directory, normalization=normalization, pad_value=pad_value, resize_method=method
    )
    # A 40 x 64 image in a 32 square: scale 0.5 -> 20 x 32 at row 6.
    np.testing.assert_array_equal(example["image_window"], [6, 0, 20, 32])
    image = example["image"]
    np.testing.assert_allclose(image[6:26], np.broadcast_to(inside, [20, 32, 3]), atol=1e-3)
    np.testing.assert_allclose(image[:6], np.broadcast_to(outside, [6, 32, 3]), atol=1e-5)
    np.testing.assert_allclose(image[26:], np.broadcast_to(outside, [6, 32, 3]), atol=1e-5)


def test_mask_lands_in_the_window(dataset, train_split_eval):
    _, corpus = dataset
    (example,) = [e for e in train_split_eval if int(e["sent_id"]) == corpus.refs[10].sent_ids[0]]
    # Ref 10 covers rows 2..19 and columns 4..58 of the 40 x 64 image; factor-2 downsampling
    # maps them to rows 1..9 (+6 offset) and columns 2..29 (bilinear, then > 0).
    np.testing.assert_array_equal(corpus.refs[10].mask.nonzero()[0][[0, -1]], [2, 19])
    expected = np.zeros([SIZE, SIZE, 1], np.float32)
    expected[7:16, 2:30] = 1.0
    np.testing.assert_array_equal(example["mask"], expected)


@pytest.mark.parametrize("label_mode", ["soft", "any"])
def test_labels_match_numpy_downsampling(dataset, label_mode):
    directory, _ = dataset
    data = load_small(directory, "val", "eval", batch_size=4, label_grid=8, label_mode=label_mode)
    for batch in data:
        cells = batch["mask"].numpy().reshape(-1, 8, 4, 8, 4, 1)
        soft = cells.mean(axis=(2, 4))
        expected = {
            "soft": soft,
            "any": cells.max(axis=(2, 4)),
        }[label_mode]
        np.testing.assert_allclose(batch["label"].numpy(), expected, atol=1e-6)


def test_as_supervised_yields_inputs_and_target(dataset):
    directory, _ = dataset
    inputs, target = next(iter(load_small(directory, "train", as_supervised=True, seed=0)))
    assert set(inputs) == {"image", "word_ids"} and target.shape == (3, SIZE, SIZE, 1)
    inputs, target = next(
        iter(load_small(directory, "train", as_supervised=True, label_grid=4, seed=0))
    )
    assert target.shape == (3, 4, 4, 1)


def test_text_options_and_explicit_vocabulary(dataset):
    directory, _ = dataset
    vocabulary = directory / schema.VOCAB_FILENAME
    (example, *_) = examples(
        load_small(
            directory, "val", "eval", text_padding="back", max_length=4, vocabulary=str(vocabulary)
        )
    )
    sent_id = int(example["sent_id"])
    np.testing.assert_array_equal(
        example["word_ids"], [4, WORDS_BEFORE_SENTENCE_WORDS + sent_id, 5, 0]
    )


# ---------------------------------------------------------------- errors


def test_missing_split_names_directory_and_existing_splits(dataset):
    directory, _ = dataset
    assert available_splits(directory) == ["train", "val"]
    with pytest.raises(FileNotFoundError, match=r"'testA'.*converted.*\['train', 'val'\]"):
        load_small(directory, "testA")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(directory / "nowhere", "train")  # the shards are looked for first


def test_missing_vocabulary_is_reported(dataset, tmp_path):
    directory, _ = dataset
    for shard in find_shards(directory, "val"):
        (tmp_path / os.path.basename(shard)).write_bytes(pathlib.Path(shard).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"vocab\.txt.*" + tmp_path.name):
        load(tmp_path, "val")  # the default preprocessor is the data directory's


def test_incomplete_shard_set_is_reported(dataset, tmp_path):
    directory, _ = dataset
    shard = find_shards(directory, "train")[1]
    (tmp_path / os.path.basename(shard)).write_bytes(pathlib.Path(shard).read_bytes())
    with pytest.raises(ValueError, match=r"incomplete: 1 of 2 shards.*train-00000-of-00002"):
        load_small(tmp_path, "train", preprocessor=small_preprocessor(directory))


def test_record_with_wrong_image_size_names_the_image(dataset, tmp_path):
    directory, corpus = dataset
    record = image_record(corpus, 3, corpus.refs_of([3]))
    record.height, record.width = 40, 50
    for ref in record.refs:
        ref.mask = np.ones([40, 50], np.uint8)
    write_split(tmp_path, "bad", [[record]])
    (tmp_path / schema.VOCAB_FILENAME).write_text("<pad>\n<go>\n<eos>\n<unk>\n")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images/0003\.png"):
        list(load_small(tmp_path, "bad", "eval"))


@pytest.mark.parametrize(
    "argument, value, message",
    [
        ("mode", "test", "`mode` must be one of 'train', 'eval'"),
        ("batch_size", 0, "`batch_size` must be a positive integer"),
        ("image_size", 32.0, "`image_size` must be a positive integer"),
        ("max_length", -1, "`max_length` must be a positive integer"),
        ("text_padding", "left", "`text_padding` must be one of 'front', 'back'"),
        ("resize_method", "area", "`resize_method` must be one of 'bilinear', 'bicubic'"),
        ("pad_value", 0, "`pad_value` must be one of 'zero', 'grey'"),
        ("normalization", "imagenet", "`normalization` must be one of 'vgg_rgb'"),
        ("label_grid", 0, "`label_grid` must be a positive integer"),
        ("label_grid", 64, "`label_grid` .* must not exceed the preprocessor.s `image_size`"),
        ("label_mode", "hard", "`label_mode` must be one of 'binary', 'soft', 'any'"),
        ("sentences", "first", "`sentences` must be one of 'sample', 'all'"),
        ("shuffle_buffer", 0, "`shuffle_buffer` must be a positive integer"),
        ("seed", "1", "`seed` must be None or a non-negative integer"),
        ("repeat", 0, "`repeat` must be a positive integer"),
        ("drop_remainder", 1, "`drop_remainder` must be None, True or False"),
        ("as_supervised", None, "`as_supervised` must be True or False"),
        ("num_parallel_calls", 0, "`num_parallel_calls` must be a positive integer"),
    ],
)
def test_invalid_arguments_name_the_argument(dataset, argument, value, message):
    directory, _ = dataset
    arguments = {"mode": "train", "batch_size": 2, argument: value}
    mode, batch_size = arguments.pop("mode"), arguments.pop("batch_size")
    with pytest.raises(ValueError, match=message):
        load_small(directory, "train", mode, batch_size, **arguments)


def test_eval_refuses_repeat(dataset):
    directory, _ = dataset
    with pytest.raises(ValueError, match="`repeat` must be None in mode 'eval'"):
        load_small(directory, "val", "eval", repeat=2)


# ---------------------------------------------------------------- distribution


def test_auto_shard_policy_follows_shard_and_worker_counts(dataset):
    directory, _ = dataset
    policy = tf.data.experimental.AutoShardPolicy
    assert choose_auto_shard_policy(4, 2) == policy.FILE
    assert choose_auto_shard_policy(1, 2) == policy.DATA

    def policy_of(**kwargs):
        data = load_small(directory, "train", **kwargs)
        return data.options().experimental_distribute.auto_shard_policy

    assert policy_of() == policy.FILE  # one worker, two shards
    assert policy_of(num_workers=3) == policy.DATA


def test_worker_count_comes_from_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert detect_worker_count() == 1
    cluster = {"chief": ["host0:1"], "worker": ["host1:1", "host2:1"], "ps": ["host3:1"]}
    task = {"type": "worker", "index": 0}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert detect_worker_count() == 3


@pytest.mark.slow
@pytest.mark.parametrize("split, images", [("train", TRAIN_IMAGES), ("val", VAL_IMAGES)])
def test_input_contexts_split_the_sentences(dataset, split, images):
    # train has 2 shards (split by file), val has 1 (split by record).
    directory, corpus = dataset
    parts = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        data = load_small(directory, split, "eval", input_context=context)
        assert data.options().experimental_distribute.auto_shard_policy == (
            tf.data.experimental.AutoShardPolicy.OFF
        )
        parts.append([int(e["sent_id"]) for e in examples(data)])
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == corpus.sentences_of(images)


@pytest.mark.slow
def test_file_auto_sharding_rewrite_accepts_the_pipeline(dataset):
    # The private op behind multi-worker auto-sharding: it fails on pipelines FILE cannot shard.
    distribute = pytest.importorskip("tensorflow.python.data.experimental.ops.distribute")
    directory, corpus = dataset
    data = load_small(directory, "train", "eval", num_workers=2)
    parts = [
        [int(e["sent_id"]) for e in examples(distribute._AutoShardDataset(data, 2, worker))]
        for worker in range(2)
    ]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == corpus.sentences_of(TRAIN_IMAGES)
    train = distribute._AutoShardDataset(load_small(directory, "train", num_workers=2), 2, 0)
    assert next(iter(train))["image"].shape == (3, SIZE, SIZE, 3)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from refseg_tf.data import load
    from refseg_tf.preprocessing import ReferringPreprocessor

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    directory = sys.argv[1]
    small = ReferringPreprocessor.from_data_dir(directory, image_size=32, max_length=6)
    evaluation = strategy.experimental_distribute_dataset(
        load(directory, "train", "eval", 4, preprocessor=small))
    sent_ids, replica_batches = [], []
    for batch in evaluation:
        for part in strategy.experimental_local_results(batch["sent_id"]):
            sent_ids += part.numpy().tolist()
            replica_batches.append(int(part.shape[0]))
    train = strategy.experimental_distribute_dataset(
        load(directory, "train", "train", 4, preprocessor=small, seed=0,
             as_supervised=True, label_grid=8))
    inputs, target = next(iter(train))
    train_shapes = [list(t.shape) for t in strategy.experimental_local_results(target)]
    image_shapes = [list(t.shape) for t in strategy.experimental_local_results(inputs["image"])]
    print("RESULT" + json.dumps({"sent_ids": sent_ids, "replica_batches": replica_batches,
                                 "train_shapes": train_shapes, "image_shapes": image_shapes,
                                 "replicas": strategy.num_replicas_in_sync}))
    """
)


def test_mirrored_strategy_distributes_the_dataset(dataset):
    # One replica in-process (the rebatch rewrite and the captured vocabulary table still run);
    # two replicas need logical devices configured before TF starts: the slow test below.
    directory, corpus = dataset
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    data = load_small(directory, "val", "eval", batch_size=2, label_grid=4)
    sent_ids = []
    for batch in strategy.experimental_distribute_dataset(data):
        (part,) = strategy.experimental_local_results(batch["sent_id"])
        sent_ids += part.numpy().tolist()
    assert sorted(sent_ids) == corpus.sentences_of(VAL_IMAGES)


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(dataset):
    directory, corpus = dataset
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(directory)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    (line,) = [row for row in completed.stdout.splitlines() if row.startswith("RESULT")]
    result = json.loads(line[len("RESULT") :])
    assert result["replicas"] == 2
    assert sorted(result["sent_ids"]) == corpus.sentences_of(TRAIN_IMAGES)
    assert max(result["replica_batches"]) == 2  # global batch 4 split over 2 replicas
    assert result["train_shapes"] == [[2, 8, 8, 1], [2, 8, 8, 1]]
    assert result["image_shapes"] == [[2, SIZE, SIZE, 3], [2, SIZE, SIZE, 3]]


def test_interleave_all_files_reads_every_shard_before_any_second_record(tmp_path):
    # Issue 19 §10: at batch 1 a 1,000-sentence buffer over 16 shards at a time draws from a
    # narrow stretch of the split; `interleave_all_files` reads every shard at once.
    corpus = Corpus()
    rng = np.random.default_rng(0)
    shards = []
    for k in range(18):  # 18 shards of two one-sentence images: 1000 + k, then 2000 + k
        shards.append([
            image_record(corpus, image_id, corpus.add_image(image_id, 20, 24, [(image_id, 1)], rng))
            for image_id in (1000 + k, 2000 + k)
        ])
    write_split(tmp_path, "train", shards)
    write_vocabulary(tmp_path, corpus)

    def first_images(**kwargs):
        data = load_small(tmp_path, "train", batch_size=1, shuffle_buffer=1, seed=3, repeat=1,
                          verify="none", **kwargs)
        order = []
        for batch in data:
            sent_id = sent_id_from_word_ids(batch["word_ids"][0].numpy())
            order.append(corpus.refs[corpus.sentence_ref[sent_id]].image_id)
        return order[:18]

    spread = first_images(interleave_all_files=True)
    assert sorted(spread) == [1000 + k for k in range(18)]  # one record of every shard first
    narrow = first_images()
    assert any(image_id >= 2000 for image_id in narrow)  # 16 shards at a time: seconds first

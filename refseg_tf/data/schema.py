"""The TFRecord schema shared by every converter and the input pipeline.

One `tf.train.Example` holds **one image and every ref of one split on it**, so the image bytes
are stored once per image (never once per sentence); a ref's mask is a one-channel PNG with
values {0, 1}. Sentences are stored flat with the index of the ref they describe.

| feature               | type        | shape | meaning                                          |
|-----------------------|-------------|-------|--------------------------------------------------|
| image/encoded         | bytes       | 1     | JPEG (or PNG) bytes of an RGB image              |
| image/format          | bytes       | 1     | b"jpeg" or b"png"                                |
| image/height          | int64       | 1     | original height in pixels                        |
| image/width           | int64       | 1     | original width in pixels                         |
| image/id              | int64       | 1     | image id of the source dataset                   |
| image/filename        | bytes       | 1     | file name relative to the image root             |
| ref/id                | int64       | R     | ref ids                                          |
| ref/ann_id            | int64       | R     | COCO annotation ids (-1 where none, ReferIt)     |
| ref/category_id       | int64       | R     | category ids (-1 where none)                     |
| ref/bbox              | float       | 4R    | [x, y, w, h] per ref, in pixels                  |
| ref/mask              | bytes       | R     | PNG, one channel, uint8 values {0, 1}            |
| sentence/id           | int64       | S     | sentence ids                                     |
| sentence/text         | bytes       | S     | raw UTF-8 sentence                               |
| sentence/ref_index    | int64       | S     | index in [0, R) of the ref the sentence is about |

Optional, written by `refseg-convert --word_ids` (`converters.word_ids`): the sentences
tokenised once, at conversion, into the ids of the directory's `vocab.txt`:

| feature               | type        | shape | meaning                                          |
|-----------------------|-------------|-------|--------------------------------------------------|
| sentence/word_ids     | int64       | sum W | every sentence's whole word ids, in order        |
| sentence/num_words    | int64       | S     | W, the number of ids of each sentence            |

`metadata.json` "word_ids" then holds the fingerprint of the vocabulary and tokeniser they were
made with (`refseg_tf.text.tokenization_fingerprint`), which `refseg_tf.data.load` compares with
its preprocessor's before it reads them instead of tokenising.

Files are `<split>-NNNNN-of-MMMMM.tfrecord` beside `vocab.txt` and `metadata.json`.
"""

import dataclasses
import io
import os
from typing import Optional, Sequence

import numpy as np

from refseg_tf.filenames import METADATA_FILENAME, VOCABULARY_FILENAME  # noqa: F401  (re-exported)

SCHEMA_VERSION = 1
WORD_IDS_KEY = "sentence/word_ids"
NUM_WORDS_KEY = "sentence/num_words"
SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.tfrecord"
SHARD_GLOB = "{split}-*-of-*.tfrecord"
VOCAB_FILENAME = VOCABULARY_FILENAME


@dataclasses.dataclass
class Sentence:
    sent_id: int
    text: str


@dataclasses.dataclass
class RefRecord:
    """One referred object: its mask and the sentences that describe it.

    `mask` is a 2-D array of shape [height, width] (any dtype; non-zero means foreground).
    """

    ref_id: int
    mask: np.ndarray
    sentences: Sequence[Sentence]
    ann_id: int = -1
    category_id: int = -1
    bbox: Sequence[float] = (0.0, 0.0, 0.0, 0.0)


@dataclasses.dataclass
class ImageRecord:
    """One image with every ref of one split on it: the unit of one tf.train.Example."""

    image_id: int
    file_name: str
    encoded: bytes
    image_format: str  # "jpeg" or "png"
    height: int
    width: int
    refs: Sequence[RefRecord]


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Binarises a 2-D mask and encodes it as a one-channel PNG with values {0, 1}."""
    from PIL import Image

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"A mask must be 2-D [height, width]; received shape {mask.shape}.")
    buffer = io.BytesIO()
    Image.fromarray((mask > 0).astype(np.uint8), mode="L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def decode_mask_png(data: bytes) -> np.ndarray:
    """Inverse of `encode_mask_png`: a uint8 [height, width] array of {0, 1}."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.uint8)


def _bytes(values):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
    import tensorflow as tf

    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def encode_example(record: ImageRecord) -> bytes:
    """Serialises an `ImageRecord` into a `tf.train.Example` (bytes) following the schema."""
    import tensorflow as tf

    if not record.refs:
        raise ValueError(f"Image {record.image_id} ({record.file_name}) has no refs to write.")
    sentence_ids, texts, ref_indices = [], [], []
    for index, ref in enumerate(record.refs):
        if not ref.sentences:
            raise ValueError(f"Ref {ref.ref_id} in {record.file_name} has no sentences.")
        if tuple(np.shape(ref.mask)) != (record.height, record.width):
            raise ValueError(
                f"Ref {ref.ref_id} in {record.file_name}: mask shape {np.shape(ref.mask)} does "
                f"not match the image size {(record.height, record.width)}."
            )
        for sentence in ref.sentences:
            sentence_ids.append(sentence.sent_id)
            texts.append(sentence.text.encode("utf-8"))
            ref_indices.append(index)
    feature = {
        "image/encoded": _bytes([record.encoded]),
        "image/format": _bytes([record.image_format.encode()]),
        "image/height": _ints([record.height]),
        "image/width": _ints([record.width]),
        "image/id": _ints([record.image_id]),
        "image/filename": _bytes([record.file_name.encode("utf-8")]),
        "ref/id": _ints([r.ref_id for r in record.refs]),
        "ref/ann_id": _ints([r.ann_id for r in record.refs]),
        "ref/category_id": _ints([r.category_id for r in record.refs]),
        "ref/bbox": _floats([v for r in record.refs for v in r.bbox]),
        "ref/mask": _bytes([encode_mask_png(r.mask) for r in record.refs]),
        "sentence/id": _ints(sentence_ids),
        "sentence/text": _bytes(texts),
        "sentence/ref_index": _ints(ref_indices),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def feature_spec(word_ids: bool = False):
    """The `tf.io.parse_single_example` spec of the schema (with the optional stored word ids
    when `word_ids`)."""
    import tensorflow as tf

    spec = _base_feature_spec()
    if word_ids:
        spec[WORD_IDS_KEY] = tf.io.VarLenFeature(tf.int64)
        spec[NUM_WORDS_KEY] = tf.io.VarLenFeature(tf.int64)
    return spec


def _base_feature_spec():
    import tensorflow as tf

    scalar_bytes = tf.io.FixedLenFeature([], tf.string)
    scalar_int = tf.io.FixedLenFeature([], tf.int64)
    return {
        "image/encoded": scalar_bytes,
        "image/format": scalar_bytes,
        "image/height": scalar_int,
        "image/width": scalar_int,
        "image/id": scalar_int,
        "image/filename": scalar_bytes,
        "ref/id": tf.io.VarLenFeature(tf.int64),
        "ref/ann_id": tf.io.VarLenFeature(tf.int64),
        "ref/category_id": tf.io.VarLenFeature(tf.int64),
        "ref/bbox": tf.io.VarLenFeature(tf.float32),
        "ref/mask": tf.io.VarLenFeature(tf.string),
        "sentence/id": tf.io.VarLenFeature(tf.int64),
        "sentence/text": tf.io.VarLenFeature(tf.string),
        "sentence/ref_index": tf.io.VarLenFeature(tf.int64),
    }


def parse_example(serialized, word_ids: bool = False):
    """Parses one serialized example into dense tensors (graph-safe).

    Returns a dict with the schema's keys (and the stored word ids when `word_ids`; empty
    when a record has none); list features become dense 1-D tensors and `ref/bbox` becomes
    [R, 4].
    """
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec(word_ids))
    out = {}
    for key, value in parsed.items():
        out[key] = tf.sparse.to_dense(value) if isinstance(value, tf.SparseTensor) else value
    out["ref/bbox"] = tf.reshape(out["ref/bbox"], [-1, 4])
    return out


def decode_example_numpy(serialized: bytes) -> dict:
    """Parses one example in plain Python (for tools and tests): numpy arrays and bytes."""
    import tensorflow as tf

    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature

    def values(key):
        kind = feature[key].WhichOneof("kind")
        return list(getattr(feature[key], kind).value) if kind else []

    keys = [*feature_spec()] + [key for key in (WORD_IDS_KEY, NUM_WORDS_KEY) if key in feature]
    return {key: values(key) for key in keys}


# --------------------------------------------------------------------------------- shard files
# Each shard's size, record count and CRC-32 are written at conversion (metadata.json
# "shard_files" and the writer's sidecars) and checked when the split is read.
_RECORD_HEADER_BYTES = 12  # uint64 length + masked CRC-32C of the length
_RECORD_FOOTER_BYTES = 4  # masked CRC-32C of the data
_READ_CHUNK = 1 << 22


@dataclasses.dataclass(frozen=True)
class ShardScan:
    """What `scan_shard` found in a TFRecord file.

    `records` counts the complete records; `problem` says where the framing breaks (a file
    cut inside a record), None for a well-formed file; `crc32` is of the whole file (None when
    only the framing was read).
    """

    bytes: int
    records: int
    crc32: Optional[int]
    problem: Optional[str]


@dataclasses.dataclass(frozen=True)
class RecordFrame:
    """One complete TFRecord record: where it starts, its data length and bytes."""

    start: int  # offset of its 12-byte header
    length: int  # bytes of data
    header: bytes
    data: Optional[bytes]  # None when read with `read_data=False`
    footer: Optional[bytes]


class TruncatedRecordError(ValueError):
    """A TFRecord file cut inside record `index` (`in_header`: inside its 12-byte header)."""

    def __init__(self, index: int, start: int, header: bytes, length: Optional[int] = None):
        self.index, self.start, self.header, self.length = index, start, header, length
        self.in_header = length is None
        where = "the header of record" if self.in_header else "record"
        needs = "" if self.in_header else f" (it needs {length} bytes)"
        super().__init__(f"cut inside {where} {index}{needs}")


def read_record_frames(file, size: int, read_data: bool = True):
    """THE TFRecord framing reader: yields a `RecordFrame` per complete record of `file` (an
    open binary file of `size` bytes, read from its position).

    With `read_data=False` the data and footer are skipped by seeking. The CRC-32C fields are
    not checked (the shard files carry a CRC-32 of their own, `scan_shard`).

    Raises:
        TruncatedRecordError: the file ends inside a record; `file` is then positioned just
            after the bytes of its header that were there.
    """
    index = 0
    while True:
        start = file.tell()
        header = file.read(_RECORD_HEADER_BYTES)
        if not header:
            return
        if len(header) < _RECORD_HEADER_BYTES:
            raise TruncatedRecordError(index, start, header)
        length = int.from_bytes(header[:8], "little")
        if file.tell() + length + _RECORD_FOOTER_BYTES > size:
            raise TruncatedRecordError(index, start, header, length)
        if read_data:
            data, footer = file.read(length), file.read(_RECORD_FOOTER_BYTES)
        else:
            file.seek(length + _RECORD_FOOTER_BYTES, os.SEEK_CUR)
            data = footer = None
        yield RecordFrame(start, length, header, data, footer)
        index += 1


def scan_shard(path, checksum: bool = True) -> ShardScan:
    """Reads the TFRecord framing of `path` (record count, truncation) and its CRC-32.

    With `checksum=False` only the 12-byte record headers are read (seeking over the data), so
    the scan costs a few reads per record.
    """
    import zlib

    size = os.path.getsize(path)
    records, crc, problem = 0, 0, None
    with open(path, "rb") as file:
        try:
            for frame in read_record_frames(file, size, read_data=checksum):
                if checksum:
                    crc = zlib.crc32(frame.footer, zlib.crc32(frame.data, zlib.crc32(frame.header, crc)))
                records += 1
        except TruncatedRecordError as error:
            problem = str(error)
            if checksum:
                crc = _crc_rest(file, zlib.crc32(error.header, crc))
    return ShardScan(size, records, crc if checksum else None, problem)


def _crc_rest(file, crc):
    import zlib

    for chunk in iter(lambda: file.read(_READ_CHUNK), b""):
        crc = zlib.crc32(chunk, crc)
    return crc

"""Throughput of `refseg_tf.data.load` against a naive sequential pipeline, in one run.

Writes a synthetic converted dataset (JPEG images with drawn shapes, rectangle masks, short
sentences) to a temporary directory, then times the same split read twice:

* parallel: `load` as shipped (parallel interleave, parallel maps, prefetch);
* naive: `load(..., num_parallel_calls=1, prefetch=False)` (one file at a time, sequential maps,
  no prefetch), i.e. the same work without any tf.data parallelism.

Usage:
    python benchmarks/pipeline_throughput.py --images 240 --batches 40 --image_size 320
"""

import argparse
import io
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from refseg_tf.data import load, schema  # noqa: E402
from refseg_tf.preprocessing import ReferringPreprocessor  # noqa: E402

WORDS = ["left", "right", "man", "woman", "red", "blue", "car", "dog", "big", "small", "the"]


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240, help="images in the split")
    parser.add_argument("--shards", type=int, default=8, help="shard files")
    parser.add_argument("--height", type=int, default=427, help="original image height")
    parser.add_argument("--width", type=int, default=640, help="original image width")
    parser.add_argument("--image_size", type=int, default=320, help="network input side S")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per pipeline")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--mode", choices=["train", "eval"], default="train")
    return parser.parse_args(argv)


def draw_image(rng, height, width):
    """A JPEG-friendly picture: a colour gradient with a few filled shapes."""
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    base = np.broadcast_to(gradient * rng.random(3), [height, width, 3]).astype(np.uint8)
    picture = Image.fromarray(base)
    draw = ImageDraw.Draw(picture)
    for _ in range(4):
        x0, y0 = rng.integers(0, width - 20), rng.integers(0, height - 20)
        box = [x0, y0, x0 + rng.integers(10, width // 3), y0 + rng.integers(10, height // 3)]
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_record(rng, image_id, height, width, first_sent_id):
    refs, sent_id = [], first_sent_id
    for ref_index in range(int(rng.integers(1, 4))):
        mask = np.zeros([height, width], np.uint8)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        mask[top : top + height // 3, left : left + width // 3] = 1
        sentences = []
        for _ in range(int(rng.integers(1, 4))):
            words = rng.choice(WORDS, size=int(rng.integers(2, 9)))
            sentences.append(schema.Sentence(sent_id, " ".join(words)))
            sent_id += 1
        refs.append(schema.RefRecord(image_id * 10 + ref_index, mask, sentences))
    record = schema.ImageRecord(
        image_id, f"{image_id}.jpg", draw_image(rng, height, width), "jpeg", height, width, refs
    )
    return record, sent_id


def write_dataset(directory, args):
    rng = np.random.default_rng(0)
    records, sent_id = [], 0
    for image_id in range(args.images):
        record, sent_id = make_record(rng, image_id, args.height, args.width, sent_id)
        records.append(schema.encode_example(record))
    for index in range(args.shards):
        name = schema.SHARD_PATTERN.format(split="train", index=index, count=args.shards)
        with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
            for serialized in records[index :: args.shards]:
                writer.write(serialized)
    vocabulary = ["<pad>", "<go>", "<eos>", "<unk>"] + sorted(WORDS)
    with open(os.path.join(directory, schema.VOCAB_FILENAME), "w", encoding="utf-8") as stream:
        stream.write("\n".join(vocabulary) + "\n")
    return sent_id


def examples_per_second(dataset, args):
    """Examples per second over `args.batches` batches after `args.warmup` untimed ones."""
    iterator = iter(dataset)
    for _ in zip(range(args.warmup), iterator):
        pass
    count, start = 0, time.perf_counter()
    for _, batch in zip(range(args.batches), iterator):
        count += int(batch["image"].shape[0])
    if count == 0:
        raise SystemExit("No batch left to time: lower --warmup or raise --images.")
    return count / (time.perf_counter() - start)


def build(directory, args, parallel):
    options = {} if parallel else {"num_parallel_calls": 1, "prefetch": False}
    return load(
        directory,
        "train",
        args.mode,
        args.batch_size,
        preprocessor=ReferringPreprocessor.from_data_dir(directory, image_size=args.image_size),
        label_grid=args.image_size // 8,
        label_mode="soft",
        seed=0,
        **options,
    )


def main(argv=None):
    args = parse_arguments(argv)
    with tempfile.TemporaryDirectory(prefix="refseg_pipeline_bench_") as directory:
        sentences = write_dataset(directory, args)
        print(
            f"{args.images} images {args.height}x{args.width} (JPEG), {sentences} sentences, "
            f"{args.shards} shards; mode {args.mode}, batch {args.batch_size}, "
            f"S={args.image_size}, {os.cpu_count()} CPU cores"
        )
        naive = examples_per_second(build(directory, args, parallel=False), args)
        fast = examples_per_second(build(directory, args, parallel=True), args)
    print(f"naive sequential : {naive:8.1f} examples/s")
    print(f"load (parallel)  : {fast:8.1f} examples/s")
    print(f"speed-up         : {fast / naive:8.2f}x")


if __name__ == "__main__":
    main()

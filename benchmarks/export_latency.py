"""Latency at batch 1 of the Keras model, the exported SavedModel and the TFLite model, in one run.

Builds a model directory (a preset of `experiments.synthetic`, untrained: latency does not depend
on the weights), exports it with `refseg_tf.export.export_model`, and times, on the same
preprocessed input:

* keras: `model(inputs, training=False)` (eager Keras call, as `Predictor` runs it);
* keras_function: the same call inside one `tf.function` (graph mode, no Python per layer);
* saved_model: the `segment_tensors` signature of the reloaded SavedModel;
* tflite: `model.tflite` run by `ai_edge_litert` (XNNPACK on CPU);
* serving_default: the whole served request (decode, letterbox, tokenise, model, scoring) on a
  JPEG of `--height` x `--width`, for reference.

The medians are printed with their ratios to keras; numbers are recorded (export_latency.md),
not asserted.

Usage:
    python benchmarks/export_latency.py --preset rrn --repeats 30
"""

import argparse
import io
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="rrn", help="a preset of experiments.synthetic")
    parser.add_argument("--image_size", type=int, default=0, help="S (0: the synthetic recipe's)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per runtime")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--height", type=int, default=427, help="served JPEG height")
    parser.add_argument("--width", type=int, default=640, help="served JPEG width")
    parser.add_argument("--threads", type=int, default=None, help="TFLite threads")
    parser.add_argument("--json", default="", help="optional path for the results as JSON")
    return parser.parse_args(argv)


def make_model_dir(root, preset, image_size):
    from refseg_tf.text import Vocabulary
    from refseg_tf.training import config as config_lib
    from refseg_tf.training import experiments, trainer

    os.makedirs(root)
    config = experiments.synthetic(preset)
    if image_size:
        config.data.image_size = image_size
    vocabulary = Vocabulary.build(["the red circle on the left", "a blue square at the bottom"])
    config.model.vocabulary_size = len(vocabulary)
    with open(os.path.join(root, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocabulary.words) + "\n")
    config_lib.save_config(config, root)
    model = trainer.build_model(config)
    trainer.save_model_atomic(model, os.path.join(root, "model.keras"))
    return root


def median_seconds(function, repeats, warmup):
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    from PIL import Image

    from refseg_tf.export import TFLiteSegmenter, export_model
    from refseg_tf.inference import Predictor

    args = parse_arguments(argv)
    with tempfile.TemporaryDirectory(prefix="refseg-export-latency-") as root:
        model_dir = make_model_dir(os.path.join(root, "model"), args.preset, args.image_size)
        output_dir = os.path.join(root, "exported")
        contract = export_model(model_dir, output_dir)
        predictor = Predictor.from_model_dir(model_dir)
        size, length = contract["image_size"], contract["max_length"]
        rng = np.random.default_rng(0)
        image = rng.normal(0, 1, (1, size, size, 3)).astype(np.float32)
        word_ids = predictor.tokenizer(tf.constant(["the red circle on the left"])).numpy()
        inputs = {"image": tf.constant(image), "word_ids": tf.constant(word_ids)}
        model = predictor.model
        graph_call = tf.function(lambda x: model(x, training=False))
        loaded = tf.saved_model.load(os.path.join(output_dir, "saved_model", "1"))
        segment = loaded.signatures["segment_tensors"]
        serve = loaded.signatures["serving_default"]
        lite = TFLiteSegmenter(os.path.join(output_dir, "model.tflite"), num_threads=args.threads)
        picture = rng.integers(0, 255, (args.height, args.width, 3), np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="JPEG")
        request = {"image_bytes": tf.constant([buffer.getvalue()]),
                   "expression": tf.constant(["the red circle on the left"])}
        runtimes = {
            "keras": lambda: model(inputs, training=False).numpy(),
            "keras_function": lambda: graph_call(inputs).numpy(),
            "saved_model": lambda: segment(**inputs)["logits"].numpy(),
            "tflite": lambda: lite(image, word_ids),
            "serving_default": lambda: serve(**request)["mask"].numpy(),
        }
        results = {name: median_seconds(fn, args.repeats, args.warmup) for name, fn in runtimes.items()}
    print(f"{args.preset} (tiny), S={size}, T={length}, batch 1, median of {args.repeats} calls:")
    for name, seconds in results.items():
        print(f"  {name:16s} {seconds * 1e3:9.3f} ms   {seconds / results['keras']:8.4f} of keras   "
              f"({results['keras'] / seconds:7.1f}x faster)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"preset": args.preset, "image_size": size, "seconds": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()

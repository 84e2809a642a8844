"""Trains every synthetic config and its text-blind control; writes the README results table.

    python benchmarks/synthetic_results.py --output_dir=runs/synthetic_results [--models=rrn,d_lstm]

For each model, `experiments/synthetic_<model>.py` is trained twice on the same synthetic data
(400 images, seed 0): once reading the expressions, once with every expression replaced by the
one word "object" (`data.blind_expression`, the text-blind control). Both are scored on the val
split at original resolution. The table (markdown) and the raw numbers (JSON) are written to
`--output_dir`. On two CPU cores the whole run takes about half an hour.
"""

import json
import os
import time

from absl import app, flags

MODELS = ("lstm_cnn", "r_lstm", "d_lstm", "d_lstm_ours", "rrn", "rmi", "lts")
PAPER_ROWS = {  # the papers' headline row for each model (overall IoU, %)
    "lstm_cnn": "48.03 (ReferIt test, high-res; Hu Table 1)",
    "r_lstm": "38.74 (UNC val; RMI Table 1)",
    "d_lstm": "43.27 (UNC val; RMI Table 1)",
    "d_lstm_ours": "46.49 (UNC val; RRN Table 1 row 2)",
    "rrn": "54.26 (UNC val; RRN Table 1 row 12)",
    "rmi": "39.74 (UNC val; RMI Table 1, R+RMI)",
    "lts": "65.43 mean IoU (RefCOCO val; LTS Table 1)",
}

flags.DEFINE_string("output_dir", "runs/synthetic_results", "Where data, models and the table go.")
flags.DEFINE_list("models", list(MODELS), "Models to train.")
flags.DEFINE_integer("num_images", 400, "Synthetic images.")
flags.DEFINE_integer("steps", None, "Training steps (default: each config's).")
FLAGS = flags.FLAGS


def synthetic_config(model, data_dir, blind, steps):
    from refseg_tf.training import experiments

    if model == "rmi":  # experiments/synthetic_rmi.py: the R+RMI preset
        config = experiments.synthetic_rmi("r_rmi")
    elif model == "lts":  # experiments/synthetic_lts.py
        config = experiments.synthetic_lts()
    else:
        config = experiments.synthetic(model, **({"stage": "high"} if model == "lstm_cnn" else {}))
    config.data.dir = data_dir
    if blind:
        config.data.blind_expression = "object"
    if steps:
        config.train.steps = steps
    return config


def run_one(model, data_dir, output_dir, blind, steps):
    import keras

    from refseg_tf.training.evaluation import evaluate_model_dir
    from refseg_tf.training.trainer import train

    keras.backend.clear_session()
    config = synthetic_config(model, data_dir, blind, steps)
    model_dir = os.path.join(output_dir, "models", model + ("_blind" if blind else ""))
    start = time.perf_counter()
    train(config, model_dir, verbose=2)
    seconds = time.perf_counter() - start
    report, _ = evaluate_model_dir(model_dir, split="val")
    return {"scores": report["scores"], "train_seconds": seconds, "steps": int(config.train.steps)}


def table(results):
    lines = [
        "| model (synthetic config) | steps | overall IoU | mean IoU | prec@0.5 | text-blind overall IoU | margin | paper (real data) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, runs in results.items():
        text, blind = runs["text"]["scores"], runs["blind"]["scores"]
        lines.append(
            f"| {model} | {runs['text']['steps']} | {100 * text['overall_iou']:.2f} | "
            f"{100 * text['mean_iou']:.2f} | {100 * text['precision@0.5']:.2f} | "
            f"{100 * blind['overall_iou']:.2f} | "
            f"{100 * (text['overall_iou'] - blind['overall_iou']):+.2f} | {PAPER_ROWS[model]} |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    from refseg_tf.data.converters.refer import ReferReader
    from refseg_tf.data.converters.writer import write_dataset
    from refseg_tf.data.synthetic import generate

    raw = os.path.join(FLAGS.output_dir, "raw")
    data_dir = os.path.join(FLAGS.output_dir, "tfrecords")
    summary = generate(raw, num_images=FLAGS.num_images, seed=0, image_size=96)
    reader = ReferReader(data_root=raw, dataset="synthetic", split_by="unc", image_root=summary["image_root"])
    write_dataset(reader, data_dir, num_shards=4, show_progress=False)
    results = {}
    for model in FLAGS.models:
        results[model] = {
            "text": run_one(model, data_dir, FLAGS.output_dir, False, FLAGS.steps),
            "blind": run_one(model, data_dir, FLAGS.output_dir, True, FLAGS.steps),
        }
        with open(os.path.join(FLAGS.output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        markdown = table(results)
        with open(os.path.join(FLAGS.output_dir, "results.md"), "w") as f:
            f.write(markdown + "\n")
        print(markdown, flush=True)


if __name__ == "__main__":
    app.run(main)

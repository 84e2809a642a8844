"""Trains every synthetic config and its text-blind control; writes the README results tables.

    python benchmarks/synthetic_results.py --output_dir=runs/synthetic_results \
        [--models=rrn,d_lstm] [--sets=shapes,shapes_v2]

Two synthetic sets (`SETS`), each in the refer format and converted the same way:

- `shapes`: `refseg_tf.synthetic_data.shapes` (the scenes the synthetic configs were developed on),
  400 images of 96 px, seed 0;
- `shapes_v2`: `refseg_tf.synthetic_data.shapes_v2`, an independently drawn style (other shapes,
  colours, words, background and rendering; about 1,900 train sentences), 560 images of 128 px,
  seed 0. The configs were not tuned on it: it checks that they read the phrase in general.

For each set and model, `experiments/synthetic_<model>.py` is trained twice on the same data:
once reading the expressions, once with every expression replaced by the one word "object"
(`data.blind_expression`, the text-blind control). Both are scored on the val split at original
resolution. Per set, the table (markdown) and the raw numbers (JSON) are written to
`--output_dir/<set>/results.{md,json}`. On two free CPU cores one set takes about half an hour.
"""

import json
import os
import time

from absl import app, flags

from refseg_tf.training import experiments

# Every registered synthetic experiment, `synthetic_<model>`.
MODELS = tuple(name[len("synthetic_"):] for name in experiments.list_experiments(synthetic=True))


def paper_row(model):
    """The papers' headline row for `model` (its registered `paper_row`, read from the registry)."""
    return experiments.paper_row_summary(f"synthetic_{model}")


flags.DEFINE_string("output_dir", "runs/synthetic_results", "Where data, models and the table go.")
flags.DEFINE_list("models", list(MODELS), "Models to train.")
# name: (generator style, images, image size in pixels, seed)
SETS = {
    "shapes": ("shapes", 400, 96, 0),
    "shapes_v2": ("shapes_v2", 560, 128, 0),
}
flags.DEFINE_list("sets", list(SETS), f"Synthetic sets to run, of {list(SETS)}.")
flags.DEFINE_integer("num_images", None, "Synthetic images (default: each set's).")
flags.DEFINE_integer("steps", None, "Training steps (default: each config's).")
FLAGS = flags.FLAGS




def experiment_config(model):
    """The registered experiment `synthetic_<model>` (what `experiments/synthetic_<model>.py`
    returns)."""
    return experiments.get_experiment(f"synthetic_{model}")


def synthetic_config(model, data_dir, blind, steps):
    config = experiment_config(model)
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
            f"{100 * (text['overall_iou'] - blind['overall_iou']):+.2f} | {paper_row(model)} |"
        )
    return "\n".join(lines)


def prepare_set(name, output_dir, num_images=None):
    """Generates and converts one synthetic set; returns its TFRecord directory."""
    from refseg_tf.data.converters.refer import ReferReader
    from refseg_tf.data.converters.writer import write_dataset
    from refseg_tf.synthetic_data import generate

    style, default_images, image_size, seed = SETS[name]
    raw = os.path.join(output_dir, "raw")
    data_dir = os.path.join(output_dir, "tfrecords")
    summary = generate(raw, num_images=num_images or default_images, seed=seed, image_size=image_size, style=style)
    reader = ReferReader(data_root=raw, dataset="synthetic", split_by="unc", image_root=summary["image_root"])
    write_dataset(reader, data_dir, num_shards=4, show_progress=False)
    return data_dir


def write_results(results, output_dir, name):
    from refseg_tf.files import atomic_write_text

    atomic_write_text(os.path.join(output_dir, "results.json"), json.dumps(results, indent=2))
    markdown = f"Synthetic set `{name}`\n\n" + table(results)
    atomic_write_text(os.path.join(output_dir, "results.md"), markdown + "\n")
    print(markdown, flush=True)


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.sets) - set(SETS))
    if unknown:
        raise app.UsageError(f"--sets must be among {list(SETS)}; received {unknown}.")
    for name in FLAGS.sets:
        set_dir = os.path.join(FLAGS.output_dir, name)
        data_dir = prepare_set(name, set_dir, FLAGS.num_images)
        results = {}
        for model in FLAGS.models:
            results[model] = {
                "text": run_one(model, data_dir, set_dir, False, FLAGS.steps),
                "blind": run_one(model, data_dir, set_dir, True, FLAGS.steps),
            }
            write_results(results, set_dir, name)


if __name__ == "__main__":
    app.run(main)

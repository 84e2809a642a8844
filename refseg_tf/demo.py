"""`refseg-demo`: the whole path on bundled synthetic data, in a few minutes on a CPU.

    refseg-demo --output_dir=runs/demo [--model=rrn --num_images=400 --steps=600]

1. generates synthetic referring data in the refer format (`OUT/raw`);
2. converts it to sharded TFRecords (`OUT/tfrecords`) and prints the dataset summary;
3. draws ground-truth masks over a few images (`OUT/pictures/ground_truth_val.jpg`);
4. trains the tiny `experiments/synthetic_<model>.py` configuration (`OUT/models/<model>`);
5. evaluates it on the val split (overall IoU, mean IoU, prec@X, by length);
6. predicts on val images and draws the predictions (`OUT/pictures/predictions_val.jpg`), and
   writes one prediction the way `refseg-predict` does (`OUT/pictures/predict_*.png/jpg`).
"""

from refseg_tf.cli import quiet_tensorflow_startup

quiet_tensorflow_startup(__name__)  # a command: before TensorFlow is imported (issue 21)

import os
import sys
import time

from absl import app, flags, logging

def synthetic_models():
    """`<model>` of every registered `synthetic_<model>` experiment."""
    from refseg_tf.training import experiments

    return [name[len("synthetic_"):] for name in experiments.list_experiments(synthetic=True)]


def define_flags():
    if "num_pictures" in flags.FLAGS:
        return
    flags.DEFINE_string("output_dir", "runs/demo", "Where data, models and pictures go.")
    flags.DEFINE_enum("model", "rrn", synthetic_models(), "Which synthetic_<model> configuration to train.")
    flags.DEFINE_integer("num_images", 400, "Synthetic images to generate.", lower_bound=20)
    flags.DEFINE_integer("image_size", 96, "Long side of the synthetic images.", lower_bound=32)
    flags.DEFINE_integer("steps", None, "Training steps (default: the config's).")
    flags.DEFINE_integer("seed", 0, "Seed of the data and the training.")
    flags.DEFINE_integer("num_pictures", 8, "Examples drawn in each picture.", lower_bound=1)


def _stage(title):
    print(f"\n=== {title} ===", flush=True)


def make_data(output_dir, num_images, image_size, seed):
    """Steps 1-2: synthetic refer-format data, converted to TFRecords."""
    from refseg_tf.data.converters.refer import ReferReader
    from refseg_tf.data.converters.writer import write_dataset
    from refseg_tf.synthetic_data import generate
    from refseg_tf.synthetic import format_summary

    raw_dir = os.path.join(output_dir, "raw")
    _stage("1. Synthetic data (refer format)")
    summary = generate(raw_dir, num_images=num_images, seed=seed, image_size=image_size)
    print(format_summary(summary))
    _stage("2. Conversion to TFRecords")
    reader = ReferReader(
        data_root=raw_dir,
        dataset="synthetic",
        split_by="unc",
        image_root=summary["image_root"],
    )
    tfrecord_dir = os.path.join(output_dir, "tfrecords")
    write_dataset(reader, tfrecord_dir, num_shards=4, show_progress=False)
    return tfrecord_dir


def _first_val_batch(config, count):
    from refseg_tf.data import load
    from refseg_tf.preprocessing import ReferringPreprocessor

    # Pictures at twice the network input, unnormalised (only images, masks and sentences).
    preprocessor = ReferringPreprocessor.from_data_dir(
        config.data.dir, image_size=int(config.data.image_size) * 2, normalization="none"
    )
    dataset = load(
        config.data.dir, config.data.split_eval, mode="eval", batch_size=count,
        preprocessor=preprocessor,
    )
    return next(iter(dataset))


def draw_ground_truth(config, path, count):
    """Step 3: masks over the letterboxed val images, captioned with their sentence."""
    batch = _first_val_batch(config, count)
    images = batch["image"].numpy().clip(0, 255).astype("uint8")
    masks = batch["mask"].numpy()[..., 0]
    captions = [s.decode("utf-8") for s in batch["sentence"].numpy()]
    _save_grid(path, images, masks, captions)
    print(f"Ground truth of {len(images)} val sentences -> {path}")


def _save_grid(path, images, masks, captions, ground_truths=None):
    from refseg_tf.visualize import mask_grid, save_image

    grid = mask_grid(images, masks, captions=captions, ground_truths=ground_truths)
    save_image(path, grid)


def draw_predictions(model_dir, config, raw_dir, path, count):
    """Step 6: predictions of the trained model on val images at their own size."""
    from refseg_tf.inference import Predictor, read_image
    from refseg_tf.predict import predict_to_files

    predictor = Predictor.from_model_dir(model_dir)
    batch = _first_val_batch(config, count)
    images, predictions, truths, captions = [], [], [], []
    image_ids = batch["image_id"].numpy()
    for i, sentence in enumerate(batch["sentence"].numpy()):
        image_path = os.path.join(raw_dir, "images", f"synthetic_{int(image_ids[i]):012d}.jpg")
        image = read_image(image_path)
        text = sentence.decode("utf-8")
        height, width = image.shape[:2]
        images.append(image)
        predictions.append(predictor.predict_mask(image, text))
        truths.append(batch["original_mask"][i, :height, :width].numpy() > 0)
        captions.append(text)
    _save_grid(path, images, predictions, captions, ground_truths=truths)
    print(f"Predictions (red) and ground-truth outlines (green) -> {path}")
    first = os.path.join(os.path.dirname(path), "predict_first_val.png")
    first_image = os.path.join(raw_dir, "images", f"synthetic_{int(image_ids[0]):012d}.jpg")
    predict_to_files(model_dir, first_image, captions[0], first, predictor=predictor)
    print(f"refseg-predict style output for {first_image!r}, {captions[0]!r} -> {first}")


def run_demo(output_dir, model="rrn", num_images=400, image_size=96, steps=None, seed=0,
             num_pictures=8):
    """Runs the six steps; returns the evaluation report."""
    from refseg_tf.training import experiments
    from refseg_tf.training.evaluation import evaluate_model_dir
    from refseg_tf.training.trainer import train

    start = time.perf_counter()
    tfrecord_dir = make_data(output_dir, num_images, image_size, seed)
    config = experiments.get_experiment(f"synthetic_{model}")
    config.data.dir = tfrecord_dir
    config.train.seed = seed
    if steps:
        config.train.steps = int(steps)
    pictures = os.path.join(output_dir, "pictures")
    os.makedirs(pictures, exist_ok=True)
    _stage("3. Ground-truth pictures")
    draw_ground_truth(config, os.path.join(pictures, "ground_truth_val.jpg"), num_pictures)
    _stage(f"4. Training synthetic_{model} for {config.train.steps} steps")
    model_dir = os.path.join(output_dir, "models", model)
    train(config, model_dir, verbose=2)
    _stage("5. Evaluation on val")
    report, table = evaluate_model_dir(model_dir, split=config.data.split_eval)
    print(table)
    _stage("6. Predictions")
    draw_predictions(model_dir, config, os.path.join(output_dir, "raw"),
                     os.path.join(pictures, "predictions_val.jpg"), num_pictures)
    print(f"\nDone in {time.perf_counter() - start:.0f} s. Everything is under {output_dir}.")
    return report


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    logging.set_verbosity(logging.WARNING)
    run_demo(FLAGS.output_dir, FLAGS.model, FLAGS.num_images, FLAGS.image_size, FLAGS.steps,
             FLAGS.seed, FLAGS.num_pictures)
    sys.stdout.flush()


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

"""`refseg-predict`: segment what a sentence refers to in your own image.

    refseg-predict --model_dir=runs/rrn --image=photo.jpg --expression="the dog on the left" \
        --output=dog_mask.png

Writes the mask at the image's own size (PNG, 0/255) to `--output` and a picture of it over the
image to `--overlay` (default: `<output>_overlay.jpg`). Any image size or format Pillow reads.
The mask follows the model directory's scoring rule (`eval.scoring_rule`, see
`refseg_tf.scoring`), the same rule `refseg-evaluate` scores with.
`--saved_model=OUT/saved_model/1` instead of `--model_dir` predicts with a model exported by
`refseg-export`, alone (no model code), writing the same files.
"""

import io
import os

import numpy as np
from absl import app, flags

from refseg_tf.cli import user_errors_as_messages
from refseg_tf.inference import explain_to_file  # noqa: F401  (re-exported: refseg-predict --explain)


def define_flags():
    if "expression" not in flags.FLAGS:
        flags.DEFINE_string("model_dir", None, "A directory written by refseg-train.")
        flags.DEFINE_string("image", None, "The image to segment (any format Pillow reads).")
        flags.DEFINE_string("expression", None, "The referring expression.")
        flags.DEFINE_string("output", None, "Where to write the mask (PNG, 0/255, image size).")
        flags.DEFINE_string("overlay", None, "Where to write the picture (default: beside --output).")
        flags.DEFINE_float(
            "threshold", None,
            "Probability threshold (default: the model's); applied by the model dir's "
            "eval.scoring_rule (refseg_tf.scoring), with --saved_model too (its "
            "serving_threshold signature).",
        )
        flags.DEFINE_string("probabilities", None, "Optional .npy path for the probability map.")
        flags.DEFINE_string("checkpoint", "auto", "'auto', 'final', 'latest' or a checkpoint path.")
        flags.DEFINE_bool("explain", False, "Also draw the model's per-step response maps (RMI: "
                          "one panel per word; RRN: per refinement step) to <output>_explain.jpg.")
        flags.DEFINE_string("saved_model", None, "Or: a SavedModel written by refseg-export.")
    flags.mark_flags_as_required(["image", "expression", "output"])
    flags.mark_flags_as_mutual_exclusive(["model_dir", "saved_model"], required=True)


def default_overlay_path(output: str) -> str:
    stem, _ = os.path.splitext(output)
    return stem + "_overlay.jpg"


def write_mask_png(path: str, mask: np.ndarray) -> None:
    from PIL import Image

    from refseg_tf.files import atomic_write_bytes

    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def predict_to_files(model_dir, image_path, expression, output, overlay=None, threshold=None,
                     probabilities_path=None, checkpoint="auto", predictor=None):
    """Runs one prediction and writes the mask, the picture and optionally the probabilities."""
    from refseg_tf.inference import Predictor, read_image
    from refseg_tf.visualize import save_overlay

    image = read_image(image_path)
    predictor = predictor or Predictor.from_model_dir(model_dir, checkpoint=checkpoint)
    mask = predictor.predict_mask(image, expression, threshold=threshold)
    write_mask_png(output, mask)
    overlay = overlay or default_overlay_path(output)
    save_overlay(overlay, image, mask, caption=expression)
    if probabilities_path:
        probability = predictor.predict(image, expression)
        buffer = io.BytesIO()
        np.save(buffer, probability.astype(np.float32))
        from refseg_tf.files import atomic_write_bytes

        atomic_write_bytes(probabilities_path, buffer.getvalue())
    return mask, overlay


def default_explain_path(output: str) -> str:
    stem, _ = os.path.splitext(output)
    return stem + "_explain.jpg"


def predict_with_saved_model_to_files(saved_model, image_path, expression, output, overlay=None,
                                     threshold=None, probabilities_path=None):
    """`predict_to_files` with an exported SavedModel (`refseg_tf.export.SavedModelPredictor`)."""
    from refseg_tf.export import SavedModelPredictor, image_bytes_for_serving
    from refseg_tf.inference import read_image
    from refseg_tf.visualize import save_overlay

    image_bytes = image_bytes_for_serving(image_path)
    probability, mask = SavedModelPredictor(saved_model).predict(image_bytes, expression, threshold)
    write_mask_png(output, mask)
    overlay = overlay or default_overlay_path(output)
    save_overlay(overlay, read_image(image_path), mask, caption=expression)
    if probabilities_path:
        from refseg_tf.files import atomic_write_bytes

        buffer = io.BytesIO()
        np.save(buffer, probability.astype(np.float32))
        atomic_write_bytes(probabilities_path, buffer.getvalue())
    return mask, overlay


@user_errors_as_messages("refseg-predict")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    if FLAGS.saved_model:
        if FLAGS.explain:
            raise app.UsageError("--explain needs --model_dir: a SavedModel has no per-step maps.")
        mask, overlay = predict_with_saved_model_to_files(
            FLAGS.saved_model, FLAGS.image, FLAGS.expression, FLAGS.output, FLAGS.overlay,
            FLAGS.threshold, FLAGS.probabilities,
        )
    else:
        predictor = None
        if FLAGS.explain:  # one loaded model for the mask and the maps
            from refseg_tf.inference import Predictor

            predictor = Predictor.from_model_dir(FLAGS.model_dir, checkpoint=FLAGS.checkpoint)
        mask, overlay = predict_to_files(
            FLAGS.model_dir, FLAGS.image, FLAGS.expression, FLAGS.output, FLAGS.overlay,
            FLAGS.threshold, FLAGS.probabilities, FLAGS.checkpoint, predictor=predictor,
        )
    print(f"Mask ({mask.shape[1]}x{mask.shape[0]}, {mask.mean():.1%} foreground) -> {FLAGS.output}")
    print(f"Picture -> {overlay}")
    if FLAGS.explain:
        from refseg_tf.inference import read_image

        path = explain_to_file(predictor, read_image(FLAGS.image), FLAGS.expression,
                               default_explain_path(FLAGS.output))
        print(f"Per-step response maps -> {path}")


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

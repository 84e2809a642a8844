"""`refseg-export`: a trained model directory -> a SavedModel for TF Serving, a LiteRT model.

    refseg-export --model_dir=runs/rrn --output_dir=exported/rrn \
        [--version=1] [--formats=saved_model,tflite] [--tflite_quantization=none]

Writes `OUT/saved_model/<version>/` (TF Serving's model base path is `OUT/saved_model`),
`OUT/model.tflite` and the contract `OUT/export.json`; see `export/README.md`.
"""

from refseg_tf.cli import quiet_tensorflow_startup

quiet_tensorflow_startup(__name__)  # a command: before TensorFlow is imported (issue 21)

from absl import app, flags

from refseg_tf.cli import user_errors_as_messages


def define_flags():
    if "output_dir" not in flags.FLAGS:
        from refseg_tf.export import DEFAULT_MAX_PIXELS, FORMATS, QUANTIZATIONS

        flags.DEFINE_string("model_dir", None, "A directory written by refseg-train.")
        flags.DEFINE_string(
            "output_dir", None, "Where to write saved_model/, model.tflite and export.json."
        )
        flags.DEFINE_integer("version", 1, "TF Serving version folder of the SavedModel.")
        flags.DEFINE_list("formats", list(FORMATS), "Any of: " + ", ".join(FORMATS) + ".")
        flags.DEFINE_enum(
            "tflite_quantization", "none", QUANTIZATIONS, "Weights of the TFLite model."
        )
        flags.DEFINE_integer(
            "max_pixels", DEFAULT_MAX_PIXELS, "Largest image (width x height) serving accepts."
        )
        flags.DEFINE_string("checkpoint", "auto", "'auto', 'final', 'latest' or a checkpoint path.")
    flags.mark_flags_as_required(["model_dir", "output_dir"])


@user_errors_as_messages("refseg-export")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import os

    from refseg_tf.export import EXPORT_CONTRACT, export_model

    FLAGS = flags.FLAGS
    try:
        contract = export_model(
            FLAGS.model_dir, FLAGS.output_dir, version=FLAGS.version, formats=FLAGS.formats,
            tflite_quantization=FLAGS.tflite_quantization, max_pixels=FLAGS.max_pixels,
            checkpoint=FLAGS.checkpoint,
        )
    except FileExistsError as error:  # an existing version: a user error, not a crash
        raise ValueError(str(error)) from None
    if contract["saved_model"]:
        base = os.path.join(FLAGS.output_dir, contract["saved_model"]["base_path"])
        version_dir = os.path.join(base, str(FLAGS.version))
        print(f"SavedModel -> {version_dir} (TF Serving base path {base})")
    if contract["tflite"]:
        print(f"TFLite ({FLAGS.tflite_quantization}) -> "
              f"{os.path.join(FLAGS.output_dir, contract['tflite']['file'])}")
    print(f"Contract -> {os.path.join(FLAGS.output_dir, EXPORT_CONTRACT)}")


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

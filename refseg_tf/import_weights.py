"""`refseg-import`: an authors' trained checkpoint -> a refseg-tf model directory.

    refseg-import --format=text_objseg \
        --checkpoint=text_objseg/exp-referit/tfmodel/referit_fc8_seg_highres_iter_18000.tfmodel \
        --vocabulary=text_objseg/exp-referit/data/vocabulary_referit.txt \
        --config=experiments/lstm_cnn_high_referit.py --model_dir=runs/hu_highres

The model directory (config.json, the authors' vocabulary as vocab.txt, preprocessor.json,
model.keras) works unchanged with refseg-evaluate, refseg-predict, refseg-export and
refseg-serve. Every checkpoint variable is used, skipped as training state (optimizer slots,
global_step; counted) or named in the error; on an error nothing is written to --model_dir.
Formats: `refseg_tf.interop.list_formats()`; `--config.<key>=value` overrides the row's config.
"""

from refseg_tf.cli import quiet_tensorflow_startup

quiet_tensorflow_startup(__name__)  # a command: before TensorFlow is imported (issue 21)

from absl import app, flags, logging
from ml_collections import config_flags

from refseg_tf.cli import user_errors_as_messages


def define_flags():
    if "vocabulary" not in flags.FLAGS:
        flags.DEFINE_string("format", None, "Checkpoint format: text_objseg (Hu et al. 2016), "
                            "phrasecut_lstm / phrasecut_rmi (TF-phrasecut-public's R/D+LSTM "
                            "and R/D+RMI), rrn (referseg_rrn), or another registered in "
                            "refseg_tf.interop.")
        flags.DEFINE_string("vocabulary", None, "The authors' vocabulary file (one word a line).")
        flags.DEFINE_boolean("overwrite", False, "Replace a non-empty --model_dir.")
        flags.DEFINE_multi_string("option", [], "Format option key=value (e.g. forget_bias=1.0).")
    if "checkpoint" not in flags.FLAGS:
        flags.DEFINE_string("checkpoint", None, "The TF1 checkpoint: a V1 file (.tfmodel), a V2 "
                            "prefix or its .index file, or a directory.")
    if "model_dir" not in flags.FLAGS:
        flags.DEFINE_string("model_dir", None, "The model directory to write.")
    if "config" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "Experiment row (experiments/<row>.py).")
    flags.mark_flags_as_required(["format", "checkpoint", "vocabulary", "config", "model_dir"])


def parse_options(values):
    """`["key=value", ...]` -> dict; ValueError naming a malformed entry."""
    options = {}
    for value in values:
        key, separator, text = value.partition("=")
        if not separator or not key:
            raise ValueError(f"--option must be key=value; received {value!r}.")
        options[key.strip()] = text.strip()
    return options


@user_errors_as_messages("refseg-import")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from refseg_tf.interop import import_checkpoint

    FLAGS = flags.FLAGS
    result = import_checkpoint(
        FLAGS.format, FLAGS.checkpoint, FLAGS.vocabulary, FLAGS.config, FLAGS.model_dir,
        options=parse_options(FLAGS.option), overwrite=FLAGS.overwrite,
    )
    logging.info("Import: %s", result)
    print(
        f"Imported {FLAGS.checkpoint} ({FLAGS.format}: {result['assigned']} weights from "
        f"{result['variables']} variables, {result['ignored']} training-state variables "
        f"skipped) into {result['model_dir']}"
    )


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

"""`refseg-evaluate`: score a trained model at original resolution.

    refseg-evaluate --model_dir=runs/rrn --split=val [--dense_crf] [--data_dir=OTHER]

Prints one table (overall IoU, mean IoU, prec@0.5..0.9, the breakdown by expression length) and
writes it to `MODEL_DIR/eval_<split>.json`. Masks come from the model directory's scoring rule
(`eval.scoring_rule`, `refseg_tf.scoring`; default the authors' "upsample_logits"), named above
the table and in the JSON's `metadata.scoring_rule`.
"""

from refseg_tf.cli import quiet_tensorflow_startup

quiet_tensorflow_startup(__name__)  # a command: before TensorFlow is imported (issue 21)

from absl import app, flags

from refseg_tf.cli import user_errors_as_messages


def define_flags():
    if "split" not in flags.FLAGS:
        flags.DEFINE_string("model_dir", None, "A directory written by refseg-train.")
        flags.DEFINE_string("split", "val", "Split of the converted data to score.")
        flags.DEFINE_string("data_dir", None, "Converted data (default: the training config's).")
        flags.DEFINE_boolean("dense_crf", None, "Refine with DenseCRF (needs refseg-tf[crf]).")
        flags.DEFINE_integer("batch_size", None, "Evaluation batch size.")
        flags.DEFINE_string(
            "checkpoint", "auto",
            "'auto' (model.keras, else the newest checkpoint), 'final', 'latest' or a path.",
        )
        flags.DEFINE_integer("max_batches", None, "Score only this many batches (a quick look).")
    flags.mark_flags_as_required(["model_dir"])


@user_errors_as_messages("refseg-evaluate")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from refseg_tf.training.evaluation import evaluate_model_dir

    FLAGS = flags.FLAGS
    report, table = evaluate_model_dir(
        FLAGS.model_dir,
        split=FLAGS.split,
        data_dir=FLAGS.data_dir,
        use_crf=FLAGS.dense_crf,
        batch_size=FLAGS.batch_size,
        checkpoint=FLAGS.checkpoint,
        max_batches=FLAGS.max_batches,
    )
    print(f"{report['model']} on {report['data_dir']} [{report['split']}]")
    print(table)
    print(f"Written to {FLAGS.model_dir}/eval_{FLAGS.split}.json")


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

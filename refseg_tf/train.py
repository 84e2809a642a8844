"""`refseg-train`: train a model from an experiment config.

    refseg-train --config=experiments/synthetic_rrn.py --config.data.dir=data/synthetic_tfrecords \
        --config.train.steps=2000 --model_dir=runs/rrn

Re-running the same command resumes from the newest checkpoint in `--model_dir` (a larger
`--config.train.steps` trains longer); a changed model, preprocessing or vocabulary is refused
before anything is written, and a damaged newest checkpoint falls back to the previous one.
Flags are defined when `run()` starts, so importing several entry points never clashes.
"""

from refseg_tf.cli import quiet_tensorflow_startup

quiet_tensorflow_startup(__name__)  # a command: before TensorFlow is imported (issue 21)

from absl import app, flags, logging
from ml_collections import config_flags

from refseg_tf.cli import user_errors_as_messages


def define_flags():
    if "model_dir" not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py).")
        flags.DEFINE_string("model_dir", None, "Where checkpoints, logs and the model go.")
    flags.mark_flags_as_required(["config", "model_dir"])


@user_errors_as_messages("refseg-train")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from refseg_tf.training.trainer import train

    config = flags.FLAGS.config
    logging.info("Config:\n%s", config)
    train(config, flags.FLAGS.model_dir)
    print(f"Trained model saved in {flags.FLAGS.model_dir}/model.keras")


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()

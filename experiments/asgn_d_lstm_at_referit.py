"""ASGN Table I: D+LSTM+AT on referit."""

from refseg_tf.training import experiments


def get_config():
    return experiments.asgn(generator="d_lstm", dataset="referit", modules="at")

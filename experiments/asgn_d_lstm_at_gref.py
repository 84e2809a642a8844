"""ASGN Table I: D+LSTM+AT on gref."""

from refseg_tf.training import experiments


def get_config():
    return experiments.asgn(generator="d_lstm", dataset="gref", modules="at")

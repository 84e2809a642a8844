"""ASGN Table I: D+LSTM+DE+SE+AT on unc."""

from refseg_tf.training import experiments


def get_config():
    return experiments.asgn(generator="d_lstm", dataset="unc", modules="de_se_at")

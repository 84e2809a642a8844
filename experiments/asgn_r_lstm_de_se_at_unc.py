"""ASGN Table I: R+LSTM+DE+SE+AT on unc."""

from refseg_tf.training import experiments


def get_config():
    return experiments.asgn(generator="r_lstm", dataset="unc", modules="de_se_at")

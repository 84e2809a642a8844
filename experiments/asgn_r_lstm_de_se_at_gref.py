"""ASGN Table I: R+LSTM+DE+SE+AT on gref."""

from refseg_tf.training import experiments


def get_config():
    return experiments.asgn(generator="r_lstm", dataset="gref", modules="de_se_at")

"""ASGN Table II: R+LSTM+DE+AT on UNC."""

from refseg_tf.training import experiments


def get_config():
    return experiments.asgn(generator="r_lstm", dataset="unc", modules="de_at")

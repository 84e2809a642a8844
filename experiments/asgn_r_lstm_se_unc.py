"""ASGN Table II: R+LSTM+SE on UNC."""

from refseg_tf.training import experiments


def get_config():
    return experiments.asgn(generator="r_lstm", dataset="unc", modules="se")

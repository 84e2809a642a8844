"""ASGN Table III: R+LSTM+DE with DE layers conv2 on UNC (conv3+4+5 = asgn_r_lstm_de_unc.py)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_r_lstm_de_conv2_unc")

"""ASGN Table II: R+LSTM+DE on UNC."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_r_lstm_de_unc")

"""ASGN Tables I-III: R+LSTM baseline (the generator alone on CE) on unc."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_r_lstm_unc")

"""ASGN Table I: D+LSTM baseline (the generator alone on CE) on unc."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_d_lstm_unc")

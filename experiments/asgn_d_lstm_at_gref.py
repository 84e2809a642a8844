"""ASGN Table I: D+LSTM+AT on gref."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_d_lstm_at_gref")

"""ASGN Table I: R+LSTM+AT on gref."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_r_lstm_at_gref")

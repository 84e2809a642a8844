"""ASGN Table I: D+LSTM+DE+SE+AT on unc."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_d_lstm_de_se_at_unc")

"""ASGN Table I: R+LSTM+DE+SE+AT on referit."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_r_lstm_de_se_at_referit")

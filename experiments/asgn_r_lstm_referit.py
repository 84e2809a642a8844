"""ASGN Table I: R+LSTM baseline (the generator alone on CE) on referit."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_r_lstm_referit")

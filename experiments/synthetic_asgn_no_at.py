"""ASGN's generator (D+LSTM+DE+SE) without adversarial training, tiny, on the synthetic data."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("synthetic_asgn_no_at")

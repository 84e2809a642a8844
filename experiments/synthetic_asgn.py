"""ASGN (D+LSTM+DE+SE+AT), tiny, on the synthetic data: trains in minutes on two CPU cores."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("synthetic_asgn")

"""RRN (ConvLSTM + tanh over C5, C4, C3), tiny, on the synthetic data: trains in minutes on two CPU cores."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("synthetic_rrn")

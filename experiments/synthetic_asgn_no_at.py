"""ASGN's generator (D+LSTM+DE+SE) without adversarial training, tiny, on the synthetic data."""

from refseg_tf.training import experiments


def get_config():
    return experiments.synthetic_asgn(adversarial_training=False)

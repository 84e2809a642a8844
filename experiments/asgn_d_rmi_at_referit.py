"""ASGN Table I: D+RMI+AT on referit."""

from refseg_tf.training import experiments


def get_config():
    return experiments.asgn(generator="d_rmi", dataset="referit", modules="at")

"""ASGN Table I: D+RMI+DE+SE+AT on unc+."""

from refseg_tf.training import experiments


def get_config():
    return experiments.asgn(generator="d_rmi", dataset="unc+", modules="de_se_at")

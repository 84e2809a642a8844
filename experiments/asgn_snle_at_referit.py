"""ASGN Table I: SNLE+AT on ReferIt."""

from refseg_tf.training import experiments


def get_config():
    return experiments.asgn(generator="snle", dataset="referit", modules="at")

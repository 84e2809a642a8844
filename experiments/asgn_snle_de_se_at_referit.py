"""ASGN Table I: SNLE+DE+SE+AT on ReferIt."""

from refseg_tf.training import experiments


def get_config():
    return experiments.asgn(generator="snle", dataset="referit", modules="de_se_at")

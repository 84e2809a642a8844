"""ASGN Table I: SNLE+AT on ReferIt."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_snle_at_referit")

"""ASGN Table I: SNLE+DE+SE+AT on ReferIt."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_snle_de_se_at_referit")

"""ASGN Table I: D+RMI+DE+SE+AT on gref."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_d_rmi_de_se_at_gref")

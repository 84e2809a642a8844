"""ASGN Table I: D+RMI+AT on referit."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_d_rmi_at_referit")

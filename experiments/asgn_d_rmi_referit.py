"""ASGN Table I: D+RMI baseline (the generator alone on CE) on referit."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_d_rmi_referit")

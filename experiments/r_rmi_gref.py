"""R+RMI (RMI, Liu et al. 2017, Table 1), gref; the R+RMI+DCRF row = this model with `refseg-evaluate --dense_crf`."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("r_rmi_gref")

"""LTS Table 6 (448 x 448 input, n = 1), RefCOCO; paper: mean IoU 65.71 / 67.9 / 63.23 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table6_448px_refcoco")

"""LTS Table 6 (352 x 352 input, n = 1), RefCOCO; paper: mean IoU 64.04 / 66.24 / 61.76 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table6_352px_refcoco")

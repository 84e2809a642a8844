"""LTS Table 6 (320 x 320 input, n = 1), RefCOCO; paper: mean IoU 63.01 / 65.4 / 60.78 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table6_320px_refcoco")

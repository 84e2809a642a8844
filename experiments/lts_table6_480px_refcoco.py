"""LTS Table 6 (480 x 480 input, n = 1), RefCOCO; paper: mean IoU 65.9 / 68.16 / 63.45 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table6_480px_refcoco")

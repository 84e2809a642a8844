"""LTS Table 6 (384 x 384 input, n = 1), RefCOCO; paper: mean IoU 64.45 / 67.02 / 62.47 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table6_384px_refcoco")

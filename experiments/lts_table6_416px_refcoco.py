"""LTS Table 6 (416 x 416 input, n = 1), RefCOCO; paper: mean IoU 65.43 / 67.76 / 63.08 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table6_416px_refcoco")

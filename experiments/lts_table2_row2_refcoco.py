"""LTS Table 2 row 2 (Filter, no fusion), RefCOCO; paper: mean IoU 54.53 / 56.05 / 52.55 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.lts(dataset="refcoco", table2_row=2)

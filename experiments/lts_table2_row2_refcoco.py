"""LTS Table 2 row 2 (Filter, no fusion), RefCOCO; paper: mean IoU 54.53 / 56.05 / 52.55 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table2_row2_refcoco")

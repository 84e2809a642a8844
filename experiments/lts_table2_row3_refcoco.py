"""LTS Table 2 row 3 (Fusion + Filter), RefCOCO; paper: mean IoU 56.94 / 58.53 / 55.12 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table2_row3_refcoco")

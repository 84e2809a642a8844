"""LTS Table 2 row 1 (Fusion), RefCOCO; paper: mean IoU 55.08 / 56.82 / 53.52 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table2_row1_refcoco")

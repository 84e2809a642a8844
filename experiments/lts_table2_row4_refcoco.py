"""LTS Table 2 row 4 (Fusion + Seg), RefCOCO; paper: mean IoU 63.5 / 65.31 / 60.97 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table2_row4_refcoco")

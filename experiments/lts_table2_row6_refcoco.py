"""LTS Table 2 row 6 (Fusion + Filter + Seg, no L_loc), RefCOCO; paper: mean IoU 65.05 / 67.49 / 62.43 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table2_row6_refcoco")

"""LTS Table 2 row 7 (Fusion + Filter + Seg + L_loc (full LTS)), RefCOCO; paper: mean IoU 65.43 / 67.76 / 63.08 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table2_row7_refcoco")

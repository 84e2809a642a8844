"""LTS Table 2 row 5 (Filter + Seg + L_loc, no fusion), RefCOCO; paper: mean IoU 63.64 / 66.41 / 60.72 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table2_row5_refcoco")

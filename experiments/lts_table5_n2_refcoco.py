"""LTS Table 5 (n = 2 relevance filterings), RefCOCO; paper: mean IoU 66.04 / 68.68 / 63.27 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table5_n2_refcoco")

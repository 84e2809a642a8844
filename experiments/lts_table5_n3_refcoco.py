"""LTS Table 5 (n = 3 relevance filterings), RefCOCO; paper: mean IoU 65.54 / 67.82 / 62.97 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table5_n3_refcoco")

"""LTS Table 5 (WordFilter: a kernel from every word), RefCOCO; paper: mean IoU 64.92 / 67.31 / 62.5 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_table5_wordfilter_refcoco")

"""LTS (Jing et al. 2021, Table 1: relevance filtering, n = 1), RefCOCO (UNC); paper: mean IoU 65.43 / 67.76 / 63.08 (val / testA / testB)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_refcoco")

"""LTS (Jing et al. 2021, Table 1: relevance filtering, n = 1), RefCOCOg (UMD); paper: mean IoU 54.40 / 54.25 (val / test)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_refcocog_umd")

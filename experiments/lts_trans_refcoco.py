"""LTS-Trans (Jing et al. 2021, Table 4: transformer localisation), RefCOCO (UNC); paper: mean IoU 66.15 (val)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_trans_refcoco")

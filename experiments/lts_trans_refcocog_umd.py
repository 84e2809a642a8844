"""LTS-Trans (Jing et al. 2021, Table 4: transformer localisation), RefCOCOg (UMD); paper: mean IoU 54.51 (val)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lts_trans_refcocog_umd")

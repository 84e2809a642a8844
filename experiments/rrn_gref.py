"""RRN (Li et al. 2018, Table 2): ConvLSTM over C5, C4, C3 with tanh, G-Ref / RefCOCOg (Google split)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("rrn_gref")

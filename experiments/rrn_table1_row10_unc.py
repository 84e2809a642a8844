"""RRN (Li et al. 2018) Table 1 row 10: RNN, m={C5,C4,C3}, a=tanh, UNC val."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("rrn_table1_row10_unc")

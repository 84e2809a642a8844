"""RRN (Li et al. 2018) Table 1 row 15: LSTM, m={C3,C4,C5}, a=tanh, UNC val."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("rrn_table1_row15_unc")

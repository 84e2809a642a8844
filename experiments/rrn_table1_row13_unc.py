"""RRN (Li et al. 2018) Table 1 row 13: LSTM, m={C5,C5,C5}, a=tanh, UNC val."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("rrn_table1_row13_unc")

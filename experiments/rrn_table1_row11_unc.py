"""RRN (Li et al. 2018) Table 1 row 11: LSTM, m={C5,C4,C3}, UNC val."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("rrn_table1_row11_unc")

"""RRN (Li et al. 2018) Table 1 row 3: plain, m={C5}, UNC val."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("rrn_table1_row03_unc")

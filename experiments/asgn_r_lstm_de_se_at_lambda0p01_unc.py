"""ASGN Table VI: R+LSTM+DE+SE+AT with lambda = 0.01 on UNC (0.1 = asgn_r_lstm_de_se_at_unc.py)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_r_lstm_de_se_at_lambda0p01_unc")

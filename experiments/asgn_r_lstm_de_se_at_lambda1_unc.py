"""ASGN Table VI: R+LSTM+DE+SE+AT with lambda = 1.0 on UNC (0.1 = asgn_r_lstm_de_se_at_unc.py)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_r_lstm_de_se_at_lambda1_unc")

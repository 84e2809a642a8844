"""ASGN Table III: R+LSTM+DE with DE layers conv1+2+3+4+5 on UNC (conv3+4+5 = asgn_r_lstm_de_unc.py)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("asgn_r_lstm_de_conv1_2_3_4_5_unc")

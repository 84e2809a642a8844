"""D-LSTM-ours (RRN, Li et al. 2018, Table 1 row 2): 3x3 score conv, loss at image resolution, UNC."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("d_lstm_ours_unc")

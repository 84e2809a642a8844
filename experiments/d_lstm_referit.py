"""D+LSTM baseline (RMI, Liu et al. 2017, Sec. 3.2 and Table 1): DeepLab ResNet-101 at stride 8, ReferIt (Hu split)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("d_lstm_referit")

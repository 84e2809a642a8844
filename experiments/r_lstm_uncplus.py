"""R+LSTM baseline (RMI, Liu et al. 2017, Sec. 3.2 and Table 1): ImageNet ResNet-101 at stride 8, UNC+ / RefCOCO+."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("r_lstm_uncplus")

"""LSTM-CNN (Hu et al. 2016), high-resolution stage (bilinear deconvolution), ReferIt (Hu split); starts from lstm_cnn_low_referit."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lstm_cnn_high_referit")

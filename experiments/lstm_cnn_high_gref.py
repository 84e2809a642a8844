"""LSTM-CNN (Hu et al. 2016), high-resolution stage (bilinear deconvolution), G-Ref / RefCOCOg (Google split); starts from lstm_cnn_low_gref."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lstm_cnn_high_gref")

"""LSTM-CNN (Hu et al. 2016), low-resolution stage (16x16 logits), ReferIt (Hu split)."""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("lstm_cnn_low_referit")

"""ASGN's generator (D+LSTM+DE+SE) without adversarial training, tiny, on the synthetic data.

The same generator, loss (CE at image resolution, a synthetic-data choice) and schedule as
`experiments/synthetic_asgn.py`, trained on CE alone: its row beside the AT row shows what the
adversarial term does here (see `experiments.synthetic_asgn`).
"""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("synthetic_asgn_no_at")

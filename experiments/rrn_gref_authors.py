"""RRN (Li et al. 2018, Table 2) with the ConvLSTM cell of the authors' code, G-Ref / RefCOCOg (Google split).

Layer-normalised ConvLSTM with spatial peepholes and no bias, zero initial state with q as the
first input (`RRN_AUTHORS_CODE`, referseg_rrn `util/cell.py`): the model that produced the
published numbers. `rrn_gref.py` is the recurrence as the paper describes it.
"""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("rrn_gref_authors")

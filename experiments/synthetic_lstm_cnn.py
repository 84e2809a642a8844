"""LSTM-CNN (Hu et al. 2016), tiny, on the synthetic data: trains in minutes on two CPU cores.

Hu's low-resolution model (no deconvolution; predictions are the stride-32 logits upsampled
bilinearly) at 256 px input, so that stride 32 gives an 8 x 8 grid: the grid every other
synthetic config gets (stride 8 at 64 px), and one cell is 12.5 % of the image side, as on
Hu's 16 x 16 grid a cell is 6 % (512 px). The loss is the high-resolution stage's weighting
(foreground 1, background 1/3) against the binary label on that grid ("binary": a cell is
foreground when at least half of it is); Hu's "any" label would grow each object by up to one
of these large cells.

Why not the high-resolution stage at 128 px (the previous config): its grid is 4 x 4, a 32 px
cell holds parts of several objects and of the background. On the independently drawn
`shapes_v2` set (benchmarks/synthetic_results.py, seed 0) it scored 30.4 overall IoU against
17.7 for its text-blind control; by phrase type it found the object named by a position ("the
leftmost shape", 44 % mean IoU) far better than by colour or shape ("the red thing" 18 %, "the
red circle" 19 %). Training twice as long (3,000 steps: 30.2, train IoU still rising, so over-
rather than under-fitting), a 3 x 3 or 1 x 1 fc6 (30.1, 26.6) or an unweighted loss (17.1) did
not help; this 8 x 8 grid gives 36.1 against 22.9 blind (every phrase type improves: colour
23 %, shape 23 %, position 52 %), and on the first set 28.1 against 10.5 (was 26.8 / 9.7). The
finer grid sharpens the blind control's masks too, so the margin grows less than the score.
The high-resolution stage at 256 px is out of reach on CPU: the gradient of its 64 x 64,
stride-32 deconvolution asks oneDNN for 27 GB at batch 16.

The optimiser is Adam without weight decay, so the loss reduction ("mean" or "sum" over the
grid) only rescales the gradients, which Adam normalises: the config does not depend on it.
"""

from refseg_tf.training import experiments


def get_config():
    return experiments.get_experiment("synthetic_lstm_cnn")

"""referseg_rrn checkpoints (`main_convlstm_p543.py`) imported number for number.

The authors' TF1 graph (tests/tf1_rrn.py, written here from their names and equations) with
random weights is saved, imported with `import_checkpoint`, and the imported `model.keras`
must give its logits within 1e-4 max abs (float32 reordering, nothing more) for a sentence
with front `<pad>` steps.
"""

import os

import keras
import numpy as np
import pytest

from refseg_tf.interop import import_checkpoint, load_experiment_config
from tests import tf1_phrasecut as graphs
from tests import tf1_rrn
from tests.test_interop_phrasecut import TINY, TINY_WIDTHS, TOLERANCE, _inputs


def _run(tmp_path, config, dims, train):
    image, words = _inputs(dims["size"], dims["steps"], dims["vocab"])
    prefix = str(tmp_path / "tfmodel" / "unc_iter_700000.tfmodel")
    reference = tf1_rrn.run_rrn_reference(prefix, word_ids=words, image=image, train=train, **dims)
    vocabulary = graphs.write_vocabulary(str(tmp_path / "vocabulary.txt"), dims["vocab"])
    report = import_checkpoint("rrn", prefix, vocabulary, config, tmp_path / "imported")
    model = keras.saving.load_model(str(tmp_path / "imported" / "model.keras"), compile=False)
    logits = np.asarray(model({"image": image[None], "word_ids": words[None]}))
    np.testing.assert_allclose(logits, reference, rtol=0, atol=TOLERANCE)
    other = words.copy()
    other[-1] = 4 if words[-1] != 4 else 5
    changed = np.asarray(model({"image": image[None], "word_ids": other[None]}))
    assert np.abs(changed - reference).max() > 10 * TOLERANCE  # the check can fail
    return report


def test_tiny_rrn_checkpoint_imports_to_the_same_logits(tmp_path):
    config = load_experiment_config(os.path.join("experiments", "rrn_gref_authors.py"))
    config.model.size = "tiny"
    config.model.backbone.kwargs = {"widths": TINY_WIDTHS}
    config.data.image_size = TINY["size"]
    config.data.max_length = TINY["steps"]
    report = _run(tmp_path, config, TINY, train=True)
    assert report["ignored"] > 0  # Adam slots, step counter, DrSleep's VOC head


def test_rrn_format_refuses_the_paper_cell(tmp_path):
    config = load_experiment_config(os.path.join("experiments", "rrn_gref.py"))
    with pytest.raises(ValueError, match="rrn_\\*_authors"):
        import_checkpoint("rrn", str(tmp_path / "none"), graphs.write_vocabulary(
            str(tmp_path / "v.txt"), 10), config, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_paper_size_rrn_checkpoint_imports_to_the_same_logits(tmp_path):
    config = load_experiment_config(os.path.join("experiments", "rrn_gref_authors.py"))
    dims = dict(size=320, steps=20, vocab=12112, backbone=graphs.PAPER_RESNET)
    _run(tmp_path, config, dims, train=False)

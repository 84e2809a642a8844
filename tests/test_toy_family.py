"""A new family needs no edit of shared code: the throw-away `tests/toy_family` package,
registered by its one import, trains, evaluates, predicts and exports through the library.

This is the acceptance test of `docs/design.md`'s "adding a family" checklist (issue 20).
"""

import glob
import json
import os
import sys

import numpy as np
import pytest

from tests.test_training import data, tiny_config  # noqa: F401  (the synthetic data fixture)


@pytest.fixture(scope="module")
def toy_family():
    """Imports the toy family (its presets, experiments and synthetic recipe register), and
    removes every registration afterwards so the other tests see the library's families only."""
    from refseg_tf import experiment
    from refseg_tf.models import registry

    before = (set(registry.PRESETS), set(experiment.EXPERIMENTS), set(experiment.SYNTHETIC_RECIPES))
    import tests.toy_family as family

    yield family
    for table, names in zip(
        (registry.PRESETS, experiment.EXPERIMENTS, experiment.SYNTHETIC_RECIPES), before
    ):
        for name in set(table) - names:
            del table[name]
    for name in [m for m in sys.modules if m.startswith("tests.toy_family")]:
        del sys.modules[name]


def test_one_import_registers_the_family(toy_family):
    from refseg_tf.models import build_preset, list_presets
    from refseg_tf.training import experiments

    assert "toy" in list_presets()
    assert "synthetic_toy" in experiments.list_experiments(synthetic=True)
    config = experiments.get_experiment("synthetic_toy")
    assert config.model.name == "toy" and config.model.threshold == 0.4
    model = build_preset("toy", 20, size="tiny")
    assert isinstance(model, toy_family.ToySegmenter) and model.embedding_dim == 8
    # The capabilities it does not declare are refused, not probed.
    assert not model.has_heatmap and not model.has_explanation and not model.takes_word_vectors


@pytest.mark.slow  # ~3 minutes on two shared cores: a training run, an evaluation, an export
def test_train_evaluate_predict_and_export_the_toy_family(toy_family, data, tmp_path):
    from refseg_tf.export import SavedModelPredictor, export_model, image_bytes_for_serving
    from refseg_tf.predict import predict_to_files
    from refseg_tf.training import trainer
    from refseg_tf.training.evaluation import evaluate_model_dir

    data_dir, summary = data
    config = tiny_config(data_dir, "toy")
    model_dir = str(tmp_path / "toy")
    model = trainer.train(config, model_dir, verbose=0)
    assert isinstance(model, toy_family.ToySegmenter)
    assert os.path.isfile(os.path.join(model_dir, "model.keras"))
    with open(os.path.join(model_dir, "preprocessor.json"), encoding="utf-8") as f:
        assert json.load(f)["config"]["threshold"] == 0.4  # the family's threshold, resolved

    report, table = evaluate_model_dir(model_dir, split="val", max_batches=1)
    assert report["model"] == "toy" and report["threshold"] == 0.4
    assert 0.0 <= report["scores"]["overall_iou"] <= 1.0 and "Scoring rule" in table

    image_path = sorted(glob.glob(os.path.join(summary["image_root"], "*")))[0]
    mask, overlay = predict_to_files(model_dir, image_path, "the red square",
                                     str(tmp_path / "mask.png"))
    assert mask.dtype == bool and os.path.isfile(overlay)

    contract = export_model(model_dir, str(tmp_path / "exported"), formats=["saved_model"])
    assert contract["scoring"]["threshold"] == 0.4
    served = SavedModelPredictor(str(tmp_path / "exported" / "saved_model" / "1"))
    _, served_mask = served.predict(image_bytes_for_serving(image_path), "the red square")
    # Two graphs' float logits: a pixel at the cut may differ in the last bits.
    assert served_mask.shape == mask.shape and np.mean(served_mask == mask) >= 0.99

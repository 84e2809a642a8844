"""Repeated `evaluate_model` calls reuse the traced functions, the eval pipeline and its
iterator (`evaluation._eval_stream`), and still score every sentence exactly once, with the
same counts as a first call, after a cut or failed call and after the shards change."""

import os
import shutil

import pytest
import tensorflow as tf

from refseg_tf.data import schema
from refseg_tf.training import evaluation
from tests.test_evaluation_grouped import (  # noqa: F401  (its split and autouse fixtures)
    BUCKETS,
    _fresh_streams,
    _preprocessor,
    _TextAwareModel,
    split,
)


def _evaluate(model, config, preprocessor, batch_size, **kwargs):
    _, _, evaluator = evaluation.evaluate_model(
        model, config, "val", batch_size=batch_size, buckets=BUCKETS,
        preprocessor=preprocessor, **kwargs,
    )
    return evaluator._sample_ids, evaluator._intersections, evaluator._unions, evaluator._lengths


# 21 sentences: a partial last batch (4), or none (7, with `-m slow`: issue 21, suite time).
@pytest.mark.parametrize("batch_size", [4, pytest.param(7, marks=pytest.mark.slow)])
def test_repeated_calls_reuse_traces_and_pipeline_with_identical_counts(
    split, monkeypatch, batch_size
):
    config, vocabulary, total = split
    builds = []
    original = evaluation.evaluation_dataset

    def counted(*args, **kwargs):
        builds.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluation_dataset", counted)
    model = _TextAwareModel(heatmap=True)
    preprocessor = _preprocessor(vocabulary, "upsample_logits")
    first = _evaluate(model, config, preprocessor, batch_size)
    traces = evaluation._predict_fn(model).experimental_get_tracing_count()
    heatmap_traces = evaluation._heatmap_fn(model).experimental_get_tracing_count()
    timings = {}
    for _ in range(2):
        assert _evaluate(model, config, preprocessor, batch_size, timings=timings) == first
    assert len(first[0]) == total and sorted(first[0]) == sorted(set(first[0]))
    assert len(builds) == 1  # one pipeline for the three calls
    assert evaluation._predict_fn(model).experimental_get_tracing_count() == traces
    assert evaluation._heatmap_fn(model).experimental_get_tracing_count() == heatmap_traces
    assert timings["setup_seconds"] >= 0 and timings["loop_seconds"] > 0
    # The cached stream runs without tf.data's autotuning thread: an autotuned iterator that had
    # lived a while took 20-65 s to destroy (when the stream was dropped).
    streams = list(evaluation._STREAMS.values())
    assert streams and all(s.dataset.options().autotune.enabled is False for s in streams)
    # Another batch size is another pipeline, with the same per-sentence counts.
    other = _evaluate(model, config, preprocessor, batch_size + 1)
    assert len(builds) == 2
    assert sorted(zip(*other)) == sorted(zip(*first))


def test_a_cut_or_failed_call_leaves_the_next_call_complete(split, monkeypatch):
    config, vocabulary, total = split
    model = _TextAwareModel()
    preprocessor = _preprocessor(vocabulary, "resize_probability")
    reference = _evaluate(model, config, preprocessor, 3)
    cut = _evaluate(model, config, preprocessor, 3, max_batches=2)
    assert cut == tuple(values[:6] for values in reference)
    assert _evaluate(model, config, preprocessor, 3) == reference

    original = evaluation._score_into
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("scoring failed")
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_score_into", failing)
    with pytest.raises(RuntimeError, match="scoring failed"):
        _evaluate(model, config, preprocessor, 3)
    monkeypatch.setattr(evaluation, "_score_into", original)
    assert _evaluate(model, config, preprocessor, 3) == reference


def test_changed_shards_build_the_stream_anew(split, tmp_path):
    config, vocabulary, total = split
    directory = tmp_path / "data"
    shutil.copytree(config.data.dir, directory)
    local = config.copy_and_resolve_references()
    local.data.dir = str(directory)
    model = _TextAwareModel()
    preprocessor = _preprocessor(vocabulary, "upsample_logits")
    before = _evaluate(model, local, preprocessor, 4)
    assert len(before[0]) == total
    # Rewrite the second shard with its first record only (a new conversion of fewer images).
    name = schema.SHARD_PATTERN.format(split="val", index=1, count=2)
    records = list(tf.data.TFRecordDataset(str(directory / name)).as_numpy_iterator())
    with tf.io.TFRecordWriter(str(directory / name)) as writer:
        writer.write(records[0])
    removed = schema.decode_example_numpy(records[1])
    after = _evaluate(model, local, preprocessor, 4)
    assert len(after[0]) == total - len(removed["sentence/id"])
    assert set(after[0]) == set(before[0]) - set(int(i) for i in removed["sentence/id"])
    os.remove(directory / name)
    with pytest.raises(ValueError, match="incomplete"):
        _evaluate(model, local, preprocessor, 4)

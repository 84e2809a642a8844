"""Tests of benchmarks/run_all.py: the report it writes (figures are recorded, never asserted)."""

import importlib.util
import os
import re

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_run_all():
    path = os.path.join(REPO_ROOT, "benchmarks", "run_all.py")
    spec = importlib.util.spec_from_file_location("run_all_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine(load_average):
    return {
        "cpu_model": "Test CPU", "cpu_cores": 2, "usable_cores": 2, "machine": "x86_64",
        "python": "3", "tensorflow": "2.x", "tensorflow_git": "v2", "keras": "3",
        "tensorflow_build": {"is_cuda_build": False}, "numpy": "2", "onednn": "on", "gpus": [],
        "load_average_start": load_average, "load_average_end": load_average,
    }


def test_report_has_hardware_goals_bounds_and_flags_a_loaded_machine():
    run_all = load_run_all()
    figure = run_all.Figure(3, "training", ">= 2", [("rrn", 1.5, "a -> b"), ("x", None, "skipped")],
                            bound="fixed cost per step")
    settings = run_all.Settings()
    quiet = run_all.render([figure], machine((0.2, 0.2, 0.2)), settings, False, 60.0)
    loaded = run_all.render([figure], machine((6.0, 5.0, 4.0)), settings, True, 60.0)
    assert "Test CPU, 2 cores" in quiet and "TensorFlow 2.x" in quiet
    assert "| 3 | rrn | 1.50 | >= 2 | a -> b |" in quiet and "| 3 | x | - |" in quiet
    assert "What bounds it (measured): fixed cost per step" in quiet
    assert "machine was loaded" not in quiet and "machine was loaded" in loaded
    assert "Quick mode" in loaded and "Quick mode" not in quiet


def test_quick_conversion_and_crf_figures_write_results(tmp_path):
    run_all = load_run_all()
    output = tmp_path / "RESULTS.md"
    figures = run_all.run(["--quick", "--figures", "5,7", "--output", str(output)])
    assert [figure.number for figure in figures] == [5, 7]
    text = output.read_text(encoding="utf-8")
    assert "CPU:" in text and "TensorFlow" in text and "load average" in text
    row = re.search(r"\| 7 \| 2 workers / 1 worker \| ([0-9.]+) \|", text)
    assert row is not None, text
    assert float(row.group(1)) > 0
    assert "## 5. DenseCRF" in text


def test_unknown_figure_is_refused(tmp_path):
    run_all = load_run_all()
    with pytest.raises(SystemExit, match="--figures"):
        run_all.run(["--figures", "99", "--output", str(tmp_path / "R.md")])


@pytest.mark.slow
def test_quick_mode_writes_every_figure(tmp_path):
    run_all = load_run_all()
    output = tmp_path / "RESULTS.md"
    figures = run_all.run(["--quick", "--output", str(output)])
    assert [figure.number for figure in figures] == list(run_all.FIGURES)
    text = output.read_text(encoding="utf-8")
    for number in run_all.FIGURES:
        assert f"## {number}. " in text
    failed = [row for figure in figures for row in figure.rows if row[2].startswith("failed")]
    assert not failed, failed


def test_paper_size_configs_come_from_the_registered_paper_rows():
    """The paper-size figures take each preset's paper row from the experiment registry (no
    hand list): the row nearest its builder's defaults, the one the hand list named before."""
    from refseg_tf.training import experiments

    run_all = load_run_all()
    expected = {
        "rrn": "rrn_unc", "d_lstm": "d_lstm_unc", "d_rmi": "d_rmi_unc", "lts": "lts_refcoco",
        "lts_trans": "lts_trans_refcoco", "lstm_cnn": "lstm_cnn_low_referit",
        "asgn_d_lstm": "asgn_d_lstm_de_se_at_unc",
    }
    for preset, row in expected.items():
        assert run_all._paper_config(preset).to_json() == experiments.get_experiment(row).to_json()
    with pytest.raises(ValueError, match="no_such_preset"):
        run_all._paper_config("no_such_preset")

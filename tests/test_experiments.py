"""experiments/*.py: every config loads, validates, matches its paper and builds.

The experiments are the registry's (`refseg_tf.training.experiments.list_experiments()`): each
family registers its rows from `refseg_tf/models/<family>/experiments.py`, and every file of
experiments/ is the registered experiment of its stem (`test_files_and_registry_agree`). The
per-experiment checks are grouped: one test per check kind runs it over every registered
experiment it concerns and names each failing one in a single assertion message.

Paper numbers and hyper-parameters are checked against /work/shared/papers/DIGEST.md and the
papers' tables (Hu et al. 2016 Table 1, RMI Table 1, RRN Tables 1 and 2); `PAPER_IOU` is that
independent copy (a new paper row adds its numbers there). Model sections are checked against
the presets without building paper-scale models; a few configs are built at
`model.size="tiny"`, and all of them in a slow test.
"""

import ast
import glob
import importlib.util
import inspect
import os

import numpy as np
import pytest

from refseg_tf.models import get_preset, list_presets
from refseg_tf.training import config as config_lib
from refseg_tf.training import experiments

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT_DIR = os.path.join(REPO_ROOT, "experiments")
EXPERIMENT_FILES = sorted(glob.glob(os.path.join(EXPERIMENT_DIR, "*.py")))
FILE_NAMES = [os.path.splitext(os.path.basename(path))[0] for path in EXPERIMENT_FILES]
# Every registered experiment (each is `experiments/<name>.py`: test_files_and_registry_agree).
NAMES = experiments.list_experiments()
MODELS = tuple(list_presets())  # every registered preset
# The registered synthetic experiments (experiments/synthetic_<name>.py), by <name>.
SYNTHETIC = tuple(
    name[len("synthetic_"):] for name in experiments.list_experiments(synthetic=True)
)
PAPER_NAMES = experiments.list_experiments(synthetic=False)

# Overall IoU (%) the papers report, by experiment file.
_RRN_TABLE1 = {  # RRN Table 1, UNC val: (variant, pyramid, overall IoU)
    3: ("plain", ("C5",), 46.87),
    4: ("plain", ("C5", "C4"), 48.56),
    5: ("plain", ("C5", "C4", "C3"), 49.74),
    6: ("plain", ("C5", "C4", "C3", "C2"), 48.97),
    7: ("plain", ("C5", "C4", "C3", "C2", "C1"), 48.30),
    8: ("fpn", ("C5", "C4", "C3"), 39.31),
    9: ("rnn", ("C5", "C4", "C3"), 48.86),
    10: ("rnn_tanh", ("C5", "C4", "C3"), 46.35),
    11: ("lstm", ("C5", "C4", "C3"), 52.48),
    12: ("lstm_tanh", ("C5", "C4", "C3"), 54.26),
    13: ("lstm_tanh", ("C5", "C5", "C5"), 51.41),
    14: ("lstm_tanh", ("C5", "C4", "C5"), 52.81),
    15: ("lstm_tanh", ("C3", "C4", "C5"), 53.81),
}
PAPER_IOU = {
    # ASGN (Qiu et al.) Tables I, II, III, VI (parsed once from SPEC 3.8).
    "asgn_d_lstm_at_gref": {'val': 38.89},
    "asgn_d_lstm_at_referit": {'test': 57.11},
    "asgn_d_lstm_at_unc": {'val': 44.74, 'testA': 45.75, 'testB': 44.05},
    "asgn_d_lstm_at_uncplus": {'val': 33.08, 'testA': 33.59, 'testB': 31.27},
    "asgn_d_lstm_de_se_at_gref": {'val': 40.36},
    "asgn_d_lstm_de_se_at_referit": {'test': 58.43},
    "asgn_d_lstm_de_se_at_unc": {'val': 48.04, 'testA': 48.86, 'testB': 47.64},
    "asgn_d_lstm_de_se_at_uncplus": {'val': 36.25, 'testA': 37.47, 'testB': 34.48},
    "asgn_d_rmi_at_gref": {'val': 39.6},
    "asgn_d_rmi_at_referit": {'test': 58.74},
    "asgn_d_rmi_at_unc": {'val': 45.4, 'testA': 46.1, 'testB': 44.87},
    "asgn_d_rmi_at_uncplus": {'val': 33.88, 'testA': 35.01, 'testB': 32.7},
    "asgn_d_rmi_de_se_at_gref": {'val': 41.36},
    "asgn_d_rmi_de_se_at_referit": {'test': 60.31},
    "asgn_d_rmi_de_se_at_unc": {'val': 50.46, 'testA': 51.2, 'testB': 49.27},
    "asgn_d_rmi_de_se_at_uncplus": {'val': 38.41, 'testA': 39.79, 'testB': 35.97},
    "asgn_r_lstm_at_gref": {'val': 34.42},
    "asgn_r_lstm_at_referit": {'test': 54.41},
    "asgn_r_lstm_at_unc": {'val': 41.18, 'testA': 42.19, 'testB': 40.3},
    # ASGN Table I's own baselines (issue 19 §6; typed from qiu_asgn.txt Table I).
    "asgn_r_lstm_unc": {'val': 39.29, 'testA': 39.80, 'testB': 39.15},
    "asgn_r_lstm_uncplus": {'val': 26.87, 'testA': 27.52, 'testB': 25.28},
    "asgn_r_lstm_gref": {'val': 28.06},
    "asgn_r_lstm_referit": {'test': 54.04},
    "asgn_d_lstm_unc": {'val': 43.32, 'testA': 43.71, 'testB': 43.25},
    "asgn_d_lstm_uncplus": {'val': 28.61, 'testA': 29.03, 'testB': 28.14},
    "asgn_d_lstm_gref": {'val': 32.86},
    "asgn_d_lstm_referit": {'test': 56.78},
    "asgn_d_rmi_unc": {'val': 44.51, 'testA': 44.83, 'testB': 44.74},
    "asgn_d_rmi_uncplus": {'val': 30.18, 'testA': 31.02, 'testB': 30.05},
    "asgn_d_rmi_gref": {'val': 34.27},
    "asgn_d_rmi_referit": {'test': 57.39},
    "asgn_r_lstm_at_uncplus": {'val': 30.14, 'testA': 31.44, 'testB': 29.37},
    "asgn_r_lstm_de_at_unc": {'val': 45.06, 'testA': 46.17, 'testB': 44.97},
    "asgn_r_lstm_de_conv1_2_3_4_5_unc": {'val': 43.96, 'testA': 44.87, 'testB': 43.4},
    "asgn_r_lstm_de_conv1_2_3_unc": {'val': 42.76, 'testA': 42.97, 'testB': 42.41},
    "asgn_r_lstm_de_conv1_unc": {'val': 41.56, 'testA': 42.28, 'testB': 41.23},
    "asgn_r_lstm_de_conv2_3_4_5_unc": {'val': 44.55, 'testA': 45.65, 'testB': 43.77},
    "asgn_r_lstm_de_conv2_unc": {'val': 42.33, 'testA': 43.18, 'testB': 41.7},
    "asgn_r_lstm_de_conv3_unc": {'val': 42.21, 'testA': 43.23, 'testB': 41.7},
    "asgn_r_lstm_de_conv4_5_unc": {'val': 43.56, 'testA': 43.51, 'testB': 43.43},
    "asgn_r_lstm_de_se_at_gref": {'val': 36.82},
    "asgn_r_lstm_de_se_at_lambda0p01_unc": {'val': 39.5, 'testA': 39.82, 'testB': 40.44},
    "asgn_r_lstm_de_se_at_lambda1_unc": {'val': 42.35, 'testA': 43.37, 'testB': 41.97},
    "asgn_r_lstm_de_se_at_referit": {'test': 57.92},
    "asgn_r_lstm_de_se_at_unc": {'val': 45.37, 'testA': 46.84, 'testB': 45.15},
    "asgn_r_lstm_de_se_at_uncplus": {'val': 34.38, 'testA': 35.76, 'testB': 32.49},
    "asgn_r_lstm_de_se_unc": {'val': 44.92, 'testA': 45.63, 'testB': 44.74},
    "asgn_r_lstm_de_unc": {'val': 44.88, 'testA': 45.53, 'testB': 44.71},
    "asgn_r_lstm_se_at_unc": {'val': 42.42, 'testA': 43.7, 'testB': 42.13},
    "asgn_r_lstm_se_unc": {'val': 40.14, 'testA': 40.69, 'testB': 39.86},
    "asgn_snle_at_referit": {'test': 50.17},
    "asgn_snle_de_se_at_referit": {'test': 52.87},
    # Hu et al. 2016 Table 1 (ReferIt test); G-Ref as reported in RMI Table 1 / RRN Table 2.
    "lstm_cnn_low_referit": {"test": 45.57},
    "lstm_cnn_high_referit": {"test": 48.03},
    "lstm_cnn_high_gref": {"val": 28.14},
    "lstm_cnn_low_gref": {},  # no paper reports the low-resolution stage on G-Ref
    # RMI Table 1.
    "r_lstm_gref": {"val": 28.60},
    "r_lstm_unc": {"val": 38.74, "testA": 39.18, "testB": 39.01},
    "r_lstm_uncplus": {"val": 26.25, "testA": 26.95, "testB": 24.57},
    "r_lstm_referit": {"test": 54.01},
    "d_lstm_gref": {"val": 33.08},
    "d_lstm_unc": {"val": 43.27, "testA": 43.60, "testB": 43.31},
    "d_lstm_uncplus": {"val": 28.42, "testA": 28.57, "testB": 27.70},
    "d_lstm_referit": {"test": 56.83},
    "r_rmi_gref": {"val": 32.06},
    "r_rmi_unc": {"val": 39.74, "testA": 39.99, "testB": 40.44},
    "r_rmi_uncplus": {"val": 27.85, "testA": 28.69, "testB": 26.65},
    "r_rmi_referit": {"test": 54.55},
    "d_rmi_gref": {"val": 34.40},
    "d_rmi_unc": {"val": 44.33, "testA": 44.74, "testB": 44.63},
    "d_rmi_uncplus": {"val": 29.91, "testA": 30.37, "testB": 29.43},
    "d_rmi_referit": {"test": 57.34},
    # RRN Table 1 row 2 and Table 2 (RRN with LSTM).
    "d_lstm_ours_unc": {"val": 46.49},
    "rrn_unc": {"val": 54.26, "testA": 56.21, "testB": 52.71},
    "rrn_uncplus": {"val": 39.23, "testA": 41.68, "testB": 35.63},
    "rrn_gref": {"val": 36.32},
    "rrn_referit": {"test": 63.12},
}
PAPER_IOU.update(
    {f"rrn_table1_row{row:02d}_unc": {"val": iou} for row, (_, _, iou) in _RRN_TABLE1.items()}
)
PAPER_IOU["rrn_table1_row12_unc"] = PAPER_IOU["rrn_unc"]  # row 12 is the model of Table 2
# The same rows with the ConvLSTM cell of the authors' code, which produced those numbers.
PAPER_IOU.update(
    {f"rrn_{data}_authors": PAPER_IOU[f"rrn_{data}"] for data in ("unc", "uncplus", "gref", "referit")}
)
# LTS reports mean IoU only (paper.mean_iou, checked in tests/test_lts.py): no overall IoU.
_LTS_DATASETS = ("refcoco", "refcocoplus", "refcocog_umd")
PAPER_IOU.update({f"lts_{d}": {} for d in _LTS_DATASETS})
PAPER_IOU.update({f"lts_trans_{d}": {} for d in _LTS_DATASETS})
PAPER_IOU.update({f"lts_table2_row{row}_refcoco": {} for row in range(1, 8)})
PAPER_IOU.update({f"lts_table5_{row}_refcoco": {} for row in ("n1", "n2", "n3", "wordfilter")})
PAPER_IOU.update({f"lts_table6_{size}px_refcoco": {} for size in (320, 352, 384, 416, 448, 480)})
# Suffix of the file name -> (data.dataset, data.split_train, data.split_eval).
DATASET_SUFFIXES = {
    "_unc": ("refcoco", "train", "val"),
    "_uncplus": ("refcoco+", "train", "val"),
    "_gref": ("refcocog", "train", "val"),
    "_referit": ("referit", "trainval", "test"),
    "_refcoco": ("refcoco", "train", "val"),
    "_refcocoplus": ("refcoco+", "train", "val"),
    "_refcocog_umd": ("refcocog", "train", "val"),
}
_SECTION_KEYS = ("name", "vocabulary_size", "size", "backbone", "loss", "optimizer")


def load_experiment(name):
    path = os.path.join(EXPERIMENT_DIR, name + ".py")
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.__doc__ and module.__doc__.strip(), f"{path} has no docstring"
    return module.get_config()


def _dataset_suffix(name):
    name = name.removesuffix("_authors")
    matches = [suffix for suffix in DATASET_SUFFIXES if name.endswith(suffix)]
    assert len(matches) == 1, name
    return matches[0]


def _model_kwargs(config):
    """The model keyword arguments `build_model` would pass, as `preset_kwargs` expands them."""
    from refseg_tf.models import preset_kwargs

    section = config.model.to_dict()
    overrides = {k: v for k, v in section.items() if k not in _SECTION_KEYS}
    for key in ("loss", "optimizer"):
        if section.get(key) is not None:
            overrides[f"{key}_config"] = section[key]
    return preset_kwargs(section["name"], section.get("size", "paper"), **overrides)


def build_tiny(config, image_size=64, vocabulary_size=30):
    """Builds `config`'s model at the tiny size and runs it on one example."""
    from refseg_tf.models import build_model

    config = config.copy_and_resolve_references()
    config.model.size = "tiny"
    config.model.vocabulary_size = vocabulary_size
    model = build_model(config)
    rng = np.random.default_rng(0)
    inputs = {
        "image": rng.uniform(0, 1, (1, image_size, image_size, 3)).astype(np.float32),
        "word_ids": rng.integers(0, vocabulary_size, (1, int(config.data.max_length))).astype(np.int32),
    }
    logits = np.asarray(model(inputs, training=False))
    return model, logits


# --------------------------------------------------------------------------- grouped checks
#
# Each check kind is one test that runs over every registered experiment it concerns and
# reports every failing experiment in one assertion message (one test per kind rather than one
# per experiment: the same checks, a fraction of the test count and collection time).


def _check_all(check, names, **kwargs):
    """Runs `check(name, config, **kwargs)` on the config of each of `names`' files; fails once
    naming every experiment that failed and why."""
    assert names, f"{check.__name__}: no experiment to check"
    failures = []
    for name in names:
        try:
            check(name, load_experiment(name), **kwargs)
        except Exception as error:  # noqa: BLE001  (collected: the message names each one)
            # The first lines of the error (pytest's rewritten assertion may dump a config).
            lines = [line[:200] for line in str(error).splitlines()[:2]]
            failures.append(f"{name}: {type(error).__name__}: " + " / ".join(lines))
    assert not failures, (
        f"{len(failures)} of {len(names)} experiments fail {check.__name__}:\n"
        + "\n".join(failures)
    )


def _names_where(predicate, names=None):
    """The registered experiments (or `names`) whose config satisfies `predicate(config)`."""
    return [name for name in (NAMES if names is None else names)
            if predicate(experiments.get_experiment(name))]


def _family(module_name):
    return module_name.split(".")[2] if module_name.startswith("refseg_tf.models.") else None


def _registering_family(name):
    """The family package whose `experiments.py` registered `name` (for the shared synthetic
    builder: the family of the preset's synthetic recipe)."""
    from refseg_tf.experiment import SYNTHETIC_RECIPES

    experiment = experiments.EXPERIMENTS[name]
    module = experiment.builder.__module__
    if _family(module) is None:
        module = SYNTHETIC_RECIPES[experiment.kwargs["model"]].__module__
    return _family(module)


def test_a_grouped_check_names_every_failing_experiment():
    def check_short_training(name, config):
        assert config.train.steps <= 1500, f"{config.train.steps} steps"

    with pytest.raises(AssertionError) as info:
        _check_all(check_short_training, ["rrn_unc", "synthetic_rrn", "lts_refcoco"])
    message = str(info.value)
    assert "2 of 3 experiments fail check_short_training" in message
    assert "rrn_unc: AssertionError: 700000 steps" in message
    assert "lts_refcoco: AssertionError" in message and "synthetic_rrn:" not in message


def test_the_experiment_set_is_complete():
    assert len(NAMES) >= 35
    for row in range(3, 16):
        assert f"rrn_table1_row{row:02d}_unc" in NAMES
    assert set(PAPER_NAMES) == set(PAPER_IOU), set(PAPER_NAMES) ^ set(PAPER_IOU)


def test_files_and_registry_agree():
    """Every `experiments/<stem>.py` is the registered experiment `<stem>` and every registered
    experiment has its file; each file's `get_config()` is the one-liner
    `return experiments.get_experiment("<stem>")` under a docstring."""
    assert sorted(FILE_NAMES) == NAMES, (
        f"files without a registered experiment: {sorted(set(FILE_NAMES) - set(NAMES))}; "
        f"registered experiments without a file: {sorted(set(NAMES) - set(FILE_NAMES))}"
    )
    failures = []
    for path, stem in zip(EXPERIMENT_FILES, FILE_NAMES):
        tree = ast.parse(open(path, encoding="utf-8").read())
        functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
        body = functions[0].body if len(functions) == 1 else []
        call = body[0].value if len(body) == 1 and isinstance(body[0], ast.Return) else None
        if not ast.get_docstring(tree):
            failures.append(f"{stem}: no docstring")
        if not (
            functions and functions[0].name == "get_config"
            and isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "get_experiment" and len(call.args) == 1
            and isinstance(call.args[0], ast.Constant) and call.args[0].value == stem
        ):
            failures.append(f"{stem}: get_config() is not `return experiments.get_experiment({stem!r})`")
    assert not failures, "\n".join(failures)


def test_each_family_registers_experiments_of_its_own_presets():
    """A family's `experiments.py` registers rows of the presets its package defines."""
    failures = []
    for name in NAMES:
        preset = get_preset(experiments.get_experiment(name).model.name)
        if _family(preset.model_class.__module__) != _registering_family(name):
            failures.append(
                f"{name}: registered by {_registering_family(name)!r}, preset {preset.name!r} "
                f"of {_family(preset.model_class.__module__)!r}"
            )
    assert not failures, "\n".join(failures)


@pytest.mark.slow  # a fresh interpreter (~8 s loaded); tests/test_import_graph.py reads it statically
def test_the_models_register_their_experiments_without_importing_training():
    """The layering: refseg_tf.experiment <- models/<family>/experiments.py <- training."""
    import subprocess
    import sys

    code = (
        "import sys, refseg_tf.models, refseg_tf.experiment as e; "
        "print(sorted(m for m in sys.modules if m.startswith('refseg_tf.training'))); "
        "print(len(e.EXPERIMENTS))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT), timeout=300, check=True,
    )
    loaded, count = result.stdout.strip().splitlines()[-2:]
    assert loaded == "[]", loaded
    assert int(count) == len(NAMES)  # every experiment is registered by the families alone


def test_the_registry_holds_the_expected_synthetic_experiments():
    assert set(SYNTHETIC) >= {"lstm_cnn", "r_lstm", "d_lstm", "d_lstm_ours", "rrn", "rmi", "lts"}
    with pytest.raises(ValueError, match="registered experiment"):
        experiments.get_experiment("synthetic_unet")
    with pytest.raises(ValueError, match="new experiment name"):
        experiments.register_experiment("synthetic_rrn")(experiments.synthetic)
    with pytest.raises(KeyError):
        experiments.synthetic("unet")  # no synthetic recipe
    for model in SYNTHETIC:  # each names the paper row it is the tiny version of, or none
        row = experiments.EXPERIMENTS[f"synthetic_{model}"].paper_row
        assert row == "" or row in PAPER_NAMES, (model, row)
        summary = experiments.paper_row_summary(f"synthetic_{model}")
        assert summary == "-" if not row else summary.endswith(f"; {row})"), summary


def test_family_builders_stay_reachable_from_training_experiments():
    """The names README, notebooks, benchmarks and tests use (`experiments.rrn`, ...)."""
    from refseg_tf.models.rrn import experiments as rrn_experiments

    assert experiments.rrn is rrn_experiments.rrn
    for name in ("hu_lstm_cnn", "rmi_baseline", "rmi", "lts", "asgn", "synthetic",
                 "synthetic_rmi", "synthetic_lts", "synthetic_asgn", "SYNTHETIC_BACKBONES"):
        assert getattr(experiments, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'unet'"):
        experiments.unet  # noqa: B018


def _check_registered_config(name, config):
    """TF Model Garden style: every registered experiment builds a valid config for a
    registered preset, and `experiments/<name>.py` is that config."""
    registered = experiments.get_experiment(name)
    config_lib.validate_config(registered)
    assert registered.model.name in list_presets()
    _model_kwargs(registered)  # the preset accepts the model section
    assert config.to_dict() == registered.to_dict()
    assert experiments.get_experiment(name) is not registered  # a new config each call


def test_every_registered_experiment_validates_and_is_its_file():
    _check_all(_check_registered_config, NAMES)


def _check_loads_and_validates(name, config):
    config_lib.validate_config(config)
    assert isinstance(config.data.dir, str) and config.data.dir
    assert isinstance(config.train.steps, int) and config.train.steps > 0
    assert isinstance(config.train.batch_size, int) and config.train.batch_size > 0
    assert config.model.name in MODELS
    assert name.startswith("synthetic_") or name.startswith(config.model.name)
    assert isinstance(config.paper.source, str) and config.paper.source
    assert config.description
    assert 0 < config.train.checkpoint_every
    assert config.data.max_length > 0 and config.data.image_size > 0


def test_every_config_loads_and_validates():
    _check_all(_check_loads_and_validates, NAMES)


def _check_survives_config_json(name, config, directory):
    """What refseg-train writes (config.json) and refseg-evaluate reads back is the same."""
    path = os.path.join(directory, name)
    os.makedirs(path)
    config_lib.save_config(config, path)
    assert config_lib.load_config(path).to_dict() == config.to_dict()


def test_every_config_survives_config_json(tmp_path):
    _check_all(_check_survives_config_json, NAMES, directory=str(tmp_path))


def _check_model_section(name, config):
    from refseg_tf.backbones import BACKBONES

    preset = get_preset(config.model.name)
    assert config.model.backbone.name in BACKBONES
    assert set(config.model.backbone) <= {"name", "kwargs"}
    kwargs = _model_kwargs(config)  # raises on a bad stage / table1_row
    parameters = inspect.signature(preset.model_class.__init__).parameters
    allowed = set(parameters) - {"self", "backbone", "vocabulary_size", "kwargs"}
    assert set(kwargs) <= allowed, set(kwargs) - allowed
    assert config.model.size in ("paper", "tiny")
    assert int(config.model.vocabulary_size) == 0  # read from data.dir/vocab.txt at training


def test_every_model_section_is_accepted_by_the_presets():
    _check_all(_check_model_section, NAMES)


def _check_paper_numbers(name, config):
    reported = {split: float(value) for split, value in config.paper.overall_iou.items()}
    assert reported == pytest.approx(PAPER_IOU[name], abs=1e-9)
    assert all(0 < value < 100 for value in reported.values())
    if reported:
        assert config.data.split_eval in reported


def test_paper_numbers():
    _check_all(_check_paper_numbers, PAPER_NAMES)


def _check_dataset_matches_the_file_name(name, config):
    dataset, split_train, split_eval = DATASET_SUFFIXES[_dataset_suffix(name)]
    assert (config.data.dataset, config.data.split_train, config.data.split_eval) == (
        dataset, split_train, split_eval,
    )
    assert config.data.dir.startswith("data/tfrecords/")


def test_dataset_matches_the_file_name():
    _check_all(_check_dataset_matches_the_file_name, PAPER_NAMES)


def test_named_rows():
    assert load_experiment("rrn_unc").paper.overall_iou.val == 54.26
    assert load_experiment("lstm_cnn_high_referit").paper.overall_iou.test == 48.03
    assert load_experiment("lstm_cnn_low_referit").paper.overall_iou.test == 45.57
    assert load_experiment("d_lstm_ours_unc").paper.overall_iou.val == 46.49


def _check_rrn_table1_row(name, config):
    row = int(config.model.table1_row)
    assert name == f"rrn_table1_row{row:02d}_unc"
    variant, pyramid, iou = _RRN_TABLE1[row]
    assert config.paper.overall_iou.val == iou
    assert "Table 1" in config.paper.source or row == 12
    kwargs = _model_kwargs(config)
    assert kwargs["variant"] == variant
    assert tuple(kwargs["pyramid"]) == pyramid


def test_rrn_table1_rows():
    names = [name for name in PAPER_NAMES if name.startswith("rrn_table1_row")]
    assert sorted(int(name[len("rrn_table1_row"):][:2]) for name in names) == sorted(_RRN_TABLE1)
    _check_all(_check_rrn_table1_row, names)


# --------------------------------------------------------------------------- training recipes


def _is_hu(config):
    return config.model.name == "lstm_cnn"


def _is_rmi_or_rrn_baseline(config):
    return config.model.name in ("r_lstm", "d_lstm", "d_lstm_ours", "rrn")


def _is_lts(config):
    return config.model.name in ("lts", "lts_trans")


def test_hu_recipe():
    names = _names_where(_is_hu, PAPER_NAMES)
    assert names == sorted(n for n in PAPER_NAMES if n.startswith("lstm_cnn_"))
    _check_all(_check_hu_recipe, names)


def _check_hu_recipe(name, config):
    """Hu et al. 2016 / DIGEST: SGD 0.01 momentum 0.9, x0.1 steps, batch 10, 512 px, VGG-16."""
    stage = config.model.stage
    assert name.startswith(f"lstm_cnn_{stage}_")
    assert config.model.backbone.name == "vgg16_fcn"
    assert config.data.image_size == 512
    optimizer = config.train.optimizer
    assert (optimizer.name, optimizer.learning_rate, optimizer.momentum) == ("sgd", 0.01, 0.9)
    assert (optimizer.schedule, optimizer.decay_rate) == ("staircase", 0.1)
    assert config.train.batch_size == 10
    assert config.train.weight_decay == 5e-4
    assert config.train.freeze_backbone and tuple(config.train.trainable_backbone_layers) == (
        "fc6", "fc7", "fc8",
    )
    # text_objseg: weights + LSTM Matrix decayed, mean over pixels, LSTM over the <pad> steps.
    assert config.train.weight_decay_scope == "matrices"
    assert config.model.loss.reduction == "mean"
    # exp_train_referit_seg_{lowres,highres}.py: pos/neg loss multipliers 1/1 and 1/(1/3).
    weights = (config.model.loss.foreground_weight, config.model.loss.background_weight)
    assert weights == pytest.approx((1.0, 1.0) if stage == "low" else (1.0, 1 / 3))
    assert config.model.mask_text_padding is False
    assert _model_kwargs(config)["mask_text_padding"] is False
    if stage == "low":
        assert (config.train.steps, optimizer.decay_steps) == (30000, 10000)
        assert not config.train.init_from
        # The detection stage Hu's code starts from is not reproduced, and the row says so.
        assert "detection model" in config.description and "Not reproduced" in config.description
    else:
        assert (config.train.steps, optimizer.decay_steps) == (18000, 6000)
        low_name = name.replace("_high_", "_low_")
        assert low_name in NAMES  # the stage it starts from exists
        assert os.path.basename(config.train.init_from.rstrip("/")) == low_name


def test_rmi_rrn_recipe():
    names = _names_where(_is_rmi_or_rrn_baseline, PAPER_NAMES)
    assert names == sorted(n for n in PAPER_NAMES if n.startswith(("r_lstm_", "d_lstm_", "rrn_")))
    _check_all(_check_rmi_rrn_recipe, names)


def _check_rmi_rrn_recipe(name, config):
    """RMI / RRN (DIGEST): Adam 2.5e-4, poly 0.9 to 1e-5, batch 1, 320 px, frozen ResNet-101."""
    assert config.model.name in ("r_lstm", "d_lstm", "d_lstm_ours", "rrn")
    assert config.model.backbone.name == "resnet101_os8"
    assert config.data.image_size == 320 and config.data.max_length == 20
    assert config.data.text_padding == "front"
    assert config.data.normalization == "caffe_bgr"
    optimizer = config.train.optimizer
    assert (optimizer.name, optimizer.learning_rate) == ("adam", 2.5e-4)
    assert (optimizer.schedule, optimizer.power, optimizer.end_learning_rate) == (
        "polynomial", 0.9, 1e-5,
    )
    assert optimizer.bias_lr_multiplier == 2.0
    assert optimizer.epsilon == 1e-8  # TF1 Adam
    assert config.train.batch_size == 1
    assert config.train.weight_decay == 5e-4
    assert config.train.weight_decay_scope == "conv_kernels"  # `DW` variables only
    assert config.train.freeze_backbone
    assert config.model.loss.reduction == "sum"  # util/loss.py: sum over the grid
    if config.model.name == "rrn":
        # referseg_rrn: lr_decay_step 800000; the 700000 snapshot is the published model.
        assert (config.train.steps, optimizer.decay_steps) == (700000, 800000)
    else:
        assert (config.train.steps, optimizer.decay_steps) == (750000, 750000)
    if config.model.name in ("r_lstm", "d_lstm"):
        assert config.model.loss.label_mode == "point"  # TF1 resize_bilinear 320 -> 40
        assert config.model.mask_text_padding is True
    weights = config.train.backbone_weights
    if config.model.name == "r_lstm":
        assert weights == "imagenet"  # R = ResNet ImageNet weights
        assert tuple(config.train.trainable_backbone_layers) == ("fc1000",)
    else:
        assert weights.endswith(".npz")  # D = the authors' DeepLab weights
        assert tuple(config.train.trainable_backbone_layers) == ()
    if name.endswith("_authors"):
        from refseg_tf.models import RRN_AUTHORS_CODE

        assert {key: config.model[key] for key in RRN_AUTHORS_CODE} == RRN_AUTHORS_CODE


def _paper_scoring_rule(config):
    """The authors' scoring grid: Hu's low-resolution row and LTS (MCN) resize on the half-pixel
    grid; Hu high-res, RMI and RRN threshold TF1-upsampled logits (refseg_tf.scoring)."""
    if (_is_hu(config) and config.model.stage == "low") or _is_lts(config):
        return "resize_probability"
    return "upsample_logits"


def _training_grid(config):
    """The pixel grid training puts logit cells on: "tf1" (cell i at pixel s*i), "half_pixel"
    (cell i centred on its block) or None (logits at the input size: no grid)."""
    loss = config.model.loss
    if loss.resolution == "image":
        return "tf1" if loss.upsampling == "tf1" else "half_pixel"
    model = config.model
    stage = model.get("stage") or model.get("base_kwargs", {}).get("stage")
    if model.name in ("lstm_cnn", "asgn_snle") and stage == "high":
        return None  # the deconvolution's output is at the input size (ASGN's SNLE too)
    return "tf1" if loss.label_mode == "point" else "half_pixel"


def test_paper_rows_score_and_upsample_as_the_authors():
    _check_all(_check_scores_and_upsamples_as_the_authors, PAPER_NAMES)


def _check_scores_and_upsamples_as_the_authors(name, config):
    assert config.eval.scoring_rule == _paper_scoring_rule(config)
    if config.model.loss.resolution == "image":
        # referseg_rrn LSTM_model_convlstm_p543.py: the loss on TF1 resize_bilinear(score).
        assert config.model.loss.upsampling == "tf1"


def test_labels_loss_and_scoring_share_one_pixel_grid():
    _check_all(_check_one_pixel_grid, NAMES)


def _check_one_pixel_grid(name, config):
    grid = _training_grid(config)
    scoring_grid = "tf1" if config.eval.scoring_rule == "upsample_logits" else "half_pixel"
    assert grid in (None, scoring_grid), (name, grid, config.eval.scoring_rule)


def test_every_paper_row_reads_the_data_as_the_authors():
    """Every (ref, sentence) per epoch and the authors' regex tokeniser (Hu, RMI, RRN code).

    LTS rows follow MCN instead (an epoch is one pass over the refs): tests/test_lts.py.
    """
    _check_all(_check_reads_as_the_authors, _names_where(lambda c: not _is_lts(c), PAPER_NAMES))


def _check_reads_as_the_authors(name, config):
    assert config.data.sentences == "all"
    assert config.data.tokenizer == "authors"


def test_synthetic_configs():
    _check_all(_check_synthetic_config, [f"synthetic_{model}" for model in SYNTHETIC])


def _check_synthetic_config(name, config):
    assert config.model.size == "tiny"
    assert config.data.dataset == "synthetic"
    assert config.data.image_size <= 256  # small logit grids (8 x 8: checked by the builds)
    assert config.train.steps <= 5000
    assert not config.train.backbone_weights  # trains from scratch, nothing to download
    assert dict(config.paper.overall_iou) == {}
    assert config.model.backbone.name == get_preset(config.model.name).backbone


# --------------------------------------------------------------------------- tiny builds


def _check_built(model, logits, image_size):
    stride = int(model.output_stride)
    assert image_size % stride == 0
    side = image_size // stride
    assert logits.shape == (1, side, side, 1)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize(
    "name",
    [
        "lstm_cnn_high_referit",  # deconvolution to image size
        "d_lstm_ours_unc",
        "rrn_table1_row07_unc",  # the five-level pyramid, down to C1
        "rrn_unc_authors",  # the authors' cell: spatial peepholes at the built grid
        "r_lstm_unc",  # reads fc1000
    ],
)
def test_a_few_paper_configs_build_tiny(name):
    config = load_experiment(name)
    model, logits = build_tiny(config)
    _check_built(model, logits, 64)
    if name.startswith("lstm_cnn_high"):
        assert model.output_stride == 1


@pytest.mark.parametrize("model_name", SYNTHETIC)
def test_synthetic_configs_build_as_written(model_name):
    from refseg_tf.models import build_model

    config = load_experiment(f"synthetic_{model_name}")
    config.model.vocabulary_size = 30
    model = build_model(config)
    size = int(config.data.image_size)
    rng = np.random.default_rng(1)
    logits = np.asarray(model({
        "image": rng.uniform(0, 1, (1, size, size, 3)).astype(np.float32),
        "word_ids": rng.integers(0, 30, (1, int(config.data.max_length))).astype(np.int32),
    }, training=False))
    _check_built(model, logits, size)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_config_builds_tiny(name):
    model, logits = build_tiny(load_experiment(name))
    _check_built(model, logits, 64)


def test_synthetic_asgn_discriminator_rate_is_its_own_and_paper_rows_share_one():
    from refseg_tf.training.trainer import optimizer_builder

    synthetic = load_experiment("synthetic_asgn")
    build = optimizer_builder(synthetic, 100)
    generator, discriminator = build("generator"), build("discriminator")
    # The discriminator: the paper's constant 2.5e-4; the generator: the synthetic 3e-3 decay.
    assert float(discriminator.learning_rate) == pytest.approx(2.5e-4)
    assert float(generator.learning_rate) == pytest.approx(3e-3)
    assert synthetic.model.cross_entropy_weight == 1.0
    assert load_experiment("synthetic_asgn_no_at").model.loss == synthetic.model.loss
    paper = load_experiment("asgn_d_lstm_de_se_at_unc")
    assert "discriminator" not in paper.train.optimizer
    assert paper.model.cross_entropy_weight == 0.1
    assert paper.train.optimizer.learning_rate == 2.5e-4


# --- Issue 19: ASGN metadata, baselines and the batch-1 shuffle ------------------------------


def test_asgn_precision_rows_belong_to_table_ii_only():
    # Issue 19 §5: Table III (DE layer sets) and Table VI (lambda) rows carried Table II's
    # precision of their module set; their descriptions name the DE layers and lambda.
    for layers in ("conv1", "conv4_5", "conv1_2_3_4_5"):
        config = experiments.get_experiment(f"asgn_r_lstm_de_{layers}_unc")
        assert "precision" not in config.paper, layers
        assert config.paper.source == "ASGN Table III"
        assert layers.replace("_", "+") in config.description
    for suffix, weight in (("0p01", 0.01), ("1", 1.0)):
        config = experiments.get_experiment(f"asgn_r_lstm_de_se_at_lambda{suffix}_unc")
        assert "precision" not in config.paper
        assert f"lambda = {weight:g}" in config.description
        assert "conv3+conv4+conv5" in config.description
    table2 = experiments.get_experiment("asgn_r_lstm_de_unc")
    assert tuple(table2.paper.precision.val) == (41.51, 30.44, 19.06, 7.96, 0.94)
    baseline = experiments.get_experiment("asgn_r_lstm_unc")
    assert tuple(baseline.paper.precision.testB) == (33.58, 20.96, 9.91, 2.37, 0.16)
    assert baseline.paper.source == "ASGN Tables I-III"


def test_asgn_baselines_are_the_generator_alone():
    # Issue 19 §6: `modules="none"`: no DE, SE or AT (the generator on CE alone).
    for generator, base in (("r_lstm", "r_lstm"), ("d_lstm", "d_lstm"), ("d_rmi", "d_rmi")):
        config = experiments.get_experiment(f"asgn_{generator}_unc")
        assert config.model.name == f"asgn_{generator}"
        assert tuple(config.model.detail_features) == ()
        assert not config.model.semantic_embedding and not config.model.adversarial_training
        assert "baseline" in config.description
    with pytest.raises(ValueError, match="modules"):
        experiments.asgn("r_lstm", "unc", modules="everything")


def test_paper_rows_with_de_normalise_it_and_batch_one_rows_read_every_shard():
    # Issue 19 §3 and §10, recorded in the configs.
    for name in PAPER_NAMES:
        if not name.startswith("asgn_"):
            continue
        config = experiments.get_experiment(name)
        assert bool(config.model.detail_normalize) == bool(tuple(config.model.detail_features)), name
    for name in ("r_rmi_unc", "d_lstm_unc", "rrn_unc", "asgn_d_rmi_de_se_at_unc"):
        config = experiments.get_experiment(name)
        assert int(config.train.batch_size) == 1 and config.data.interleave_all_files, name
    for name in ("lts_refcoco", "asgn_snle_at_referit", "synthetic_rrn"):
        assert not experiments.get_experiment(name).data.interleave_all_files, name


def test_rmi_code_rows_carry_dcrf_and_length_targets_and_the_snapshot_note():
    # Issue 19 §7 (RMI Table 1 +DCRF rows, Tables 2-5 R+LSTM rows, typed from liu2017_rmi.txt).
    r_lstm = experiments.get_experiment("r_lstm_unc")
    assert dict(r_lstm.paper.overall_iou_dense_crf) == {"val": 39.88, "testA": 40.44, "testB": 40.07}
    assert dict(r_lstm.paper.overall_iou_by_length) == {
        "1-2": 43.66, "3": 40.60, "4-5": 33.98, "6-20": 24.91
    }
    assert dict(experiments.get_experiment("d_lstm_referit").paper.overall_iou_dense_crf) == {
        "test": 58.20
    }
    assert experiments.get_experiment("r_lstm_gref").paper.overall_iou_by_length["11-20"] == 26.61
    assert "overall_iou_by_length" not in experiments.get_experiment("d_lstm_unc").paper
    for name in ("r_lstm_unc", "d_lstm_gref", "r_rmi_unc", "d_rmi_referit"):
        assert "650k" in experiments.get_experiment(name).description, name
        assert int(experiments.get_experiment(name).train.steps) == 750000

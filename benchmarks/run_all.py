"""The benchmark suite of issue 13: seven ratios measured side by side, written to RESULTS.md.

Every figure is a ratio of two measurements taken in the same process, one after the other,
on the same inputs, so that it says how close a hot path is to what this hardware can do
whatever the absolute speed of the machine. Figures are recorded, never asserted.

1. input pipeline: `refseg_tf.data.load` train examples/s over a bare parallel pipeline (decode
   image and mask from bytes in memory, letterbox both) at 320 and 416 px; stage ablations
   (label off, normalisation off, load's record/shuffle/tokenise structure with the bare decode)
   say where the rest goes, in CPU ms per example;
2. forward: FLOPs of each paper-scale preset (TF profiler on the frozen graph) per second over
   the best fp32 matmul FLOP/s of this process, with and without XLA; op-level timing of the
   frozen graph (step stats) says what bounds it;
3. training: images/s at batch 8 over batch 1 for each tiny preset;
4. evaluation: `evaluate_model` sentences/s over forward-only sentences/s on the same batches;
5. DenseCRF seconds per image beside the forward seconds (needs pydensecrf);
6. export: SavedModel and TFLite latency at batch 1 over the Keras model's
   (`benchmarks/export_latency.py`);
7. conversion: `refseg-convert` images/s with 2 workers over 1 worker.

Usage:
    python benchmarks/run_all.py                # the full run (about 15 min on 2 cores)
    python benchmarks/run_all.py --quick        # a smoke run of every figure (a few minutes)
    python benchmarks/run_all.py --figures 1,7  # some figures only

The data are synthetic (`refseg_tf.synthetic_data`, JPEGs written by Pillow, converted by
`refseg-convert`); nothing is downloaded.
"""

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402
from export_latency import median_seconds  # noqa: E402  (one timing rule for both)

FIGURES = (1, 2, 3, 4, 5, 6, 7, 8)
PAPER_PRESETS = ("lstm_cnn", "d_lstm", "rrn", "d_rmi", "lts", "lts_trans", "asgn_d_lstm")


@dataclasses.dataclass
class Settings:
    """How much each figure measures (the full run, or `quick()` for a smoke run)."""

    pipeline_images: int = 160
    pipeline_sizes: tuple = (320, 416)
    pipeline_batches: int = 30
    pipeline_rounds: int = 3
    paper_presets: tuple = PAPER_PRESETS
    paper_size: str = "paper"
    forward_warmup: int = 1
    forward_repeats: int = 2
    xla: bool = True
    train_steps: int = 5
    train_presets: tuple = ()  # () = every registered preset
    eval_images: int = 80
    eval_paper_batches: int = 5  # figure 4's paper-scale row (0: none)
    crf_images: int = 4
    export_repeats: int = 20
    convert_images: int = 400
    simulated_seconds: float = 1e-3  # figure 8: the simulated forward per batch

    @classmethod
    def quick(cls):
        return cls(
            pipeline_images=24, pipeline_sizes=(320,), pipeline_batches=6, pipeline_rounds=1,
            paper_presets=("d_lstm", "lts"), paper_size="tiny", forward_repeats=1,
            train_steps=2, train_presets=("rrn", "lts"), eval_images=12, eval_paper_batches=0,
            crf_images=2,
            export_repeats=3, convert_images=16,
        )


@dataclasses.dataclass
class Figure:
    """One figure of RESULTS.md: its ratio(s), goal, what bounds it and the raw numbers."""

    number: int
    title: str
    goal: str
    rows: list  # (label, ratio or None, detail text)
    bound: str = ""
    notes: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    parser.add_argument("--figures", default="", help="comma-separated figure numbers (all)")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "RESULTS.md"))
    parser.add_argument("--json", default="", help="optional path for the raw results")
    parser.add_argument("--workdir", default="", help="keep the generated data here")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ measurement
def _quiet_logs():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    tf.get_logger().setLevel("ERROR")


def timed(function):
    """(result, wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def hardware() -> dict:
    """CPU model, cores, load, and the TensorFlow build."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    build = {key: str(value) for key, value in tf.sysconfig.get_build_info().items()}
    import keras

    return {
        "cpu_model": model,
        "cpu_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.version.VERSION,
        "tensorflow_git": tf.version.GIT_VERSION,
        "tensorflow_build": build,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "load_average_start": os.getloadavg(),
    }


# ------------------------------------------------------------------------------------- data
def synthetic_refer(root, num_images, image_size, seed=0):
    from refseg_tf.synthetic_data import generate

    return generate(root, num_images=num_images, seed=seed, image_size=image_size)


def convert_flags(data_root, output_dir, num_workers, num_shards=None):
    from absl import flags

    from refseg_tf import convert

    values = flags.FlagValues()
    convert.define_flags(values)
    argv = [
        "refseg-convert", "--format=refer", f"--data_root={data_root}", "--dataset=synthetic",
        "--split_by=unc", f"--output_dir={output_dir}", f"--num_workers={num_workers}",
        "--progress=false",
    ]
    if num_shards:
        argv.append(f"--num_shards={num_shards}")
    values(argv)
    return values


def convert_refer(data_root, output_dir, num_workers, num_shards=None, usage=None) -> float:
    """Runs `refseg-convert` (in this process, as its entry point does); returns seconds.

    `usage`, a dict, receives "cores_busy": CPU seconds of this process and its finished
    worker processes per wall second of the conversion.
    """
    import resource

    from refseg_tf import convert

    values = convert_flags(data_root, output_dir, num_workers, num_shards)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        status = convert.convert_with_flags(values)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"refseg-convert failed on {data_root} (status {status}).")
    if usage is not None:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        usage["cores_busy"] = (time.process_time() - cpu + child_cpu) / seconds
        usage["main_cpu_seconds"] = time.process_time() - cpu
    return seconds


# ---------------------------------------------------------------------- figure 1: pipeline
def _train_examples_in_memory(data_dir):
    """(image bytes, mask bytes) per ref of the train split: what one train example decodes."""
    from refseg_tf.data import find_shards, schema

    images, masks = [], []
    for path in find_shards(data_dir, "train"):
        for serialized in tf.data.TFRecordDataset(path).as_numpy_iterator():
            record = schema.decode_example_numpy(serialized)
            for mask in record["ref/mask"]:
                images.append(record["image/encoded"][0])
                masks.append(mask)
    return images, masks


def bare_pipeline(images, masks, size, batch_size=8):
    """Only the irreducible work of an example, in parallel: decode both, letterbox both."""
    from refseg_tf.data import transforms

    def decode_and_letterbox(image_bytes, mask_bytes):
        image = tf.io.decode_jpeg(image_bytes, channels=3)
        mask = tf.io.decode_png(mask_bytes, channels=1)
        return transforms.resize_and_pad(image, size), transforms.resize_and_pad_mask(mask, size)

    dataset = tf.data.Dataset.from_tensor_slices((images, masks)).repeat()
    dataset = dataset.map(decode_and_letterbox, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _bare_decode_in_load(element, preprocessing):
    """load's decode stage reduced to the bare pipeline's work (for the structure ablation)."""
    from refseg_tf.data import transforms

    size = preprocessing.preprocessor.image_size
    image = tf.io.decode_jpeg(element["image/encoded"], channels=3)
    mask = tf.io.decode_png(element["ref/mask"], channels=1)
    return {
        "image": transforms.resize_and_pad(image, size),
        "mask": transforms.resize_and_pad_mask(mask, size),
        "sentence": element["sentence/text"],
    }


def load_pipeline(data_dir, size, batch_size=8, bare_decode=False, **overrides):
    """`refseg_tf.data.load` as `refseg-train` calls it (seeded, label grid S/8, soft label)."""
    from refseg_tf.data import load, pipeline
    from refseg_tf.preprocessing import ReferringPreprocessor

    settings = {key: overrides.pop(key) for key in list(overrides) if key == "normalization"}
    preprocessor = ReferringPreprocessor.from_data_dir(data_dir, image_size=size, **settings)
    arguments = dict(preprocessor=preprocessor, label_grid=size // 8, label_mode="soft", seed=0)
    arguments.update(overrides)
    original = pipeline._decode_and_preprocess
    if bare_decode:
        pipeline._decode_and_preprocess = _bare_decode_in_load
        arguments["label_grid"] = None
    try:
        return load(data_dir, "train", "train", batch_size, **arguments)
    finally:
        pipeline._decode_and_preprocess = original


def pipeline_rate(dataset, batches, warmup=4):
    """(examples per wall second, CPU milliseconds per example) over `batches` batches."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)

    def run():
        count = 0
        for _ in range(batches):
            count += int(tf.nest.flatten(next(iterator))[0].shape[0])
        return count

    count, wall, cpu = timed(run)
    return count / wall, 1e3 * cpu / count


def figure_pipeline(work, settings) -> Figure:
    data_root = os.path.join(work, "pipeline_refer")
    data_dir = os.path.join(work, "pipeline_tfrecords")
    summary = synthetic_refer(data_root, settings.pipeline_images, image_size=640)
    convert_refer(data_root, data_dir, num_workers=2, num_shards=4)
    images, masks = _train_examples_in_memory(data_dir)
    variants = {
        "bare": lambda size: bare_pipeline(images, masks, size),
        "load": lambda size: load_pipeline(data_dir, size),
        "load, no label": lambda size: load_pipeline(data_dir, size, label_grid=None),
        "load, normalization none": lambda size: load_pipeline(
            data_dir, size, normalization="none"),
        "load structure, bare decode": lambda size: load_pipeline(data_dir, size, bare_decode=True),
    }
    rows, measured = [], {}
    for size in settings.pipeline_sizes:
        rates = {name: [] for name in variants}
        for _ in range(settings.pipeline_rounds):  # interleaved rounds: load drifts hit all
            for name, build in variants.items():
                rates[name].append(pipeline_rate(build(size), settings.pipeline_batches))
        wall = {name: statistics.median(r[0] for r in values) for name, values in rates.items()}
        cpu = {name: statistics.median(r[1] for r in values) for name, values in rates.items()}
        measured[size] = {"examples_per_s": wall, "cpu_ms_per_example": cpu}
        rows.append((
            f"S = {size}: load / bare (examples/s)", wall["load"] / wall["bare"],
            f"{wall['load']:.1f} / {wall['bare']:.1f} examples/s; CPU time ratio bare/load "
            f"{cpu['bare'] / cpu['load']:.2f} ({cpu['bare']:.2f} / {cpu['load']:.2f} ms per example)",
        ))
    bounds = []
    for size, values in measured.items():
        cpu = values["cpu_ms_per_example"]
        gap = cpu["load"] - cpu["bare"]
        bounds.append(
            f"S = {size}: load spends {gap:+.2f} CPU ms per example more than bare "
            f"({cpu['load']:.2f} vs {cpu['bare']:.2f}); ablations: the soft label "
            f"{cpu['load'] - cpu['load, no label']:+.2f} ms, the normalisation "
            f"{cpu['load'] - cpu['load, normalization none']:+.2f} ms, the record read / parse / "
            f"sentence choice / shuffle / tokenise structure (bare decode inside load) "
            f"{cpu['load structure, bare decode'] - cpu['bare']:+.2f} ms (CPU times; the parts "
            f"need not add up exactly, each is a separate run). A wall ratio below the CPU "
            f"ratio is time the cores did not run this pipeline: other processes on the "
            f"machine or ordered parallel maps waiting for their head element (this run does "
            f"not separate the two)."
        )
    figure = Figure(1, "input pipeline: `refseg_tf.data.load` (train) over a bare parallel "
                    "pipeline", ">= 0.95", rows, bound=" ".join(bounds))
    figure.notes.append(
        f"{summary['num_images']} synthetic images (`refseg_tf.synthetic_data`, long side 640, "
        f"JPEG by Pillow), {len(images)} train examples (one per ref), converted by "
        f"`refseg-convert` into 4 shards; batch 8; load as `refseg-train` calls it (seed, "
        f"label_grid S/8, soft label, vgg_rgb); median of {settings.pipeline_rounds} interleaved "
        f"rounds of {settings.pipeline_batches} batches after 4 warm-up batches."
    )
    figure.raw = measured
    return figure


# ----------------------------------------------------------------------- figure 2: forward
def best_matmul_flops(sizes=(512, 1024, 2048), repeats=5) -> dict:
    """The best fp32 FLOP/s of `tf.matmul` on square matrices in this process."""
    best = {}
    for n in sizes:
        a = tf.random.normal([n, n])
        b = tf.random.normal([n, n])
        matmul = tf.function(lambda x, y: tf.matmul(x, y))
        matmul(a, b).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, b).numpy()
            times.append(time.perf_counter() - start)
        best[n] = 2.0 * n**3 / min(times)
    return best


def _forward_function(model, jit_compile):
    return tf.function(
        lambda image, word_ids: model({"image": image, "word_ids": word_ids}, training=False),
        jit_compile=jit_compile,
    )


def frozen_graph(model, image_size, max_length):
    """The forward pass at batch 1 as a GraphDef with the weights folded in as constants."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    concrete = _forward_function(model, False).get_concrete_function(
        tf.TensorSpec([1, image_size, image_size, 3], tf.float32),
        tf.TensorSpec([1, max_length], tf.int32),
    )
    frozen = convert_variables_to_constants_v2(concrete)
    inputs = [tensor.name for tensor in frozen.inputs]
    outputs = [tensor.name for tensor in frozen.outputs]
    return frozen.graph.as_graph_def(), inputs, outputs


def profiler_flops(graph_def) -> tuple:
    """(total float ops, {op type: float ops}) of the TF profiler on `graph_def`."""
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
        options = tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        ).with_empty_output().build()
        profile = tf.compat.v1.profiler.profile(graph, cmd="op", options=options)
    by_type = {child.name: child.total_float_ops for child in profile.children}
    return profile.total_float_ops, by_type


def op_level_seconds(graph_def, inputs, outputs, feeds) -> dict:
    """Seconds per executed op type of one traced run of the frozen graph (TF1 step stats).

    The types are those of the kernels that ran, after Grappler's rewrites (e.g.
    `_FusedConv2D` for a convolution with its bias, batch norm and activation folded in).
    """
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        feed_dict = {name: value for name, value in zip(inputs, feeds)}
        session.run(outputs, feed_dict)
        metadata = tf.compat.v1.RunMetadata()
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        session.run(outputs, feed_dict, options=options, run_metadata=metadata)
    seconds = {}
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            label = node.timeline_label  # "name = OpType(inputs)"
            kind = label.split(" = ", 1)[1].split("(", 1)[0] if " = " in label else node.node_name
            seconds[kind] = seconds.get(kind, 0.0) + node.op_end_rel_micros / 1e6
    return seconds


def _is_flop_kernel(kind: str) -> bool:
    return "Conv" in kind or "MatMul" in kind or "Einsum" in kind


def _paper_config(name):
    """The config of preset `name`'s paper row, found in the experiment registry: of the paper
    rows that train the preset, the one nearest its builder's defaults (fewest arguments set
    otherwise, the first registered on a tie): "rrn" -> `rrn_unc`, "d_lstm" -> `d_lstm_unc`,
    "lts_trans" -> `lts_trans_refcoco`, "asgn_d_lstm" -> `asgn_d_lstm_de_se_at_unc`."""
    import inspect

    from refseg_tf.training import experiments

    def changed_arguments(experiment):
        parameters = inspect.signature(experiment.builder).parameters
        return sum(
            key not in parameters or parameters[key].default != value
            for key, value in experiment.kwargs.items()
        )

    rows = [
        (changed_arguments(experiment), experiment.config())
        for experiment in experiments.EXPERIMENTS.values()
        if not experiment.synthetic and experiment.config().model.name == name
    ]
    if not rows:
        raise ValueError(f"No registered paper row trains preset {name!r}.")
    return min(rows, key=lambda row: row[0])[1]


def _forward_model(name, size):
    """(model, image size, text length) of a preset at the papers' or the tiny size."""
    from refseg_tf.models import build_preset, get_preset

    if size == "paper":
        config = _paper_config(name)
        image_size, max_length = int(config.data.image_size), int(config.data.max_length)
        model = build_preset(config.model.name, 12112, size="paper")
    else:
        stride_32 = get_preset(name).backbone in ("vgg16_fcn", "darknet53_neck")
        image_size, max_length = (128 if stride_32 else 64), 12
        model = build_preset(name, 40, size="tiny")
    model({"image": tf.zeros([1, image_size, image_size, 3]),
           "word_ids": tf.ones([1, max_length], tf.int32)}, training=False)
    return model, image_size, max_length


def _without_recurrent_dropout(model):
    """Sets the dropout of the model's recurrent cells to 0 (for freezing the forward graph).

    A Keras 3 GRU with dropout advances its dropout seed (an AssignVariableOp) even when
    called with training=False, which `convert_variables_to_constants_v2` cannot fold; the
    forward values at inference do not depend on dropout, so the count and timing hold.
    """
    for layer in model._flatten_layers(include_self=False, recursive=True):
        cell = getattr(layer, "cell", None)
        if cell is not None and float(getattr(cell, "dropout", 0.0) or 0.0) > 0:
            cell.dropout = 0.0
    return model


def figure_forward(work, settings) -> Figure:
    import keras

    matmul = best_matmul_flops()
    peak = max(matmul.values())
    rows, raw, bounds = [], {"matmul_flops": matmul}, []
    for name in settings.paper_presets:
        try:
            bound = _forward_preset(name, settings, peak, rows, raw)
        except Exception as error:  # recorded: one preset must not hide the others
            traceback.print_exc()
            rows.append((name, None, f"failed: {type(error).__name__}: "
                         f"{str(error).splitlines()[0][:200]}"))
            continue
        if bound:
            bounds.append(bound)
        keras.backend.clear_session()
    if settings.xla:
        probe = xla_convolution_probe()
        raw["xla_probe"] = [(label, ratio) for label, ratio, _ in probe]
        bounds.append(
            "XLA slower than the graph runtime (d_lstm, rrn, d_rmi, asgn_d_lstm): the same "
            "convolutions alone, XLA seconds over graph seconds at batch 1 in this process: "
            + "; ".join(f"{label} {ratio:.2f} ({1e3 * sec[True]:.1f} vs {1e3 * sec[False]:.1f} ms)"
                        for label, ratio, sec in probe)
            + ". The graph runtime runs convolutions as oneDNN kernels (`_MklNativeConv2D` in "
            "the op-level timings above, 77-97% of the kernel time); a probe ratio above 1 "
            "means XLA's CPU convolution itself is slower than that kernel on these shapes, so "
            "a forward made of them is slower under XLA whatever the model code (convolutions "
            "are 100% of the FLOPs). Recorded, not fixed: the evaluation's and the export's "
            "forward run without XLA."
        )
    figure = Figure(2, "forward: profiler FLOPs per second over the best fp32 matmul FLOP/s",
                    ">= 0.8", rows, bound=" ".join(bounds))
    figure.notes.append(
        f"best matmul: {peak / 1e9:.1f} GFLOP/s (square fp32 {', '.join(str(n) for n in matmul)}; "
        f"best of 5 each). Forward at batch 1, {settings.paper_size} size, weights random "
        f"(speed does not depend on them); median of {settings.forward_repeats} timed calls "
        f"after {settings.forward_warmup} warm-up call(s) (XLA: one more, the compilation). "
        f"FLOPs: `convert_variables_to_constants_v2` then `tf.compat.v1.profiler` float_ops "
        f"(2 per multiply-add); the profiler counts the graph statically, so the ops of a "
        f"while-loop body (recurrent steps) are counted once. The recurrent cells' dropout is "
        f"set to 0 first (a Keras GRU advances its dropout seed even at inference, which "
        f"freezing cannot fold; inference values do not depend on it)."
    )
    figure.raw = raw
    return figure


XLA_PROBES = (  # (label, spatial side, input channels, output channels, kernel, dilation)
    ("ResNet stage 4 at output stride 8: 3x3, dilation 2, 256 ch at 40x40", 40, 256, 256, 3, 2),
    ("the same without dilation", 40, 256, 256, 3, 1),
    ("ResNet bottleneck 1x1, 1024 -> 256 at 40x40", 40, 1024, 256, 1, 1),
    ("VGG-16 conv5 at 512 px: 3x3, 512 ch at 32x32", 32, 512, 512, 3, 1),
)


def xla_convolution_probe(repeats=5) -> list:
    """(label, XLA seconds / graph seconds) of single convolutions + ReLU at batch 1."""
    results = []
    rng = np.random.default_rng(0)
    for label, side, cin, cout, kernel, dilation in XLA_PROBES:
        x = tf.constant(rng.normal(size=(1, side, side, cin)).astype(np.float32))
        w = tf.constant(rng.normal(size=(kernel, kernel, cin, cout)).astype(np.float32))
        seconds = {}
        for jit in (False, True):
            function = tf.function(
                lambda x: tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME", dilations=dilation)),
                jit_compile=jit)
            seconds[jit] = median_seconds(lambda: function(x).numpy(), repeats, 2)
        results.append((label, seconds[True] / seconds[False], seconds))
    return results


def _forward_preset(name, settings, peak, rows, raw):
    """Adds the rows of one preset; returns its measured bound sentence."""
    model, image_size, max_length = _forward_model(name, settings.paper_size)
    _without_recurrent_dropout(model)
    graph_def = None
    try:
        graph_def, inputs, outputs = frozen_graph(model, image_size, max_length)
        flops, flops_by_type = profiler_flops(graph_def)
    except ValueError:
        traced = _forward_function(model, False).get_concrete_function(
            tf.TensorSpec([1, image_size, image_size, 3], tf.float32),
            tf.TensorSpec([1, max_length], tf.int32),
        )
        flops, flops_by_type = profiler_flops(traced.graph.as_graph_def())
    rng = np.random.default_rng(0)
    image = tf.constant(rng.normal(size=(1, image_size, image_size, 3)).astype(np.float32))
    word_ids = tf.constant(rng.integers(1, 40, (1, max_length)).astype(np.int32))
    result = {"flops": flops, "image_size": image_size, "max_length": max_length}
    modes = (False, True) if settings.xla else (False,)
    for jit in modes:
        function = _forward_function(model, jit)
        label = "XLA" if jit else "no XLA"
        try:
            seconds = median_seconds(
                lambda: tf.nest.map_structure(lambda t: t.numpy(), function(image, word_ids)),
                settings.forward_repeats, settings.forward_warmup + (1 if jit else 0),
            )
        except Exception as error:  # an op XLA cannot compile: recorded, not fatal
            rows.append((f"{name}, {label}", None, f"failed: {type(error).__name__}: "
                         f"{str(error).splitlines()[0][:160]}"))
            continue
        result[label] = seconds
        rows.append((
            f"{name}, {label}", flops / seconds / peak,
            f"{flops / 1e9:.1f} GFLOP at {image_size} px in {seconds * 1e3:.0f} ms = "
            f"{flops / seconds / 1e9:.1f} GFLOP/s",
        ))
    result["flops_by_type"] = flops_by_type
    raw[name] = result
    if graph_def is None:
        return f"{name}: op-level timing skipped (the graph could not be frozen)."
    op_seconds = op_level_seconds(graph_def, inputs, outputs, [image.numpy(), word_ids.numpy()])
    result["op_seconds"] = op_seconds
    total = sum(op_seconds.values())
    top = sorted(op_seconds.items(), key=lambda item: -item[1])[:4]
    flop_seconds = sum(v for k, v in op_seconds.items() if _is_flop_kernel(k))
    conv_seconds = sum(v for k, v in op_seconds.items() if "Conv" in k)
    conv_flops = sum(v for k, v in flops_by_type.items() if "Conv" in k)
    conv_rate = conv_flops / conv_seconds / peak if conv_seconds else float("nan")
    return (
        f"{name}: op-level timing of the frozen graph (one traced TF1 run, kernel times "
        f"summed over ops, {total * 1e3:.0f} ms): convolution and matmul kernels (fused "
        f"or not) take {100 * flop_seconds / max(total, 1e-12):.0f}% of it; top "
        f"{', '.join(f'{k} {100 * v / total:.0f}%' for k, v in top)}; the convolutions "
        f"({100 * conv_flops / max(flops, 1):.0f}% of the FLOPs) run at {conv_rate:.2f} of "
        f"the matmul peak."
    )


# ---------------------------------------------------------------------- figure 3: training
def figure_training(work, settings) -> Figure:
    from refseg_tf.models import list_presets

    names = settings.train_presets or tuple(list_presets())
    rows, raw, fixed = [], {}, []
    for name in names:
        model, image_size, max_length = _forward_model(name, "tiny")
        model.compile()
        rng = np.random.default_rng(0)
        step_seconds, busy = {}, {}
        for batch in (1, 8):
            inputs = {
                "image": tf.constant(rng.normal(size=(batch, image_size, image_size, 3))
                                     .astype(np.float32)),
                "word_ids": tf.constant(rng.integers(1, 40, (batch, max_length)).astype(np.int32)),
            }
            target = tf.constant((rng.random((batch, image_size, image_size, 1)) > 0.5)
                                 .astype(np.float32))
            step_seconds[batch], wall, cpu = timed(lambda: median_seconds(
                lambda: model.train_on_batch(inputs, target), settings.train_steps, 2))
            busy[batch] = cpu / wall  # CPU seconds per wall second of these steps
        ratio = (8 / step_seconds[8]) / (1 / step_seconds[1])
        per_image = (step_seconds[8] - step_seconds[1]) / 7
        overhead = step_seconds[1] - per_image
        raw[name] = {"step_seconds": step_seconds, "cores_busy": busy, "image_size": image_size}
        rows.append((name, ratio, f"{1 / step_seconds[1]:.1f} -> {8 / step_seconds[8]:.1f} "
                     f"images/s at {image_size} px"))
        if ratio < 2:
            fixed.append(f"{name} ({1e3 * overhead:.0f} ms fixed + {1e3 * per_image:.0f} ms per "
                         f"image; cores busy {busy[1]:.1f} at batch 1, {busy[8]:.1f} at 8)")
        del model
    bound = ""
    if fixed:
        bound = (
            "Below the goal, a step's time grows almost linearly with the batch: the step "
            "times at batch 1 and 8 give a fixed cost per step (dispatch, optimizer update) "
            "and a cost per image, " + "; ".join(fixed) + ". 'Cores busy' is process CPU "
            "seconds over wall seconds of the timed steps: near the core count at batch 1, "
            "the per-image work already fills the cores and a larger batch has little idle "
            "time to use."
        )
    figure = Figure(3, "training: images/s at batch 8 over batch 1 (tiny presets)", ">= 2",
                    rows, bound=bound)
    figure.notes.append(
        f"`model.train_on_batch` on random inputs and masks (the preset's own loss and "
        f"optimizer, and ASGN's own `train_step`); median of {settings.train_steps} steps after "
        f"2 warm-up steps. Mixed precision over float32: skipped, no GPU here (issue 13 "
        f"asks for it where a GPU exists)."
    )
    figure.raw = raw
    return figure


# -------------------------------------------------------------------- figure 4: evaluation
def _tiny_eval_setup(work, settings, name="rrn"):
    """A converted synthetic set and a tiny untrained model of the synthetic recipe."""
    from refseg_tf.training import experiments, trainer

    data_root = os.path.join(work, "eval_refer")
    data_dir = os.path.join(work, "eval_tfrecords")
    if not os.path.isdir(data_dir):
        synthetic_refer(data_root, settings.eval_images, image_size=128, seed=1)
        convert_refer(data_root, data_dir, num_workers=0)
    config = experiments.synthetic(name)
    config.data.dir = data_dir
    with open(os.path.join(data_dir, "vocab.txt"), encoding="utf-8") as stream:
        config.model.vocabulary_size = sum(1 for line in stream if line.strip())
    model = trainer.build_model(config)
    size = int(config.data.image_size)
    model({"image": tf.zeros([1, size, size, 3]),
           "word_ids": tf.ones([1, int(config.data.max_length)], tf.int32)}, training=False)
    return config, model, data_dir


def _evaluation_measurement(model, config, split, batch_size, preprocessor, max_batches=None,
                            forward_repeats=3):
    """One warmed `evaluate_model` call beside forward-only passes over the same batches.

    Returns a dict: sentences, eval/setup/loop seconds of the timed call (its `timings`),
    forward seconds (median of `forward_repeats` passes over the batches held in memory),
    the cold first call's seconds, and the predict function's traces during the timed call.
    """
    from refseg_tf.training import evaluation

    def evaluate(timings=None):
        return evaluation.evaluate_model(model, config, split, batch_size=batch_size,
                                         max_batches=max_batches, preprocessor=preprocessor,
                                         timings=timings)

    cold = {}
    _, cold_seconds, _ = timed(lambda: evaluate(cold))  # traces, pipeline, iterator
    predict = evaluation._predict_fn(model)
    traces = predict.experimental_get_tracing_count()
    timings = {}
    (scores, _, _), eval_seconds, _ = timed(lambda: evaluate(timings))
    retraces = predict.experimental_get_tracing_count() - traces
    dataset = evaluation.evaluation_dataset(config, split, batch_size, preprocessor=preprocessor)
    batches, pipeline_seconds, _ = timed(
        lambda: list(dataset.take(max_batches) if max_batches else dataset))
    sentences = sum(int(batch["image"].shape[0]) for batch in batches)

    def forward_all():
        for batch in batches:
            predict(batch["image"], batch["word_ids"]).numpy()

    forward_seconds = median_seconds(forward_all, forward_repeats, 1)
    return {
        "sentences": sentences, "eval_seconds": eval_seconds, "forward_seconds": forward_seconds,
        "setup_seconds": timings["setup_seconds"], "loop_seconds": timings["loop_seconds"],
        "cold_seconds": cold_seconds, "cold_setup_seconds": cold["setup_seconds"],
        "pipeline_seconds": pipeline_seconds, "retraces": retraces, "scores": scores,
        "outside_ms": 1e3 * max(eval_seconds - forward_seconds, 0.0) / max(sentences, 1),
    }


def _evaluation_rows(label, measured, goal_ratio):
    m = measured
    return [
        (f"{label}: evaluate_model / forward-only (sentences/s)",
         m["forward_seconds"] / m["eval_seconds"],
         f"{m['sentences'] / m['eval_seconds']:.1f} vs {m['sentences'] / m['forward_seconds']:.1f} "
         f"sentences/s, {m['sentences']} sentences", f">= {goal_ratio}"),
        (f"{label}: ms per sentence outside the forward", m["outside_ms"],
         f"({m['eval_seconds']:.3f} - {m['forward_seconds']:.3f} s) / {m['sentences']}",
         "<= 0.5 ms"),
        (f"{label}: set-up seconds of a repeated call", m["setup_seconds"],
         f"shard check, cached pipeline and functions; re-traces during the call: "
         f"{m['retraces']}; the cold first call: {m['cold_seconds']:.2f} s of which set-up "
         f"{m['cold_setup_seconds']:.2f} s", "<= 0.3 s"),
    ]


def _paper_evaluation_setup(data_dir, name="d_lstm"):
    from refseg_tf.training import evaluation, trainer

    config = _paper_config(name)
    config.data.dir = data_dir
    with open(os.path.join(data_dir, "vocab.txt"), encoding="utf-8") as stream:
        config.model.vocabulary_size = sum(1 for line in stream if line.strip())
    model = trainer.build_model(config)
    return config, model, evaluation.evaluation_preprocessor(config, data_dir)


def _counts_op_profile(config, model, preprocessor, split, batch_size=8, top=4) -> str:
    """Op-level timing (TF1 step stats) of the in-graph scoring of one eval batch."""
    from refseg_tf.training import evaluation

    batch = next(iter(evaluation.evaluation_dataset(config, split, batch_size,
                                                    preprocessor=preprocessor)))
    logits = evaluation._predict_fn(model)(batch["image"], batch["word_ids"])
    rule = preprocessor.scoring_rule
    counts = evaluation._counts_fn(preprocessor.image_size, rule,
                                   float(getattr(model, "threshold", 0.5)),
                                   tuple(logits.shape[1:]))
    args = (logits, batch["image_window"], batch["original_size"], batch["original_mask"])
    concrete = counts.get_concrete_function(*args)
    seconds = median_seconds(lambda: [v.numpy() for v in counts(*args)], 5, 2)
    graph_def = concrete.graph.as_graph_def()
    inputs = [tensor.name for tensor in concrete.inputs]
    outputs = [tensor.name for tensor in concrete.outputs]
    try:
        ops = op_level_seconds(graph_def, inputs, outputs, [a.numpy() for a in args])
    except Exception as error:  # recorded, not fatal
        return (f"the scoring graph of one batch of {batch_size} takes {1e3 * seconds:.2f} ms "
                f"(op-level timing failed: {type(error).__name__})")
    total = sum(ops.values())
    ranked = sorted(ops.items(), key=lambda item: -item[1])[:top]
    return (f"the scoring graph of one batch of {batch_size} (`_counts_fn`: TF1 bilinear "
            f"upsampling, the authors' resize-and-crop per sentence in a `map_fn`, I/U sums) "
            f"takes {1e3 * seconds:.2f} ms; op-level (one traced TF1 run, kernel times "
            f"{1e3 * total:.2f} ms summed): "
            + ", ".join(f"{k} {100 * v / max(total, 1e-12):.0f}%" for k, v in ranked))


def figure_evaluation(work, settings) -> Figure:
    from refseg_tf.training import evaluation

    config, model, data_dir = _tiny_eval_setup(work, settings)
    split, batch_size = "train", 8  # the largest split, read in eval mode (every sentence once)
    preprocessor = evaluation.evaluation_preprocessor(config, data_dir)
    tiny = _evaluation_measurement(model, config, split, batch_size, preprocessor)
    rows = _evaluation_rows("rrn (tiny, synthetic recipe)", tiny, 0.6)
    raw = {"tiny": {k: v for k, v in tiny.items() if k != "scores"}}
    paper = None
    if settings.eval_paper_batches:
        p_config, p_model, p_preprocessor = _paper_evaluation_setup(data_dir)
        paper = _evaluation_measurement(p_model, p_config, split, batch_size, p_preprocessor,
                                        max_batches=settings.eval_paper_batches,
                                        forward_repeats=1)
        size = int(p_config.data.image_size)
        rows += _evaluation_rows(f"d_lstm (paper scale, {size} px)", paper, 0.95)[:2]
        raw["paper"] = {k: v for k, v in paper.items() if k != "scores"}
    per_batch = 1e3 * (tiny["eval_seconds"] - tiny["forward_seconds"]) / max(
        tiny["sentences"] / batch_size, 1)
    bound = (
        f"The tiny row: the timed call spends {tiny['setup_seconds'] * 1e3:.1f} ms before its "
        f"first batch and {tiny['loop_seconds']:.3f} s in the batches, against "
        f"{tiny['forward_seconds']:.3f} s of forward: {per_batch:.2f} ms per batch of "
        f"{batch_size} outside the forward. The eval pipeline alone (a fresh iterator, decode "
        f"and letterbox once per image, tokenise) reads the split in "
        f"{tiny['pipeline_seconds']:.3f} s including its iterator's creation, and runs "
        f"beside the forward (prefetch); {_counts_op_profile(config, model, preprocessor, split)}."
        f" The rest is the per-sentence bookkeeping in Python (the expression length, the "
        f"evaluator) and the host copies of the counts."
    )
    figure = Figure(4, "evaluation: `evaluate_model` over forward-only, per-sentence cost "
                    "outside the forward, set-up per call",
                    "see each row", rows, bound=bound)
    figure.notes.append(
        f"`refseg_tf.training.evaluation.evaluate_model` (the `refseg-evaluate` path, the "
        f"preprocessor built once as `evaluate_model_dir` does) on the {split} split of "
        f"{settings.eval_images} synthetic images (128 px) read in eval mode, batch {batch_size}; "
        f"one cold call (traces, pipeline, iterator), then the timed call (the way a training "
        f"loop or a sweep calls it again); forward-only: the model's predict function on the "
        f"same batches held in memory (median of 3 passes). Overall IoU of the untrained "
        f"model: {tiny['scores'].get('overall_iou', float('nan')):.2f} (irrelevant here)."
    )
    if settings.eval_paper_batches:
        figure.notes.append(
            f"The paper-scale row: `d_lstm` as its RMI-baseline config builds it (ResNet-101 at "
            f"output stride 8, its own input size, random weights) on the first "
            f"{settings.eval_paper_batches} batches of the same split (a cut pass: a fresh "
            f"iterator each call); forward-only once after a warm-up pass."
        )
    figure.raw = raw
    return figure


# ----------------------------------------------------------------------- figure 5: DenseCRF
def figure_crf(work, settings) -> Figure:
    figure = Figure(5, "DenseCRF seconds per image beside the forward seconds",
                    "none set (recorded beside the forward)", [])
    try:
        import pydensecrf  # noqa: F401
    except ImportError:
        figure.rows.append(("DenseCRF / forward", None, "skipped: pydensecrf is not importable"))
        figure.notes.append("Install pydensecrf (it needs a C++ compiler and Cython) to measure.")
        return figure
    from refseg_tf.training import evaluation

    config, model, _ = _tiny_eval_setup(work, settings)
    batches = list(evaluation.evaluation_dataset(config, "val", 1).take(settings.crf_images))
    predict = evaluation._predict_fn(model)
    size = int(config.data.image_size)
    predict(batches[0]["image"], batches[0]["word_ids"]).numpy()
    forward = median_seconds(
        lambda: [predict(b["image"], b["word_ids"]).numpy() for b in batches], 3, 0) / len(batches)
    from refseg_tf.data.transforms import denormalize_image

    def crf_all():
        for batch in batches:
            logits = predict(batch["image"], batch["word_ids"])
            images = tf.cast(tf.clip_by_value(denormalize_image(
                batch["image"], config.data.normalization), 0, 255), tf.uint8).numpy()
            evaluation.score_batch(logits, batch, size, crf_images=images)

    def plain_all():
        for batch in batches:
            evaluation.score_batch(predict(batch["image"], batch["word_ids"]), batch, size)

    crf = (median_seconds(crf_all, 3, 1) - median_seconds(plain_all, 3, 1)) / len(batches)
    figure.rows.append(("DenseCRF / forward (seconds per image)", crf / forward,
                        f"{crf * 1e3:.1f} ms vs {forward * 1e3:.1f} ms"))
    figure.notes.append(
        f"{len(batches)} val sentences of the figure-4 set (synthetic images, {size} px model "
        f"input, scored at each image's own size), the same tiny RRN, batch 1. DenseCRF: "
        f"`refseg-evaluate --crf`'s scoring (`evaluation.score_batch` with the images) minus "
        f"the plain scoring of the same logits, median of 3 passes each; forward: the "
        f"model's predict function alone."
    )
    return figure


# ------------------------------------------------------------------------- figure 6: export
def figure_export(work, settings) -> Figure:
    import export_latency

    arguments = ["--preset", "rrn", "--repeats", str(settings.export_repeats)]
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        seconds = export_latency.main(arguments)
        again = export_latency.main(arguments)  # a second repetition: the run-to-run spread
    rows = [
        ("SavedModel `segment_tensors` / Keras eager", seconds["saved_model"] / seconds["keras"],
         f"{seconds['saved_model'] * 1e3:.2f} ms vs {seconds['keras'] * 1e3:.2f} ms"),
        ("TFLite / Keras eager", seconds["tflite"] / seconds["keras"],
         f"{seconds['tflite'] * 1e3:.2f} ms vs {seconds['keras'] * 1e3:.2f} ms"),
        ("SavedModel / Keras in one tf.function", seconds["saved_model"] / seconds["keras_function"],
         f"vs {seconds['keras_function'] * 1e3:.2f} ms"),
        ("TFLite / Keras in one tf.function", seconds["tflite"] / seconds["keras_function"], ""),
    ]
    bound = ""
    repeated = {
        "SavedModel / Keras in one tf.function": again["saved_model"] / again["keras_function"],
        "TFLite / Keras in one tf.function": again["tflite"] / again["keras_function"],
        "SavedModel `segment_tensors` / Keras eager": again["saved_model"] / again["keras"],
        "TFLite / Keras eager": again["tflite"] / again["keras"],
    }
    above = [(label, ratio) for label, ratio, _ in rows if ratio > 1]
    if above:
        bound = " ".join(
            f"{label}: {ratio:.2f} in the first repetition, {repeated[label]:.2f} in a second "
            f"one of the same run"
            + (" (so within the run-to-run spread)." if min(ratio, repeated[label]) <= 1 else
               f", i.e. {1e3 * (again['saved_model'] - again['keras_function']):+.2f} ms per "
               f"call in the second repetition; this run does not break the call down.")
            for label, ratio in above
        )
    figure = Figure(6, "export: latency at batch 1 over the Keras model's (lower is better)",
                    "<= 1 (an export no slower than the Keras model)", rows, bound=bound)
    figure.notes.append(
        f"`benchmarks/export_latency.py --preset rrn` (tiny RRN of the synthetic recipe, "
        f"untrained), median of {settings.export_repeats} calls after 3 warm-up calls; the "
        f"served request with JPEG decode and scoring: {seconds['serving_default'] * 1e3:.2f} ms."
    )
    figure.raw = {"first": seconds, "second": again}
    return figure


# --------------------------------------------------------------------- figure 7: conversion
def figure_conversion(work, settings) -> Figure:
    data_root = os.path.join(work, "convert_refer")
    summary = synthetic_refer(data_root, settings.convert_images, image_size=640, seed=2)
    seconds, busy, main_cpu = {}, {}, {}
    for workers in (1, 2, 1, 2):  # interleaved, best of two each
        output = os.path.join(work, f"convert_{workers}_{len(seconds)}_{time.monotonic_ns()}")
        usage = {}
        value = convert_refer(data_root, output, num_workers=workers, usage=usage)
        if value < seconds.get(workers, float("inf")):
            seconds[workers], busy[workers] = value, usage["cores_busy"]
            main_cpu[workers] = usage["main_cpu_seconds"]
    rates = {workers: summary["num_images"] / value for workers, value in seconds.items()}
    ratio = rates[2] / rates[1]
    bound = ""
    if ratio < 1.8:
        _, in_process, _ = timed(lambda: convert_refer(
            data_root, os.path.join(work, f"convert_0_{time.monotonic_ns()}"), num_workers=0))
        serial_part = 2 * seconds[2] - seconds[1]  # t(n) = serial + parallel / n, n = 1, 2
        measured = (
            f"Measured: {seconds[1]:.2f} s with 1 worker, {seconds[2]:.2f} s with 2, "
            f"{in_process:.2f} s without worker processes (`--num_workers=0`, all in the main "
            f"process: one worker process costs {seconds[1] - in_process:+.2f} s). CPU seconds "
            f"of the converter and its workers per wall second: {busy[1]:.2f} with 1 worker, "
            f"{busy[2]:.2f} with 2 (of {os.cpu_count()} cores; the rest of the machine's load "
            f"was other jobs). The main process itself used {main_cpu[2]:.2f} CPU s of the "
            f"{seconds[2]:.2f} s with 2 workers (planning: reading the refer files; then per "
            f"image only unpickling the worker's encoded record, writing it and merging its "
            f"report; the vocabulary, check sums and metadata at the end), so the workers' "
            f"{busy[2] * seconds[2] - main_cpu[2]:.2f} CPU s are the per-image work. "
        )
        if seconds[2] >= seconds[1]:
            bound = measured + (
                "Two workers are not faster than one although they used the CPU time above: "
                "what they added did not shorten the run, so the pace is set by the part the "
                "workers do not share (the main process reads the refer files and writes and "
                "check-sums the shards) or lost to contention with the other jobs; this run "
                "does not separate the two."
            )
        else:
            bound = measured + (
                f"Fitting t(n) = serial + parallel / n to the two runs leaves "
                f"{serial_part:.2f} s of {seconds[1]:.2f} s that does not shrink with workers: "
                f"the main process reads the refer files, builds the vocabulary and writes and "
                f"check-sums the shards, and on 2 cores it shares them with the workers."
            )
    figure = Figure(7, "conversion: `refseg-convert` images/s with 2 workers over 1 worker",
                    ">= 1.8 (issue 22; 2 is ideal on 2 cores)",
                    [("2 workers / 1 worker", ratio,
                      f"{rates[1]:.1f} -> {rates[2]:.1f} images/s")], bound=bound)
    figure.notes.append(
        f"{summary['num_images']} synthetic images (long side 640, JPEG), every split, "
        f"`refseg-convert --format=refer --num_workers=N` run in this process (its entry "
        f"point's function); best of 2 interleaved runs each."
    )
    figure.raw = {"seconds": seconds, "cores_busy": busy, "main_cpu_seconds": main_cpu,
                  "images": summary["num_images"]}
    return figure


# ----------------------------------------------------------- figure 8: a GPU-speed forward
class SimulatedForward:
    """A stand-in for a GPU forward: logits of a model's output shape [B, g, g, 1] computed
    from the area-pooled image and the word ids, released after a host-side sleep of
    `seconds` per batch (a GPU kernel leaves the CPU cores to the input pipeline and the
    scoring, as a sleep does). Callable as the evaluation calls a model."""

    has_heatmap = False

    def __init__(self, grid, seconds=1e-3, threshold=0.5):
        self.grid, self.seconds, self.threshold = int(grid), float(seconds), threshold

    def _wait(self, values):
        time.sleep(self.seconds)
        return values

    def __call__(self, inputs, training=False):
        pooled = tf.image.resize(inputs["image"], [self.grid, self.grid], method="area")
        words = tf.cast(tf.reduce_sum(inputs["word_ids"], axis=1), tf.float32)
        logits = pooled[..., :1] / 50.0 + tf.sin(words)[:, None, None, None]
        waited = tf.numpy_function(self._wait, [logits], tf.float32, stateful=True)
        return tf.ensure_shape(waited, logits.shape)


def _pipeline_data(work, settings):
    """Figure 1's converted set (640 px synthetic images), built if figure 1 did not run."""
    data_root = os.path.join(work, "pipeline_refer")
    data_dir = os.path.join(work, "pipeline_tfrecords")
    if not os.path.isfile(os.path.join(data_dir, "metadata.json")):
        synthetic_refer(data_root, settings.pipeline_images, image_size=640)
        convert_refer(data_root, data_dir, num_workers=2, num_shards=4)
    return data_dir


def figure_simulated_forward(work, settings) -> Figure:
    from refseg_tf.training import evaluation

    data_dir = _pipeline_data(work, settings)
    size, batch_size = 320, 8
    config = _paper_config("d_lstm")
    config.data.dir = data_dir
    config.data.image_size = size
    preprocessor = evaluation.evaluation_preprocessor(config, data_dir)
    grid = size // 8
    model = SimulatedForward(grid, settings.simulated_seconds)
    split = "train"  # the largest split, read in eval mode (every sentence once)
    measured = _evaluation_measurement(model, config, split, batch_size, preprocessor)
    rows = [(
        f"evaluation at {size} px (`evaluate_model`) / simulated forward alone (sentences/s)",
        measured["forward_seconds"] / measured["eval_seconds"],
        f"{measured['sentences'] / measured['eval_seconds']:.0f} vs "
        f"{measured['sentences'] / measured['forward_seconds']:.0f} sentences/s, "
        f"{measured['sentences']} sentences",
    )]
    # Training input: `load` (train, as refseg-train calls it) feeding a simulated step.
    step = tf.function(lambda batch: model({"image": batch["image"],
                                            "word_ids": batch["word_ids"]}))
    dataset = load_pipeline(data_dir, size)
    batches = settings.pipeline_batches * 2
    iterator = iter(dataset)
    held = next(iterator)
    for _ in range(4):
        step(next(iterator)).numpy()

    def fed():
        for _ in range(batches):
            step(next(iterator)).numpy()

    def alone():
        for _ in range(batches):
            step(held).numpy()

    fed_seconds = median_seconds(fed, 3, 0)
    alone_seconds = median_seconds(alone, 3, 1)
    bare_rate, bare_cpu = pipeline_rate(bare_pipeline(*_train_examples_in_memory(data_dir), size),
                                        batches)
    rows.append((
        f"training input at {size} px (`load` feeding the simulated step) / simulated step "
        f"alone (examples/s)", alone_seconds / fed_seconds,
        f"{batch_size * batches / fed_seconds:.0f} vs {batch_size * batches / alone_seconds:.0f} "
        f"examples/s",
    ))
    per_batch_eval = 1e3 * measured["eval_seconds"] / max(measured["sentences"] / batch_size, 1)
    bound = (
        f"The simulated forward costs {1e3 * measured['forward_seconds'] / max(measured['sentences'] / batch_size, 1):.2f} ms "
        f"per eval batch of {batch_size}; `evaluate_model` takes {per_batch_eval:.2f} ms per "
        f"batch. Reading the split with a fresh eval pipeline alone takes "
        f"{measured['pipeline_seconds']:.2f} s ({measured['sentences'] / measured['pipeline_seconds']:.0f} "
        f"sentences/s, iterator creation included); "
        f"{_counts_op_profile(config, model, preprocessor, split)}. Training input: the bare "
        f"decode + letterbox pipeline of figure 1 alone (both cores, no model) gives "
        f"{bare_rate:.0f} examples/s ({bare_cpu:.2f} CPU ms per example), "
        f"{bare_rate / (batch_size * batches / alone_seconds):.2f} of the simulated step's rate: "
        f"decoding a 640 px JPEG and its mask and letterboxing them is what a 2-core host "
        f"cannot do 8 times per millisecond."
    )
    figure = Figure(8, "a GPU-speed forward: throughput against a simulated ~1 ms forward",
                    ">= 0.9", rows, bound=bound)
    figure.notes.append(
        f"The model is replaced by `SimulatedForward` (logits [B, {grid}, {grid}, 1] of the "
        f"pooled image and word ids after a {1e3 * settings.simulated_seconds:.1f} ms host-side "
        f"sleep per batch, i.e. a forward that costs the CPU nothing, as on a GPU). Evaluation: "
        f"the {split} split of figure 1's set ({settings.pipeline_images} synthetic images, long "
        f"side 640) with d_lstm's preprocessing at {size} px, one cold call then the timed "
        f"call, against the simulated forward alone on the same batches in memory. Training "
        f"input: `load` as figure 1 (seed, label grid S/8, soft label), median of 3 rounds of "
        f"{batches} batches, against the step alone on one batch held in memory."
    )
    figure.raw = {"evaluation": {k: v for k, v in measured.items() if k != "scores"},
                  "train_fed_seconds": fed_seconds, "train_alone_seconds": alone_seconds,
                  "bare_examples_per_s": bare_rate}
    return figure


FIGURE_FUNCTIONS = {
    1: figure_pipeline, 2: figure_forward, 3: figure_training, 4: figure_evaluation,
    5: figure_crf, 6: figure_export, 7: figure_conversion, 8: figure_simulated_forward,
}


# ------------------------------------------------------------------------------- report
def _format_ratio(value):
    return "-" if value is None else f"{value:.2f}"


def render(figures, machine, settings, quick, total_seconds) -> str:
    load_start, load_end = machine["load_average_start"], machine["load_average_end"]
    cores = machine["cpu_cores"] or 1
    # Other jobs: load before the run, or more at its end than this run (<= cores) explains.
    loaded = load_start[0] > 0.25 * cores or load_end[0] > cores
    build = machine["tensorflow_build"]
    lines = [
        "# Benchmarks (recorded, not asserted)",
        "",
        f"Written by `python benchmarks/run_all.py{' --quick' if quick else ''}` on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC in "
        f"{total_seconds / 60:.1f} min. Each figure is a ratio of two measurements taken side "
        f"by side in this run; absolute times vary between machines.",
        "",
        f"- CPU: {machine['cpu_model']}, {cores} cores ({machine['usable_cores']} usable), "
        f"{machine['machine']}; GPUs: {', '.join(machine['gpus']) or 'none'}",
        f"- TensorFlow {machine['tensorflow']} ({machine['tensorflow_git']}), build: "
        + ", ".join(f"{k}={v}" for k, v in sorted(build.items())) + f"; oneDNN: {machine['onednn']}",
        f"- Keras {machine['keras']}, NumPy {machine['numpy']}, Python {machine['python']}",
        f"- load average (1, 5, 15 min) at start {tuple(round(v, 1) for v in load_start)}, at end "
        f"{tuple(round(v, 1) for v in load_end)}"
        + (": **the machine was loaded by other jobs during this run, so the wall-clock "
           "figures are noisy** (figure 1 also gives CPU-time ratios, which load disturbs less)."
           if loaded else "."),
    ]
    if quick:
        lines += ["", "**Quick mode** (`--quick`): tiny inputs, few repeats, tiny models for "
                  "figure 2: a smoke run, not the figures."]
    lines += ["", "| figure | measurement | ratio | goal | details |", "|---|---|---:|---|---|"]
    for figure in figures:
        for row in figure.rows:
            label, ratio, detail = row[:3]
            goal = row[3] if len(row) > 3 else figure.goal  # a row may carry its own goal
            lines.append(f"| {figure.number} | {label} | {_format_ratio(ratio)} | {goal} "
                         f"| {detail} |")
    for figure in figures:
        lines += ["", f"## {figure.number}. {figure.title}", "", f"Goal: {figure.goal}. "
                  f"Measured in {figure.seconds:.0f} s.", ""]
        for row in figure.rows:
            label, ratio, detail = row[:3]
            goal = f"; goal {row[3]}" if len(row) > 3 else ""
            lines.append(f"- {label}: **{_format_ratio(ratio)}** ({detail}{goal})")
        for note in figure.notes:
            lines += ["", note]
        if figure.bound:
            lines += ["", f"What bounds it (measured): {figure.bound}"]
    return "\n".join(lines) + "\n"


def run(argv=None):
    args = parse_arguments(argv)
    _quiet_logs()
    settings = Settings.quick() if args.quick else Settings()
    chosen = [int(n) for n in args.figures.split(",") if n.strip()] or list(FIGURES)
    unknown = sorted(set(chosen) - set(FIGURES))
    if unknown:
        raise SystemExit(f"--figures must name figures among {FIGURES}; received {unknown}.")
    machine = hardware()
    start = time.perf_counter()
    figures = []
    with contextlib.ExitStack() as stack:
        work = args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="refseg-bench-"))
        os.makedirs(work, exist_ok=True)
        for number in chosen:
            began = time.perf_counter()
            print(f"figure {number} ...", flush=True)
            try:
                figure = FIGURE_FUNCTIONS[number](work, settings)
            except Exception as error:  # recorded: one broken figure must not hide the rest
                traceback.print_exc()
                figure = Figure(number, f"figure {number}", "-",
                                [("failed", None, f"{type(error).__name__}: {error}"[:300])])
            figure.seconds = time.perf_counter() - began
            figures.append(figure)
            for row in figure.rows:
                print(f"  {row[0]}: {_format_ratio(row[1])} ({row[2]})", flush=True)
    machine["load_average_end"] = os.getloadavg()
    total = time.perf_counter() - start
    text = render(figures, machine, settings, args.quick, total)
    from refseg_tf.files import atomic_write_text

    atomic_write_text(args.output, text)
    if args.json:
        raw = {f.number: {"rows": f.rows, "raw": getattr(f, "raw", None)} for f in figures}
        atomic_write_text(args.json, json.dumps({"machine": machine, "figures": raw},
                                                indent=2, default=str))
    print(f"wrote {args.output} in {total / 60:.1f} min")
    return figures


if __name__ == "__main__":
    run()

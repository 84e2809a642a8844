"""Multi-worker training (`refseg_tf.training.loop`) and the progress lines of `refseg-train`.

- Two worker processes on localhost ports (TF_CONFIG) train with MultiWorkerMirroredStrategy;
  their checkpoint after 2 steps holds the weights one process reaches on the same global
  batches with Keras `fit`; both are killed mid-run, restarted, and resume from the last
  checkpoint (every worker restores; the chief writes).
- The loop on the default strategy equals `fit` for an ordinary model and for ASGN (its own
  `train_step`, two optimizers).
- Logs that are not a terminal get one line per epoch (plus `train.log_every_steps`), not a
  progress-bar line per step.
"""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from refseg_tf.training import callbacks as callbacks_lib
from refseg_tf.training import experiments, loop, trainer
from refseg_tf.training.optimizers import AdamWithBiasMultiplier, apply_weight_decay
from tests.test_training import data  # noqa: F401  (the module-scoped synthetic data fixture)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLOBAL_BATCH = 4
DECAY_STEPS = 100  # a fixed schedule horizon: runs of different lengths share their rates
WORKER_TIMEOUT = 300


def worker_config(data_dir, steps, distribution="multi_worker", worker_timeout=WORKER_TIMEOUT):
    """Tiny LSTM-CNN on the synthetic data, with weight decay and the bias multiplier on."""
    config = experiments.synthetic("lstm_cnn", stage="low")
    config.model.backbone.kwargs = ml_collections.ConfigDict()
    for key in ("embedding_dim", "text_units", "classifier_units"):
        del config.model[key]
    config.data.dir = data_dir
    config.data.image_size = 64
    config.data.shuffle_buffer = 50
    config.train.steps = int(steps)
    config.train.batch_size = GLOBAL_BATCH  # the global batch, split over the workers
    config.train.checkpoint_every = 2
    config.train.keep_checkpoints = 100
    config.train.log_images_every = 1  # a chief-only callback between collective steps
    config.train.log_every_steps = 1
    config.train.jit_compile = "false"
    config.train.weight_decay = 5e-4
    config.train.weight_decay_scope = "matrices"
    config.train.optimizer.bias_lr_multiplier = 2.0
    config.train.optimizer.decay_steps = DECAY_STEPS
    config.train.distribution = distribution
    config.train.input_sharding = "data"  # both workers together see one worker's batches
    config.train.worker_timeout_seconds = float(worker_timeout)
    return config


WORKER_SCRIPT = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from absl import logging
from refseg_tf.training import callbacks
from refseg_tf.training.trainer import train
from tests.test_multiworker import worker_config

if os.environ.get("REFSEG_TEST_HANG_AFTER_SAVE"):  # a worker alive but stuck (its heartbeats go on)
    save = callbacks.CheckpointEveryEpoch.on_epoch_end

    def save_then_hang(self, epoch, logs=None):
        save(self, epoch, logs)
        print("HANGING", flush=True)
        time.sleep(3600)

    callbacks.CheckpointEveryEpoch.on_epoch_end = save_then_hang
logging.set_verbosity(logging.INFO)
logging.use_absl_handler()
model = train(worker_config(sys.argv[2], int(sys.argv[4]), worker_timeout=float(sys.argv[5])),
              sys.argv[3])
print("FINAL_ITERATIONS", int(model.optimizer.iterations.numpy()), flush=True)
"""


@pytest.fixture(scope="module")
def data_dir(data):  # noqa: F811  (tests.test_training's 40 synthetic 48 px images, 2 shards)
    return data[0]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _start_workers(data_dir, model_dir, steps, log_dir, tag, worker_timeout=WORKER_TIMEOUT,
                   hang=()):
    """Two `train()` processes of one MultiWorkerMirroredStrategy job; returns (procs, logs).

    `hang`: indices of workers that hang (sleep) right after their first checkpoint save.
    """
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    processes, logs = [], []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        stdout = open(os.path.join(log_dir, f"{tag}-{index}.out"), "w+")
        stderr = open(os.path.join(log_dir, f"{tag}-{index}.err"), "w+")
        env = dict(os.environ, TF_CONFIG=tf_config, PYTHONPATH=REPO_ROOT,
                   TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        env.pop("REFSEG_TEST_HANG_AFTER_SAVE", None)
        if index in hang:
            env["REFSEG_TEST_HANG_AFTER_SAVE"] = "1"
        processes.append(subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, REPO_ROOT, data_dir, model_dir, str(steps),
             str(worker_timeout)],
            stdout=stdout, stderr=stderr, env=env,
        ))
        logs.append((stdout, stderr))
    for process, address in zip(processes, cluster["worker"]):
        process.address = address
    return processes, logs


def _read(handle):
    handle.flush()
    handle.seek(0)
    return handle.read()


def _kept_checkpoints(model_dir):
    """Checkpoint numbers listed in the `checkpoint` index (written last by a save)."""
    path = os.path.join(model_dir, callbacks_lib.CHECKPOINT_SUBDIR, "checkpoint")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return sorted({int(n) for n in re.findall(r'all_model_checkpoint_paths: "ckpt-(\d+)"', text)})


def _kill(processes):
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    for process in processes:
        process.wait(timeout=30)


def _resume_workers(data_dir, model_dir, saved, steps, tmp_path):
    """Both workers restarted on `model_dir` for `steps`: each must finish and say it resumed
    at the saved step `saved` (every worker restores the same step); returns their logs."""
    processes, logs = _start_workers(data_dir, model_dir, steps, str(tmp_path), "second")
    try:
        for process in processes:
            process.wait(timeout=WORKER_TIMEOUT)
    finally:
        _kill(processes)
    assert [p.returncode for p in processes] == [0, 0], _failure(processes, logs)
    for _, err in logs:
        assert f"resuming at step {saved} of {steps}" in _read(err)
    return logs


def _failure(processes, logs):
    return "\n".join(
        f"--- worker {i} rc={p.poll()}\n{_read(err)[-3000:]}"
        for i, (p, (_, err)) in enumerate(zip(processes, logs))
    )


def _weights(model):
    return [np.array(v.numpy()) for v in model.weights]


@pytest.mark.slow  # about 45 s: two TensorFlow processes twice (issue 20)
def test_two_workers_match_one_and_resume_after_a_kill(data_dir, tmp_path):
    model_dir = str(tmp_path / "two_workers")
    processes, logs = _start_workers(data_dir, model_dir, 1000, str(tmp_path), "first")
    try:
        deadline = time.time() + WORKER_TIMEOUT
        while not _kept_checkpoints(model_dir):
            assert all(p.poll() is None for p in processes), _failure(processes, logs)
            assert time.time() < deadline, _failure(processes, logs)
            time.sleep(0.2)
    finally:
        _kill(processes)  # both killed mid-run (1000 steps configured)
    chief_out = _read(logs[0][0])
    # Not a terminal: one line per step (`log_every_steps=1`) and per epoch, no bar.
    assert re.search(r"^step 1/1000 - loss: \d+\.\d{4}", chief_out, re.M), chief_out
    assert "\r" not in chief_out and "\x08" not in chief_out
    assert "FINAL_ITERATIONS" not in chief_out

    resumed_at = max(_kept_checkpoints(model_dir))
    logs = _resume_workers(data_dir, model_dir, resumed_at, resumed_at + 2, tmp_path)
    chief_out = _read(logs[0][0])
    assert f"FINAL_ITERATIONS {resumed_at + 2}" in chief_out
    assert re.search(r"^2/2 - .*loss: ", chief_out, re.M), chief_out  # the epoch's line
    assert "\r" not in chief_out and "\x08" not in chief_out
    assert max(_kept_checkpoints(model_dir)) == resumed_at + 2
    assert os.path.exists(os.path.join(model_dir, trainer.MODEL_FILENAME))
    assert not [n for n in os.listdir(model_dir) if n.startswith("refseg-")]
    events = [f for _, _, files in os.walk(os.path.join(model_dir, "logs")) for f in files]
    assert any("tfevents" in f for f in events)

    # One process, Keras `fit`, the same global batches: the weights of the workers' ckpt-2.
    reference = trainer.train(
        worker_config(data_dir, 2, distribution="default"), str(tmp_path / "one"), verbose=0
    )
    two, _ = trainer.load_trained_model(
        model_dir, checkpoint=os.path.join(model_dir, "checkpoints", "ckpt-2")
    )
    initial = trainer.build_model(trainer.resolve_config(worker_config(data_dir, 2, "default")))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(_weights(reference), _weights(initial)))
    assert moved > 1e-4
    for ours, theirs, variable in zip(_weights(two), _weights(reference), reference.weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6, err_msg=variable.path)


# --------------------------------------------------------------------------- a lost worker

LOSS_TIMEOUT = 60  # train.worker_timeout_seconds of the lost-worker runs
# The survivor's bound: the collective timeout, the health probes (5 s a peer) and the exit.
LOSS_BOUND = LOSS_TIMEOUT + 30


def _wait_for_checkpoint(processes, logs, model_dir):
    deadline = time.time() + WORKER_TIMEOUT
    while not _kept_checkpoints(model_dir):
        assert all(p.poll() is None for p in processes), _failure(processes, logs)
        assert time.time() < deadline, _failure(processes, logs)
        time.sleep(0.2)


def _wait_for_text(processes, logs, index, text):
    deadline = time.time() + WORKER_TIMEOUT
    while text not in _read(logs[index][0]):
        assert all(p.poll() is None for p in processes), _failure(processes, logs)
        assert time.time() < deadline, _failure(processes, logs)
        time.sleep(0.2)


@pytest.mark.slow  # 65-145 s each, loaded 2 cores: two TF processes, twice ("stuck" waits 60 s)
@pytest.mark.parametrize(
    "how, lost",
    [
        ("killed", 1),  # SIGKILL: its connections close
        ("frozen", 0),  # SIGSTOP of the chief (the coordination service): a machine gone silent
        ("stuck", 1),  # alive (heartbeats go on) but out of the collectives: the timeout
    ],
)
def test_a_lost_worker_stops_the_other_in_bounded_time_and_both_resume(
    data_dir, tmp_path, how, lost
):
    """Before: the README said a collective "fails or hangs: stop them"; now the survivor
    exits with status 1 within `train.worker_timeout_seconds` (+ probes) naming the lost
    worker's task and address, and a restart of both resumes at one step on both."""
    model_dir = str(tmp_path / "job")
    survivor = 1 - lost
    processes, logs = _start_workers(
        data_dir, model_dir, 1000, str(tmp_path), "first", worker_timeout=LOSS_TIMEOUT,
        hang=(lost,) if how == "stuck" else (),
    )
    try:
        if how == "stuck":
            _wait_for_text(processes, logs, lost, "HANGING")
        else:
            _wait_for_checkpoint(processes, logs, model_dir)
            os.kill(processes[lost].pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        lost_at = time.time()
        try:
            processes[survivor].wait(timeout=LOSS_BOUND)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {survivor} still runs {LOSS_BOUND} s after worker {lost} was "
                        f"{how}\n" + _failure(processes, logs))
        took = time.time() - lost_at
        err = _read(logs[survivor][1])
        assert processes[survivor].returncode != 0, err[-3000:]
        assert "WorkerLostError" in err, err[-3000:]
        if how == "stuck":  # alive (it answers the probes): the collective timeout stopped it
            assert took >= LOSS_TIMEOUT - 5, took
            assert "no answer within `train.worker_timeout_seconds`" in err
        address = processes[lost].address
        assert f"lost worker worker:{lost} ({address})" in err, err[-3000:]
        assert "run the same command again on every worker" in err
    finally:
        _kill(processes)
    assert "FINAL_ITERATIONS" not in _read(logs[survivor][0])

    saved = max(_kept_checkpoints(model_dir))
    logs = _resume_workers(data_dir, model_dir, saved, saved + 1, tmp_path)
    for out, _ in logs:
        assert f"FINAL_ITERATIONS {saved + 1}" in _read(out)


class _Resolver:
    def __init__(self, cluster, task_type, task_id):
        self._cluster, self.task_type, self.task_id = cluster, task_type, task_id

    def cluster_spec(self):
        return tf.train.ClusterSpec(self._cluster)


class _Strategy:
    def __init__(self, cluster, task_type="worker", task_id=0):
        self.cluster_resolver = _Resolver(cluster, task_type, task_id)


CLUSTER = {"worker": ["host-a:2222", "host-b:2222", "host-c:2222"]}


def _error(kind, message):
    return kind(None, None, message)


def test_a_lost_worker_is_named_by_probe_then_by_the_error():
    """The fast variant of the test above: which peer `WorkerLostError` names, and its text."""
    strategy = _Strategy(CLUSTER, "worker", 0)
    aborted = _error(tf.errors.UnavailableError, "Collective ops is aborted by: recvmsg:Connection "
                     "reset by peer\nAdditional GRPC error information from remote target "
                     "/job:worker/replica:0/task:2 while calling RecvBuf")
    assert loop.is_peer_failure(aborted)
    assert not loop.is_peer_failure(_error(tf.errors.InvalidArgumentError, "bad shape"))
    assert not loop.is_peer_failure(ValueError("Collective ops is aborted"))
    # A probe that finds worker 1 silent wins over the message (which names worker 2).
    silent_1 = lambda job, index, timeout: index != 1  # noqa: E731
    error = loop.worker_lost_error(strategy, aborted, step=7, probe=silent_1)
    assert isinstance(error, ConnectionError) and error.lost == (("worker", 1),)
    text = str(error)
    assert text.startswith(
        "Multi-worker training on worker:0 stopped at step 7: lost worker worker:1 (host-b:2222)."
        " TensorFlow: UnavailableError: Collective ops"
    ), text
    assert "run the same command again on every worker" in text
    # Every peer answers: the tasks TensorFlow's message names, never this worker itself.
    answers = lambda job, index, timeout: True  # noqa: E731
    own_device = _error(tf.errors.UnavailableError, "{{function_node x_device_/job:worker/replica:0"
                        "/task:0/device:CPU:0}} Collective ops is aborted by: Error reported from "
                        "/job:worker/task:2: The following tasks are unhealthy (stopped sending "
                        "heartbeats):\n/job:worker/replica:0/task:2")
    assert loop.lost_workers(strategy, own_device, probe=answers) == [("worker", 2, "host-c:2222")]
    assert "lost worker worker:2 (host-c:2222)" in str(
        loop.worker_lost_error(strategy, own_device, probe=answers)
    )
    # A missed heartbeat of the coordination service names no task: its leader (worker 0).
    heartbeat = _error(tf.errors.DeadlineExceededError, "Collective ops is aborted by: Deadline "
                       "Exceeded\n\nRPC: /tensorflow.CoordinationService/Heartbeat")
    assert loop.lost_workers(_Strategy(CLUSTER, "worker", 2), heartbeat, probe=answers) == [
        ("worker", 0, "host-a:2222")
    ]
    with_chief = {"chief": ["boss:1"], "worker": ["host-a:2222"]}
    assert loop.lost_workers(_Strategy(with_chief, "worker", 0), heartbeat, probe=answers) == [
        ("chief", 0, "boss:1")
    ]
    # A probe that cannot run, and a message naming nobody: said so.
    def broken(job, index, timeout):
        raise RuntimeError("no context")

    timeout = _error(tf.errors.DeadlineExceededError, "{{function_node x_device_/job:worker/"
                     "replica:0/task:0/device:CPU:0}} Collective has timed out during execution.")
    error = loop.worker_lost_error(strategy, timeout, probe=broken)
    assert error.lost == () and "names none" in str(error)
    assert "Multi-worker training on worker:0 stopped: lost a worker" in str(error)
    assert "(no answer within `train.worker_timeout_seconds`)" in str(error)
    # Two workers, the collective timed out and the peer answers: it is alive but stuck.
    pair = _Strategy({"worker": ["host-a:2222", "host-b:2222"]}, "worker", 0)
    error = loop.worker_lost_error(pair, timeout, probe=answers)
    assert error.lost == (("worker", 1),)
    assert "lost worker worker:1 (host-b:2222) (no answer within" in str(error)


def test_worker_timeout_is_checked():
    from refseg_tf.training import distribute

    assert distribute.worker_timeout_seconds("12.5") == 12.5
    assert distribute.worker_timeout_seconds(0) == 0
    for bad in (-1, "soon", None, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`train.worker_timeout_seconds` must be"):
            distribute.get_strategy("default", bad)
    config = worker_config("unused", 2, distribution="default", worker_timeout=-3)
    with pytest.raises(ValueError, match="received -3.0"):
        trainer.train(config, "/nonexistent/never_written")


# --------------------------------------------------------------------------- the loop in-process

SIZE = 64


def _batches(count, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(count * batch, SIZE, SIZE, 3)).astype("float32")
    words = rng.integers(1, 20, size=(count * batch, 4)).astype("int32")
    masks = (rng.random((count * batch, SIZE, SIZE, 1)) > 0.6).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(({"image": images, "word_ids": words}, masks))
    return dataset.batch(batch).repeat()


def _compiled(preset):
    from refseg_tf.models import build_preset

    keras.utils.set_random_seed(0)
    model = build_preset(preset, 20, size="tiny")
    model(next(iter(_batches(1)))[0], training=False)
    # What trainer.train passes (before: ASGN returned a list of variables and training failed).
    decayed = apply_weight_decay(model.trainable_for_weight_decay(), 5e-4, "matrices")
    assert decayed > 0
    if preset.startswith("asgn"):
        assert any(v.regularizer is not None for v in model.discriminator.trainable_variables)
        assert any(v.regularizer is not None for v in model.generator.trainable_variables)
    model.compile_for_training(
        model.make_optimizers(lambda role: AdamWithBiasMultiplier(1e-3, bias_lr_multiplier=2.0)),
        jit_compile=False,
    )
    model.build_optimizers()
    return model


@pytest.mark.parametrize(
    "preset", ["lstm_cnn", pytest.param("asgn_r_lstm", marks=pytest.mark.slow)]  # ~17 s
)
def test_loop_equals_fit_on_the_default_strategy(preset):
    strategy = tf.distribute.get_strategy()
    by_fit = _compiled(preset)
    fit_history = by_fit.fit(_batches(3), epochs=2, steps_per_epoch=2, initial_epoch=1, verbose=0)
    by_loop = _compiled(preset)
    loop_history = loop.run_epochs(
        by_loop, _batches(3), strategy, epochs=2, steps_per_epoch=2, initial_epoch=1, verbose=0
    )
    assert int(by_loop.optimizer.iterations.numpy()) == 2
    if preset.startswith("asgn"):
        assert int(by_loop.discriminator_optimizer.iterations.numpy()) == 2
    assert set(loop_history.history) == set(fit_history.history)
    for key, values in fit_history.history.items():
        np.testing.assert_allclose(loop_history.history[key], values, rtol=1e-5, err_msg=key)
    for ours, theirs in zip(by_loop.weights, by_fit.weights):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-7,
                                   err_msg=ours.path)


def test_engine_choice():
    strategy = tf.distribute.get_strategy()
    assert loop.choose_engine("auto", strategy) == "fit"
    assert loop.choose_engine("loop", strategy) == "loop"
    assert not loop.is_multi_worker(strategy) and loop.is_chief(strategy)
    with pytest.raises(ValueError, match="`train.engine` must be one of"):
        loop.choose_engine("horovod", strategy)
    config = worker_config("unused", 2, distribution="default")
    config.train.input_sharding = "file"
    with pytest.raises(ValueError, match="`train.input_sharding` must be one of"):
        trainer.train(config, "/nonexistent/never_written")


# --------------------------------------------------------------------------- progress lines


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_verbosity_follows_the_terminal():
    assert callbacks_lib.progress_verbosity("auto", _Stream(True)) == 1
    assert callbacks_lib.progress_verbosity("auto", _Stream(False)) == 2
    assert callbacks_lib.progress_verbosity(0, _Stream(True)) == 0
    with pytest.raises(ValueError, match="`verbose` must be"):
        callbacks_lib.progress_verbosity(3)
    assert callbacks_lib.format_log_line(5, 9, {"loss": np.float32(0.5)}) == "step 5/9 - loss: 0.5000"


def test_train_writes_lines_not_a_bar_into_a_log(data_dir, tmp_path, capsys):
    """Before: Keras's bar wrote every metric at every step into a log file (~480 B/step)."""
    config = worker_config(data_dir, 5, distribution="default")
    config.train.log_images_every = 0
    config.train.log_every_steps = 2
    config.train.engine = "loop"
    capsys.readouterr()
    trainer.train(config, str(tmp_path / "run"))
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split(" - ")[0] for line in steps] == ["step 2/5", "step 4/5"]
    epochs = [line for line in lines if re.match(r"^\d+/\d+ - ", line)]
    assert [line.split(" - ")[0] for line in epochs] == ["2/2", "2/2", "1/1"]
    assert len(lines) <= 8, lines  # + "Epoch k/n" headers; no line per step of a bar

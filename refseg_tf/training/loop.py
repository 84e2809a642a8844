"""A custom training loop: the model's own `train_step` under `strategy.run` (TensorFlow only).

Keras 3 `fit` fails under `MultiWorkerMirroredStrategy` with two or more workers
(keras-team/keras#20585: its data adapter and log reduction meet `PerReplica` values it cannot
convert). `run_epochs` replaces only the part of `fit` that breaks, the loop around the step:

- each step is `strategy.run(model.train_step, (batch,))` over
  `strategy.experimental_distribute_dataset(dataset)`, inside one `tf.function` compiled as
  `model.jit_compile` says (as `fit` compiles its step; without XLA across workers, see
  `make_train_function`). The model's own `train_step` runs, so
  a custom step (ASGN's alternating D/G updates with two optimizers), the loss and metric
  trackers, mixed-precision loss scaling and the division of Keras losses by
  `num_replicas_in_sync` (which inside `strategy.run` counts the replicas of every worker)
  are exactly what `fit` would run. Weight decay (variable regularizers, part of
  `model.losses`), the bias multiplier (inside the optimizer's `apply`) and the learning-rate
  schedules (driven by `optimizer.iterations`) come along for the same reason;
- the step's logs are averaged over all replicas of all workers with `strategy.reduce`
  (every worker then holds the same logs: the same early stop on a NaN loss, the same
  progress lines); the epoch's logs are the metrics read back in cross-replica context, as
  `fit` does;
- the same `keras.callbacks.CallbackList` protocol as `fit` (`on_train_begin`,
  `on_epoch_begin`, `on_train_batch_begin/end`, `on_epoch_end`, `on_train_end`, the History
  and the progress bar / lines), so the callbacks, the TensorBoard files and the log lines are
  those of `fit`; `model.stop_training` (TerminateOnNaN) ends the run on every worker;
- like `fit`, each call starts a new iterator over `dataset` and runs epochs
  `initial_epoch..epochs-1` of `steps_per_epoch` steps each (`trainer.fit_plan`).

Multi-worker rules (TensorFlow's multi-worker guide, "Model saving and loading" and "Fault
tolerance"): every worker takes part in every checkpoint and `.keras` save (saving may read
variables synchronised across workers); the chief writes into `model_dir` and the other
workers write to a temporary directory of their own, deleted after each save
(`worker_directory`, `discard_worker_directory`). Every worker restores from `model_dir`, so
`model_dir` must be a path every worker reads (a shared file system or a bucket).

A lost worker (killed, hung, unreachable): TensorFlow's coordination service sees a worker that
stops sending heartbeats within about 10 s and aborts the collectives of the others (a killed
worker on the same network is seen at once: its connections close); a worker that is alive but
stops taking part in the collectives (stuck in its input pipeline, a hung file system) is
caught by the collective timeout `train.worker_timeout_seconds` (`distribute.get_strategy`).
Either way every other worker's `run_epochs` raises `WorkerLostError` (a `ConnectionError`,
so `refseg-train` prints it as one line and exits with status 1) naming the lost worker's task
and address (`lost_workers`: the peers that do not answer a health probe, else the tasks
TensorFlow's error names) and saying how to resume: the same command on every worker, which
all restore the newest checkpoint of `model_dir` (the same step on every worker).

Which engine trains is `train.engine` (`choose_engine`): "auto" (the default) uses this loop
under `MultiWorkerMirroredStrategy` with two or more workers and `fit` otherwise; "loop" and
"fit" force one (`fit` is refused with several workers, where it fails).
"""

import json
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging

ENGINES = ("auto", "fit", "loop")


def cluster_workers(strategy) -> int:
    """The workers (chief included) training together under `strategy`; 1 without a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(sum(len(cluster.get(job, ())) for job in ("chief", "worker")), 1)


def is_multi_worker(strategy) -> bool:
    """True for a `MultiWorkerMirroredStrategy` over two or more workers."""
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and cluster_workers(strategy) > 1
    )


def task_of(strategy):
    """`(task_type, task_id)` of this process in the cluster; `(None, None)` without one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy) -> bool:
    """True for the process that writes: no cluster, the `chief` task, or worker 0 without one."""
    if not is_multi_worker(strategy):
        return True
    task_type, task_id = task_of(strategy)
    if task_type == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and int(task_id) == 0 and not has_chief


def worker_directory(directory: str, strategy) -> str:
    """Where this worker writes what `directory` stands for: `directory` on the chief, else a
    new temporary directory of this worker (remove it with `discard_worker_directory`)."""
    if is_chief(strategy):
        return directory
    task_type, task_id = task_of(strategy)
    return tempfile.mkdtemp(prefix=f"refseg-{task_type}{task_id}-{os.path.basename(directory)}-")


def discard_worker_directory(directory: str, strategy) -> None:
    """Deletes a non-chief worker's temporary directory (nothing on the chief)."""
    if not is_chief(strategy):
        shutil.rmtree(directory, ignore_errors=True)


def choose_engine(name: str, strategy) -> str:
    """The engine `train()` runs: "fit" (Keras `fit`) or "loop" (`run_epochs`).

    Raises:
        ValueError: `name` is not one of `ENGINES`, or "fit" with several workers.
    """
    if name not in ENGINES:
        raise ValueError(f"`train.engine` must be one of {ENGINES}; received {name!r}.")
    multi_worker = is_multi_worker(strategy)
    if name == "fit" and multi_worker:
        raise ValueError(
            "`train.engine` must be 'auto' or 'loop' with several workers; received 'fit': "
            "Keras 3 `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585)."
        )
    if name == "auto":
        return "loop" if multi_worker else "fit"
    return name


def describe_cluster(strategy) -> str:
    """A one-line description of this process's place in the training job, for the log."""
    if not is_multi_worker(strategy):
        return f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)"
    task_type, task_id = task_of(strategy)
    cluster = json.dumps(strategy.cluster_resolver.cluster_spec().as_dict(), sort_keys=True)
    role = "chief" if is_chief(strategy) else "non-chief"
    return (
        f"MultiWorkerMirroredStrategy: task {task_type}:{task_id} ({role}) of {cluster}, "
        f"{strategy.num_replicas_in_sync} replicas in sync"
    )


def reduce_logs(strategy, outputs) -> dict:
    """The mean over every replica of every worker of each value the step returned."""

    def mean(value):
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)

    return tf.nest.map_structure(mean, outputs)


def make_train_function(model, strategy):
    """`step(iterator) -> logs`: one distributed `model.train_step`, logs reduced.

    Compiled with `jit_compile=model.jit_compile` (what `compile` resolved "auto" to), as Keras
    compiles `fit`'s step, except with several workers: XLA has no kernel for the collective
    ops the optimizer's cross-worker all-reduce adds (`CollectiveGatherV2` for an embedding's
    sparse gradient on XLA_CPU_JIT, checked here, both around and inside `strategy.run`), so
    there the step runs as a plain `tf.function` and a warning says so. `model.run_eagerly`
    runs it eagerly.
    """

    def step(iterator):
        batch = next(iterator)
        outputs = strategy.run(model.train_step, args=(batch,))
        return reduce_logs(strategy, outputs)

    if model.run_eagerly:
        return step
    jit_compile = bool(model.jit_compile)
    if jit_compile and is_multi_worker(strategy):
        logging.warning(
            "train.jit_compile: XLA cannot compile the cross-worker collective ops of "
            "MultiWorkerMirroredStrategy; the training step runs without XLA."
        )
        jit_compile = False
    return tf.function(step, jit_compile=jit_compile, reduce_retracing=True)


def epoch_logs(model, step_logs) -> dict:
    """The epoch's logs: the model's metrics read back (over every replica), as `fit` reports.

    When the step returned other keys than `model.metrics` (a custom `train_step`), the last
    step's (reduced) logs, as `fit` does.
    """
    results = model.get_metrics_result()
    if isinstance(step_logs, dict) and set(step_logs) == set(results):
        return results
    return step_logs


class WorkerLostError(ConnectionError):
    """A worker of a multi-worker job stopped answering; `lost` lists `(task_type, task_id)`."""

    def __init__(self, message, lost=()):
        super().__init__(message)
        self.lost = tuple(lost)


# Errors a collective raises when a peer is gone or silent (TensorFlow aborts the collectives
# of every surviving worker with one of these; the coordination service's own errors too).
_PEER_FAILURES = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)
_PEER_FAILURE_TEXT = ("Collective ops is aborted", "CoordinationService", "heartbeat")
_TASK_PATTERN = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")
PROBE_TIMEOUT_SECONDS = 5.0


def is_peer_failure(error) -> bool:
    """True for a TensorFlow error that says a collective lost (or timed out on) a peer."""
    if not isinstance(error, tf.errors.OpError):
        return False
    if isinstance(error, _PEER_FAILURES):
        return True
    text = str(getattr(error, "message", "") or error)
    return any(part in text for part in _PEER_FAILURE_TEXT)


def cluster_tasks(strategy) -> list:
    """`(task_type, task_id, address)` of every chief and worker task of the cluster."""
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    tasks = []
    for job in ("chief", "worker"):
        addresses = cluster.get(job, ())
        if isinstance(addresses, dict):  # a sparse cluster spec: {index: address}
            items = sorted((int(index), address) for index, address in addresses.items())
        else:
            items = list(enumerate(addresses))
        tasks.extend((job, index, address) for index, address in items)
    return tasks


def coordination_leader(strategy):
    """`(task_type, task_id)` of the task running the coordination service (TensorFlow's rule:
    the chief when there is one, else worker 0)."""
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return ("chief", 0) if cluster.get("chief") else ("worker", 0)


def _probe(task_type, task_id, timeout_seconds) -> bool:
    """True when the peer's TensorFlow server answers a health check within the timeout."""
    from tensorflow.python.eager import context  # pylint: disable=g-direct-tensorflow-import

    try:
        context.context().check_collective_ops_peer_health(
            f"/job:{task_type}/replica:0/task:{task_id}",
            timeout_in_ms=int(timeout_seconds * 1000),
        )
    except tf.errors.OpError:
        return False
    return True


def lost_workers(strategy, error, probe=None, probe_timeout=PROBE_TIMEOUT_SECONDS) -> list:
    """The peers of this worker that `error` lost: `(task_type, task_id, address)` each.

    The peers that do not answer a health probe (`probe(task_type, task_id, timeout) -> bool`,
    by default TensorFlow's collective peer health check); when every peer answers (or probing
    is impossible), the peers TensorFlow's error message names, and for a missed heartbeat of
    the coordination service (which names no task), its leader; for a timed-out collective of
    two workers whose peer answers (alive but stuck), that peer. Empty: no peer can be named.
    """
    probe = probe or _probe
    own = task_of(strategy)
    own = (own[0], int(own[1]) if own[1] is not None else None)
    peers = [task for task in cluster_tasks(strategy) if (task[0], task[1]) != own]
    silent = []
    for task_type, task_id, address in peers:
        try:
            answered = probe(task_type, task_id, probe_timeout)
        except Exception:  # pylint: disable=broad-except  (a probe that cannot run names none)
            answered = True
        if not answered:
            silent.append((task_type, task_id, address))
    if silent:
        return silent
    text = str(getattr(error, "message", "") or error)
    named = {(job, int(index)) for job, index in _TASK_PATTERN.findall(text)}
    if "CoordinationService/Heartbeat" in text:
        named.add(coordination_leader(strategy))
    named.discard(own)  # the message also names this worker's own devices
    if not named and len(peers) == 1 and "timed out" in text:
        # A collective of two workers timed out with its peer answering: that peer is alive
        # but out of the collectives (stuck); with more peers this worker cannot tell which.
        return peers
    return [task for task in peers if (task[0], task[1]) in named]


def worker_lost_error(strategy, error, step=None, probe=None) -> WorkerLostError:
    """The `WorkerLostError` for a collective failure `error` of this worker (see `run_epochs`)."""
    lost = lost_workers(strategy, error, probe=probe)
    task_type, task_id = task_of(strategy)
    if lost:
        names = ", ".join(f"{job}:{index} ({address})" for job, index, address in lost)
        what = f"lost {'worker' if len(lost) == 1 else 'workers'} {names}"
    else:
        what = "lost a worker (TensorFlow's error names none; see the other workers' logs)"
    where = f" at step {int(step)}" if step is not None else ""
    text = str(getattr(error, "message", "") or error)
    if "timed out" in text:
        what += " (no answer within `train.worker_timeout_seconds`)"
    lines = text.strip().splitlines()
    detail = lines[0] if lines else type(error).__name__
    for line in lines:  # the line of TensorFlow's message that says why, when it has one
        if "aborted by" in line or "unhealthy" in line or "Deadline" in line:
            detail = line.strip()
            break
    return WorkerLostError(
        f"Multi-worker training on {task_type}:{task_id} stopped{where}: {what}. "
        f"TensorFlow: {type(error).__name__}: {detail} "
        "Every worker stops; to resume, run the same command again on every worker: they all "
        "restore the newest checkpoint in model_dir and go on from the same step.",
        lost=[(job, index) for job, index, _ in lost],
    )


def run_epochs(
    model,
    dataset,
    strategy,
    *,
    epochs: int,
    steps_per_epoch: int,
    initial_epoch: int = 0,
    callbacks=(),
    verbose="auto",
    train_function=None,
):
    """Trains `model` like `model.fit(dataset, epochs, steps_per_epoch, initial_epoch, ...)`.

    Args:
        model: a compiled Keras model built in `strategy.scope()` (its optimizers built).
        dataset: a `tf.data.Dataset` of global batches (`(inputs, target)` pairs), repeated.
        strategy: the strategy the model was built under.
        epochs: index of the last epoch + 1 (as `fit`'s `epochs`).
        steps_per_epoch: steps in each epoch.
        initial_epoch: first epoch to run.
        callbacks: `keras.callbacks.Callback` instances.
        verbose: 0 (silent), 1 (progress bar), 2 (one line per epoch) or "auto" (1).
        train_function: a `make_train_function(model, strategy)` to reuse across calls (as
            `fit` keeps its `train_function`: no retracing); None makes one.

    Returns:
        the `keras.callbacks.History` of the run.

    Raises:
        WorkerLostError: with several workers, a collective of a step or a callback (a
            checkpoint save) failed because another worker is gone or silent.
    """
    try:
        return _run_epochs(
            model, dataset, strategy, epochs=epochs, steps_per_epoch=steps_per_epoch,
            initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
            train_function=train_function,
        )
    except tf.errors.OpError as error:
        if not (is_multi_worker(strategy) and is_peer_failure(error)):
            raise
        step = None
        try:
            step = int(model.optimizer.iterations.numpy())
        except Exception:  # pylint: disable=broad-except  (reading may need the lost peer)
            pass
        lost = worker_lost_error(strategy, error, step=step)
        logging.error("%s", lost)
        raise lost from error


def _run_epochs(
    model, dataset, strategy, *, epochs, steps_per_epoch, initial_epoch, callbacks, verbose,
    train_function,
):
    distributed = strategy.experimental_distribute_dataset(dataset)
    step = train_function or make_train_function(model, strategy)
    callback_list = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
        model=model,
    )
    model.stop_training = False
    iterator = iter(distributed)
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for batch in range(steps_per_epoch):
            callback_list.on_train_batch_begin(batch)
            logs = step(iterator)
            callback_list.on_train_batch_end(batch, logs)
            if model.stop_training:
                break
        logs = dict(epoch_logs(model, logs))
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            logging.warning("Training stopped at epoch %d (model.stop_training).", epoch + 1)
            break
    callback_list.on_train_end(logs=logs)
    return model.history

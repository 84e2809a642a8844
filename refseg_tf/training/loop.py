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

Which engine trains is `train.engine` (`choose_engine`): "auto" (the default) uses this loop
under `MultiWorkerMirroredStrategy` with two or more workers and `fit` otherwise; "loop" and
"fit" force one (`fit` is refused with several workers, where it fails).
"""

import json
import os
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

    if getattr(model, "run_eagerly", False):
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
    """
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

"""Choosing a `tf.distribute` strategy for `refseg-train` (TensorFlow only).

- "auto": `MirroredStrategy` over all local GPUs when there are two or more, else the default.
- "default": one device. "mirrored": all local devices (GPUs, or the CPU).
- "multi_worker": `MultiWorkerMirroredStrategy` from `TF_CONFIG` (one process per machine, all
  local GPUs of each, or its CPU). Keras 3 `fit` fails there with two or more workers
  (keras-team/keras#20585, open), so `refseg-train` then trains with its own loop
  (`refseg_tf.training.loop`: the model's `train_step` under `strategy.run`), which gives the
  same schedules, weight decay, metrics, TensorBoard files, checkpoints and resuming as `fit`.
  Create the strategy before any other TensorFlow operation runs in the process (`train()`
  does it first): the collective ops are configured when it is created.
  `worker_timeout_seconds` (`train.worker_timeout_seconds`) bounds how long any collective
  waits for the other workers (`CommunicationOptions(timeout_seconds=...)`): a worker that is
  alive but stops taking part then stops the others within that time instead of hanging them
  forever (a dead or unreachable one is seen sooner, by the coordination service's
  heartbeats; `training.loop.WorkerLostError` names it). 0 means no bound.
- "tpu": `TPUStrategy` on the TPU named by `TPU_NAME` (or local).
"""

import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
# Long enough for the slowest worker's first step (tracing, a checkpoint on a slow disk) under
# load; short enough that a stuck job frees its machines within minutes.
DEFAULT_WORKER_TIMEOUT_SECONDS = 300.0


def worker_timeout_seconds(value) -> float:
    """`train.worker_timeout_seconds` as a float >= 0 (0: no bound); else a ValueError."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(
            "`train.worker_timeout_seconds` must be a number of seconds >= 0 (0: no bound); "
            f"received {value!r}."
        )
    return seconds


def get_strategy(
    name: str = "auto", worker_timeout=DEFAULT_WORKER_TIMEOUT_SECONDS
) -> tf.distribute.Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"Unknown `train.distribution` {name!r}; expected one of {STRATEGIES}.")
    timeout = worker_timeout_seconds(worker_timeout)
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout or None)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)

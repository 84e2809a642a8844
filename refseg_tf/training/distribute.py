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
- "tpu": `TPUStrategy` on the TPU named by `TPU_NAME` (or local).
"""

import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"Unknown `train.distribution` {name!r}; expected one of {STRATEGIES}.")
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", ""))
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)

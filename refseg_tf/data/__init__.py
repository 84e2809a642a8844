"""refseg_tf.data: the TFRecord schema, the tf.data input pipeline and its transforms.

The pipeline and transform names below are imported on first use, so the converters
(`refseg_tf.data.converters`) do not pay for importing TensorFlow's graph code until they need
it. The synthetic sets are `refseg_tf.synthetic_data`.
"""

import importlib

_EXPORTS = {
    "available_splits": "shards",
    "choose_auto_shard_policy": "pipeline",
    "detect_worker_count": "pipeline",
    "find_shards": "shards",
    "load": "pipeline",
    "denormalize_image": "transforms",
    "downsample_label": "transforms",
    "letterbox_geometry": "transforms",
    "normalize_image": "transforms",
    "preprocess_image": "transforms",
    "resize_and_pad": "transforms",
    "resize_and_pad_mask": "transforms",
    "restore_batch_to_original": "transforms",
    "restore_to_original": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'refseg_tf.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"refseg_tf.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

"""The authors' backbone initialisation files, as entries of `backbones.load_weights`.

Hu et al.'s `vgg_params.npz` (text_objseg `models/convert_caffemodel`, downloaded by
`models/convert_caffemodel/params/download_vgg_params.sh`): the Caffe VGG-16 ImageNet model
converted to TF layouts, an `.npz` with two members, `processed_W` and `processed_B`, each a
0-d object array holding a dict `{layer: array}` for the layers `conv1_1` .. `conv5_3`, `fc6`,
`fc7`, `fc8` (the authors read them with `np.load(...)['processed_W'][()]` and assign
`processed_W[l]` to `vgg_local/<l>/weights`, `processed_B[l]` to `.../biases`;
`exp_train_referit_det.py`). Conv weights are `[3, 3, in, out]`; the fully connected ones
`[k * k * C, U]` as their `fc_layer` (`fc6` `[25088, 4096]`) or already `[k, k, C, U]`; both
are accepted. The authors feed these weights RGB images minus the VGG mean
(`vgg_net.channel_mean`), i.e. `data.normalization = "vgg_rgb"` (`expected_normalization`).

The dicts are pickles inside the `.npy` members. They are read with a restricted unpickler
that resolves only numpy's array reconstruction (`numpy[._core].multiarray._reconstruct`,
`numpy.ndarray`, `numpy.dtype`) and `_codecs.encode` (Python-2-compatible byte strings):
a file referencing anything else is refused, naming the file and the global, before any of
it runs.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np

from refseg_tf.interop.tf1 import dense_to_conv_kernel

HU_VGG_MEMBERS = ("processed_W", "processed_B")
HU_VGG_NORMALIZATION = "vgg_rgb"
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves numpy's array reconstruction and nothing else (names the file otherwise)."""

    def __init__(self, file, source):
        super().__init__(file, encoding="latin1")  # Python 2 numpy pickles: raw bytes as latin1
        self.source = source

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise ValueError(
            f"{self.source}: refused to load the global '{module}.{name}' from its pickled "
            "data: a weights file holds only arrays; this one could run code and was not loaded."
        )


def read_npz_restricted(path) -> dict:
    """`{member: value}` of an `.npz`, object members unpickled with the numpy-only unpickler.

    Raises:
        ValueError: not a readable `.npz` (names the file), a member that cannot be read, or
            a pickle referencing anything but numpy arrays.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file not found: {path}")
    values = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                key = member[: -len(".npy")]
                with archive.open(member) as stream:
                    data = stream.read()
                values[key] = _read_npy(data, f"{path}[{key}]")
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(f"{path}: not a readable .npz file (truncated or corrupted): {error}") from error
    return values


def _read_npy(data, source):
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            shape, fortran, dtype = np.lib.format._read_array_header(stream, version)
    except ValueError as error:
        raise ValueError(f"{source}: not a .npy array ({error}).") from error
    if dtype.hasobject:
        try:
            value = _NumpyOnlyUnpickler(stream, source).load()
        except ValueError:
            raise
        except Exception as error:  # a damaged pickle: EOFError, UnpicklingError, ...
            raise ValueError(f"{source}: its pickled data cannot be read ({error}).") from error
        return value
    count = int(np.prod(shape))
    buffer = stream.read()
    if len(buffer) < count * dtype.itemsize:
        raise ValueError(f"{source}: truncated array data ({len(buffer)} of {count * dtype.itemsize} bytes).")
    array = np.frombuffer(buffer, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


def is_hu_vgg_params(path) -> bool:
    """Whether `path` is an `.npz` whose members are exactly `processed_W` and `processed_B`."""
    path = os.fspath(path)
    if not (isinstance(path, str) and path.lower().endswith(".npz") and os.path.isfile(path)):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            members = sorted(name[:-4] for name in archive.namelist() if name.endswith(".npy"))
    except (zipfile.BadZipFile, OSError):
        return False
    return members == sorted(HU_VGG_MEMBERS)


def hu_vgg_layer_names(backbone):
    """VGG16FCN layer -> the authors' layer name (`block1_conv1` -> `conv1_1`, `fc6` -> `fc6`)."""
    names = {}
    for block, depth in enumerate(backbone.depths, start=1):
        for index in range(1, depth + 1):
            names[f"block{block}_conv{index}"] = f"conv{block}_{index}"
    names.update({name: name for name in ("fc6", "fc7", "fc8")})
    return names


def load_hu_vgg_params(backbone, path):
    """Loads Hu's `vgg_params.npz` into a `VGG16FCN`; every shape checked before assigning.

    Returns:
        list of the backbone layer names that received weights.

    Raises:
        TypeError: the backbone is not a VGG16FCN.
        ValueError: naming the file and the missing, unexpected or mis-shaped layer.
    """
    from refseg_tf.backbones.vgg import VGG16FCN

    if not isinstance(backbone, VGG16FCN):
        raise TypeError(
            f"{path}: Hu's vgg_params.npz holds VGG-16 weights; the backbone is "
            f"{type(backbone).__name__}."
        )
    path = os.fspath(path)
    values = read_npz_restricted(path)
    dicts = []
    for member in HU_VGG_MEMBERS:
        value = values.get(member)
        if isinstance(value, np.ndarray) and value.dtype.hasobject and value.shape == ():
            value = value[()]
        if not isinstance(value, dict):
            raise ValueError(f"{path}: member {member!r} must hold a dict of arrays; got {type(value).__name__}.")
        dicts.append(value)
    weights, biases = dicts
    problems, planned = [], []
    names = hu_vgg_layer_names(backbone)
    for layer_name, source in names.items():
        layer = backbone.get_layer(layer_name)
        kernel_shape = tuple(int(d) for d in layer.kernel.shape)
        if source not in weights or source not in biases:
            problems.append(f"missing layer {source!r} (for {layer_name!r})")
            continue
        try:
            kernel = dense_to_conv_kernel(np.asarray(weights[source]), kernel_shape)
        except ValueError as error:
            problems.append(f"processed_W[{source!r}]: {error} (layer {layer_name!r})")
            continue
        bias = np.asarray(biases[source], np.float32)
        if bias.shape != (kernel_shape[-1],):
            problems.append(
                f"processed_B[{source!r}] has shape {np.shape(biases[source])}, layer "
                f"{layer_name!r} needs ({kernel_shape[-1]},)"
            )
            continue
        planned.append((layer, [kernel, bias]))
    extra = sorted((set(weights) | set(biases)) - set(names.values()))
    if extra:
        problems.append(f"unexpected layers {extra} (the backbone has no such layer)")
    if problems:
        raise ValueError(f"{path}: {len(problems)} problem(s), nothing loaded: " + "; ".join(problems) + ".")
    for layer, layer_values in planned:
        layer.set_weights(layer_values)
    return [layer.name for layer, _ in planned]


def expected_normalization(path):
    """The input normalisation an authors' backbone file was trained with, or None."""
    return HU_VGG_NORMALIZATION if is_hu_vgg_params(path) else None

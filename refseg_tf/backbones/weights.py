"""Pre-trained weight loaders: keras.applications ImageNet, DeepLab-v2 ResNet-101, darknet
(`.weights`) and MCN's Keras `.h5` Darknet-53.

Each loader checks every shape before it assigns anything, raises a `ValueError` naming the
file / key / layer at fault, and returns the names of the backbone layers it filled.
"""

from __future__ import annotations

import logging
import os

import keras
import numpy as np

from refseg_tf.backbones.darknet import Darknet53
from refseg_tf.backbones.resnet import ResNetOS8
from refseg_tf.backbones.vgg import VGG16FCN

logger = logging.getLogger(__name__)

# Backbone layer -> keras.applications layer, where the names differ.
_VGG16_RENAMES = {"fc6": "fc1", "fc7": "fc2", "fc8": "predictions"}
_RESNET_RENAMES = {"fc1000": "predictions"}


# --------------------------------------------------------------------------------------------
# keras.applications (ImageNet)
# --------------------------------------------------------------------------------------------


def load_imagenet_weights(backbone, source_model=None, *, weights="imagenet"):
    """Copies ImageNet weights from `keras.applications` into a VGG16FCN or ResNetOS8.

    Layers are matched by name (the backbones reuse the keras.applications names). Dense
    classifier layers become convolutions: a `(k * k * C, U)` kernel is reshaped to
    `(k, k, C, U)`, which is exact because `Flatten` orders a channels-last `(k, k, C)` patch
    row-major. So VGG-16 `fc1` (25088 x 4096) -> `fc6` 7x7x512x4096, `fc2` -> `fc7` 1x1x4096x4096,
    `predictions` -> `fc8` 1x1x4096x1000; ResNet-101 `predictions` -> `fc1000` 1x1x2048x1000.
    Both keras.applications models expect Caffe-style BGR inputs with the ImageNet mean
    subtracted (data preset "caffe_bgr").

    Args:
        backbone: a `VGG16FCN` or `ResNetOS8` (any output stride; dilation has no weights).
        source_model: a model holding the source layers by name. `None` builds
            `keras.applications.VGG16` / `ResNet101` with `include_top=True` and `weights`.
        weights: passed to keras.applications when `source_model` is None: "imagenet"
            (downloads once into ~/.keras/models) or the path of a saved weights file.

    Returns:
        list of the backbone layer names that received weights.

    Raises:
        TypeError: for a backbone without keras.applications weights (Darknet53).
        ValueError: a source layer is missing or a shape differs (both layers are named).
    """
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "load_imagenet_weights needs keras.config.image_data_format() == 'channels_last'."
        )
    if isinstance(backbone, VGG16FCN):
        renames = _VGG16_RENAMES
        if source_model is None:
            source_model = keras.applications.VGG16(weights=weights, include_top=True)
    elif isinstance(backbone, ResNetOS8):
        renames = _RESNET_RENAMES
        if source_model is None:
            source_model = keras.applications.ResNet101(weights=weights, include_top=True)
    else:
        raise TypeError(
            f"No keras.applications ImageNet weights for {type(backbone).__name__}; "
            "use load_darknet_weights for Darknet53."
        )
    source_layers = {layer.name: layer for layer in source_model.layers}
    planned = []
    for layer in _layers_with_weights(backbone):
        source_name = renames.get(layer.name, layer.name)
        if source_name not in source_layers:
            raise ValueError(
                f"Source model {source_model.name!r} has no layer {source_name!r} for backbone "
                f"layer {layer.name!r}."
            )
        source_values = source_layers[source_name].get_weights()
        planned.append((layer, _fit_to_layer(layer, source_values, source_name)))
    for layer, values in planned:
        layer.set_weights(values)
    logger.info("Loaded ImageNet weights into %d layers of %s.", len(planned), backbone.name)
    return [layer.name for layer, _ in planned]


def _layers_with_weights(model):
    return [layer for layer in model.layers if layer.weights]


def _fit_to_layer(layer, source_values, source_name):
    targets = [tuple(w.shape) for w in layer.weights]
    if len(targets) != len(source_values):
        raise ValueError(
            f"Source layer {source_name!r} has {len(source_values)} weights, backbone layer "
            f"{layer.name!r} has {len(targets)}."
        )
    fitted = []
    for target, value in zip(targets, source_values):
        if value.ndim == 2 and len(target) == 4 and value.shape == (
            target[0] * target[1] * target[2],
            target[3],
        ):
            value = value.reshape(target)  # dense (flattened k x k x C patch) -> k x k conv
        if tuple(value.shape) != target:
            raise ValueError(
                f"Shape mismatch: source layer {source_name!r} weight {value.shape} vs backbone "
                f"layer {layer.name!r} weight {target}."
            )
        fitted.append(value)
    return fitted


# --------------------------------------------------------------------------------------------
# DeepLab-v2 ResNet-101 (Caffe names)
# --------------------------------------------------------------------------------------------


def deeplab_layer_names(backbone, block_naming="auto"):
    """Maps each ResNetOS8 conv layer to its Caffe/DeepLab conv, batch-norm and scale names.

    Stage s (2..5), block b (1-based) is `res{s}{suffix}` with suffix "a" for b = 1 and then
    "b", "c", ... ("letters") or "b1", "b2", ... ("numbered", as ResNet-101/152: res3b3,
    res4b22). "auto" numbers the stages with more than 3 blocks. Branch 1 is the projection
    shortcut (keras `_0_conv`), branch 2a/2b/2c the 1x1, 3x3, 1x1 convs (`_1_`, `_2_`, `_3_`).

    Returns:
        dict keras conv layer name -> (conv name, bn name, scale name), e.g.
        "conv4_block23_3_conv" -> ("res4b22_branch2c", "bn4b22_branch2c", "scale4b22_branch2c").
        The stem is "conv1_conv" -> ("conv1", "bn_conv1", "scale_conv1").
    """
    if block_naming not in ("auto", "letters", "numbered"):
        raise ValueError(f"block_naming must be auto, letters or numbered, got {block_naming!r}.")
    names = {"conv1_conv": ("conv1", "bn_conv1", "scale_conv1")}
    branches = {0: "1", 1: "2a", 2: "2b", 3: "2c"}
    for index, depth in enumerate(backbone.depths):
        stage = index + 2
        numbered = block_naming == "numbered" or (block_naming == "auto" and depth > 3)
        for block in range(1, depth + 1):
            suffix = _block_suffix(block, numbered)
            for keras_index, branch in branches.items():
                if keras_index == 0 and block > 1:
                    continue
                tail = f"{stage}{suffix}_branch{branch}"
                names[f"conv{stage}_block{block}_{keras_index}_conv"] = (
                    f"res{tail}",
                    f"bn{tail}",
                    f"scale{tail}",
                )
    return names


def _block_suffix(block, numbered):
    if block == 1:
        return "a"
    if numbered:
        return f"b{block - 1}"
    if block > 26:
        raise ValueError("Letter block names stop at 26 blocks; use block_naming='numbered'.")
    return chr(ord("a") + block - 1)


def load_deeplab_resnet_weights(
    backbone, path, *, kernel_layout="OIHW", block_naming="auto", allow_extra_keys=False
):
    """Loads DeepLab-v2 (Caffe) ResNet-101 weights from an `.npz` or `.h5` file of named arrays.

    Expected keys (`{conv}`, `{bn}`, `{scale}` from `deeplab_layer_names`, e.g. "res2a_branch2a",
    "bn2a_branch2a", "scale2a_branch2a", "res4b22_branch2c", stem "conv1" / "bn_conv1" /
    "scale_conv1"; in `.h5` files the "/" is the group separator):
        `{conv}/weights`: kernel, `(out, in, kh, kw)` for kernel_layout "OIHW" (Caffe, default)
            or `(kh, kw, in, out)` for "HWIO" (TensorFlow conversions); converted to HWIO.
        `{conv}/biases` (optional): `(out,)`; DeepLab convs have no bias, so absent -> zeros.
        `{bn}/mean`, `{bn}/variance`: `(C,)` moving statistics.
        `{bn}/factor` (optional): Caffe BatchNorm's third blob (moving-average factor, shape
            `(1,)` or `()`); when present mean and variance are divided by it (0 -> zeros).
        gamma and beta, `(C,)`: either `{scale}/weights` and `{scale}/biases` (Caffe Scale
            layer) or `{bn}/scale` and `{bn}/offset` (caffe-tensorflow, scale fused into BN).
        `fc1000/weights` (optional): `(1000, 2048)` or `(1000, 2048, 1, 1)` ImageNet classifier
            (any kernel_layout handles both), with `fc1000/biases` `(1000,)`. DeepLab
            segmentation files have none: `fc1000` then keeps its weights (logged).

    Args:
        backbone: a `ResNetOS8` (any depths/widths; the file must match them).
        path: `.npz`, `.h5` or `.hdf5` file.
        kernel_layout: "OIHW" or "HWIO", the layout of the `/weights` arrays.
        block_naming: see `deeplab_layer_names`.
        allow_extra_keys: ignore keys the backbone does not use (e.g. DeepLab's ASPP
            `fc1_voc12_c0..3`) instead of raising.

    Returns:
        list of the backbone layer names that received weights.

    Raises:
        ValueError: naming the file and the missing, unexpected or mis-shaped key.
    """
    if not isinstance(backbone, ResNetOS8):
        raise TypeError(f"load_deeplab_resnet_weights needs a ResNetOS8, got {type(backbone)}.")
    if kernel_layout not in ("OIHW", "HWIO"):
        raise ValueError(f"kernel_layout must be 'OIHW' or 'HWIO', got {kernel_layout!r}.")
    arrays = read_named_arrays(path)
    reader = _KeyReader(arrays, path)
    planned = []
    for conv_name, (caffe_conv, caffe_bn, caffe_scale) in deeplab_layer_names(
        backbone, block_naming
    ).items():
        conv = backbone.get_layer(conv_name)
        bn = backbone.get_layer(conv_name[: -len("conv")] + "bn")
        planned.append((conv, _deeplab_conv_values(reader, conv, caffe_conv, kernel_layout)))
        planned.append((bn, _deeplab_bn_values(reader, bn, caffe_bn, caffe_scale)))
    if reader.has("fc1000/weights"):
        planned.append((backbone.get_layer("fc1000"), _deeplab_fc_values(reader, backbone)))
    else:
        logger.warning("%s has no fc1000/weights: fc1000 keeps its current weights.", path)
    unused = reader.unused()
    if unused and not allow_extra_keys:
        raise ValueError(
            f"{path}: {len(unused)} key(s) not used by {backbone.name!r}: {unused[:10]} "
            "(pass allow_extra_keys=True to ignore them)."
        )
    for layer, values in planned:
        layer.set_weights(values)
    logger.info("Loaded %d layers of %s from %s.", len(planned), backbone.name, path)
    return [layer.name for layer, _ in planned]


def read_named_arrays(path):
    """Reads `{key: np.ndarray}` from an `.npz` or an `.h5`/`.hdf5` file (dataset paths as keys)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file not found: {path}")
    extension = os.path.splitext(path)[1].lower()
    if extension == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {key: np.asarray(archive[key]) for key in archive.files}
    if extension in (".h5", ".hdf5"):
        import h5py  # Keras depends on h5py; imported here as only this format needs it.

        arrays = {}

        def collect(name, item):
            if isinstance(item, h5py.Dataset):
                arrays[name] = np.asarray(item[()])

        with h5py.File(path, "r") as handle:
            handle.visititems(collect)
        return arrays
    raise ValueError(f"{path}: unsupported weights file type {extension!r}; use .npz or .h5.")


class _KeyReader:
    """Looks up arrays by key, records which were used, names file and key in errors."""

    def __init__(self, arrays, path):
        self.arrays = arrays
        self.path = os.fspath(path)
        self.used = set()

    def has(self, key):
        return key in self.arrays

    def get(self, key, shapes, layer_name):
        """Returns `arrays[key]` as float32 after checking its shape is one of `shapes`."""
        if key not in self.arrays:
            raise ValueError(f"{self.path}: missing key {key!r} (for layer {layer_name!r}).")
        value = np.asarray(self.arrays[key], dtype=np.float32)
        if tuple(value.shape) not in shapes:
            expected = " or ".join(str(shape) for shape in shapes)
            raise ValueError(
                f"{self.path}: key {key!r} has shape {value.shape}, expected {expected} "
                f"(for layer {layer_name!r})."
            )
        self.used.add(key)
        return value

    def get_first(self, keys, shapes, layer_name):
        """Returns the first present key among `keys` (aliases for the same quantity)."""
        for key in keys:
            if key in self.arrays:
                return self.get(key, shapes, layer_name)
        raise ValueError(
            f"{self.path}: missing key {keys[0]!r} (or {keys[1:]}) for layer {layer_name!r}."
        )

    def unused(self):
        return sorted(set(self.arrays) - self.used)


def _deeplab_conv_values(reader, conv, caffe_name, kernel_layout):
    kh, kw, cin, cout = (int(d) for d in conv.kernel.shape)
    if kernel_layout == "OIHW":
        kernel = reader.get(f"{caffe_name}/weights", [(cout, cin, kh, kw)], conv.name)
        kernel = kernel.transpose(2, 3, 1, 0)
    else:
        kernel = reader.get(f"{caffe_name}/weights", [(kh, kw, cin, cout)], conv.name)
    bias = np.zeros((cout,), np.float32)
    if reader.has(f"{caffe_name}/biases"):
        bias = reader.get(f"{caffe_name}/biases", [(cout,)], conv.name)
    return [kernel, bias]


def _deeplab_bn_values(reader, bn, caffe_bn, caffe_scale):
    channels = (int(bn.gamma.shape[0]),)
    mean = reader.get(f"{caffe_bn}/mean", [channels], bn.name)
    variance = reader.get(f"{caffe_bn}/variance", [channels], bn.name)
    if reader.has(f"{caffe_bn}/factor"):
        factor = float(reader.get(f"{caffe_bn}/factor", [(1,), ()], bn.name).reshape(()))
        normaliser = 0.0 if factor == 0.0 else 1.0 / factor
        mean, variance = mean * normaliser, variance * normaliser
    gamma_keys = (f"{caffe_scale}/weights", f"{caffe_bn}/scale")
    beta_keys = (f"{caffe_scale}/biases", f"{caffe_bn}/offset")
    gamma = reader.get_first(gamma_keys, [channels], bn.name)
    beta = reader.get_first(beta_keys, [channels], bn.name)
    return [gamma, beta, mean, variance]


def _deeplab_fc_values(reader, backbone):
    layer = backbone.get_layer("fc1000")
    _, _, cin, cout = (int(d) for d in layer.kernel.shape)
    kernel = reader.get("fc1000/weights", [(cout, cin), (cout, cin, 1, 1)], layer.name)
    bias = reader.get("fc1000/biases", [(cout,)], layer.name)
    return [kernel.reshape(cout, cin).T.reshape(1, 1, cin, cout), bias]


# --------------------------------------------------------------------------------------------
# darknet .weights
# --------------------------------------------------------------------------------------------


def load_darknet_weights(backbone, path):
    """Loads the backbone part of a darknet `.weights` file (darknet53.conv.74, yolov3.weights).

    Format (little endian): header int32 major, minor, revision, then `seen` as int64 when
    `major * 10 + minor >= 2` (int32 before); then, for every convolutional layer in cfg order,
    with batch norm: beta (= bias), gamma, mean, variance (float32 x filters each) followed by
    the kernel float32 `(filters, in, kh, kw)`. Darknet53's 52 convolutions all have batch norm;
    with `neck=True` the 6 BN convolutions that follow them in a yolov3 file (cfg layers 75-80)
    are read too. Reading stops there, so the detection layers are left unread (logged).

    Args:
        backbone: a `Darknet53` (its `darknet_layer_order` gives the file order).
        path: the `.weights` file. A Darknet53 with a neck needs a full yolov3 file:
            darknet53.conv.74 stops after the 52 backbone convolutions.

    Returns:
        list of the backbone layer names (convs and batch norms) that received weights.

    Raises:
        ValueError: the file ends early (names the file, darknet layer index, Keras layer and
            field) or has a bad header.
    """
    if not isinstance(backbone, Darknet53):
        raise TypeError(f"load_darknet_weights needs a Darknet53, got {type(backbone)}.")
    path = os.fspath(path)
    with open(path, "rb") as handle:
        stream = _DarknetStream(handle.read(), path)
    major, minor, revision = (int(v) for v in stream.take("<i4", 3, "header", -1))
    seen_type = "<i8" if major * 10 + minor >= 2 else "<i4"
    seen = int(stream.take(seen_type, 1, "header (seen)", -1)[0])
    logger.info("%s: darknet %d.%d.%d, %d images seen.", path, major, minor, revision, seen)

    planned = []
    for index, conv_name in enumerate(backbone.darknet_layer_order):
        conv = backbone.get_layer(conv_name)
        bn = backbone.get_layer(conv_name[: -len("conv")] + "bn")
        kh, kw, cin, cout = (int(d) for d in conv.kernel.shape)
        if conv_name.startswith("neck") and stream.remaining == 0:
            raise ValueError(
                f"{path}: the file ends after the {index} backbone convolutions, but "
                f"{backbone.name!r} has the YOLOv3 neck ({conv_name!r}): use a full yolov3 "
                "`.weights` file, or build the backbone with neck=False."
            )
        beta, gamma, mean, variance = (
            stream.take("<f4", cout, f"{conv_name} batch-norm {field}", index)
            for field in ("beta", "gamma", "mean", "variance")
        )
        kernel = stream.take("<f4", cout * cin * kh * kw, f"{conv_name} kernel", index)
        kernel = kernel.reshape(cout, cin, kh, kw).transpose(2, 3, 1, 0)
        planned.append((conv, [kernel]))
        planned.append((bn, [gamma, beta, mean, variance]))
    for layer, values in planned:
        layer.set_weights(values)
    if stream.remaining:
        logger.info(
            "%s: stopped after the backbone's %d conv layers; %d bytes of later layers unread.",
            path,
            len(backbone.darknet_layer_order),
            stream.remaining,
        )
    return [layer.name for layer, _ in planned]


# --------------------------------------------------------------------------------------------
# MCN's Keras (2.x) .h5 Darknet-53
# --------------------------------------------------------------------------------------------

# Weight names of Keras 2 BatchNormalization layers, in `set_weights` order of Keras 3.
_KERAS_BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def load_keras_darknet_weights(backbone, path, *, skip_convs=0):
    """Loads Darknet-53 (and neck) weights from a Keras 2 `.h5` file, as MCN distributes them.

    MCN (luogen1996/MCN, Keras 2.2.4) builds Darknet-53 with the layers of the keras-yolo3
    conversion: `Conv2D` (no bias) + `BatchNormalization` + `LeakyReLU` per darknet conv, and
    saves with `model.save` / `save_weights` (HDF5). In that format the root group (or its
    `model_weights` group, for `model.save`) lists the layers in `attrs["layer_names"]` in model
    order; each layer group lists its arrays in `attrs["weight_names"]`
    (`"conv2d_5/kernel:0"`, `"batch_normalization_5/gamma:0"`, ...) stored at
    `<layer>/<weight name>`. Kernels are already `(kh, kw, in, out)`.

    Layer names depend on how many layers the Keras session had created, so the layers are
    matched by order, not name: the k-th conv layer with a 4-D kernel (after `skip_convs`) goes
    to `darknet_layer_order[k]`, the k-th batch-norm layer to its batch norm. Every shape is
    checked before anything is assigned; layers after the last needed one (MCN's heads) are
    ignored (logged).

    Args:
        backbone: a `Darknet53` (with `neck=True` for MCN's 58-conv `darknet_body`).
        path: the `.h5` / `.hdf5` file.
        skip_convs: conv (and batch-norm) layers to pass over first (0 for MCN's files).

    Returns:
        list of the backbone layer names (convs and batch norms) that received weights.

    Raises:
        ValueError: naming the file and the Keras layer that is missing or mis-shaped.
    """
    if not isinstance(backbone, Darknet53):
        raise TypeError(f"load_keras_darknet_weights needs a Darknet53, got {type(backbone)}.")
    path = os.fspath(path)
    convs, norms = _keras_conv_and_bn_layers(path)
    needed = len(backbone.darknet_layer_order)
    convs, norms = convs[int(skip_convs):], norms[int(skip_convs):]
    if len(convs) < needed or len(norms) < needed:
        raise ValueError(
            f"{path}: {len(convs)} conv and {len(norms)} batch-norm layers (after skipping "
            f"{skip_convs}), but {backbone.name!r} needs {needed} of each."
        )
    planned = []
    for index, conv_name in enumerate(backbone.darknet_layer_order):
        conv = backbone.get_layer(conv_name)
        bn = backbone.get_layer(conv_name[: -len("conv")] + "bn")
        source_conv, arrays = convs[index]
        kernel = arrays["kernel"]
        if tuple(kernel.shape) != tuple(conv.kernel.shape):
            raise ValueError(
                f"{path}: layer {source_conv!r} kernel has shape {kernel.shape}, backbone layer "
                f"{conv_name!r} (darknet conv {index}) needs {tuple(conv.kernel.shape)}."
            )
        source_bn, bn_arrays = norms[index]
        values = []
        for weight in _KERAS_BN_WEIGHTS:
            if weight not in bn_arrays:
                raise ValueError(f"{path}: layer {source_bn!r} has no {weight!r} array.")
            value = bn_arrays[weight]
            if tuple(value.shape) != (int(conv.kernel.shape[-1]),):
                raise ValueError(
                    f"{path}: layer {source_bn!r} {weight} has shape {value.shape}, backbone "
                    f"layer {bn.name!r} needs ({int(conv.kernel.shape[-1])},)."
                )
            values.append(value)
        planned.append((conv, [kernel]))
        planned.append((bn, values))
    for layer, values in planned:
        layer.set_weights(values)
    if len(convs) > needed:
        logger.info("%s: %d later conv layers not used.", path, len(convs) - needed)
    return [layer.name for layer, _ in planned]


def _keras_conv_and_bn_layers(path):
    """[(layer name, {short weight name: array})] of conv and batch-norm layers, in file order."""
    import h5py

    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file not found: {path}")
    convs, norms = [], []
    with h5py.File(path, "r") as handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in root.attrs:
            raise ValueError(
                f"{path}: not a Keras 2 HDF5 weights file (no `layer_names` attribute)."
            )
        for layer_name in _as_strings(root.attrs["layer_names"]):
            group = root[layer_name]
            arrays = {}
            for weight_name in _as_strings(group.attrs.get("weight_names", [])):
                short = weight_name.split("/")[-1].split(":")[0]
                arrays[short] = np.asarray(group[weight_name][()], np.float32)
            if "kernel" in arrays and arrays["kernel"].ndim == 4:
                convs.append((layer_name, arrays))
            elif "moving_variance" in arrays:
                norms.append((layer_name, arrays))
    return convs, norms


def _as_strings(values):
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class _DarknetStream:
    """Sequential reader over the bytes of a darknet file with errors naming the layer."""

    def __init__(self, data, path):
        self.data = data
        self.path = path
        self.offset = 0

    @property
    def remaining(self):
        return len(self.data) - self.offset

    def take(self, dtype, count, what, layer_index):
        dtype = np.dtype(dtype)
        size = dtype.itemsize * count
        if size > self.remaining:
            where = "the header" if layer_index < 0 else f"darknet conv layer {layer_index}"
            raise ValueError(
                f"{self.path}: truncated darknet weights file: {where} ({what}) needs {size} "
                f"bytes at offset {self.offset}, only {self.remaining} left."
            )
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += size
        return values.astype(np.float32 if dtype.kind == "f" else dtype.newbyteorder("="))

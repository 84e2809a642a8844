"""Shape-agnostic spatial helpers: coordinates, L2 normalisation, tiling and resizing.

Every layer here reads the spatial size of its inputs at run time (`keras.ops.shape`), so the
same model serves any image size, a dynamic batch and an exported signature with unknown sizes.
"""

import keras
from keras import ops

SPATIAL_CHANNELS = 8


def _is_static(size):
    return all(isinstance(value, int) for value in size)


def _bilinear_indices(out_size, in_size, half_pixel_centers=True):
    """Source indices and weights of a bilinear resize along one axis.

    `half_pixel_centers=True`: source coordinate `(o + 0.5) * in / out - 0.5` (TF2
    `tf.image.resize`); False: `o * in / out` (TF1 `resize_bilinear(align_corners=False)`).
    Both clamp to the edge pixels, as TensorFlow's kernels do.
    """
    in_size_f = ops.cast(in_size, "float32")
    scale = in_size_f / ops.cast(out_size, "float32")
    source = ops.cast(ops.arange(out_size), "float32")
    source = (source + 0.5) * scale - 0.5 if half_pixel_centers else source * scale
    source = ops.clip(source, 0.0, in_size_f - 1.0)
    lower = ops.floor(source)
    upper = ops.minimum(lower + 1.0, in_size_f - 1.0)
    fraction = source - lower
    return ops.cast(lower, "int32"), ops.cast(upper, "int32"), fraction


def _gather_bilinear(images, size, half_pixel_centers=True):
    """Bilinear resize written with `take`: sizes known only at run time, and TF1 sampling."""
    in_shape = ops.shape(images)
    top, bottom, y_fraction = _bilinear_indices(size[0], in_shape[1], half_pixel_centers)
    left, right, x_fraction = _bilinear_indices(size[1], in_shape[2], half_pixel_centers)
    y_fraction = ops.reshape(y_fraction, (1, -1, 1, 1))
    x_fraction = ops.reshape(x_fraction, (1, 1, -1, 1))
    rows = ops.take(images, top, axis=1) * (1.0 - y_fraction)
    rows = rows + ops.take(images, bottom, axis=1) * y_fraction
    return ops.take(rows, left, axis=2) * (1.0 - x_fraction) + ops.take(
        rows, right, axis=2
    ) * x_fraction


def resize_bilinear(images, size, half_pixel_centers=True):
    """Resizes `[B, h, w, C]` maps to `size = (H, W)` bilinearly, in one of two pixel grids.

    `half_pixel_centers=True` (default): pixel centres aligned, output pixel o samples input
    coordinate `(o + 0.5) * h / H - 0.5` — TF2 `tf.image.resize` / `keras.ops.image.resize`
    (no antialiasing), skimage's `resize`; a logit cell covers the s x s block of pixels it
    was pooled from. `half_pixel_centers=False`: TF1 `tf.image.resize_bilinear` with its
    defaults (align_corners=False, half_pixel_centers=False), coordinate `o * h / H`: cell i
    sits on pixel `s * i`, a shift of (s - 1) / 2 pixels at stride s. The RMI and RRN code
    upsample with the latter in their losses and at test time (liruiyu/referseg_rrn
    `LSTM_model_convlstm_p543.py`, `self.up`; chenxi116/TF-phrasecut-public `main.py`), and
    `refseg_tf.scoring`'s "upsample_logits" rule uses it.

    The computation runs in float32 and returns float32. Static sizes with half-pixel centres
    use `keras.ops.image.resize`; TF1 sampling and sizes that are tensors (unknown until run
    time) use an equivalent gather-based formula, so exported models with unknown image sizes
    still work.

    Args:
        images: `[B, h, w, C]` tensor.
        size: `(H, W)`, Python ints or scalar integer tensors.
        half_pixel_centers: the pixel grid (above).

    Returns:
        float32 `[B, H, W, C]`.
    """
    images = ops.cast(images, "float32")
    size = tuple(size)
    if _is_static(size) and tuple(images.shape[1:3]) == size:
        return images
    if half_pixel_centers and _is_static(size):
        return ops.image.resize(images, size, interpolation="bilinear")
    return _gather_bilinear(images, size, half_pixel_centers)


def spatial_size(tensor):
    """`(height, width)` of a `[B, H, W, C]` tensor: ints where static, tensors otherwise."""
    shape = ops.shape(tensor)
    return shape[1], shape[2]


@keras.saving.register_keras_serializable(package="refseg_tf")
class SpatialCoordinates(keras.layers.Layer):
    """The 8-D spatial map of the LSTM-CNN family, one vector per feature-map cell.

    For a `h x w` feature map, cell `(i, j)` gets
    `[x_min, y_min, x_max, y_max, x_center, y_center, 1/w, 1/h]` with the cell's borders in
    normalised coordinates where the map spans [-1, 1] (top-left corner = (-1, -1)).
    The size is read from the input at run time and the map is broadcast over the batch.

    The channel order is the one of the authors' public code (`generate_spatial_batch` of Hu et
    al.), which RMI and RRN reuse; the papers only describe the content.

    Call args:
        features: `[B, h, w, C]` feature map (only its shape is used).

    Returns:
        `[B, h, w, 8]` in the layer's compute dtype.

    Example:
        >>> SpatialCoordinates()(keras.ops.zeros((2, 4, 4, 16))).shape
        (2, 4, 4, 8)

    Reference:
        Hu et al. 2016, Sec. 3.1 (relative x, y coordinates); Liu et al. 2017 (RMI), Sec. 3.2
        (the 8-D form: 3 values for x, 3 for y, 1/W' and 1/H').
    """

    def call(self, features):
        shape = ops.shape(features)
        batch, height, width = shape[0], shape[1], shape[2]
        x_min, x_max, x_center = self._cell_borders(width)
        y_min, y_max, y_center = self._cell_borders(height)
        grid_shape = (height, width)

        def along_x(values):
            return ops.broadcast_to(ops.reshape(values, (1, -1)), grid_shape)

        def along_y(values):
            return ops.broadcast_to(ops.reshape(values, (-1, 1)), grid_shape)

        inverse_width = ops.ones(grid_shape, "float32") / ops.cast(width, "float32")
        inverse_height = ops.ones(grid_shape, "float32") / ops.cast(height, "float32")
        grid = ops.stack(
            [
                along_x(x_min),
                along_y(y_min),
                along_x(x_max),
                along_y(y_max),
                along_x(x_center),
                along_y(y_center),
                inverse_width,
                inverse_height,
            ],
            axis=-1,
        )
        grid = ops.broadcast_to(ops.expand_dims(grid, 0), (batch, height, width, SPATIAL_CHANNELS))
        return ops.cast(grid, self.compute_dtype)

    @staticmethod
    def _cell_borders(count):
        index = ops.cast(ops.arange(count), "float32")
        count_f = ops.cast(count, "float32")
        low = index / count_f * 2.0 - 1.0
        high = (index + 1.0) / count_f * 2.0 - 1.0
        return low, high, (low + high) / 2.0

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (SPATIAL_CHANNELS,)


class Float32Layer(keras.layers.Layer):
    """Base of the shape-preserving layers computed in float32 with one `epsilon` setting.

    `call` casts the input to float32, applies the subclass's `compute(values)` and casts the
    result back to the compute dtype, so a mixed-precision model keeps the numerics of these
    normalisations and transforms (float16 sums of squares overflow, logs of 1 +- h lose all
    precision). Used by `L2Normalize`, RMI's `ClippedArctanh` and RRN's
    `SampleLayerNormalization`.

    Args:
        epsilon: the subclass's floor (a variance, a squared norm, a margin).
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, epsilon, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        return ops.cast(self.compute(ops.cast(inputs, "float32")), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class L2Normalize(Float32Layer):
    """Scales vectors along `axis` to unit L2 norm (`x / sqrt(max(sum(x^2), epsilon))`).

    The norm is computed in float32 even under a mixed-precision policy (a sum of 1000
    squared float16 values overflows easily); the result is cast back to the compute dtype.

    Args:
        axis: axis holding the vectors (default: channels, -1).
        epsilon: lower bound of the squared norm; an all-zero vector stays zero.

    Call args:
        inputs: any tensor.

    Example:
        >>> L2Normalize()(keras.ops.ones((1, 2, 2, 4)))[0, 0, 0]  # [0.5, 0.5, 0.5, 0.5]

    Reference:
        Hu et al. 2016, Sec. 3.1 and 3.2 (per-location image descriptors and h_T are
        L2-normalised); epsilon 1e-12 as `tf.nn.l2_normalize` in the authors' code.
    """

    def __init__(self, axis=-1, epsilon=1e-12, **kwargs):
        super().__init__(epsilon, **kwargs)
        self.axis = axis

    def compute(self, values):
        squared_norm = ops.sum(ops.square(values), axis=self.axis, keepdims=True)
        return values * ops.rsqrt(ops.maximum(squared_norm, self.epsilon))

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis)
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class TileToSpatial(keras.layers.Layer):
    """Tiles a per-example vector over the spatial grid of a reference feature map.

    Call args:
        vector: `[B, D]`.
        reference: `[B, h, w, C]` whose batch and spatial size the output takes.

    Returns:
        `[B, h, w, D]`.

    Example:
        >>> TileToSpatial()(keras.ops.ones((2, 5)), keras.ops.zeros((2, 3, 4, 1))).shape
        (2, 3, 4, 5)

    Reference:
        Hu et al. 2016, Sec. 3.3 ("we first tile and concatenate h_T to the local descriptor at
        each spatial location").
    """

    def call(self, vector, reference):
        shape = ops.shape(reference)
        depth = ops.shape(vector)[-1]
        tiled = ops.broadcast_to(vector[:, None, None, :], (shape[0], shape[1], shape[2], depth))
        return ops.cast(tiled, self.compute_dtype)

    def compute_output_shape(self, vector_shape, reference_shape):
        return tuple(reference_shape[:3]) + (vector_shape[-1],)


@keras.saving.register_keras_serializable(package="refseg_tf")
class ResizeLike(keras.layers.Layer):
    """Bilinearly resizes a feature map to the spatial size of a reference map.

    Used for pyramid levels of a different resolution (e.g. C1/C2 at stride 4 resized to the
    stride-8 grid of RRN's fused feature). The resize runs in float32 (it avoids an XLA failure
    of bilinear resizes under mixed precision; see tf221-keras3-facts.md), the output is cast to
    the compute dtype. A map that already has the reference size is returned as is.

    Call args:
        inputs: `[B, h, w, C]`.
        reference: `[B, H, W, C']`.

    Returns:
        `[B, H, W, C]`.

    Example:
        >>> ResizeLike()(keras.ops.ones((1, 8, 8, 2)), keras.ops.zeros((1, 4, 4, 1))).shape
        (1, 4, 4, 2)

    Reference:
        Li et al. 2018 (RRN), Sec. 3.2: "we first resize them to match the spatial resolution of
        the fused feature q".
    """

    def call(self, inputs, reference):
        target = spatial_size(reference)
        source = spatial_size(inputs)
        if _is_static(target + source) and target == source:
            return inputs
        return ops.cast(resize_bilinear(inputs, target), self.compute_dtype)

    def compute_output_shape(self, inputs_shape, reference_shape):
        return (inputs_shape[0],) + tuple(reference_shape[1:3]) + (inputs_shape[-1],)

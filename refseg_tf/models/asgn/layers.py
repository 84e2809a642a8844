"""ASGN layers (Qiu et al.): detail enhancement, semantic embedding and the discriminator."""

import keras
import numpy as np
from keras import ops

from refseg_tf.layers.spatial import L2Normalize, resize_bilinear

# REC choices where the paper is silent (SPEC 3.2 / 3.3 / 3.4); each is a constructor argument.
DETAIL_CHANNELS = 128
DISCRIMINATOR_FILTERS = (64, 128, 256, 512, 512)


@keras.saving.register_keras_serializable(package="refseg_tf")
class DetailEnhancement(keras.layers.Layer):
    """DE: backbone features through 1x1 convolutions, resized to the fusion grid, concatenated.

    Each feature of `feature_names` goes through its own `Conv2D(channels, 1)` with
    `activation`, is bilinearly resized to the grid of the visual feature the fusion reads
    (1/8 on ResNetOS8; the fc8 grid on VGG16FCN) and the maps are concatenated.

    The paper says only "three 1x1 convs to reduce the number of channels" (ASGN §III.B.1):
    the 128 channels and the ReLU are REC choices (the RRN lateral convention; 3 x 128 stays
    below the 1000-channel visual feature), both constructor arguments.

    With `normalize=True` each resized map is L2-normalised over its channels (per position),
    as the visual and text features it is concatenated with in the fusion are: a ReLU 1x1
    convolution of raw C3-C5 is O(1) per channel, the normalised features it joins about
    0.03, so unnormalised DE channels outweigh what they join, which the paper's channel
    reduction is meant to avoid (ASGN §III.B.1; the normalisation itself is REC, paper silent).

    Args:
        feature_names: backbone feature names, e.g. `("C3", "C4", "C5")` (conv3+4+5, the best
            set of ASGN Table III); `"C1"`/`"C2"` give conv1/conv2 on ResNet.
        channels: output channels of each 1x1 convolution (REC 128).
        activation: activation of the convolutions (REC "relu").
        normalize: L2-normalise each map over its channels (the ASGN presets and paper
            configs: True; the layer's default False keeps models saved before the option).

    Call args:
        features: the backbone's dict of features.
        reference: the `[B, h, w, C]` map whose grid the output takes.

    Returns:
        `[B, h, w, channels * len(feature_names)]`.

    Example:
        >>> de = DetailEnhancement(("C3", "C4"), channels=4)
        >>> de({"C3": ops.ones((1, 8, 8, 6)), "C4": ops.ones((1, 4, 4, 6))},
        ...    ops.ones((1, 4, 4, 2))).shape
        (1, 4, 4, 8)

    Reference:
        Qiu et al., ASGN, Sec. III.B.1 (detail enhancement), Fig. 2, Table III (layer sets).
    """

    def __init__(
        self, feature_names, channels=DETAIL_CHANNELS, activation="relu", normalize=False, **kwargs
    ):
        super().__init__(**kwargs)
        feature_names = tuple(str(name) for name in feature_names)
        if not feature_names:
            raise ValueError("`feature_names` must name at least one backbone feature; received ().")
        channels = int(channels)
        if channels < 1:
            raise ValueError(f"`channels` must be a positive integer; received {channels}.")
        self.feature_names = feature_names
        self.channels = channels
        self.activation = activation
        self.normalize = bool(normalize)
        self.norm = L2Normalize(name="detail_l2") if self.normalize else None
        self.projections = [
            keras.layers.Conv2D(channels, 1, activation=activation, name=f"detail_{name}")
            for name in feature_names
        ]

    def call(self, features, reference):
        size = tuple(reference.shape[1:3])
        if any(value is None for value in size):
            size = tuple(ops.shape(reference)[1:3])
        maps = []
        for name, projection in zip(self.feature_names, self.projections):
            if name not in features:
                raise ValueError(
                    f"DetailEnhancement feature {name!r} is not a backbone feature; "
                    f"available: {sorted(features)}."
                )
            resized = resize_bilinear(projection(features[name]), size)
            if self.norm is not None:
                resized = self.norm(resized)
            maps.append(ops.cast(resized, self.compute_dtype))
        return ops.concatenate(maps, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            feature_names=list(self.feature_names),
            channels=self.channels,
            activation=self.activation,
            normalize=self.normalize,
        )
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class ProbabilityChannelInitializer(keras.initializers.Initializer):
    """Glorot-uniform kernel whose centre tap on the last input channel is `weight`.

    Args:
        weight: the initial weight of the last input channel (SE's probability map).
        seed: seed of the Glorot part.
    """

    def __init__(self, weight=4.0, seed=None):
        self.weight = float(weight)
        self.seed = seed
        self.glorot = keras.initializers.GlorotUniform(seed=seed)

    def __call__(self, shape, dtype=None):
        kernel = self.glorot(shape, dtype=dtype)
        centre = np.zeros(shape, "float32")
        centre[shape[0] // 2, shape[1] // 2, -1, :] = 1.0
        centre = ops.convert_to_tensor(centre, dtype=kernel.dtype)
        return kernel * (1.0 - centre) + self.weight * centre

    def get_config(self):
        return {"weight": self.weight, "seed": self.seed}


@keras.saving.register_keras_serializable(package="refseg_tf")
class SemanticEmbedding(keras.layers.Layer):
    """SE: `final = Conv([L2(f); sigmoid(base logits)])`, the final logit map.

    The high-level visual feature map `f` (the one the fusion reads: R fc1000, D the 1x1
    projection of res5c) is concatenated with the base prediction's probability map and a
    convolution predicts the final mask logit. The paper gives no kernel size, normalisation
    or auxiliary loss (ASGN §III.B.2): REC a 1x1 kernel on the L2-normalised feature, only the
    final logits supervised (`kernel_size`, `normalize` are arguments). float32 output.

    Args:
        kernel_size: kernel of the prediction convolution (REC 1).
        normalize: L2-normalise `f` over channels first (REC True; the base models pass it
            normalised already, a second normalisation is the identity).
        initial_probability_weight: initial kernel weight `w` on the probability channel,
            bias `-w / 2`, so that the head starts near the base logits (`4 (p - 1/2)` is the
            logit's tangent at p = 1/2; the other taps Glorot-uniform). A library
            choice (REC): with a random start the head learned nothing on the synthetic data.

    Call args:
        semantic: `[B, h, w, C]` visual feature.
        logits: `[B, h, w, 1]` base logits.

    Returns:
        float32 logits `[B, h, w, 1]`.

    Reference:
        Qiu et al., ASGN, Sec. III.B.2 (semantic embedding), Fig. 2 (red connection).
    """

    def __init__(self, kernel_size=1, normalize=True, initial_probability_weight=4.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_probability_weight = float(initial_probability_weight)
        self.kernel_size = int(kernel_size)
        if self.kernel_size < 1:
            raise ValueError(f"`kernel_size` must be a positive integer; received {kernel_size}.")
        self.normalize = bool(normalize)
        self.norm = L2Normalize(name="semantic_l2") if self.normalize else None
        # Start close to the base prediction: logit(p) ~ w (p - 1/2) with w = 4, the logit's
        # tangent at p = 1/2, so the head does not first have to learn to pass p through.
        weight = self.initial_probability_weight
        self.conv = keras.layers.Conv2D(
            1,
            self.kernel_size,
            padding="same",
            kernel_initializer=ProbabilityChannelInitializer(weight),
            bias_initializer=keras.initializers.Constant(-weight / 2),
            dtype="float32",
            name="semantic_score",
        )

    def call(self, semantic, logits):
        if self.norm is not None:
            semantic = self.norm(semantic)
        probability = ops.sigmoid(ops.cast(logits, "float32"))
        stacked = ops.concatenate([ops.cast(semantic, "float32"), probability], axis=-1)
        return self.conv(stacked)

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            normalize=self.normalize,
            initial_probability_weight=self.initial_probability_weight,
        )
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class Discriminator(keras.Model):
    """ASGN's discriminator: a six-layer classifier of (image, mask) pairs at the input size.

    `len(filters)` convolutions (kernel `kernel_size`, stride 2, 'same', LeakyReLU), global
    average pooling and `Dense(1)`: a real/fake logit per pair. The paper gives only "a
    classification network with six layers" (ASGN §III.D, Fig. 2): the layers are a REC
    choice (DCGAN / pix2pix style: 5 convolutions 64-128-256-512-512, 4x4, LeakyReLU 0.2, no
    batch normalisation because the paper's batch is 1, plus the dense layer), each an argument.

    Args:
        filters: channels of the strided convolutions (REC `(64, 128, 256, 512, 512)`).
        kernel_size: their kernel (REC 4).
        negative_slope: LeakyReLU slope (REC 0.2).

    Call args:
        inputs: `[B, S, S, 4]`: the image (3 channels, rescaled by ASGN's
            `discriminator_image_scale` to about [-1, 1]) and a mask in [0, 1] (ground truth
            for a real pair, the upsampled predicted probability for a fake one).
        training: Python bool.

    Returns:
        float32 logits `[B, 1]` (> 0: "real").

    Example:
        >>> discriminator = Discriminator(filters=(4, 8))
        >>> discriminator(ops.zeros((2, 32, 32, 4))).shape
        (2, 1)

    Reference:
        Qiu et al., ASGN, Sec. III.D, Fig. 2 (right); Luc et al. 2016 (ASGN ref. [18]).
    """

    def __init__(self, filters=DISCRIMINATOR_FILTERS, kernel_size=4, negative_slope=0.2, **kwargs):
        super().__init__(**kwargs)
        filters = tuple(int(value) for value in filters)
        if not filters or min(filters) < 1:
            raise ValueError(f"`filters` must be positive integers; received {filters}.")
        self.filters = filters
        self.kernel_size = int(kernel_size)
        self.negative_slope = float(negative_slope)
        self.convs = [
            keras.layers.Conv2D(value, self.kernel_size, strides=2, padding="same", name=f"conv{i + 1}")
            for i, value in enumerate(filters)
        ]
        self.activations = [
            keras.layers.LeakyReLU(self.negative_slope, name=f"leaky{i + 1}")
            for i in range(len(filters))
        ]
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.classifier = keras.layers.Dense(1, dtype="float32", name="classifier")

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        for conv, activation in zip(self.convs, self.activations):
            x = activation(conv(x))
        return self.classifier(self.pool(x))

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=list(self.filters),
            kernel_size=self.kernel_size,
            negative_slope=self.negative_slope,
        )
        return config

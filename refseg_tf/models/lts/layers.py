"""Layers of LTS (Jing et al. 2021): bi-GRU text encoder, fusion, relevance filtering,
transformer localisation and the ASPP segmentation head."""

import math
import warnings

import numpy as np
import keras
from keras import ops

from refseg_tf.layers.text import WordSequenceEncoder
from refseg_tf.layers.upsampling import BilinearUpsamplingInitializer
from refseg_tf.text.vocabulary import UNK_ID  # `<unk>`, id 3 in every vocabulary

FILTER_SOURCES = ("sentence", "words")
UPSAMPLING_MODES = ("mask", "features")


def _check_choice(value, choices, argument):
    if value not in choices:
        raise ValueError(f"`{argument}` must be one of {choices}; received {value!r}.")
    return value


def _check_positive(value, argument):
    value = int(value)
    if value <= 0:
        raise ValueError(f"`{argument}` must be a positive integer; received {value}.")
    return value


@keras.saving.register_keras_serializable(package="refseg_tf")
class ConvBNLeaky(keras.layers.Layer):
    """Darknet unit: convolution without bias, batch normalisation, LeakyReLU(0.1).

    MCN writes every learned projection this way (`DarknetConv2D_BN_Leaky`); LTS's W matrices of
    Eq. 5-7 and the ASPP branches follow it (REC, SPEC 2.4 / 2.6).

    Args:
        filters: output channels.
        kernel_size: square kernel size.
        dilation_rate: dilation (ASPP branches).
        leaky_alpha: negative slope (0.1 in darknet / MCN).

    Call args:
        inputs: `[B, H, W, C]`.
        training: Python bool (batch normalisation mode).

    Returns:
        `[B, H, W, filters]`.
    """

    def __init__(self, filters, kernel_size=1, dilation_rate=1, leaky_alpha=0.1, **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_positive(filters, "filters")
        self.kernel_size = _check_positive(kernel_size, "kernel_size")
        self.dilation_rate = _check_positive(dilation_rate, "dilation_rate")
        self.leaky_alpha = float(leaky_alpha)
        self.conv = keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            padding="same",
            dilation_rate=self.dilation_rate,
            use_bias=False,
            dtype=self.dtype_policy, name="conv",
        )
        self.norm = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="bn")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.norm.build(tuple(input_shape[:-1]) + (self.filters,))
        self.built = True

    def call(self, inputs, training=None):
        x = self.norm(self.conv(inputs), training=training)
        return ops.leaky_relu(x, negative_slope=self.leaky_alpha)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            dilation_rate=self.dilation_rate,
            leaky_alpha=self.leaky_alpha,
        )
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class GRUTextEncoder(WordSequenceEncoder):
    """Word embedding + bi-GRU; the sentence feature is the masked mean of the word states.

    `h_t = concat(forward_t, backward_t)` (Eq. 4) for every real word and
    `f_text = sum_t m_t h_t / max(sum_t m_t, 1)` (Eq. 3, m = the sentence length). `<pad>` (id 0)
    steps are masked. With back padding (LTS/MCN: words first, pads after) the mask is
    right-padded, which is the only layout the cuDNN kernel accepts; `use_cudnn="auto"` lets
    Keras take it on a GPU. A row of pads only would fail there (Keras asserts on a fully
    masked row): such rows are refused upstream (the converters skip empty sentences and
    `refseg_tf.inference.Predictor` rejects empty strings) and, as a last guard, the encoder
    reads them as a single `<unk>`.

    Args:
        vocabulary_size: number of word ids.
        embedding_dim: 300 (GloVe-300, LTS Sec. 3.1); the embedding is trainable ("initialized"
            from GloVe, REC; MCN kept its spaCy vectors fixed: pass `trainable_embeddings=False`).
            Load the vectors with `set_embeddings(refseg_tf.text.glove.load_glove_embeddings(...))`.
        units: GRU units per direction (1024, REC: MCN's `rnn_hidden_size` is per direction), so
            the word and sentence features have `2 * units` channels.
        dropout: GRU input dropout (0.1 in MCN's code, `rnn_drop_out`).
        trainable_embeddings: whether the embedding matrix trains.
        use_cudnn: passed to `keras.layers.GRU` ("auto", True, False). Use False for front
            padding (the cuDNN path needs right-padded masks).

    Call args:
        word_ids: `[B, T]` integer ids, back padded with `<pad>` = 0.
        training: Python bool.

    Returns:
        A dict: `words` float `[B, T, 2 units]` (zero at pads), `sentence` `[B, 2 units]`,
        `mask` bool `[B, T]` (True at real words).

    Reference:
        Jing et al. 2021 (LTS), Sec. 3.1 Eq. 1-4 and Sec. 4.1 ("a 1024 dimensional bi-GRU");
        MCN `model/language_backbone.py` (GRU dropout 0.1).
    """

    # <pad>, <go>, <eos> and <unk> (an all-pad row is read as one <unk>).
    min_vocabulary_size = UNK_ID + 1
    recurrent_attribute = "bigru"

    def __init__(
        self,
        vocabulary_size,
        embedding_dim=300,
        units=1024,
        *,
        dropout=0.1,
        trainable_embeddings=True,
        use_cudnn="auto",
        **kwargs,
    ):
        super().__init__(vocabulary_size, embedding_dim, units, **kwargs)
        self.dropout = float(dropout)
        self.trainable_embeddings = bool(trainable_embeddings)
        self.use_cudnn = use_cudnn
        self.embedding = keras.layers.Embedding(
            self.vocabulary_size,
            self.embedding_dim,
            trainable=self.trainable_embeddings,
            dtype=self.dtype_policy, name="embedding",
        )
        self.bigru = keras.layers.Bidirectional(
            keras.layers.GRU(
                self.units,
                return_sequences=True,
                dropout=self.dropout,
                use_cudnn=use_cudnn,
                dtype=self.dtype_policy,
            ),
            merge_mode="concat",
            dtype=self.dtype_policy,
            name="bigru",
        )

    def set_embeddings(self, matrix):
        """Replaces the embedding matrix (e.g. GloVe vectors `[vocabulary_size, embedding_dim]`)."""
        matrix = np.asarray(matrix, np.float32)
        expected = (self.vocabulary_size, self.embedding_dim)
        if matrix.shape != expected:
            raise ValueError(f"`matrix` must have shape {expected}; received {matrix.shape}.")
        self.embedding.embeddings.assign(matrix)

    def call(self, word_ids, training=None):
        word_ids, mask = self.word_mask(word_ids)
        empty = ops.logical_not(ops.any(mask, axis=1, keepdims=True))
        first_step = ops.expand_dims(ops.arange(ops.shape(word_ids)[1]) == 0, 0)
        guard = ops.logical_and(empty, first_step)  # all-pad row -> one <unk>
        word_ids = ops.where(guard, UNK_ID, word_ids)
        mask = ops.logical_or(mask, guard)
        embedded = self.embedding(word_ids)
        words = self.bigru(embedded, mask=mask, training=training)
        weights = ops.cast(mask, words.dtype)[..., None]
        words = words * weights
        count = ops.maximum(ops.sum(weights, axis=1), 1.0)
        return {"words": words, "sentence": ops.sum(words, axis=1) / count, "mask": mask}

    def compute_output_shape(self, word_ids_shape):
        batch, steps = word_ids_shape[0], word_ids_shape[1]
        return {
            "words": (batch, steps, 2 * self.units),
            "sentence": (batch, 2 * self.units),
            "mask": (batch, steps),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            dropout=self.dropout,
            trainable_embeddings=self.trainable_embeddings,
            use_cudnn=self.use_cudnn,
        )
        return config


def upsample_nearest(x, factor=2):
    """Nearest-neighbour upsampling by an integer factor (`keras.layers.UpSampling2D` as MCN)."""
    return ops.repeat(ops.repeat(x, factor, axis=1), factor, axis=2)


@keras.saving.register_keras_serializable(package="refseg_tf")
class LTSFusion(keras.layers.Layer):
    """Multi-level visual-text fusion of LTS (Eq. 5-7) from stride 32 down to stride 8.

    `F_m1 = g(F_v1 W_v1) * g(f_text W_t)` (Eq. 5, element-wise product broadcast over the
    cells; no extra normalisation after it, Eq. 5 literal), then for i = 2, 3:
    `F_mi = concat(g(Up2(F_m(i-1)) W_m(i-1)), g(F_vi W_vi))` (Eq. 6-7). Every W is a 1x1
    convolution + BN + LeakyReLU(0.1) (`ConvBNLeaky`, REC), `W_t` a Dense + BN + LeakyReLU;
    Up2 is nearest-neighbour (as MCN's `UpSampling2D`).

    Args:
        channels: F_m1 channels (1024, REC = MCN's `jemb_dim`).
        branch_channels: channels of each Eq. 7 branch (512, REC: so F_m2 = F_m3 = 1024, the
            filtering dimension d_k of Sec. 4.1).
        text_fusion: False drops the text factor of Eq. 5 (Table 2 rows without "Fusion":
            `F_m1 = g(F_v1 W_v1)`, the text enters only through the localisation kernel).

    Call args:
        features: list `[F_v1 [B, h, w, C1], F_v2 [B, 2h, 2w, C2], F_v3 [B, 4h, 4w, C3]]`.
        sentence: `[B, D]` f_text (ignored when `text_fusion=False`).
        training: Python bool.

    Returns:
        F_m3 `[B, 4h, 4w, 2 * branch_channels]`.

    Reference:
        Jing et al. 2021 (LTS), Sec. 3.1 Eq. 5-7; SPEC_RMI_LTS_ASGN 2.4 for the sizes.
    """

    def __init__(self, channels=1024, branch_channels=512, text_fusion=True, **kwargs):
        super().__init__(**kwargs)
        self.channels = _check_positive(channels, "channels")
        self.branch_channels = _check_positive(branch_channels, "branch_channels")
        self.text_fusion = bool(text_fusion)
        self.visual1 = ConvBNLeaky(self.channels, dtype=self.dtype_policy, name="w_v1")
        if self.text_fusion:
            self.text_dense = keras.layers.Dense(
                self.channels, use_bias=False, dtype=self.dtype_policy, name="w_t"
            )
            self.text_norm = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="w_t_bn")
        self.up1 = ConvBNLeaky(self.branch_channels, dtype=self.dtype_policy, name="w_m1")
        self.visual2 = ConvBNLeaky(self.branch_channels, dtype=self.dtype_policy, name="w_v2")
        self.up2 = ConvBNLeaky(self.branch_channels, dtype=self.dtype_policy, name="w_m2")
        self.visual3 = ConvBNLeaky(self.branch_channels, dtype=self.dtype_policy, name="w_v3")

    def build(self, features_shape, sentence_shape=None):
        shape1, shape2, shape3 = (tuple(shape) for shape in features_shape)
        self.visual1.build(shape1)
        if self.text_fusion:
            self.text_dense.build(tuple(sentence_shape))
            self.text_norm.build((sentence_shape[0], self.channels))
        self.up1.build(shape2[:-1] + (self.channels,))
        self.visual2.build(shape2)
        self.up2.build(shape3[:-1] + (2 * self.branch_channels,))
        self.visual3.build(shape3)
        self.built = True

    def call(self, features, sentence=None, training=None):
        level1, level2, level3 = features
        fused = self.visual1(level1, training=training)
        if self.text_fusion:
            text = self.text_norm(self.text_dense(sentence), training=training)
            text = ops.leaky_relu(text, negative_slope=0.1)
            fused = fused * ops.cast(text, fused.dtype)[:, None, None, :]
        fused = ops.concatenate(
            [self.up1(upsample_nearest(fused), training=training),
             self.visual2(level2, training=training)],
            axis=-1,
        )
        return ops.concatenate(
            [self.up2(upsample_nearest(fused), training=training),
             self.visual3(level3, training=training)],
            axis=-1,
        )

    def compute_output_shape(self, features_shape, sentence_shape=None):
        return tuple(features_shape[2][:-1]) + (2 * self.branch_channels,)

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=self.channels,
            branch_channels=self.branch_channels,
            text_fusion=self.text_fusion,
        )
        return config


def relevance_heatmaps(features, kernels):
    """Per-sample 1x1 filtering: `H[b, y, x, n] = sum_c F[b, y, x, c] K[b, n, c]` (one einsum).

    Args:
        features: `[B, H, W, C]`.
        kernels: `[B, N, C]` (N kernels per sample).

    Returns:
        float32 `[B, H, W, N]`, computed in float32 (mixed precision safe).
    """
    features = ops.cast(features, "float32")
    kernels = ops.cast(kernels, "float32")
    return ops.einsum("bhwc,bnc->bhwn", features, kernels)


@keras.saving.register_keras_serializable(package="refseg_tf")
class RelevanceFilter(keras.layers.Layer):
    """Language-guided relevance filtering (LTS Eq. 8): a per-sample 1x1 kernel from the text.

    `K = f_text W_k` (linear, no bias, no activation: Eq. 8 literal) is used as a 1x1
    convolution kernel on F_m3, giving the heatmap `H_mask` (logits; sigmoid in Eq. 12).

    - `num_filters = n` (Table 5): n independent kernels `K_i = f_text W_k^(i)` and n heatmaps
      (REC: the paper says only "relevance filtering twice"); each heatmap gets L_loc and all are
      concatenated to F_m3.
    - `source="words"` (Table 5 "WordFilter", "as DMN"): a kernel `K_t = h_t W_k` from every real
      word, the T heatmaps averaged over the real words into one (REC; the combination is not
      given).

    Args:
        num_filters: n (1 in Table 1; 2 is the best of Table 5).
        source: "sentence" (f_text) or "words" (every h_t).

    Call args:
        features: F_m3 `[B, H, W, C]`.
        sentence: f_text `[B, D]`.
        words: `[B, T, D]` word states (source "words").
        word_mask: `[B, T]` bool (source "words").

    Returns:
        float32 heatmap logits `[B, H, W, num_filters]`.

    Reference:
        Jing et al. 2021 (LTS), Sec. 3.2 Eq. 8, Sec. 4.1 (d_k = 1024), Table 5.
    """

    def __init__(self, num_filters=1, source="sentence", **kwargs):
        super().__init__(**kwargs)
        self.num_filters = _check_positive(num_filters, "num_filters")
        self.source = _check_choice(source, FILTER_SOURCES, "source")
        if self.source == "words" and self.num_filters != 1:
            raise ValueError(
                f"`num_filters` must be 1 with source='words'; received {self.num_filters}."
            )

    def build(self, features_shape, sentence_shape=None, words_shape=None, word_mask_shape=None):
        channels = int(features_shape[-1])
        text_dim = int((words_shape if self.source == "words" else sentence_shape)[-1])
        self.channels = channels
        self.kernel = self.add_weight(
            name="w_k",
            shape=(text_dim, self.num_filters * channels),
            initializer="glorot_uniform",
        )
        self.built = True

    def call(self, features, sentence=None, words=None, word_mask=None):
        if self.source == "sentence":
            kernels = ops.matmul(sentence, ops.cast(self.kernel, sentence.dtype))
            kernels = ops.reshape(kernels, (-1, self.num_filters, self.channels))
            return relevance_heatmaps(features, kernels)
        kernels = ops.matmul(words, ops.cast(self.kernel, words.dtype))  # [B, T, C]
        maps = relevance_heatmaps(features, kernels)  # [B, H, W, T]
        weights = ops.cast(word_mask, "float32")[:, None, None, :]
        total = ops.sum(maps * weights, axis=-1, keepdims=True)
        return total / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), 1.0)

    def compute_output_shape(self, features_shape, *args, **kwargs):
        return tuple(features_shape[:-1]) + (self.num_filters,)

    def get_config(self):
        config = super().get_config()
        config.update(num_filters=self.num_filters, source=self.source)
        return config


def sine_position_encoding(height, width, channels, temperature=10000.0):
    """DETR's 2-D sine encoding (`PositionEmbeddingSine`, normalize=True, scale 2 pi).

    `channels / 2` features per axis; the y features come first. Returns float32
    `[height, width, channels]`.
    """
    if channels % 4:
        raise ValueError(f"`channels` must be a multiple of 4; received {channels}.")
    features = channels // 2
    scale = 2.0 * math.pi
    eps = 1e-6
    y = ops.cast(ops.arange(1, height + 1), "float32")
    x = ops.cast(ops.arange(1, width + 1), "float32")
    y = y / (ops.cast(height, "float32") + eps) * scale
    x = x / (ops.cast(width, "float32") + eps) * scale
    exponents = 2.0 * (np.arange(features) // 2) / features
    dim_t = ops.convert_to_tensor((temperature ** exponents).astype(np.float32))

    def axis_encoding(positions):
        angles = positions[:, None] / dim_t[None, :]  # [L, features]
        sines = ops.sin(angles[:, 0::2])
        cosines = ops.cos(angles[:, 1::2])
        interleaved = ops.stack([sines, cosines], axis=-1)  # [L, features/2, 2]
        return ops.reshape(interleaved, (-1, features))

    pos_y = axis_encoding(y)[:, None, :] * ops.ones((1, width, 1))
    pos_x = axis_encoding(x)[None, :, :] * ops.ones((height, 1, 1))
    return ops.concatenate([pos_y, pos_x], axis=-1)


@keras.saving.register_keras_serializable(package="refseg_tf")
class TransformerLocalizer(keras.layers.Layer):
    """LTS-Trans localisation (Eq. 9): a standard transformer decoder over the F_m3 cells.

    The HW/64 cells of F_m3 are the decoder's queries and f_text is the encoder output (memory).
    One post-norm layer as DETR's `TransformerDecoderLayer.forward_post`: self-attention with
    `query = key = x + pos`, `value = x`; cross-attention with `query = x + pos`,
    `key = value = memory`; a ReLU feed-forward block; dropout and LayerNorm after each; then
    DETR's decoder LayerNorm and a Dense(1) to the heatmap logits. `pos` is the fixed 2-D sine
    encoding added to the input of each attention layer.

    Note (faithful, as the paper describes it): the memory is a single token (f_text), so the
    cross-attention softmax is identically 1 and that block adds the same projected text vector
    to every cell; the spatial reasoning comes from the self-attention.

    Args:
        d_model: width of the tokens (1024 = F_m3 channels; REC).
        num_heads: 4 (Sec. 4.1).
        ffn_units: feed-forward width (1024, "1024 hidden units").
        dropout: 0.1 (DETR).
        temperature: of the sine encoding (10000).

    Call args:
        features: F_m3 `[B, H, W, d_model]`.
        sentence: f_text `[B, D]` (any D; the attention projects it).
        training: Python bool.

    Returns:
        float32 heatmap logits `[B, H, W, 1]`.

    Reference:
        Jing et al. 2021 (LTS), Sec. 3.2 Eq. 9 and Sec. 4.1; DETR (facebookresearch/detr
        `models/transformer.py`, `models/position_encoding.py`).
    """

    def __init__(self, d_model=1024, num_heads=4, ffn_units=1024, dropout=0.1,
                 temperature=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.d_model = _check_positive(d_model, "d_model")
        self.num_heads = _check_positive(num_heads, "num_heads")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"`d_model` must be divisible by `num_heads`; received {d_model} and {num_heads}."
            )
        self.ffn_units = _check_positive(ffn_units, "ffn_units")
        self.dropout = float(dropout)
        self.temperature = float(temperature)
        key_dim = self.d_model // self.num_heads
        self.self_attention = keras.layers.MultiHeadAttention(
            self.num_heads, key_dim, dropout=self.dropout, dtype=self.dtype_policy,
            name="self_attention",
        )
        self.cross_attention = keras.layers.MultiHeadAttention(
            self.num_heads, key_dim, dropout=self.dropout, dtype=self.dtype_policy,
            name="cross_attention",
        )
        self.ffn_in = keras.layers.Dense(
            self.ffn_units, activation="relu", dtype=self.dtype_policy, name="ffn_in"
        )
        self.ffn_out = keras.layers.Dense(self.d_model, dtype=self.dtype_policy, name="ffn_out")
        # Sub-layers are attributes, not lists: `tf.train.Checkpoint` does not follow Keras 3's
        # tracked lists, so list-held variables would be missing from training checkpoints.
        self.norm1, self.norm2, self.norm3 = (
            keras.layers.LayerNormalization(epsilon=1e-5, dtype=self.dtype_policy, name=f"norm{i}")
            for i in (1, 2, 3)
        )
        self.decoder_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=self.dtype_policy, name="decoder_norm"
        )
        self.dropout1, self.dropout2, self.dropout3, self.dropout4 = (
            keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=f"dropout{i}")
            for i in (1, 2, 3, 4)
        )
        self.score = keras.layers.Dense(1, dtype="float32", name="score")

    @property
    def norms(self):
        """The three post-residual layer norms (the `.keras` files name them under `norms`)."""
        return [self.norm1, self.norm2, self.norm3]

    @property
    def drops(self):
        """The four dropouts (the `.keras` files name them under `drops`)."""
        return [self.dropout1, self.dropout2, self.dropout3, self.dropout4]

    def build(self, features_shape, sentence_shape=None):
        if int(features_shape[-1]) != self.d_model:
            raise ValueError(
                f"TransformerLocalizer: the features must have d_model={self.d_model} channels; "
                f"received shape {tuple(features_shape)}."
            )
        tokens = (features_shape[0], None, self.d_model)
        memory = (sentence_shape[0], 1, sentence_shape[-1])
        self.self_attention.build(tokens, tokens, tokens)
        self.cross_attention.build(tokens, memory, memory)
        self.ffn_in.build(tokens)
        self.ffn_out.build(tokens[:-1] + (self.ffn_units,))
        for norm in (self.norm1, self.norm2, self.norm3, self.decoder_norm):
            norm.build(tokens)
        self.score.build(tokens)
        self.built = True

    def call(self, features, sentence=None, training=None):
        shape = ops.shape(features)
        height, width = shape[1], shape[2]
        x = ops.reshape(features, (shape[0], -1, self.d_model))
        pos = ops.reshape(
            sine_position_encoding(height, width, self.d_model, self.temperature),
            (1, -1, self.d_model),
        )
        pos = ops.cast(pos, x.dtype)
        memory = ops.expand_dims(sentence, 1)
        attended = self.self_attention(x + pos, x, key=x + pos, training=training)
        x = self.norm1(x + self.dropout1(attended, training=training))
        with warnings.catch_warnings():  # Keras warns that a softmax over one key is 1: intended
            warnings.simplefilter("ignore", UserWarning)
            attended = self.cross_attention(x + pos, memory, key=memory, training=training)
        x = self.norm2(x + self.dropout2(attended, training=training))
        hidden = self.dropout3(self.ffn_in(x), training=training)
        x = self.norm3(x + self.dropout4(self.ffn_out(hidden), training=training))
        scores = self.score(self.decoder_norm(x))
        return ops.reshape(ops.cast(scores, "float32"), (shape[0], height, width, 1))

    def compute_output_shape(self, features_shape, sentence_shape=None):
        return tuple(features_shape[:-1]) + (1,)

    def get_config(self):
        config = super().get_config()
        config.update(
            d_model=self.d_model,
            num_heads=self.num_heads,
            ffn_units=self.ffn_units,
            dropout=self.dropout,
            temperature=self.temperature,
        )
        return config


@keras.saving.register_keras_serializable(package="refseg_tf")
class ASPPSegmentation(keras.layers.Layer):
    """LTS segmentation module (Eq. 10, Fig. 3): ASPP, then a stride-2 deconvolution.

    ASPP as MCN's `aspp_decoder` (REC): a 1x1 branch, three 3x3 branches with dilations
    `rates`, and an image-pooling branch (global mean -> 1x1 -> broadcast), each `channels`
    wide (conv + BN + LeakyReLU(0.1)), concatenated. Then, with `upsampling="mask"` (REC: the
    fewest invented sizes), a 1x1 convolution with bias to one channel and a
    `Conv2DTranspose(1, 4, strides=2)` initialised as bilinear upsampling; with "features", a
    1x1 unit to `channels`, the bilinear-initialised deconvolution on all channels, and a 1x1
    convolution to one channel.

    Args:
        channels: ASPP branch width (256).
        rates: dilations of the 3x3 branches ((6, 12, 18)).
        upsampling: "mask" or "features" (see above).

    Call args:
        inputs: `concat(F_m3, position prior)` `[B, H, W, C]`.
        training: Python bool.

    Returns:
        float32 logits `[B, 2H, 2W, 1]` (P_mask at stride 4).

    Reference:
        Jing et al. 2021 (LTS), Sec. 3.3 Eq. 10 and Fig. 3; MCN `mcn_model.py` `aspp_decoder`.
    """

    def __init__(self, channels=256, rates=(6, 12, 18), upsampling="mask", **kwargs):
        super().__init__(**kwargs)
        self.channels = _check_positive(channels, "channels")
        self.rates = tuple(_check_positive(rate, "rates") for rate in rates)
        if len(set(self.rates)) != len(self.rates):
            raise ValueError(f"`rates` must be distinct dilations; received {tuple(rates)}.")
        self.upsampling = _check_choice(upsampling, UPSAMPLING_MODES, "upsampling")
        policy = self.dtype_policy
        # One attribute per branch, not a list: `tf.train.Checkpoint` does not follow Keras 3's
        # tracked lists, so the branches' batch-norm statistics (trained, not optimised) would
        # be missing from training checkpoints and a resumed run would reset them.
        self.aspp_1x1 = ConvBNLeaky(self.channels, 1, dtype=policy, name="aspp_1x1")
        for rate in self.rates:
            setattr(self, f"aspp_rate{rate}",
                    ConvBNLeaky(self.channels, 3, rate, dtype=policy, name=f"aspp_rate{rate}"))
        self.pool_branch = ConvBNLeaky(self.channels, 1, dtype=self.dtype_policy, name="aspp_pool")
        deconv_channels = 1 if self.upsampling == "mask" else self.channels
        if self.upsampling == "mask":
            self.project = keras.layers.Conv2D(1, 1, dtype=self.dtype_policy, name="aspp_out")
        else:
            self.project = ConvBNLeaky(
                self.channels, 1, dtype=self.dtype_policy, name="aspp_project"
            )
            self.score = keras.layers.Conv2D(1, 1, dtype="float32", name="score")
        self.deconv = keras.layers.Conv2DTranspose(
            deconv_channels,
            4,
            strides=2,
            padding="same",
            use_bias=False,
            kernel_initializer=BilinearUpsamplingInitializer(),
            dtype="float32" if self.upsampling == "mask" else self.dtype_policy,
            name="deconv",
        )

    @property
    def branches(self):
        """The 1x1 branch and the dilated 3x3 branches, in concatenation order (the `.keras`
        files name them under `branches`)."""
        return [self.aspp_1x1] + [getattr(self, f"aspp_rate{rate}") for rate in self.rates]

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        for branch in self.branches:
            branch.build(input_shape)
        self.pool_branch.build((input_shape[0], 1, 1, input_shape[-1]))
        concat = input_shape[:-1] + ((len(self.rates) + 2) * self.channels,)
        self.project.build(concat)
        deconv_channels = 1 if self.upsampling == "mask" else self.channels
        self.deconv.build(input_shape[:-1] + (deconv_channels,))
        if self.upsampling == "features":
            self.score.build(input_shape[:-1] + (self.channels,))
        self.built = True

    def call(self, inputs, training=None):
        outputs = [branch(inputs, training=training) for branch in self.branches]
        pooled = self.pool_branch(ops.mean(inputs, axis=(1, 2), keepdims=True), training=training)
        outputs.append(pooled * ops.ones_like(outputs[0][..., :1]))
        x = self.project(ops.concatenate(outputs, axis=-1), training=training)
        if self.upsampling == "mask":
            return self.deconv(ops.cast(x, "float32"))
        return ops.cast(self.score(self.deconv(x)), "float32")

    def compute_output_shape(self, input_shape):
        height = None if input_shape[1] is None else 2 * input_shape[1]
        width = None if input_shape[2] is None else 2 * input_shape[2]
        return (input_shape[0], height, width, 1)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, rates=list(self.rates), upsampling=self.upsampling)
        return config

"""Recurrent text encoders over padded word-id sequences.

`WordSequenceEncoder` is what they share (the vocabulary / embedding / units arguments, the
build of the embedding and the recurrent layer, the `<pad>` mask); `LSTMTextEncoder` here,
the LTS family's `GRUTextEncoder` in its package.
"""

import keras
from keras import ops

from refseg_tf.text.vocabulary import PAD_ID  # `<pad>`, id 0 in every vocabulary


class WordSequenceEncoder(keras.layers.Layer):
    """Base of the encoders `word_ids [B, T] -> embedding -> recurrent layer`.

    A subclass creates `self.embedding` (`keras.layers.Embedding`) and its recurrent layer in
    `__init__`, under the attribute named by `recurrent_attribute` (the attribute names are
    the paths of the weights in a `.keras` file, so each family keeps its own), and writes
    `call` / `compute_output_shape`. The base checks and stores the three sizes, builds both
    layers and puts the sizes in `get_config`.

    Args:
        vocabulary_size: number of word ids, at least `min_vocabulary_size`.
        embedding_dim: word embedding size.
        units: size of the recurrent layer (per direction for a bidirectional one).
        **kwargs: `keras.layers.Layer` arguments.
    """

    # Ids below this are the vocabulary's special tokens the encoder relies on, plus a word.
    min_vocabulary_size = PAD_ID + 2
    # The attribute holding the recurrent layer (built on `[B, T, embedding_dim]`).
    recurrent_attribute = "lstm"

    def __init__(self, vocabulary_size, embedding_dim, units, **kwargs):
        super().__init__(**kwargs)
        if int(vocabulary_size) < self.min_vocabulary_size:
            raise ValueError(
                f"`vocabulary_size` must be at least {self.min_vocabulary_size} for "
                f"{type(self).__name__} (the special tokens it reads and words); received "
                f"{vocabulary_size}."
            )
        self.vocabulary_size = int(vocabulary_size)
        self.embedding_dim = _positive(embedding_dim, "embedding_dim")
        self.units = _positive(units, "units")

    def build(self, word_ids_shape):
        self.embedding.build(word_ids_shape)
        recurrent = getattr(self, self.recurrent_attribute)
        recurrent.build(tuple(word_ids_shape) + (self.embedding_dim,))
        self.built = True

    @staticmethod
    def word_mask(word_ids):
        """`(word_ids as int32, mask)`: the mask bool `[B, T]` is True at real words."""
        word_ids = ops.cast(word_ids, "int32")
        return word_ids, ops.not_equal(word_ids, PAD_ID)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            embedding_dim=self.embedding_dim,
            units=self.units,
        )
        return config


def _positive(value, argument):
    value = int(value)
    if value <= 0:
        raise ValueError(f"`{argument}` must be a positive integer; received {value}.")
    return value


@keras.saving.register_keras_serializable(package="refseg_tf")
class LSTMTextEncoder(WordSequenceEncoder):
    """Word embedding + LSTM that encodes a padded expression into its last hidden state h_T.

    With `mask_padding=True` (the RMI/RRN code) `<pad>` (id 0) steps are masked: the LSTM
    state is carried over them unchanged, so front padding (the project's default: the last
    word sits at the last step) and back padding give the same h_T, the hidden state after the
    last real word, and a sentence of pads only encodes to zeros. With `mask_padding=False`
    (Hu et al.'s code) the LSTM runs over every step, the front `<pad>` steps included, which
    then read the learned embedding of `<pad>`.

    Args:
        vocabulary_size: number of word ids (including the special tokens).
        embedding_dim: word embedding size (1000 in Hu, RMI and RRN).
        units: LSTM hidden size D_text / D_S (1000 in Hu, RMI and RRN).
        return_sequences: if True, `call` returns a dict (for RMI-style per-word models):
            `final` `[B, units]`, `sequence` `[B, T, units]` (the hidden state after every step;
            at a pad step it repeats the previous state), `embeddings` `[B, T, embedding_dim]`
            and `mask` `[B, T]` bool (True at real words).
        embedding_dropout: dropout rate on the embedded words during training (the authors'
            code had this option, disabled by default).
        embeddings_initializer: the authors' RMI/RRN code used uniform(-0.08, 0.08); the papers
            only say "randomly initialized".
        mask_padding: skip the `<pad>` steps (True: RMI/RRN code, a `tf.cond` on id 0) or run
            the LSTM over them (False: Hu et al.'s `lstm_net.py`, no mask).

    Call args:
        word_ids: `[B, T]` integer ids.
        training: Python bool.

    Returns:
        `[B, units]` (h_T), or the dict above when `return_sequences=True`.

    Example:
        >>> encoder = LSTMTextEncoder(vocabulary_size=20, embedding_dim=8, units=16)
        >>> encoder(keras.ops.convert_to_tensor([[0, 0, 5, 7]])).shape
        (1, 16)

    Reference:
        Hu et al. 2016, Sec. 3.2 (LSTM encoder, final hidden state h_T); Liu et al. 2017 (RMI),
        Eq. 1-4. Skipping pad steps follows the authors' RMI/RRN code (a `tf.cond` on id 0);
        running over them, Hu et al.'s code (`models/lstm_net.py`).
    """

    def __init__(
        self,
        vocabulary_size,
        embedding_dim=1000,
        units=1000,
        *,
        return_sequences=False,
        embedding_dropout=0.0,
        embeddings_initializer=None,
        mask_padding=True,
        **kwargs,
    ):
        super().__init__(vocabulary_size, embedding_dim, units, **kwargs)
        self.return_sequences = bool(return_sequences)
        self.embedding_dropout = float(embedding_dropout)
        self.mask_padding = bool(mask_padding)
        if embeddings_initializer is None:
            embeddings_initializer = keras.initializers.RandomUniform(-0.08, 0.08)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.embedding = keras.layers.Embedding(
            self.vocabulary_size,
            self.embedding_dim,
            # Without masking, no implicit Keras mask may reach the LSTM either.
            mask_zero=self.mask_padding,
            embeddings_initializer=self.embeddings_initializer,
            dtype=self.dtype_policy,
            name="embedding",
        )
        self.dropout = keras.layers.Dropout(
            self.embedding_dropout, dtype=self.dtype_policy, name="embedding_dropout"
        )
        # cuDNN accepts only right-padded masks and fails at run time (inside fit) on the
        # front padding of Hu/RMI/RRN, so the masked generic kernel is always used.
        self.lstm = keras.layers.LSTM(
            self.units,
            return_sequences=True,
            return_state=True,
            use_cudnn=False,
            dtype=self.dtype_policy,
            name="lstm",
        )

    def call(self, word_ids, training=None):
        word_ids, mask = self.word_mask(word_ids)
        embeddings = self.dropout(self.embedding(word_ids), training=training)
        sequence, final, _ = self.lstm(
            embeddings, mask=mask if self.mask_padding else None, training=training
        )
        if not self.return_sequences:
            return final
        return {"final": final, "sequence": sequence, "embeddings": embeddings, "mask": mask}

    def compute_output_shape(self, word_ids_shape):
        batch, steps = word_ids_shape[0], word_ids_shape[1]
        if not self.return_sequences:
            return (batch, self.units)
        return {
            "final": (batch, self.units),
            "sequence": (batch, steps, self.units),
            "embeddings": (batch, steps, self.embedding_dim),
            "mask": (batch, steps),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            return_sequences=self.return_sequences,
            embedding_dropout=self.embedding_dropout,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
            mask_padding=self.mask_padding,
        )
        return config

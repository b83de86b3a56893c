"""Text backbones: models mapping sentences (a `tf.string` batch) to feature vectors, tokenizing inside the model.

- `text_transformer`: a WordPiece vocabulary learned from the training corpus (keras-hub's
  `compute_word_piece_vocabulary`), keras-hub's `WordPieceTokenizer` (lowercased, accents stripped, cut or padded
  to `sequence_length`) and `TokenAndPositionEmbedding`, `num_layers` post-norm encoder blocks with the padding mask
  (`TransformerBlock`: keras-hub's `TransformerEncoder` computed the same way, but with `ExactLayerNormalization`,
  because Keras' layer norm has a wrong second derivative and MAML differentiates through it twice), then the mean
  of the non-padding positions. Dropout (attention and feed-forward) is SimCSE's noise.
- `bag_of_words`: TF-IDF of lowercased words, L2-normalized: the floor every learned text encoder must beat.

Both take strings as they come (`model(tf.constant(["a sentence"]))`), so the exported SavedModel takes sentences
and the tokenization served is the one trained. They need the `text` extra (`pip install 'mssl-tf[text]'`:
keras-hub and tensorflow-text); image backbones never import it.
"""

from __future__ import annotations

import re
from collections import Counter

import keras
import numpy as np
import tensorflow as tf

from mssl_tf.backbones.layer_norm import ExactLayerNormalization

TEXT_EXTRA_HINT = "text backbones need keras-hub and tensorflow-text: pip install 'mssl-tf[text]'"
RESERVED_TOKENS = ("[PAD]", "[UNK]")  # [PAD] must be id 0: the padding mask is `token_ids != 0`


def keras_hub():
    """keras_hub, with tensorflow_text imported first (it registers the tokenizer's ops)."""
    try:
        import tensorflow_text  # noqa: F401
        import keras_hub as module
    except ImportError as error:
        raise ImportError(TEXT_EXTRA_HINT) from error
    return module


def corpus_list(corpus) -> list[str]:
    """Sentences as a list of str (from str, bytes, numpy arrays of either, any nesting of class arrays)."""
    flat = np.asarray(corpus, dtype=object).ravel()
    return [text.decode("utf-8") if isinstance(text, bytes) else str(text) for text in flat]


def word_piece_vocabulary(corpus, vocabulary_size: int = 8000) -> list[str]:
    """A WordPiece vocabulary of at most `vocabulary_size` tokens learned from `corpus` (lowercased, accents
    stripped), `[PAD]` first and `[UNK]` second."""
    hub = keras_hub()
    sentences = corpus_list(corpus)
    if not sentences:
        raise ValueError("a text backbone needs a non-empty training corpus to learn its vocabulary from")
    return list(hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(sentences).batch(1024), vocabulary_size, lowercase=True,
        strip_accents=True, reserved_tokens=list(RESERVED_TOKENS)))


@keras.saving.register_keras_serializable(package="mssl_tf")
class TransformerBlock(keras.layers.Layer):
    """A post-norm transformer encoder block, as keras-hub's `TransformerEncoder` (its defaults: ReLU, epsilon
    1e-5, Glorot-uniform kernels): x ← LN(x + Dropout(MHA(x, x))), x ← LN(x + Dropout(W₂ relu(W₁ x))), with
    `ExactLayerNormalization` and keys masked by `padding_mask`."""

    def __init__(self, intermediate_dim, num_heads, dropout=0.0, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.intermediate_dim, self.num_heads = int(intermediate_dim), int(num_heads)
        self.dropout, self.layer_norm_epsilon = float(dropout), float(layer_norm_epsilon)

    def build(self, input_shape):
        width = int(input_shape[-1])
        if width % self.num_heads:
            raise ValueError(f"the embedding width {width} must divide into {self.num_heads} heads")
        self.attention = keras.layers.MultiHeadAttention(self.num_heads, width // self.num_heads,
                                                         dropout=self.dropout, name="self_attention")
        self.attention.build(input_shape, input_shape)
        self.attention_norm = ExactLayerNormalization(epsilon=self.layer_norm_epsilon, name="self_attention_norm")
        self.attention_norm.build(input_shape)
        self.intermediate = keras.layers.Dense(self.intermediate_dim, activation="relu", name="intermediate")
        self.intermediate.build(input_shape)
        self.output_dense = keras.layers.Dense(width, name="output")
        self.output_dense.build((*input_shape[:-1], self.intermediate_dim))
        self.feedforward_norm = ExactLayerNormalization(epsilon=self.layer_norm_epsilon, name="feedforward_norm")
        self.feedforward_norm.build(input_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout)
        self.built = True

    def call(self, inputs, padding_mask=None, training=False):
        mask = None
        if padding_mask is not None:
            mask = tf.tile(tf.cast(padding_mask, tf.bool)[:, tf.newaxis, :], [1, tf.shape(inputs)[1], 1])
        attended = self.attention(inputs, inputs, attention_mask=mask, training=training)
        hidden = self.attention_norm(inputs + self.dropout_layer(attended, training=training))
        transformed = self.output_dense(self.intermediate(hidden))
        return self.feedforward_norm(hidden + self.dropout_layer(transformed, training=training))

    def get_config(self):
        return {**super().get_config(), "intermediate_dim": self.intermediate_dim, "num_heads": self.num_heads,
                "dropout": self.dropout, "layer_norm_epsilon": self.layer_norm_epsilon}


@keras.saving.register_keras_serializable(package="mssl_tf")
class TextTransformer(keras.Model):
    """Sentences → mean-pooled Transformer features `[batch, embedding_dim]` (see the module docstring).

    Args:
        vocabulary: WordPiece tokens, `[PAD]` first (`word_piece_vocabulary`).
        sequence_length: tokens kept per sentence (longer ones are cut, shorter ones padded).
        embedding_dim, num_layers, num_heads, intermediate_dim: the encoder's size.
        dropout: dropout rate of every block (active with `training=True`).
    """

    TAKES_TEXT = True

    def __init__(self, vocabulary, sequence_length=64, embedding_dim=128, num_layers=2, num_heads=4,
                 intermediate_dim=256, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        hub = keras_hub()
        self.vocabulary = [str(token) for token in vocabulary]
        if self.vocabulary[0] != RESERVED_TOKENS[0]:
            raise ValueError(f"the vocabulary must start with {RESERVED_TOKENS[0]} (id 0 is padding)")
        self.sequence_length, self.embedding_dim = int(sequence_length), int(embedding_dim)
        self.num_layers, self.num_heads = int(num_layers), int(num_heads)
        self.intermediate_dim, self.dropout = int(intermediate_dim), float(dropout)
        self.tokenizer = hub.tokenizers.WordPieceTokenizer(
            vocabulary=self.vocabulary, sequence_length=self.sequence_length, lowercase=True, strip_accents=True,
            oov_token=RESERVED_TOKENS[1], name="tokenizer")
        self.embedding = hub.layers.TokenAndPositionEmbedding(
            len(self.vocabulary), self.sequence_length, self.embedding_dim, name="token_and_position_embedding")
        self.blocks = [TransformerBlock(self.intermediate_dim, self.num_heads, dropout=self.dropout,
                                        name=f"transformer_block_{index}")
                       for index in range(self.num_layers)]
        self.embedding.build((None, self.sequence_length))
        for block in self.blocks:
            block.build((None, self.sequence_length, self.embedding_dim))
        self.built = True

    @property
    def output_shape(self):
        return (None, self.embedding_dim)

    @property
    def tokenizer_description(self) -> str:
        return (f"WordPiece, {len(self.vocabulary)} tokens, lowercased, accents stripped, cut or padded to "
                f"{self.sequence_length} tokens")

    def call(self, sentences, training=False):
        token_ids = self.tokenizer(tf.reshape(sentences, [-1]))
        mask = tf.not_equal(token_ids, 0)
        hidden = self.embedding(token_ids)
        for block in self.blocks:
            hidden = block(hidden, padding_mask=mask, training=training)
        weights = tf.cast(mask, hidden.dtype)[..., tf.newaxis]
        return tf.reduce_sum(hidden * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)

    def get_config(self):
        return {"vocabulary": self.vocabulary, "sequence_length": self.sequence_length,
                "embedding_dim": self.embedding_dim, "num_layers": self.num_layers, "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim, "dropout": self.dropout, "name": self.name,
                "trainable": self.trainable}


def text_transformer(corpus=None, vocabulary=None, vocabulary_size=8000, sequence_length=64, embedding_dim=128,
                     num_layers=2, num_heads=4, intermediate_dim=256, dropout=0.1, name="text_transformer"):
    """A `TextTransformer` whose vocabulary is `vocabulary`, else learned from `corpus`."""
    if vocabulary is None:
        if corpus is None:
            raise ValueError("text_transformer needs a corpus to learn its vocabulary from (or a vocabulary)")
        vocabulary = word_piece_vocabulary(corpus, vocabulary_size)
    return TextTransformer(vocabulary, sequence_length, embedding_dim, num_layers, num_heads, intermediate_dim,
                           dropout, name=name)


WORD = re.compile(r"[a-z0-9]+")


def words_of(sentence: str) -> list[str]:
    """Lowercased runs of letters and digits: what `BagOfWords` counts (`[^a-z0-9]` separates words)."""
    return WORD.findall(sentence.lower())


@keras.saving.register_keras_serializable(package="mssl_tf")
class BagOfWords(keras.Model):
    """Sentences → L2-normalized TF-IDF vectors over `vocabulary` (no trainable weights: a floor).

    Args:
        vocabulary: the words counted (out-of-vocabulary words are dropped).
        idf: inverse document frequency of each word, `log(1 + sentences / (1 + sentences containing it))`.
    """

    TAKES_TEXT = True

    def __init__(self, vocabulary, idf, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = [str(word) for word in vocabulary]
        self.idf = [float(value) for value in idf]
        self.lookup = keras.layers.StringLookup(vocabulary=self.vocabulary, num_oov_indices=1, name="lookup")
        self.weights_of_words = tf.constant([0.0, *self.idf], tf.float32)  # index 0: out of vocabulary
        self.built = True

    @property
    def output_shape(self):
        return (None, len(self.vocabulary) + 1)

    @property
    def tokenizer_description(self) -> str:
        return f"lowercased words (runs of a-z and 0-9), {len(self.vocabulary)} counted, TF-IDF, L2-normalized"

    def call(self, sentences, training=False):
        lowered = tf.strings.lower(tf.reshape(sentences, [-1]), encoding="utf-8")
        words = tf.strings.split(tf.strings.strip(tf.strings.regex_replace(lowered, "[^a-z0-9]+", " ")))
        ids = tf.ragged.map_flat_values(self.lookup, words)
        counts = tf.math.bincount(tf.cast(ids, tf.int32), minlength=len(self.vocabulary) + 1,
                                  maxlength=len(self.vocabulary) + 1, axis=-1, dtype=tf.float32)
        return tf.math.l2_normalize(counts * self.weights_of_words, axis=-1)

    def get_config(self):
        return {"vocabulary": self.vocabulary, "idf": self.idf, "name": self.name, "trainable": self.trainable}


def bag_of_words(corpus=None, max_words=20000, name="bag_of_words"):
    """A `BagOfWords` over the `max_words` most frequent words of `corpus`, with their IDF in it."""
    if corpus is None:
        raise ValueError("bag_of_words needs a corpus to count its words in")
    sentences = corpus_list(corpus)
    documents = Counter(word for sentence in sentences for word in set(words_of(sentence)))
    vocabulary = [word for word, _ in sorted(documents.items(), key=lambda item: (-item[1], item[0]))[:max_words]]
    idf = [float(np.log(1.0 + len(sentences) / (1.0 + documents[word]))) for word in vocabulary]
    return BagOfWords(vocabulary, idf, name=name)


# === keras-hub presets: meta-learning on top of pretrained models ===
def is_keras_hub_preset(path) -> bool:
    """Whether `path` is a keras-hub preset directory (`metadata.json` naming keras-hub, `config.json`)."""
    import json
    from pathlib import Path

    directory = Path(str(path))
    if not (directory.is_dir() and (directory / "metadata.json").is_file() and (directory / "config.json").is_file()):
        return False
    try:
        return "keras_hub_version" in json.loads((directory / "metadata.json").read_text())
    except ValueError:
        return False


@keras.saving.register_keras_serializable(package="mssl_tf")
class PretrainedTextEncoder(keras.Model):
    """A keras-hub text backbone with its own preprocessor (tokenizer, special tokens, padding): sentences → the
    mean of its sequence output over the non-padding positions `[batch, hidden_dim]`.

    Saved whole (the preprocessor's vocabulary among the `.keras` assets), so a trained model does not need the
    preset directory it started from.

    Args:
        preprocessor: a keras-hub `TextClassifierPreprocessor` (e.g. `BertTextClassifierPreprocessor`).
        encoder: the keras-hub `Backbone` it feeds.
        preset: where it was loaded from (provenance only).
    """

    TAKES_TEXT = True

    def __init__(self, preprocessor, encoder, preset="", **kwargs):
        super().__init__(**kwargs)
        self.preprocessor, self.encoder, self.preset = preprocessor, encoder, str(preset)
        self.built = True

    @classmethod
    def from_preset(cls, directory, sequence_length: int = 64, name: str = "pretrained_text_encoder"):
        """The encoder of a local keras-hub preset directory (nothing is downloaded)."""
        hub = keras_hub()
        if not is_keras_hub_preset(directory):
            raise ValueError(f"{directory} is not a keras-hub preset directory (metadata.json and config.json, as "
                             "written by save_to_preset or a downloaded preset)")
        preprocessor = hub.models.TextClassifierPreprocessor.from_preset(str(directory),
                                                                         sequence_length=int(sequence_length))
        encoder = hub.models.Backbone.from_preset(str(directory))
        return cls(preprocessor, encoder, str(directory), name=name)

    @property
    def sequence_length(self) -> int:
        return int(self.preprocessor.sequence_length)

    @property
    def output_shape(self):
        return (None, int(self.encoder.hidden_dim))

    @property
    def tokenizer_description(self) -> str:
        return (f"{type(self.preprocessor).__name__} of the keras-hub preset {self.preset}, "
                f"{self.sequence_length} tokens")

    def call(self, sentences, training=False):
        inputs = self.preprocessor(tf.reshape(sentences, [-1]))
        outputs = self.encoder(inputs, training=training)
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        weights = tf.cast(inputs["padding_mask"], sequence.dtype)[..., tf.newaxis]
        return tf.reduce_sum(sequence * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)

    def get_config(self):
        return {"preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
                "encoder": keras.saving.serialize_keras_object(self.encoder), "preset": self.preset,
                "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        keras_hub()  # registers keras-hub's classes
        config = dict(config)
        config["preprocessor"] = keras.saving.deserialize_keras_object(config["preprocessor"])
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)

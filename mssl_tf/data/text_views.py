"""Views of sentences: word deletion and span cropping, stateless (a view is a pure function of its seed pair).

A view of a sentence splits it on whitespace, keeps a contiguous span of at least `crop` of its words (the span's
length uniform in `[ceil(crop · words), words]`, its start uniform), drops each word of the span with probability
`deletion` (all of them dropped: the span kept whole) and joins the rest with single spaces.

Presets (`--views`):
- `identity`: the sentence itself (SimCSE's positive pair: the same sentence twice, dropout the only noise; the
  default for text datasets).
- `text`: `deletion` 0.1 and `crop` 0.8: classes made of one sentence's views (`--tasks augmentation`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import tensorflow as tf


@dataclass(frozen=True)
class TextViewConfig:
    deletion: float = 0.0  # probability of dropping each word
    crop: float = 1.0  # smallest fraction of the words a view keeps, as one contiguous span

    def __post_init__(self):
        if not 0.0 <= self.deletion < 1.0:
            raise ValueError(f"deletion must be in [0, 1), got {self.deletion}")
        if not 0.0 < self.crop <= 1.0:
            raise ValueError(f"crop must be in (0, 1], got {self.crop}")

    @property
    def is_identity(self) -> bool:
        return self.deletion == 0.0 and self.crop == 1.0


TEXT_VIEW_PRESETS = {"identity": TextViewConfig(), "text": TextViewConfig(deletion=0.1, crop=0.8)}
DEFAULT_TEXT_PRESET = "identity"


def text_view_config(preset) -> TextViewConfig:
    """A `TEXT_VIEW_PRESETS` name, a dict of fields or a `TextViewConfig`."""
    if isinstance(preset, TextViewConfig):
        return preset
    if isinstance(preset, dict):
        return TextViewConfig(**preset)
    if preset not in TEXT_VIEW_PRESETS:
        raise ValueError(f"unknown text view preset {preset!r}; text presets: {sorted(TEXT_VIEW_PRESETS)} (the "
                         "others augment images)")
    return TEXT_VIEW_PRESETS[preset]


def text_view(sentence: tf.Tensor, seed: tf.Tensor, config: TextViewConfig) -> tf.Tensor:
    """One view (scalar `tf.string`) of `sentence`, keyed by the stateless `seed` pair."""
    if config.is_identity:
        return sentence
    words = tf.strings.split(sentence)
    count = tf.size(words)
    span_seed, deletion_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    uniforms = tf.random.stateless_uniform([2], span_seed)
    shortest = tf.cast(tf.math.ceil(config.crop * tf.cast(count, tf.float32)), tf.int32)
    length = shortest + tf.cast(tf.floor(uniforms[0] * tf.cast(count - shortest + 1, tf.float32)), tf.int32)
    length = tf.minimum(length, count)
    start = tf.cast(tf.floor(uniforms[1] * tf.cast(count - length + 1, tf.float32)), tf.int32)
    start = tf.minimum(start, count - length)
    span = words[start: start + length]
    kept = tf.random.stateless_uniform([length], deletion_seed) >= config.deletion
    kept = tf.cond(tf.reduce_any(kept), lambda: kept, lambda: tf.ones_like(kept))
    return tf.strings.reduce_join(tf.boolean_mask(span, kept), separator=" ")


def text_views(sentences: tf.Tensor, seeds: tf.Tensor, config) -> tf.Tensor:
    """`sentences [n]` and seed pairs `[n, views, 2]` → views `[n, views]` (`tf.string`)."""
    config = text_view_config(config)
    views = seeds.shape[1]
    repeated = tf.repeat(sentences, views, axis=0)
    if config.is_identity:
        return tf.reshape(repeated, [-1, views])
    flat_seeds = tf.reshape(seeds, [-1, 2])
    flat = tf.map_fn(lambda pair: text_view(pair[0], pair[1], config), (repeated, flat_seeds),
                     fn_output_signature=tf.TensorSpec([], tf.string))
    return tf.reshape(flat, [-1, views])


def config_dict(config: TextViewConfig) -> dict:
    return {"kind": "text", **asdict(config)}

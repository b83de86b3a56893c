"""The serving signatures of an exported model, as `tf.function`s over a method model and its `InputSpec`.

| signature | inputs | outputs |
|---|---|---|
| `serving_default` | `images` uint8 `[batch, H, W, C]` (as the data loaders give them) | `embeddings` float32 `[batch, dim]`, L2-normalized |
| `embed_float` | `images` float32 `[batch, H, W, C]`, uint8 ÷ 255 (what the Keras model takes) | `embeddings` |
| `embed_png` | `png` string `[batch]`: PNG, JPEG, GIF or BMP files of any size | `embeddings` |
| `few_shot` | `support_images` uint8 `[n, H, W, C]`, `support_labels` int32 `[n]` in `0..ways-1`, `query_images` uint8 `[m, H, W, C]` | `logits` float32 `[m, ways]`, `predictions` int32 `[m]` |
| `few_shot_png` | `support_png` string `[n]`, `support_labels` int32 `[n]`, `query_png` string `[m]` | `logits`, `predictions` |

A text model (its encoder takes sentences, `mssl_tf.backbones.text`) has two signatures, tokenization inside:

| signature | inputs | outputs |
|---|---|---|
| `serving_default` | `sentences` string `[batch]` (UTF-8) | `embeddings` float32 `[batch, dim]`, L2-normalized |
| `few_shot` | `support_sentences` string `[n]`, `support_labels` int32 `[n]`, `query_sentences` string `[m]` | `logits`, `predictions` |

`H, W, C` and how files are decoded come from the model's `InputSpec` (`mssl_tf.input_spec`). `few_shot` adapts
as the method does in `mssl-tf eval` (`few_shot_logits`: prototypes, Matching attention, MAML / Meta-SGD / ANIL
inner steps with the evaluation step count, the memory's write and read, the hyper-network's emitted head); a
plain backbone classifies by nearest prototype. `ways` is `max(support_labels) + 1`; a method with a fixed-width
classifier (MAML, Reptile with their default per-class head) refuses any other number of classes; with
`head="shared"` they adapt to any number up to `max_ways`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.input_spec import MAX_IMAGE_PIXELS, InputSpec, decode_encoded
from mssl_tf.methods.protonet import prototype_logits

MAX_WAYS = 1024  # most classes in one few_shot request (Omniglot's test split has 1692; an episode has 5 to 60)


def encoder_of(model: keras.Model) -> keras.Model:
    """The image → features network of a method model (its `backbone`), or the model itself if it is a backbone."""
    return getattr(model, "backbone", model)


def takes_text(model: keras.Model) -> bool:
    """Whether the encoder of `model` takes sentences (a text backbone) rather than images."""
    return bool(getattr(encoder_of(model), "TAKES_TEXT", False))


def checked_labels(support_labels: tf.Tensor, max_ways: int = MAX_WAYS, fixed_ways: int | None = None) -> tf.Tensor:
    """`support_labels`, usable only once they are valid: every op that reads the result waits for the checks.

    When the graph runs, raises InvalidArgumentError (TF Serving: INVALID_ARGUMENT) if the support set is empty, a
    label is outside `0..max_ways-1`, a class below the largest label has no example, or (`fixed_ways`) the task
    does not have exactly that many classes. Nothing of size `ways` is allocated before that.
    """
    labels = tf.convert_to_tensor(support_labels, tf.int32)
    checks = [
        tf.debugging.assert_positive(tf.size(labels), message="few_shot needs at least one support example"),
        tf.debugging.assert_non_negative(labels, message="support_labels must be in 0..ways-1"),
        tf.debugging.assert_less(labels, tf.constant(max_ways, tf.int32), message=(
            f"support_labels must be below this model's limit of {max_ways} classes (few_shot_max_ways); "
            "number the classes 0..ways-1")),
    ]
    with tf.control_dependencies(checks):
        bounded = tf.identity(labels)
    ways = tf.reduce_max(bounded) + 1
    present = [tf.debugging.assert_equal(tf.size(tf.unique(bounded).y), ways, message=(
        "support_labels must use every class 0..ways-1 (ways = max label + 1) at least once"))]
    if fixed_ways is not None:
        present.append(tf.debugging.assert_equal(ways, tf.constant(fixed_ways, tf.int32), message=(
            f"this model's classifier is {fixed_ways}-way: give support examples of exactly {fixed_ways} classes")))
    with tf.control_dependencies(present):
        return tf.identity(bounded)


def task_logits(model: keras.Model, support_images, support_labels, query_images) -> tf.Tensor:
    """Query logits of one task (float images in [0, 1]) as the method adapts; nearest prototype for a backbone."""
    if hasattr(model, "few_shot_logits"):
        return model.few_shot_logits(support_images, support_labels, query_images)
    support = tf.shape(support_images)[0]
    features = model(tf.concat([support_images, query_images], 0), training=False)
    return prototype_logits(features[:support], support_labels, features[support:])


def signatures(model: keras.Model, spec: InputSpec, max_ways: int = MAX_WAYS,
               max_pixels: int = MAX_IMAGE_PIXELS) -> dict[str, tf.types.experimental.PolymorphicFunction]:
    """The five signatures of this module for `model` (a method model or a backbone), `serving_default` first."""
    encoder = encoder_of(model)
    fixed_ways = getattr(model, "few_shot_ways", None)
    uint8_images = tf.TensorSpec([None, *spec.shape], tf.uint8)
    encoded = tf.TensorSpec([None], tf.string)

    def to_float(images):
        return tf.cast(images, tf.float32) / 255.0

    def decoded(files):
        return tf.map_fn(lambda one: decode_encoded(one, spec, max_pixels), files,
                         fn_output_signature=tf.TensorSpec(spec.shape, tf.uint8))

    float_images = tf.TensorSpec([None, *spec.shape], tf.float32)

    # Traced once each and called by the uint8, float and encoded-file signatures alike (a MAML adaptation with
    # ten inner steps is a large graph: tracing it once halves the export time).
    @tf.function(input_signature=[float_images])
    def embeddings(images01):
        return {"embeddings": tf.math.l2_normalize(encoder(images01, training=False), axis=-1)}

    @tf.function(input_signature=[float_images, tf.TensorSpec([None], tf.int32), float_images])
    def classify(support_images01, support_labels, query_images01):
        matched = tf.debugging.assert_equal(tf.shape(support_images01)[0], tf.size(support_labels), message=(
            "few_shot needs one support label per support image"))
        with tf.control_dependencies([matched]):
            support_images01 = tf.identity(support_images01)
        logits = task_logits(model, support_images01, support_labels, query_images01)
        return {"logits": logits, "predictions": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    @tf.function(input_signature=[uint8_images])
    def serving_default(images):
        return embeddings(to_float(images))

    @tf.function(input_signature=[tf.TensorSpec([None, *spec.shape], tf.float32)])
    def embed_float(images):
        return embeddings(images)

    @tf.function(input_signature=[encoded])
    def embed_png(png):
        return embeddings(to_float(decoded(png)))

    @tf.function(input_signature=[uint8_images, tf.TensorSpec([None], tf.int32), uint8_images])
    def few_shot(support_images, support_labels, query_images):
        labels = checked_labels(support_labels, max_ways, fixed_ways)
        with tf.control_dependencies([labels]):
            support, query = to_float(support_images), to_float(query_images)
        return classify(support, labels, query)

    @tf.function(input_signature=[encoded, tf.TensorSpec([None], tf.int32), encoded])
    def few_shot_png(support_png, support_labels, query_png):
        labels = checked_labels(support_labels, max_ways, fixed_ways)
        with tf.control_dependencies([labels]):
            support, query = to_float(decoded(support_png)), to_float(decoded(query_png))
        return classify(support, labels, query)

    return {"serving_default": serving_default, "embed_float": embed_float, "embed_png": embed_png,
            "few_shot": few_shot, "few_shot_png": few_shot_png}


def text_signatures(model: keras.Model, max_ways: int = MAX_WAYS) -> dict[str, tf.types.experimental.PolymorphicFunction]:
    """The two signatures of a text model (`serving_default` first): sentences in, as the encoder tokenizes them."""
    encoder = encoder_of(model)
    fixed_ways = getattr(model, "few_shot_ways", None)
    sentences = tf.TensorSpec([None], tf.string)

    @tf.function(input_signature=[sentences])
    def serving_default(sentences):
        return {"embeddings": tf.math.l2_normalize(encoder(sentences, training=False), axis=-1)}

    @tf.function(input_signature=[sentences, tf.TensorSpec([None], tf.int32), sentences])
    def few_shot(support_sentences, support_labels, query_sentences):
        matched = tf.debugging.assert_equal(tf.size(support_sentences), tf.size(support_labels), message=(
            "few_shot needs one support label per support sentence"))
        labels = checked_labels(support_labels, max_ways, fixed_ways)
        with tf.control_dependencies([matched, labels]):
            support = tf.identity(support_sentences)
        logits = task_logits(model, support, labels, query_sentences)
        return {"logits": logits, "predictions": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    return {"serving_default": serving_default, "few_shot": few_shot}

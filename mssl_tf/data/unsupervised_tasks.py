"""N-way K-shot tasks made from UNLABELED images, in the episode format every `EpisodicModel` consumes.

The constructors take only images (uint8 `[N, H, W]` or `[N, H, W, 1]`, or sentences `[N]`: augmentation and
cluster tasks work on text, `mssl_tf.data.text_views`), e.g. the Vinyals train split flattened by
`unlabeled_images`, its class structure dropped); no label array is ever an argument. Task kinds:

- `augmentation`: N sampled images are the N classes; K + Q augmented views of each are its shots and queries
  (UMTRA, Khodadadeh et al. 2019; ProtoTransfer, Medina et al. 2020). This is also contrastive instance
  discrimination over a small batch: the queries must be told apart among N instances.
- `transformation`: the classes are transformations of the seed's set (identity, 2× down-sample, horizontal flip,
  vertical flip, rot90); support and query hold different images, each transformed by its class's transformation.
  The class order is shuffled per task, so a learner must adapt rather than memorize which label is which.
- `clusters`: k-means partitions of self-supervised embeddings give pseudo-classes; tasks are N-way K-shot over
  the clusters of one partition (CACTUs, Hsu, Levine & Finn, ICLR 2019).
- `mixture`: each task is drawn from one of several kinds, chosen at random with given weights.

Like `mssl_tf.data.episodes`, task `i` of seed `s` is a pure function of `(s, i)` (stateless random ops), so a
pipeline is deterministic for a seed whatever the parallelism. A task is a dict:
    support_images [ways*shots, H, W, 1] float32 in [0, 1]; support_labels [ways*shots] int32, class-major
    query_images   [ways*queries, H, W, 1];                 query_labels   [ways*queries] int32
and `task_dataset` batches tasks into meta-batches (a leading task axis), exactly like `episode_dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from mssl_tf.data.episodes import EpisodeSpec
from mssl_tf.data.modality import as_constant, is_text, model_input
from mssl_tf.data.text_views import text_views
from mssl_tf.data.views import apply_transformation, view_config, view_parameters, views_from_parameters

TASK_KINDS = ("labeled", "augmentation", "transformation", "clusters", "mixture")
SEED_TRANSFORMATIONS = ("rot0", "downsample", "hflip", "vflip", "rot90")  # identity first; the seed's set


def unlabeled_images(class_images: np.ndarray) -> np.ndarray:
    """`[classes, drawings, H, W]` → `[classes·drawings, H, W]`: the images alone, their classes dropped."""
    class_images = np.asarray(class_images)
    return class_images.reshape(-1, *class_images.shape[2:])


def as_image_table(images: np.ndarray) -> tf.Tensor:
    """uint8 `[N, H, W]` or `[N, H, W, 1]` → a uint8 constant `[N, H, W, 1]`; sentences `[N]` → `tf.string [N]`."""
    images = np.asarray(images)
    if is_text(images):
        if images.ndim != 1:
            raise ValueError(f"sentences must be [N], got {images.shape}")
        return as_constant(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W] or [N, H, W, C], got {images.dtype} {images.shape}")
    return tf.constant(images)


def distinct_indices(count: int, maximum: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """`count` distinct integers in `[0, maximum]` (int64), a stateless function of the `seed` pair.

    The first `count` positions of a pseudo-random permutation of `0..maximum` (`RandomIndexShuffle`): O(count),
    not a sort of the whole range.
    """
    key = tf.random.stateless_uniform([2], seed, minval=None, maxval=None, dtype=tf.int64)
    seeds = tf.tile(tf.concat([[np.int64(498247692)], key], 0)[tf.newaxis], [count, 1])
    maximum = tf.fill([count], tf.cast(maximum, tf.int64))
    return tf.raw_ops.RandomIndexShuffle(index=tf.range(count, dtype=tf.int64), seed=seeds, max_index=maximum,
                                         rounds=4)


def class_major_task(images: tf.Tensor, shots: int) -> dict[str, tf.Tensor]:
    """`[ways, shots+queries, H, W, C]` (class-major groups) → a task dict; group `c` is class `c`."""
    ways, per_class = images.shape[0], images.shape[1]
    queries = per_class - shots
    labels = tf.range(ways, dtype=tf.int32)[:, tf.newaxis]
    shape = images.shape[2:]
    return {
        "support_images": tf.reshape(images[:, :shots], [ways * shots, *shape]),
        "support_labels": tf.reshape(tf.tile(labels, [1, shots]), [-1]),
        "query_images": tf.reshape(images[:, shots:], [ways * queries, *shape]),
        "query_labels": tf.reshape(tf.tile(labels, [1, queries]), [-1]),
    }


def to_float(images: tf.Tensor) -> tf.Tensor:
    """uint8 images → float32 in [0, 1]; sentences unchanged (`mssl_tf.data.modality.model_input`)."""
    return model_input(images)


# === Augmentation-made classes (UMTRA / ProtoTransfer) ===
def augmentation_task(images: tf.Tensor, spec: EpisodeSpec, seed: tf.Tensor, config="omniglot",
                      original_support: bool = False) -> dict[str, tf.Tensor]:
    """One task whose classes are `spec.ways` distinct sampled images and whose examples are augmented views.

    Args:
        images: uint8 `[N, H, W, C]` or sentences `[N]` (`as_image_table`).
        spec: ways, shots and queries.
        seed: stateless seed pair.
        config: a `mssl_tf.data.views` preset name, dict or `ViewConfig` (sentences: `mssl_tf.data.text_views`).
        original_support: UMTRA's variant: the shots are the un-augmented image (repeated), only the queries are
            augmented. Default: every shot and query is an independent view (ProtoTransfer).
    """
    image_seed, view_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    chosen = distinct_indices(spec.ways, tf.shape(images, out_type=tf.int64)[0] - 1, image_seed)
    originals = to_float(tf.gather(images, chosen))  # [ways, H, W, C], or sentences [ways]
    per_class = spec.shots + spec.queries
    view_seeds = tf.random.experimental.stateless_split(view_seed, spec.ways * per_class)
    if images.dtype == tf.string:
        views = text_views(originals, tf.reshape(view_seeds, [spec.ways, per_class, 2]), config)
        if original_support:
            views = tf.concat([tf.tile(originals[:, tf.newaxis], [1, spec.shots]), views[:, spec.shots:]], axis=1)
        return class_major_task(views, spec.shots)
    config = view_config(config)
    parameters = tf.map_fn(lambda s: view_parameters(s, config), view_seeds, fn_output_signature=tf.float32)
    views = views_from_parameters(originals, tf.reshape(parameters, [spec.ways, per_class, -1]), config)
    if original_support:
        repeated = tf.tile(originals[:, tf.newaxis], [1, spec.shots, 1, 1, 1])
        views = tf.concat([repeated, views[:, spec.shots:]], axis=1)
    return class_major_task(views, spec.shots)


# === Transformation-prediction tasks ===
def transformed_classes(source: tf.Tensor, transformations, order: tf.Tensor) -> tf.Tensor:
    """Group `c` of `source [ways, n, H, W, C]` transformed by `transformations[order[c]]`."""
    ways = source.shape[0]
    flat = tf.reshape(source, [-1, *source.shape[2:]])
    every = tf.stack([tf.reshape(apply_transformation(flat, name), source.shape) for name in transformations])
    return tf.gather_nd(every, tf.stack([tf.cast(order, tf.int32), tf.range(ways)], axis=1))


def transformation_task(images: tf.Tensor, shots: int, queries: int, seed: tf.Tensor,
                        transformations=SEED_TRANSFORMATIONS, shuffle_labels: bool = True) -> dict[str, tf.Tensor]:
    """One task whose classes are transformations: `len(transformations)` ways, all images distinct.

    Class `c` holds `shots + queries` images transformed by `transformations[order[c]]`, where `order` is a random
    permutation per task (`shuffle_labels`) or the identity.
    """
    ways = len(transformations)
    image_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    chosen = distinct_indices(ways * (shots + queries), tf.shape(images, out_type=tf.int64)[0] - 1, image_seed)
    source = tf.reshape(to_float(tf.gather(images, chosen)), [ways, shots + queries, *images.shape[1:]])
    order = tf.range(ways)
    if shuffle_labels:
        order = tf.argsort(tf.random.stateless_uniform([ways], order_seed))
    return class_major_task(transformed_classes(source, transformations, order), shots)


# === CACTUs: clusters of self-supervised embeddings ===
def kmeans(points: np.ndarray, clusters: int, iterations: int = 30, seed: int = 0, chunk: int = 8192):
    """Lloyd's k-means with k-means++ seeding, deterministic for a seed.

    Args:
        points: `[N, d]` float.
        clusters: k.
        iterations: at most this many Lloyd steps (stops earlier when no assignment changes).
        seed: seeds the k-means++ draws.
        chunk: rows per distance computation (bounds memory at `chunk × k` floats).

    Returns:
        (centroids `[k, d]` float64, assignments `[N]` int32). An emptied cluster is re-seeded with the point
        farthest from its centroid, so every cluster keeps at least one member.
    """
    points = np.asarray(points, np.float64)
    count = len(points)
    if not 1 <= clusters <= count:
        raise ValueError(f"clusters must be between 1 and the number of points ({count}), got {clusters}")
    rng = np.random.default_rng(seed)
    centroids = np.empty((clusters, points.shape[1]))
    centroids[0] = points[rng.integers(count)]
    closest = np.sum((points - centroids[0]) ** 2, axis=1)
    for index in range(1, clusters):
        total = closest.sum()
        pick = rng.choice(count, p=closest / total) if total > 0 else rng.integers(count)
        centroids[index] = points[pick]
        closest = np.minimum(closest, np.sum((points - centroids[index]) ** 2, axis=1))
    assignments = np.full(count, -1, np.int32)
    for _ in range(iterations):
        distances, new = nearest_centroids(points, centroids, chunk)
        for empty in np.setdiff1d(np.arange(clusters), new):
            farthest = int(np.argmax(distances))
            new[farthest], distances[farthest] = empty, 0.0
        if np.array_equal(new, assignments):
            break
        assignments = new
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignments, points)
        centroids = sums / np.bincount(assignments, minlength=clusters)[:, np.newaxis]
    return centroids, assignments


def nearest_centroids(points, centroids, chunk):
    """(squared distance to the nearest centroid `[N]`, its index `[N]` int32), `chunk` rows at a time."""
    distances = np.empty(len(points))
    nearest = np.empty(len(points), np.int32)
    centroid_norms = np.sum(centroids**2, axis=1)
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        squared = np.sum(block**2, axis=1, keepdims=True) - 2 * block @ centroids.T + centroid_norms
        nearest[start : start + chunk] = np.argmin(squared, axis=1)
        distances[start : start + chunk] = np.maximum(squared[np.arange(len(block)), nearest[start : start + chunk]], 0)
    return distances, nearest


def cluster_partitions(embeddings: np.ndarray, clusters: int, partitions: int = 1, seed: int = 0,
                       iterations: int = 30, scale_dimensions: bool = True) -> np.ndarray:
    """`partitions` k-means partitions of `embeddings [N, d]` → cluster ids `[partitions, N]` int32.

    Partition `p` runs k-means with its own seed; with `scale_dimensions` (CACTUs), partitions after the first see the
    embeddings with every dimension scaled by a random factor in [0, 1), so the partitions differ.
    """
    embeddings = np.asarray(embeddings, np.float64)
    rng = np.random.default_rng(seed)
    result = np.empty((partitions, len(embeddings)), np.int32)
    for partition in range(partitions):
        scale = rng.uniform(size=embeddings.shape[1]) if scale_dimensions and partition else 1.0
        _, result[partition] = kmeans(embeddings * scale, clusters, iterations, seed=seed + partition)
    return result


@dataclass(frozen=True)
class ClusterTable:
    """Partitions as lookup tables: `order[p]` lists the images of partition `p` grouped by cluster; cluster `c`
    occupies `order[p, offsets[p, c] : offsets[p, c] + sizes[p, c]]`."""

    order: np.ndarray  # [partitions, N] int64
    offsets: np.ndarray  # [partitions, clusters] int64
    sizes: np.ndarray  # [partitions, clusters] int64

    @classmethod
    def from_assignments(cls, assignments: np.ndarray) -> ClusterTable:
        assignments = np.atleast_2d(np.asarray(assignments))
        clusters = int(assignments.max()) + 1
        order = np.argsort(assignments, axis=1, kind="stable").astype(np.int64)
        sizes = np.stack([np.bincount(row, minlength=clusters) for row in assignments]).astype(np.int64)
        offsets = np.concatenate([np.zeros_like(sizes[:, :1]), np.cumsum(sizes, axis=1)[:, :-1]], axis=1)
        return cls(order, offsets, sizes)


def cluster_task(images: tf.Tensor, table: dict[str, tf.Tensor], spec: EpisodeSpec, seed: tf.Tensor) -> dict:
    """One N-way K-shot task over the clusters (pseudo-classes) of a random partition.

    Args:
        images: uint8 `[N, H, W, C]`.
        table: `ClusterTable` fields as tensors (see `cluster_task_maker`).
        spec: ways, shots and queries; only clusters with at least `shots + queries` members are drawn.
        seed: stateless seed pair.
    """
    partition_seed, cluster_seed, member_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    partitions, clusters = table["sizes"].shape
    partition = tf.random.stateless_uniform([], partition_seed, 0, partitions, dtype=tf.int32)
    per_class = spec.shots + spec.queries
    sizes, offsets = table["sizes"][partition], table["offsets"][partition]
    too_small = tf.cast(sizes < per_class, tf.float32)
    chosen = tf.argsort(tf.random.stateless_uniform([clusters], cluster_seed) + 2.0 * too_small)[: spec.ways]
    member_seeds = tf.random.experimental.stateless_split(member_seed, spec.ways)
    positions = tf.stack([distinct_indices(per_class, tf.gather(sizes, chosen[c]) - 1, member_seeds[c])
                          for c in range(spec.ways)])  # [ways, per_class]
    picks = tf.gather(table["order"][partition], tf.gather(offsets, chosen)[:, tf.newaxis] + positions)
    return class_major_task(to_float(tf.gather(images, picks)), spec.shots)


def cluster_task_maker(images: tf.Tensor, assignments: np.ndarray, spec: EpisodeSpec):
    """`seed → cluster_task(...)` over partitions `assignments [partitions, N]`; checks every partition first."""
    table = ClusterTable.from_assignments(assignments)
    eligible = (table.sizes >= spec.shots + spec.queries).sum(axis=1)
    if eligible.min() < spec.ways:
        raise ValueError(f"{spec.ways}-way tasks need {spec.ways} clusters of at least {spec.shots + spec.queries} "
                         f"images in every partition; the poorest partition has {int(eligible.min())}: use fewer "
                         "clusters, fewer shots/queries or fewer ways")
    tensors = {name: tf.constant(getattr(table, name)) for name in ("order", "offsets", "sizes")}
    return lambda seed: cluster_task(images, tensors, spec, seed)


def encoder_embeddings(model, images: np.ndarray, batch_size: int = 1024, normalize: bool = True) -> np.ndarray:
    """Features `[N, d]` of uint8 `images` (or sentences `[N]`) from a trained model (`model(images)` → backbone
    features)."""
    table = np.asarray(images)
    if table.ndim == 3:
        table = table[..., np.newaxis]
    infer = tf.function(lambda batch: model(model_input(batch), training=False))
    features = np.concatenate([infer(as_constant(table[start : start + batch_size])).numpy()
                               for start in range(0, len(table), batch_size)])
    if normalize:
        features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return features


# === Mixtures and pipelines ===
def mixture_maker(makers, weights=None):
    """`seed → task` drawing each task from `makers[k]` with probability ∝ `weights[k]` (equal by default).

    All makers must give tasks of the same shapes (same ways, shots and queries).
    """
    makers = list(makers)
    weights = np.ones(len(makers)) if weights is None else np.asarray(weights, np.float64)
    if len(weights) != len(makers) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"mixture weights must be {len(makers)} non-negative numbers, not all 0; got {weights}")
    log_weights = tf.constant(np.log(np.maximum(weights / weights.sum(), 1e-30))[np.newaxis], tf.float32)

    def make(seed):
        kind_seed, task_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        kind = tf.cast(tf.random.stateless_categorical(log_weights, 1, kind_seed)[0, 0], tf.int32)
        return tf.switch_case(kind, [lambda maker=maker: maker(task_seed) for maker in makers])

    return make


def task_dataset(make_task, meta_batch: int = 1, seed: int = 0, num_episodes: int | None = None,
                 first_episode: int = 0) -> tf.data.Dataset:
    """Meta-batches of tasks `make_task((seed, i))` for i = first_episode, first_episode + 1, ...

    Args:
        make_task: stateless seed pair → task dict.
        meta_batch: tasks per element.
        seed: the pipeline is a pure function of the seed.
        num_episodes: tasks in total; `None` repeats forever.
        first_episode: index of the first task (a resumed run continues where it stopped).
    """
    indices = tf.data.Dataset.range(first_episode, first_episode + num_episodes) if num_episodes is not None \
        else tf.data.Dataset.counter(first_episode)

    def make(index):
        return make_task(tf.stack([tf.constant(seed, tf.int64), index]))

    dataset = indices.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(meta_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def task_maker(kind: str, images: np.ndarray, spec: EpisodeSpec, view_preset="omniglot", assignments=None,
               mixture=None, mixture_weights=None, original_support: bool = False,
               transformations=SEED_TRANSFORMATIONS):
    """`seed → task` for an unsupervised task kind (see the module docstring).

    Args:
        kind: `augmentation`, `transformation`, `clusters` or `mixture`.
        images: unlabeled uint8 `[N, H, W]` or `[N, H, W, 1]`.
        spec: ways, shots and queries (transformation tasks have one way per transformation).
        view_preset: augmentation of `augmentation` tasks.
        assignments: cluster ids `[partitions, N]` (`cluster_partitions`), needed by `clusters`.
        mixture: the kinds a `mixture` draws from (default: augmentation, transformation, and clusters when
            `assignments` is given).
        mixture_weights: their relative frequencies (default equal).
        original_support: UMTRA's un-augmented shots for `augmentation` tasks.
        transformations: names of the transformation classes (`mssl_tf.data.views.TRANSFORMATIONS`).
    """
    table = as_image_table(images)
    if kind == "augmentation":
        if spec.ways > table.shape[0]:
            raise ValueError(f"{spec.ways}-way augmentation tasks need {spec.ways} images, got {table.shape[0]}")
        return lambda seed: augmentation_task(table, spec, seed, view_preset, original_support)
    if kind == "transformation":
        if table.dtype == tf.string:
            raise ValueError("transformation tasks transform images; for sentences use augmentation or clusters tasks")
        if spec.ways != len(transformations):
            raise ValueError(f"transformation tasks have one class per transformation ({len(transformations)}: "
                             f"{', '.join(transformations)}); set ways to {len(transformations)}, not {spec.ways}")
        if len(transformations) * (spec.shots + spec.queries) > table.shape[0]:
            raise ValueError("transformation tasks need ways × (shots + queries) distinct images")
        return lambda seed: transformation_task(table, spec.shots, spec.queries, seed, transformations)
    if kind == "clusters":
        if assignments is None:
            raise ValueError("cluster tasks need cluster assignments: pass a trained encoder (--cluster-encoder PATH)")
        return cluster_task_maker(table, assignments, spec)
    if kind == "mixture":
        kinds = mixture or ["augmentation", "transformation"] + (["clusters"] if assignments is not None else [])
        makers = [task_maker(name, images, spec, view_preset, assignments, original_support=original_support,
                             transformations=transformations) for name in kinds]
        return mixture_maker(makers, mixture_weights)
    raise ValueError(f"Unknown unsupervised task kind {kind!r}; choose from {TASK_KINDS[1:]}")

"""Unsupervised task constructors: shapes, labels, exact transformations, determinism, k-means, mixtures."""

import numpy as np
import pytest
import tensorflow as tf

from mssl_tf.data import EpisodeSpec
from mssl_tf.data import unsupervised_tasks as tasks
from tests.conftest import labelled_classes

SIZE = 12


def random_images(count=60, size=SIZE, seed=0):
    """Unlabeled uint8 images `[count, size, size]` of random pixels: no two alike, no symmetry."""
    return np.random.default_rng(seed).integers(0, 256, [count, size, size], dtype=np.uint8)


def first_task(maker, seed=0, index=0):
    return next(iter(tasks.task_dataset(maker, meta_batch=1, seed=seed, first_episode=index)))


def as_numpy(task):
    return {key: value.numpy()[0] for key, value in task.items()}


def numpy_transform(image, name):
    """The seed's transformations written independently in numpy (`image [H, W]`)."""
    if name == "rot0":
        return image
    if name == "hflip":
        return image[:, ::-1]
    if name == "vflip":
        return image[::-1]
    if name == "rot90":
        return np.rot90(image, 1)
    if name == "downsample":  # 2x2 block means, each repeated over its block
        height, width = image.shape
        blocks = image.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
        return np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)
    raise ValueError(name)


def source_of(image, sources, name):
    """Index of the one source image that `name` maps onto `image`, or None."""
    matches = [index for index, source in enumerate(sources)
               if np.allclose(numpy_transform(source, name), image, atol=1e-6)]
    assert len(matches) <= 1
    return matches[0] if matches else None


def test_unlabeled_images_keep_only_the_pixels():
    class_images = labelled_classes(classes=4, drawings=3)
    images = tasks.unlabeled_images(class_images)
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[4], class_images[1, 1])


def test_augmentation_tasks_with_identity_views_are_sampled_images_repeated():
    images = random_images()
    spec = EpisodeSpec(5, 2, 3)
    task = as_numpy(first_task(tasks.task_maker("augmentation", images, spec, view_preset="none")))
    assert task["support_images"].shape == (10, SIZE, SIZE, 1) and task["query_images"].shape == (15, SIZE, SIZE, 1)
    np.testing.assert_array_equal(task["support_labels"], np.repeat(np.arange(5), 2))
    np.testing.assert_array_equal(task["query_labels"], np.repeat(np.arange(5), 3))
    sources = images.astype(np.float32) / 255
    found = []
    for label in range(5):
        members = np.concatenate([task["support_images"][task["support_labels"] == label],
                                  task["query_images"][task["query_labels"] == label]])[..., 0]
        indices = {source_of(member, sources, "rot0") for member in members}
        assert len(indices) == 1 and None not in indices, "a class must be views of one image"
        found.extend(indices)
    assert len(set(found)) == 5, "the classes must be distinct images"


def test_augmentation_tasks_are_augmented_deterministic_and_umtra_keeps_the_original():
    images = random_images()
    spec = EpisodeSpec(4, 2, 2)
    maker = tasks.task_maker("augmentation", images, spec, view_preset="omniglot")
    task = as_numpy(first_task(maker, seed=3))
    again = as_numpy(first_task(maker, seed=3))
    other = as_numpy(first_task(maker, seed=4))
    for key in task:
        np.testing.assert_array_equal(task[key], again[key])
    assert not np.array_equal(task["query_images"], other["query_images"])
    assert not np.allclose(task["support_images"][0], task["support_images"][1]), "two views of a class are equal"
    assert 0.0 <= task["query_images"].min() and task["query_images"].max() <= 1.0
    umtra = as_numpy(first_task(tasks.task_maker("augmentation", images, spec, original_support=True), seed=3))
    sources = images.astype(np.float32) / 255
    support_sources = [source_of(image[..., 0], sources, "rot0") for image in umtra["support_images"]]
    assert None not in support_sources and len(set(support_sources)) == 4  # the un-augmented images, 2 shots each


def test_transformation_tasks_are_exact_and_use_distinct_images():
    images = random_images(count=40)
    sources = images.astype(np.float32) / 255
    spec = EpisodeSpec(5, 2, 3)
    orders = set()
    for index in range(4):
        task = as_numpy(first_task(tasks.task_maker("transformation", images, spec), seed=1, index=index))
        used, order = [], []
        for label in range(5):
            members = np.concatenate([task["support_images"][task["support_labels"] == label],
                                      task["query_images"][task["query_labels"] == label]])[..., 0]
            names = [name for name in tasks.SEED_TRANSFORMATIONS
                     if all(source_of(member, sources, name) is not None for member in members)]
            assert len(names) == 1, f"class {label} is not one transformation: {names}"
            order.append(names[0])
            used.extend(source_of(member, sources, names[0]) for member in members)
        assert sorted(order) == sorted(tasks.SEED_TRANSFORMATIONS), "each transformation must be one class"
        assert len(set(used)) == 25, "support and query images must all be different images"
        orders.add(tuple(order))
    assert len(orders) > 1, "the class order must be shuffled per task"


def test_transformation_tasks_need_one_way_per_transformation():
    with pytest.raises(ValueError, match="set ways to 5"):
        tasks.task_maker("transformation", random_images(), EpisodeSpec(20, 1, 1))


def blobs(centers=4, per_cluster=50, dimensions=5, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=20.0, size=(centers, dimensions))
    points = np.concatenate([mean + rng.normal(size=(per_cluster, dimensions)) for mean in means])
    order = rng.permutation(len(points))
    return points[order], np.repeat(np.arange(centers), per_cluster)[order]


def test_kmeans_recovers_separated_clusters_and_is_deterministic():
    points, truth = blobs()
    centroids, assignments = tasks.kmeans(points, 4, seed=5)
    contingency = np.zeros((4, 4), int)
    np.add.at(contingency, (truth, assignments), 1)
    assert (np.count_nonzero(contingency, axis=1) == 1).all() and (np.count_nonzero(contingency, axis=0) == 1).all()
    for cluster in range(4):
        np.testing.assert_allclose(centroids[cluster], points[assignments == cluster].mean(axis=0))
    _, again = tasks.kmeans(points, 4, seed=5)
    np.testing.assert_array_equal(assignments, again)
    _, singletons = tasks.kmeans(points[:10], 10, seed=0)
    assert sorted(singletons) == list(range(10)), "with k = N every point is its own cluster"


def test_partitions_are_deterministic_and_each_recovers_the_clusters():
    points, truth = blobs(dimensions=3)
    partitions = tasks.cluster_partitions(points, 4, partitions=3, seed=2)
    np.testing.assert_array_equal(partitions, tasks.cluster_partitions(points, 4, partitions=3, seed=2))
    for partition in partitions:
        pairs = {(t, a) for t, a in zip(truth, partition)}
        assert len(pairs) == 4, "a partition split or merged a separated cluster"


def test_cluster_tasks_draw_pseudo_classes_of_one_partition():
    images = random_images(count=60)
    sources = images.astype(np.float32) / 255
    assignments = np.stack([np.arange(60) % 6, (np.arange(60) // 10) % 6])  # two partitions of 6 clusters of 10
    assignments[:, 0] = 6  # a cluster of one image: too small for 1 shot + 2 queries, never drawn
    spec = EpisodeSpec(4, 1, 2)
    maker = tasks.task_maker("clusters", images, spec, assignments=assignments)
    for index in range(6):
        task = as_numpy(first_task(maker, seed=2, index=index))
        members = [[source_of(image[..., 0], sources, "rot0") for image in np.concatenate([
            task["support_images"][task["support_labels"] == label],
            task["query_images"][task["query_labels"] == label]])] for label in range(4)]
        flat = [index for group in members for index in group]
        assert len(set(flat)) == 12 and 0 not in flat
        fits = [all(len({row[i] for i in group}) == 1 for group in members) and
                len({row[group[0]] for group in members}) == 4 for row in assignments]
        assert any(fits), "every class must be one cluster, and the classes distinct clusters of one partition"
    with pytest.raises(ValueError, match="clusters of at least"):
        tasks.task_maker("clusters", images, EpisodeSpec(7, 1, 2), assignments=assignments)


def test_mixture_draws_each_kind_by_weight():
    images = random_images()
    spec = EpisodeSpec(5, 2, 1)

    def is_augmentation(task):  # identity views: every shot of a class is the same image
        return np.array_equal(task["support_images"][0], task["support_images"][1])

    def kinds(weights):
        maker = tasks.task_maker("mixture", images, spec, view_preset="none", mixture_weights=weights)
        dataset = tasks.task_dataset(maker, meta_batch=1, seed=0, num_episodes=12)
        return [is_augmentation(as_numpy(task)) for task in dataset]

    assert all(kinds([1.0, 0.0])) and not any(kinds([0.0, 1.0]))
    mixed = kinds(None)
    assert 0 < sum(mixed) < len(mixed) and mixed == kinds(None)


def test_task_dataset_resumes_at_any_episode():
    maker = tasks.task_maker("augmentation", random_images(), EpisodeSpec(3, 1, 1))
    full = list(tasks.task_dataset(maker, meta_batch=2, seed=7, num_episodes=6))
    resumed = list(tasks.task_dataset(maker, meta_batch=2, seed=7, num_episodes=4, first_episode=2))
    for expected, measured in zip(full[1:], resumed):
        np.testing.assert_array_equal(expected["query_images"], measured["query_images"])


def test_training_glue_hands_the_constructors_images_only():
    """`--tasks` tasks from a class-structured split equal tasks built from the bare flattened images."""
    from mssl_tf.training import TrainConfig
    from mssl_tf.training.datasets import task_dataset

    class_images = labelled_classes(classes=10, drawings=4)
    config = TrainConfig(tasks="augmentation", views="omniglot", meta_batch=2, seed=3)
    spec = EpisodeSpec(5, 1, 2)
    from_split = next(iter(task_dataset(config, class_images, spec, start_step=1)))
    bare = class_images.reshape(40, 28, 28)
    direct = list(tasks.task_dataset(tasks.task_maker("augmentation", bare, spec), meta_batch=2, seed=3,
                                     num_episodes=4))[1]
    for key in direct:
        np.testing.assert_array_equal(from_split[key], direct[key])
    with pytest.raises(ValueError, match="--cluster-encoder"):
        task_dataset(TrainConfig(tasks="clusters"), class_images, spec)


def test_distinct_indices_are_a_permutation_prefix():
    values = tasks.distinct_indices(50, tf.constant(49, tf.int64), tf.constant([1, 2], tf.int64)).numpy()
    assert sorted(values) == list(range(50))


def test_cluster_tasks_from_an_encoder_are_clustered_once_and_cached(tmp_path):
    import mssl_tf
    from mssl_tf.training import TrainConfig
    from mssl_tf.training.datasets import task_dataset

    encoder = mssl_tf.build_method("protonet", mssl_tf.conv4())
    encoder.save(tmp_path / "model.keras")
    class_images = labelled_classes(classes=10, drawings=4)
    config = TrainConfig(tasks="clusters", cluster_encoder=str(tmp_path), output=str(tmp_path / "run"),
                         task_options={"clusters": 4, "partitions": 2})
    spec = EpisodeSpec(3, 1, 1)
    batch = next(iter(task_dataset(config, class_images, spec)))
    cache = np.load(tmp_path / "run" / "cluster_partitions.npz")
    assignments = cache["assignments"]
    assert assignments.shape == (2, 40) and assignments.max() == 3
    embeddings = tasks.encoder_embeddings(encoder, class_images.reshape(40, 28, 28))
    np.testing.assert_array_equal(assignments, tasks.cluster_partitions(embeddings, 4, 2, iterations=30))
    sources = class_images.reshape(40, 28, 28).astype(np.float32) / 255
    support = [source_of(image[..., 0], sources, "rot0") for image in batch["support_images"][0].numpy()]
    query = [source_of(image[..., 0], sources, "rot0") for image in batch["query_images"][0].numpy()]
    assert any(all(row[s] == row[q] for s, q in zip(support, query)) and len({row[s] for s in support}) == 3
               for row in assignments), "each class must be one cluster of one partition"
    stamp = (tmp_path / "run" / "cluster_partitions.npz").stat().st_mtime_ns
    next(iter(task_dataset(config, class_images, spec)))
    assert (tmp_path / "run" / "cluster_partitions.npz").stat().st_mtime_ns == stamp, "the cache was not reused"
    from mssl_tf.training.clusters import clustering_seconds
    from mssl_tf.training.records import task_summary as summary

    assert clustering_seconds(config) == float(cache["seconds"]) >= 0.0
    assert summary(config)["clustering_seconds"] == clustering_seconds(config)

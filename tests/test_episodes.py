import numpy as np
import pytest

from mssl_tf.data import EpisodeSpec, episode_dataset, evaluation_episodes
from tests.conftest import labelled_classes


def identities(images):
    """(class id, drawing id) of each image, decoded from the two marker pixels."""
    raw = np.rint(images[..., 0] * 255).astype(int)
    return list(zip(raw[:, 0, 0], raw[:, 0, 1]))


def test_shapes_and_labels():
    batch = next(iter(episode_dataset(labelled_classes(), EpisodeSpec(5, 2, 3), meta_batch=4, seed=1)))
    assert batch["support_images"].shape == (4, 10, 28, 28, 1)
    assert batch["query_images"].shape == (4, 15, 28, 28, 1)
    np.testing.assert_array_equal(batch["support_labels"][0], np.repeat(np.arange(5), 2))
    np.testing.assert_array_equal(batch["query_labels"][0], np.repeat(np.arange(5), 3))
    assert float(batch["support_images"].numpy().max()) <= 1.0


def test_classes_distinct_labels_consistent_and_support_query_disjoint():
    spec = EpisodeSpec(6, 3, 4)
    for batch in episode_dataset(labelled_classes(), spec, meta_batch=2, seed=3, num_episodes=20):
        for task in range(2):
            support = identities(batch["support_images"][task].numpy())
            query = identities(batch["query_images"][task].numpy())
            assert not set(support) & set(query), "support and query share an image"
            label_to_class = {}
            for (cls, _), label in zip(support + query, np.concatenate(
                    [batch["support_labels"][task], batch["query_labels"][task]])):
                assert label_to_class.setdefault(int(label), cls) == cls
            assert len(set(label_to_class.values())) == spec.ways, "a class appears twice in a task"


def test_deterministic_for_a_seed_and_different_across_seeds():
    images = labelled_classes()

    def first(seed):
        return next(iter(episode_dataset(images, EpisodeSpec(5, 1, 2), meta_batch=3, seed=seed)))["query_images"]

    np.testing.assert_array_equal(first(5), first(5))
    assert not np.array_equal(first(5), first(6))


def test_evaluation_episodes_do_not_depend_on_grouping():
    images = labelled_classes()
    spec = EpisodeSpec(5, 1, 2)
    one = np.concatenate([b["query_images"] for b in episode_dataset(images, spec, 1, seed=9, num_episodes=6)])
    three = np.concatenate([b["query_images"] for b in episode_dataset(images, spec, 3, seed=9, num_episodes=6)])
    np.testing.assert_array_equal(one, three)
    assert len(list(evaluation_episodes(images, spec, num_episodes=7))) == 7


def test_impossible_specs_are_rejected():
    with pytest.raises(ValueError, match="need at least 20 classes"):
        episode_dataset(labelled_classes(classes=12), EpisodeSpec(20, 1, 1))
    with pytest.raises(ValueError, match="exceed the 20 drawings"):
        episode_dataset(labelled_classes(), EpisodeSpec(5, 10, 11))

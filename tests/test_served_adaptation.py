"""Served `few_shot` adapts as the method does: gRPC accuracy on fixed episodes equals in-process evaluation.

One model per family, exported and served by the embedded TF-Serving-compatible server: metric (ProtoNet,
Matching, Siamese, Relation), optimization (MAML second order with its card's evaluation steps, ANIL, Meta-SGD), memory
(the memory network; MANN, slow), network
(hyper-network emitting a head, plus a fine-tuning step), generation (VERSA: a Gaussian head per class, its
predictive averaged over a fixed draw of samples), and self-supervised (MoCo: nearest prototype of its
frozen features). The zoo's trained entries are used where the zoo has one, so the adaptation matters: for them
the test also checks that nearest-prototype classification of the same features scores differently (what the
served signature did before it ran each method's own adaptation).
"""

import keras
import numpy as np
import pytest

from mssl_tf import backbones, zoo
from mssl_tf.data.episodes import EVALUATION_SEED, EpisodeSpec, episode_dataset
from mssl_tf.data.omniglot import load_split
from mssl_tf.evaluation import episode_accuracies
from mssl_tf.export import export_model, read_metadata
from mssl_tf.methods import build_method
from mssl_tf.methods.protonet import prototype_logits
from mssl_tf.pipeline import served_episode_accuracies

SPEC = EpisodeSpec(5, 1, 5)
EPISODES = 20
TRAINED = {  # family → zoo entry
    "protonet": "prototypical-networks-conv4-omniglot",
    "maml": "model-agnostic-meta-learning-conv4-omniglot-5way",
    "memory": "memory-network-augmentation-tasks-conv4-omniglot-unsupervised",
    "moco": "momentum-contrast-v2-conv4-omniglot-unsupervised",
}
UNTRAINED = {  # registry name → options (random initialization: the adaptation still decides the answers)
    "matching": {"full_context_embeddings": True},
    "siamese": {},
    "relation": {},
    "anil": {"ways": 5, "inner_steps": 1, "evaluation_inner_steps": 3, "inner_learning_rate": 0.4},
    "metasgd": {"ways": 5, "inner_steps": 1, "evaluation_inner_steps": 2, "inner_learning_rate": 0.4},
    "hypernetwork": {"inner_steps": 1, "evaluation_inner_steps": 2},
    "memory_persistent": {"persistent_slots": 4},  # values set below: an untrained persistent memory reads zero
    "mann": {"max_ways": 5, "controller_units": 32, "memory_slots": 16, "memory_width": 16},
    "versa": {"initial_log_variance": 0.0},  # generation: sampled classifiers, averaged with a fixed evaluation draw
    "byol_protonet": {},  # BYOL + ProtoNet: the heads and target network are not served, the prototypes are
}
METHOD_OF = {"memory_persistent": "memory"}  # entries that are a registered method with other options
ADAPTING = ("maml", "memory")  # trained entries whose own adaptation beats nearest prototype on their features
# By default: nearest prototype (ProtoNet), the two trained entries whose own adaptation differs from it (MAML's
# inner steps, the memory's write and read) and VERSA, the generation family's only member; every other family
# member runs with the slow checks (each export takes 5-20 s, the default suite's budget is about 10 minutes).
SLOW = ("anil", "metasgd", "matching", "siamese", "relation", "hypernetwork", "moco", "memory_persistent", "mann",
        "byol_protonet")


@pytest.fixture(scope="module")
def models(request):
    keras.utils.set_random_seed(0)
    slow_too = "not slow" not in (request.config.getoption("markexpr") or "")
    built = {family: zoo.load(entry) for family, entry in TRAINED.items() if family not in SLOW or slow_too}
    for name, options in UNTRAINED.items():
        if name not in SLOW or slow_too:
            built[name] = build_method(METHOD_OF.get(name, name), backbones.conv4(), **options)
    if "memory_persistent" in built:
        values = built["memory_persistent"].persistent_values
        values.assign(np.random.default_rng(0).normal(size=values.shape))
    return built


@pytest.fixture(scope="module")
def test_images(omniglot_dir):
    return load_split("test", omniglot_dir)


@pytest.fixture(scope="module")
def served(models, test_images, tmp_path_factory):
    """Per-episode accuracies over gRPC for every model of this session, all served by one server."""
    from mssl_tf.serving import EmbeddingClient, ModelConfig, ModelServer

    base = tmp_path_factory.mktemp("export")
    for name, model in models.items():
        export_model(model, base, name, warmup=False)
    configs = [ModelConfig(name, str(base / name)) for name in models]
    with ModelServer(configs, port=0, rest_api_port=None, poll_wait_seconds=0) as server:
        results = {}
        for name in models:
            with EmbeddingClient(f"127.0.0.1:{server.grpc_port}", name) as client:
                results[name] = served_episode_accuracies(client, test_images, SPEC, EPISODES)
    return results, base


def prototype_accuracies(model, test_images):
    """Nearest prototype of the backbone's features on the same episodes (the served signature before)."""
    dataset = episode_dataset(test_images, SPEC, meta_batch=1, seed=EVALUATION_SEED, num_episodes=EPISODES)
    accuracies = []
    for batch in dataset:
        support = model.backbone(batch["support_images"][0], training=False)
        query = model.backbone(batch["query_images"][0], training=False)
        logits = prototype_logits(support, batch["support_labels"][0], query).numpy()
        accuracies.append(np.mean(logits.argmax(-1) == batch["query_labels"][0].numpy()))
    return np.asarray(accuracies)


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
                                  for name in [*TRAINED, *UNTRAINED]])
def test_served_few_shot_equals_in_process_evaluation(name, models, served, test_images):
    model = models[name]
    in_process = episode_accuracies(model, test_images, SPEC, episodes=EPISODES)
    over_grpc = served[0][name]
    queries = SPEC.ways * SPEC.queries
    np.testing.assert_array_equal(np.rint(over_grpc * queries), np.rint(in_process * queries))  # correct answers
    if name in ADAPTING:
        assert not np.allclose(over_grpc, prototype_accuracies(model, test_images)), (
            f"{name}: nearest prototype scores the same episodes identically; the check would not notice a "
            "served signature that skips the method's adaptation")


def test_the_export_records_the_adaptation(models, served):
    metadata = read_metadata(served[1] / "maml" / "1")
    assert metadata["few_shot_adaptation"]["method"] == "MAML"
    assert metadata["few_shot_adaptation"]["fixed_ways"] == 5
    assert metadata["few_shot_adaptation"]["evaluation_inner_steps"] == models["maml"].evaluation_inner_steps
    assert metadata["input"]["shape"] == [28, 28, 1] and metadata["input"]["kind"] == "drawings"
    assert read_metadata(served[1] / "protonet" / "1")["few_shot_adaptation"]["method"] == "ProtoNet"


def test_a_fixed_width_classifier_refuses_another_number_of_classes(served, test_images):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(served[1] / "maml" / "1"))
    images = test_images[:3, 0, :, :, np.newaxis]
    with pytest.raises(tf.errors.InvalidArgumentError, match="5-way"):
        loaded.signatures["few_shot"](support_images=tf.constant(images), support_labels=tf.constant([0, 1, 2]),
                                      query_images=tf.constant(images))


"""Text: WordNet's files → sentence classes → episodes and views of sentences → text backbones → SimCSE and
ProtoNet → export with string signatures → served over gRPC and REST. On a small WordNet made by
tests/wordnet_fixture.py in WordNet's own format (the real one is never needed by this suite)."""

from __future__ import annotations

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="text needs the text extra (keras-hub, tensorflow-text)")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from mssl_tf.backbones import build_backbone  # noqa: E402
from mssl_tf.backbones.text import words_of  # noqa: E402
from mssl_tf.data import wordnet  # noqa: E402
from mssl_tf.data.class_splits import load_class_split  # noqa: E402
from mssl_tf.data.episodes import EpisodeSpec, episode_dataset  # noqa: E402
from mssl_tf.data.omniglot import DatasetNotFoundError  # noqa: E402
from mssl_tf.data.text_views import text_views  # noqa: E402
from mssl_tf.data.views import multi_view_dataset  # noqa: E402
from mssl_tf.evaluation import episode_accuracies  # noqa: E402
from mssl_tf.losses import in_batch_contrastive  # noqa: E402
from mssl_tf.methods import build_method  # noqa: E402
from tests.wordnet_fixture import write_wordnet  # noqa: E402

SMALL_TRANSFORMER = {"vocabulary_size": 300, "embedding_dim": 32, "num_layers": 1, "num_heads": 2,
                     "intermediate_dim": 64, "sequence_length": 16}


@pytest.fixture(scope="module")
def wordnet_dir(tmp_path_factory):
    return str(write_wordnet(tmp_path_factory.mktemp("wordnet")))


@pytest.fixture(scope="module")
def splits(wordnet_dir):
    return {split: load_class_split("wordnet", split, wordnet_dir) for split in ("train", "val", "test")}


# === The WordNet reader and the class construction ===
def test_a_data_line_gives_words_hypernyms_and_gloss():
    line = ("02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 003 @ 02083346 n 0000 @ 01317541 n 0000 "
            '~ 01322604 n 0000 | a member of the genus Canis; "the dog barked all night"  ')
    synset = wordnet.parse_line(line, "n")
    assert synset.words == ("dog", "domestic_dog", "Canis_familiaris")
    assert synset.hypernyms == (("n", "02083346"), ("n", "01317541"))
    assert synset.definition == "a member of the genus Canis"
    assert synset.examples == ("the dog barked all night",)


def test_classes_are_disjoint_full_and_exclude_synsets_with_two_hypernyms(wordnet_dir, splits):
    synsets = wordnet.read_synsets(wordnet_dir)
    assert all(line.startswith(f"{synset.offset} ") for synset in synsets.values()  # offsets are byte offsets
               for line in [open(f"{wordnet_dir}/data.{wordnet.PARTS_OF_SPEECH[synset.pos]}").read()[
                   int(synset.offset):int(synset.offset) + 9]])
    two_hypernyms = {synset.definition for synset in synsets.values() if len(synset.hypernyms) > 1}
    assert two_hypernyms
    seen = set()
    for texts in splits.values():
        assert texts.shape[1] == 20 and texts.dtype == object
        flat = set(texts.ravel())
        assert len(flat) == texts.size and not flat & seen and not flat & two_hypernyms
        seen |= flat
    names = {split: wordnet.hypernym_classes(synsets, split).class_names for split in ("train", "val", "test")}
    assert all(wordnet.split_of(("n", name.rsplit(".", 1)[1])) == split for split, listed in names.items()
               for name in listed if ".n." in name)
    again = load_class_split("wordnet", "val", wordnet_dir, options=__import__(
        "mssl_tf.data.class_splits", fromlist=["DatasetOptions"]).DatasetOptions(min_images=20, seed=0))
    np.testing.assert_array_equal(again, splits["val"])


def test_the_unlabeled_split_holds_no_val_or_test_example(wordnet_dir, splits):
    unlabeled = load_class_split("wordnet", "unlabeled", wordnet_dir)
    assert unlabeled.shape[0] == 1
    texts = set(unlabeled[0])
    assert not texts & set(splits["val"].ravel()) and not texts & set(splits["test"].ravel())
    assert set(splits["train"].ravel()) <= texts


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install wordnet-base"):
        load_class_split("wordnet", "train", str(tmp_path))


# === Episodes and views of sentences ===
def test_episodes_of_sentences_keep_each_class_together(splits):
    train = splits["train"]
    row_of = {text: row for row, texts in enumerate(train) for text in texts}
    task = next(iter(episode_dataset(train, EpisodeSpec(5, 2, 3), seed=1)))
    support = [text.decode() for text in task["support_images"][0].numpy()]
    query = [text.decode() for text in task["query_images"][0].numpy()]
    support_labels, query_labels = task["support_labels"][0].numpy(), task["query_labels"][0].numpy()
    rows = {label: {row_of[text] for text, given in zip(support, support_labels) if given == label}
            for label in range(5)}
    assert all(len(found) == 1 for found in rows.values()) and len({*map(min, rows.values())}) == 5
    assert all(row_of[text] in rows[label] for text, label in zip(query, query_labels))
    assert not set(support) & set(query)


def test_text_views_are_seeded_spans_of_the_words():
    sentence = tf.constant(" ".join(f"w{index}" for index in range(20)))
    seeds = tf.constant([[[1, 2], [3, 4]], [[1, 2], [5, 6]]], tf.int64)
    views = text_views(tf.stack([sentence, sentence]), seeds, "text").numpy()
    assert views[0, 0] == views[1, 0]  # same seed, same view
    assert views[0, 1] != views[1, 1]
    for view in views.ravel():
        indices = [int(word[1:]) for word in view.decode().split()]
        assert indices == sorted(indices) and len(indices) >= 0.8 * 20 * 0.5
        assert indices[-1] - indices[0] + 1 <= 20 and len(indices) < 20 or indices == list(range(20))
    identity = text_views(tf.stack([sentence]), seeds[:1], "identity").numpy()
    assert (identity == sentence.numpy()).all()


def test_multi_view_batches_of_sentences(splits):
    sentences = splits["train"].ravel()
    batch = next(iter(multi_view_dataset(sentences, 8, "identity", seed=0)))
    views = batch["views"].numpy()
    assert views.shape == (8, 2) and (views[:, 0] == views[:, 1]).all()
    assert {text.decode() for text in views[:, 0]} <= set(sentences)


def test_augmentation_tasks_of_sentences_make_each_class_from_one_sentence(splits):
    from mssl_tf.data.unsupervised_tasks import task_maker, unlabeled_images

    sentences = unlabeled_images(splits["train"])
    make = task_maker("augmentation", sentences, EpisodeSpec(5, 2, 3), view_preset="text")
    task = make(tf.constant([7, 1], tf.int64))
    words_of_sentence = [set(text.split()) for text in sentences]
    sources = {label: set(range(len(sentences))) for label in range(5)}  # sentences every view of a class fits
    for key, labels in (("support_images", "support_labels"), ("query_images", "query_labels")):
        for view, label in zip(task[key].numpy(), task[labels].numpy()):
            sources[label] &= {index for index, words in enumerate(words_of_sentence)
                               if set(view.decode().split()) <= words}
    assert all(sources.values()), sources
    with pytest.raises(ValueError, match="transformation tasks transform images"):
        task_maker("transformation", sentences, EpisodeSpec(5, 1, 1))


# === Text backbones ===
def test_the_transformer_tokenizes_inside_and_round_trips(splits, tmp_path):
    keras.utils.set_random_seed(0)
    encoder = build_backbone("transformer", corpus=splits["train"], **SMALL_TRANSFORMER)
    assert encoder.vocabulary[:2] == ["[PAD]", "[UNK]"] and len(encoder.vocabulary) <= 300
    sentences = tf.constant(["a katemi thing", "unseen zzz words", ""])
    features = encoder(sentences, training=False).numpy()
    assert features.shape == (3, 32) and np.isfinite(features).all()
    np.testing.assert_allclose(encoder(sentences[:1]).numpy(), features[:1], atol=1e-5)  # batch-independent
    first, second = (encoder(sentences, training=True).numpy() for _ in range(2))
    assert not np.allclose(first, second)  # dropout noise: SimCSE's two views
    encoder.save(tmp_path / "encoder.keras")
    restored = keras.saving.load_model(tmp_path / "encoder.keras")
    np.testing.assert_array_equal(restored(sentences).numpy(), features)


def test_bag_of_words_is_tf_idf(splits):
    corpus = splits["train"].ravel()
    encoder = build_backbone("bag_of_words", corpus=corpus)
    sentence = corpus[0] + " " + corpus[0].split()[1] + " NeverSeen"
    documents = [set(words_of(text)) for text in corpus]
    expected = np.zeros(len(encoder.vocabulary) + 1)
    for word in words_of(sentence):
        if word in encoder.vocabulary:
            containing = sum(word in document for document in documents)
            expected[1 + encoder.vocabulary.index(word)] += np.log(1 + len(corpus) / (1 + containing))
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(encoder(tf.constant([sentence])).numpy()[0], expected, atol=1e-6)


def test_image_data_refuse_a_text_backbone_and_text_data_an_image_one(wordnet_dir):
    from mssl_tf.training import TrainConfig
    from mssl_tf.training.model import build_model

    with pytest.raises(ValueError, match="holds sentences; --backbone conv4 takes images"):
        build_model(TrainConfig(method="protonet", backbone="conv4", dataset="wordnet", data_dir=wordnet_dir))
    from mssl_tf.training.config import check

    with pytest.raises(ValueError, match="pass --views text"):
        check(TrainConfig(method="protonet", backbone="transformer", dataset="wordnet", tasks="augmentation"))
    check(TrainConfig(method="protonet", backbone="transformer", dataset="wordnet", tasks="augmentation", views="text"))


# === SimCSE ===
def reference_simcse_loss(first, second, temperature=0.05):
    normalize = lambda values: values / np.linalg.norm(values, axis=1, keepdims=True)  # noqa: E731
    logits = normalize(np.asarray(first, np.float64)) @ normalize(np.asarray(second, np.float64)).T / temperature
    return np.mean(np.log(np.exp(logits).sum(axis=1)) - np.diag(logits))


def test_simcse_loss_is_each_sentence_picking_its_second_encoding():
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    loss = in_batch_contrastive(tf.constant(first, tf.float32), tf.constant(second, tf.float32), 0.05)
    assert float(loss) == pytest.approx(reference_simcse_loss(first, second), rel=1e-5)


def test_simcse_on_dropout_noise_learns_to_tell_unseen_sentences_apart(splits, wordnet_dir):
    keras.utils.set_random_seed(0)
    sentences = load_class_split("wordnet", "unlabeled", wordnet_dir)[0]
    model = build_method("simcse", build_backbone("transformer", corpus=sentences, **SMALL_TRANSFORMER))
    model.compile(keras.optimizers.Adam(1e-3))
    unseen = tf.constant(splits["val"][:, 0])  # not in the unlabeled split

    def held_out_loss():  # two dropout passes, scored by the paper's formula (not by the method's own loss)
        return np.mean([reference_simcse_loss(model.backbone(unseen, training=True),
                                              model.backbone(unseen, training=True)) for _ in range(5)])

    before = held_out_loss()
    model.fit(multi_view_dataset(sentences, 64, "identity", seed=0), steps_per_epoch=30, verbose=0)
    after = held_out_loss()
    assert after < 0.5 * before, (before, after)


def validation_loss_and_accuracy(model, class_texts):
    losses, accuracies = [], []
    for batch in episode_dataset(class_texts, EpisodeSpec(5, 1, 5), meta_batch=10, seed=3, num_episodes=100):
        loss, logits = model.meta_batch_learn(batch, training=False)
        losses.append(loss.numpy())
        accuracies.append((logits.numpy().argmax(-1) == batch["query_labels"].numpy()).mean(axis=-1))
    return float(np.mean(losses)), float(np.mean(accuracies))


@pytest.fixture(scope="module")
def protonet(splits):
    """ProtoNet on a small transformer, meta-trained for 40 steps; and its validation loss and accuracy before."""
    keras.utils.set_random_seed(0)
    model = build_method("protonet", build_backbone("transformer", corpus=splits["train"], **SMALL_TRANSFORMER))
    model.compile(keras.optimizers.Adam(1e-3))
    before = validation_loss_and_accuracy(model, splits["val"])
    model.fit(episode_dataset(splits["train"], EpisodeSpec(10, 5, 5), seed=0), steps_per_epoch=40, verbose=0)
    return model, before


def test_protonet_meta_trained_on_sentences_improves_on_unseen_classes(splits, protonet):
    model, (loss_before, accuracy_before) = protonet
    loss_after, accuracy_after = validation_loss_and_accuracy(model, splits["val"])
    # 2,500 scored queries each: a standard error of about 1 point; the loss can rise as distances grow confident.
    assert accuracy_after > accuracy_before + 0.05, (loss_before, loss_after, accuracy_before, accuracy_after)


def plain_stub_embeddings(port, sentences):
    """`serving_default` over gRPC with nothing but TF Serving's own stubs and TensorFlow's tensor protos."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sentences"
    request.inputs["sentences"].CopyFrom(tf.make_tensor_proto(sentences, dtype=tf.string))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    return tf.make_ndarray(response.outputs["embeddings"])


def test_served_sentences_score_what_eval_scores(splits, protonet, tmp_path):
    protonet, _ = protonet
    from mssl_tf.export import export_model, read_metadata
    from mssl_tf.pipeline import served_episode_accuracies
    from mssl_tf.serving import EmbeddingClient, ModelConfig, ModelServer
    from mssl_tf.serving.client import RestClient

    path = export_model(protonet, tmp_path, "sentences")
    metadata = read_metadata(path)
    assert metadata["input"]["kind"] == "text" and metadata["signatures"] == ["serving_default", "few_shot"]
    sentences = ["a lotevi suraka usually made", "a miteno large thing", "é accents and unknown words"]
    expected = tf.math.l2_normalize(protonet(tf.constant(sentences)), axis=-1).numpy()
    spec = EpisodeSpec(5, 1, 5)
    in_process = episode_accuracies(protonet, splits["test"], spec, episodes=20)
    with ModelServer([ModelConfig("sentences", str(tmp_path / "sentences"))], port=0, rest_api_port=0,
                     poll_wait_seconds=0) as server:
        with EmbeddingClient(f"127.0.0.1:{server.grpc_port}", "sentences") as client:
            np.testing.assert_allclose(client.embed_sentences(sentences), expected, atol=1e-5)
            served = served_episode_accuracies(client, splits["test"], spec, episodes=20)
        with RestClient(f"http://127.0.0.1:{server.rest_port}", "sentences") as rest:
            np.testing.assert_allclose(rest.embed_sentences(sentences), expected, atol=1e-5)
        np.testing.assert_allclose(plain_stub_embeddings(server.grpc_port, sentences), expected, atol=1e-5)
    np.testing.assert_array_equal(np.rint(served * 5), np.rint(in_process * 5))


# === Meta-learning on top of pretrained models (--init-from) ===
@pytest.fixture(scope="module")
def tiny_bert_preset(tmp_path_factory, splits):
    """A keras-hub preset directory saved locally from a small, randomly initialized BERT (hub downloads fail here:
    a user's downloaded preset has the same layout)."""
    from mssl_tf.backbones.text import word_piece_vocabulary

    keras.utils.set_random_seed(1)
    directory = tmp_path_factory.mktemp("tiny_bert_preset")
    vocabulary = word_piece_vocabulary(splits["train"], 200)
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *vocabulary[2:]]
    keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(str(directory))
    keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=1, num_heads=2, hidden_dim=16,
                                  intermediate_dim=32, max_sequence_length=32).save_to_preset(str(directory))
    return directory


def small_run(tmp_path, wordnet_dir, **settings):
    from mssl_tf.training import TrainConfig, train

    config = TrainConfig(**{"dataset": "wordnet", "data_dir": wordnet_dir, "ways": 5, "shots": 2, "queries": 2,
                            "steps": 3, "steps_per_epoch": 3, "validate_episodes": 10, "output": str(tmp_path),
                            **settings})
    return train(config)


@pytest.mark.slow  # 30 s: the default suite stays under 10 minutes
def test_init_from_a_keras_hub_preset_meta_trains_the_pretrained_encoder(tiny_bert_preset, wordnet_dir, tmp_path):
    from mssl_tf.backbones.text import PretrainedTextEncoder
    from mssl_tf.export import export_model
    from mssl_tf.training import load_trained

    pretrained = keras_hub.models.BertBackbone.from_preset(str(tiny_bert_preset))
    summary = small_run(tmp_path / "run", wordnet_dir, method="protonet", init_from=str(tiny_bert_preset),
                        backbone_options={"sequence_length": 24})
    assert summary["init_from"]["keras_hub_preset"] and summary["labels_used"]
    model, _ = load_trained(tmp_path / "run")
    encoder = model.backbone
    assert isinstance(encoder, PretrainedTextEncoder) and encoder.sequence_length == 24
    shapes = [tuple(weight.shape) for weight in encoder.encoder.weights]
    assert shapes == [tuple(weight.shape) for weight in pretrained.weights]
    moved = [not np.allclose(a, b) for a, b in zip(encoder.encoder.get_weights(), pretrained.get_weights())]
    assert any(moved)  # meta-trained on top of the preset, not a copy of it
    sentences = tf.constant(["a katemi thing", "another sentence"])
    path = export_model(model, tmp_path / "export", "bert")
    served = tf.saved_model.load(str(path)).signatures["serving_default"](sentences=sentences)["embeddings"]
    np.testing.assert_allclose(served, tf.math.l2_normalize(model(sentences), axis=-1), atol=1e-5)


def test_init_from_a_text_run_keeps_its_vocabulary(wordnet_dir, tmp_path):
    small_run(tmp_path / "simcse", wordnet_dir, method="simcse", split="unlabeled", batch_size=16,
              backbone="transformer", backbone_options={"vocabulary_size": 120, "embedding_dim": 16, "num_layers": 1,
                                                        "num_heads": 2, "intermediate_dim": 32})
    from mssl_tf.training import load_trained
    from mssl_tf.training.config import TrainConfig
    from mssl_tf.training.model import build_model

    source, _ = load_trained(tmp_path / "simcse")
    config = TrainConfig(method="protonet", backbone="transformer", dataset="wordnet", data_dir=wordnet_dir,
                         init_from=str(tmp_path / "simcse"))
    backbone = build_model(config).backbone
    assert backbone.vocabulary == source.backbone.vocabulary  # not a vocabulary learned anew from the train split
    for started, trained in zip(backbone.get_weights(), source.backbone.get_weights()):
        np.testing.assert_array_equal(started, trained)


@pytest.mark.slow  # 20 s: the default suite stays under 10 minutes
def test_a_text_zoo_entry_loads_with_its_vocabulary_and_reproduces_its_metric(wordnet_dir, tmp_path):
    from mssl_tf import zoo
    from mssl_tf.data.episodes import EpisodeSpec as Spec
    from mssl_tf.evaluation import evaluate
    from mssl_tf.training import load_trained
    from mssl_tf.training.evaluate import evaluate_and_record

    small_run(tmp_path / "run", wordnet_dir, method="protonet", backbone="transformer",
              backbone_options={"vocabulary_size": 120, "embedding_dim": 16, "num_layers": 1, "num_heads": 2,
                                "intermediate_dim": 32})
    records = evaluate_and_record(tmp_path / "run", [(5, 1)], episodes=40)
    zoo.create_entry("tiny-text", tmp_path / "run", records, "a tiny text encoder", directory=tmp_path / "zoo")
    card = zoo.read_card("tiny-text", tmp_path / "zoo")
    assert card["input"]["kind"] == "text" and card["paper"] == zoo.PAPERS["protonet"]
    loaded = zoo.load("tiny-text", tmp_path / "zoo")
    trained, _ = load_trained(tmp_path / "run")
    sentences = tf.constant(["a katemi thing", "unseen words"])
    np.testing.assert_array_equal(loaded(sentences).numpy(), trained(sentences).numpy())
    dataset, options = zoo.dataset_of(card)
    texts = load_class_split(dataset, "test", wordnet_dir, options=options)
    assert evaluate(loaded, texts, Spec(5, 1, 15), 40)["accuracy"] == card["metrics"][0]["accuracy"]


# === The transformer inside an inner loop: second-order MAML, exact ===
def test_maml_meta_gradient_through_the_text_transformer_matches_central_differences(float64):
    """Second-order MAML, two inner steps, through a tiny transformer (attention, layer norm, feed-forward, the
    embedding lookup and the masked mean; float64, dropout off): every weight's meta-gradient against central
    differences of the meta-loss (the rule for every backbone used inside an inner loop)."""
    from tests.conftest import central_differences

    from mssl_tf.backbones.text import TextTransformer

    keras.utils.set_random_seed(5)
    vocabulary = ["[PAD]", "[UNK]", "a", "b", "c", "d", "e", "f"]
    encoder = TextTransformer(vocabulary, sequence_length=5, embedding_dim=4, num_layers=1, num_heads=2,
                              intermediate_dim=6, dropout=0.0)
    model = build_method("maml", encoder, ways=2, inner_steps=2, inner_learning_rate=0.5, task_batching=False)
    assert model.network.trainable_variables[0].dtype == "float64"
    batch = {"support_images": tf.constant([["a b", "c d e", "a", "f e d"]] * 2),
             "support_labels": tf.constant([[0, 1, 0, 1]] * 2),
             "query_images": tf.constant([["b a", "d c", "a a b", "e"], ["c", "a b c d", "b", "f"]]),
             "query_labels": tf.constant([[0, 1, 0, 1], [1, 0, 0, 1]])}
    meta_loss = tf.function(lambda: tf.reduce_mean(model.meta_batch_learn(batch, training=True)[0]))
    with tf.GradientTape() as tape:
        loss = meta_loss()
    analytic = np.concatenate([tf.reshape(tf.convert_to_tensor(gradient), [-1]).numpy()
                               for gradient in tape.gradient(loss, model.trainable_variables)])
    numeric = central_differences(meta_loss, model.trainable_variables, 1e-6)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert np.abs(numeric).max() > 1e-3


def test_second_order_maml_refuses_keras_layer_norm_and_says_what_works(tiny_bert_preset):
    from mssl_tf.backbones.text import PretrainedTextEncoder

    encoder = PretrainedTextEncoder.from_preset(tiny_bert_preset, sequence_length=8)
    with pytest.raises(ValueError, match="wrong second derivative.*first_order=True"):
        build_method("maml", encoder, ways=5)
    for name in ("fomaml", "anil"):  # the inner gradient treated as constant, or the head alone adapted: exact
        build_method(name, encoder, ways=5)


@pytest.mark.slow  # 20 s: the default suite stays under 10 minutes
def test_the_readme_text_commands_on_the_fixture(wordnet_dir, tmp_path, capsys):
    """README's text commands with the fixture and a few steps: SimCSE on `unlabeled`, ProtoNet from it, eval,
    export (the serving of such an export: test_served_sentences_score_what_eval_scores)."""
    from mssl_tf import cli
    from mssl_tf.export import read_metadata

    small = ["--data-dir", wordnet_dir, "--steps", "2", "--steps-per-epoch", "2", "--validate-episodes", "5",
             "--backbone-option", "embedding_dim=16", "--backbone-option", "num_layers=1",
             "--backbone-option", "intermediate_dim=32", "--backbone-option", "vocabulary_size=150"]
    simcse, protonet = tmp_path / "simcse", tmp_path / "simcse-protonet"
    assert cli.main(["train", "--dataset", "wordnet", "--split", "unlabeled", "--backbone", "transformer", "--method",
                     "simcse", "--batch-size", "16", *small, "--output", str(simcse)]) == 0
    assert cli.main(["train", "--dataset", "wordnet", "--backbone", "transformer", "--method", "protonet", "--ways",
                     "5", "--shots", "2", "--queries", "2", "--init-from", str(simcse), *small,
                     "--output", str(protonet)]) == 0
    assert cli.main(["eval", str(protonet), "--settings", "5w1s", "--episodes", "10"]) == 0
    assert "5-way 1-shot" in capsys.readouterr().out
    assert cli.main(["export", str(protonet), "--base-dir", str(tmp_path / "export")]) == 0
    assert "signatures: serving_default, few_shot" in capsys.readouterr().out
    assert read_metadata(tmp_path / "export" / "simcse-protonet" / "1")["input"]["kind"] == "text"

"""The zoo: cards, sha256-checked weights (shipped, file:// and http:// on 127.0.0.1), entries from runs, re-eval."""

import functools
import http.server
import json
import shutil
import threading

import numpy as np
import pytest

from mssl_tf import cli, zoo
from mssl_tf.data import EpisodeSpec, load_split
from mssl_tf.evaluation import evaluate

SUPERVISED = "prototypical-networks-conv4-omniglot"


def copy_entry(name, directory, drop_file=False):
    """A private zoo with one entry (card + weights), so tests can break it."""
    card = zoo.read_card(name)
    (directory / "weights").mkdir(parents=True, exist_ok=True)
    shutil.copy(zoo.zoo_dir() / card["weights"]["file"], directory / card["weights"]["file"])
    if drop_file:
        (directory / card["weights"]["file"]).unlink()
    zoo.card_path(name, directory).write_text(json.dumps(card))
    return card


def write_card(card, directory):
    zoo.card_path(card["name"], directory).write_text(json.dumps(card))


def test_every_card_is_complete_and_its_weights_match():
    assert SUPERVISED in zoo.list()
    for name in zoo.list():
        card = zoo.read_card(name)
        assert card["name"] == name
        assert zoo.sha256_of(zoo.zoo_dir() / card["weights"]["file"]) == card["weights"]["sha256"]
        assert card["training"]["command"].startswith("mssl-tf train")
        assert all(metric["episodes"] >= 600 and metric["ci95"] > 0 for metric in card["metrics"])


def test_supervised_entry_loads_and_classifies(omniglot_dir):
    model = zoo.load(SUPERVISED)
    result = evaluate(model, load_split("test", omniglot_dir), EpisodeSpec(5, 1, 15), episodes=50)
    # The card says 98.6 ± 0.2 on 600 episodes; the first 50 of the same episodes cannot be near chance (20%).
    assert result["accuracy"] > 95.0


def test_unknown_entry_lists_the_known_ones():
    with pytest.raises(KeyError, match=SUPERVISED):
        zoo.read_card("no-such-model")


def test_tampered_weights_are_rejected_naming_file_and_hashes(tmp_path):
    card = copy_entry(SUPERVISED, tmp_path)
    weights = tmp_path / card["weights"]["file"]
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(zoo.WeightsHashMismatchError) as error:
        zoo.load(SUPERVISED, directory=tmp_path)
    message = str(error.value)
    assert str(weights) in message and card["weights"]["sha256"] in message and zoo.sha256_of(weights) in message


def test_weights_from_a_file_url_are_cached_and_checked(tmp_path):
    card = copy_entry(SUPERVISED, tmp_path / "zoo", drop_file=True)
    card["weights"]["url"] = (zoo.zoo_dir() / card["weights"]["file"]).as_uri()
    write_card(card, tmp_path / "zoo")
    model = zoo.load(SUPERVISED, directory=tmp_path / "zoo", cache=tmp_path / "cache")
    cached = list((tmp_path / "cache" / "zoo").iterdir())
    assert len(cached) == 1 and zoo.sha256_of(cached[0]) == card["weights"]["sha256"]
    reference = zoo.load(SUPERVISED)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), reference.get_weights()))


@pytest.fixture
def local_http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving `tmp_path / "www"`."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_weights_over_http_then_from_cache_and_bad_downloads_are_not_kept(tmp_path, local_http_server):
    root, address = local_http_server
    card = copy_entry(SUPERVISED, tmp_path / "zoo", drop_file=True)
    shutil.copy(zoo.zoo_dir() / card["weights"]["file"], root / "good.weights.h5")
    (root / "bad.weights.h5").write_bytes(b"not the weights")

    card["weights"]["url"] = f"{address}/bad.weights.h5"
    write_card(card, tmp_path / "zoo")
    with pytest.raises(zoo.WeightsHashMismatchError):
        zoo.load(SUPERVISED, directory=tmp_path / "zoo", cache=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache" / "zoo").iterdir() if not p.name.startswith(".")]

    card["weights"]["url"] = f"{address}/good.weights.h5"
    write_card(card, tmp_path / "zoo")
    zoo.load(SUPERVISED, directory=tmp_path / "zoo", cache=tmp_path / "cache")
    (root / "good.weights.h5").unlink()  # the second load must come from the cache
    zoo.load(SUPERVISED, directory=tmp_path / "zoo", cache=tmp_path / "cache")


@pytest.mark.slow  # trains a run, evaluates it on 600 episodes, re-measures it from the card
def test_entry_from_a_training_run_and_zoo_eval_reproduces_it(tmp_path, omniglot_dir, monkeypatch):
    run, records = tmp_path / "run", tmp_path / "records"
    assert cli.main(["train", "--method", "protonet", "--data-dir", str(omniglot_dir), "--ways", "5", "--shots", "1",
                     "--queries", "2", "--steps", "2", "--steps-per-epoch", "2", "--validate-episodes", "10",
                     "--output", str(run)]) == 0
    assert cli.main(["eval", str(run), "--data-dir", str(omniglot_dir), "--settings", "5w1s", "--episodes", "600",
                     "--results-dir", str(records), "--run-name", "tiny"]) == 0
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(tmp_path / "zoo"))
    assert cli.main(["zoo", "add", "tiny-prototypical-networks", "--run", str(run), "--records",
                     str(records / "tiny_5w1s.json"), "--description", "two steps"]) == 0
    card = zoo.read_card("tiny-prototypical-networks")
    assert card["dataset"]["labels_used"] is True and card["metrics"][0]["ways"] == 5
    assert cli.main(["zoo", "eval", "tiny-prototypical-networks", "--data-dir", str(omniglot_dir)]) == 0

    card["metrics"][0]["accuracy"] += 5 * card["metrics"][0]["ci95"]  # a card that lies must fail
    write_card(card, tmp_path / "zoo")
    assert cli.main(["zoo", "eval", "tiny-prototypical-networks", "--data-dir", str(omniglot_dir)]) == 1

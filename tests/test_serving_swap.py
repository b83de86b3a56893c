"""A new version dropped into the base path while clients keep sending: the server switches, no request fails."""

import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("grpc", reason="the serving tests need the serving extra: pip install 'mssl-tf[serving]'")

from mssl_tf.serving import EmbeddingClient, ModelServer, RestClient  # noqa: E402
from mssl_tf.serving.config import ModelConfig  # noqa: E402
from mssl_tf.serving.testing import reference_embeddings, write_test_model  # noqa: E402

BATCH = np.random.default_rng(7).integers(0, 256, (4, 28, 28, 1)).astype(np.uint8)
EXPECTED = {version: reference_embeddings(BATCH, seed=version) for version in (1, 2)}


def which_version(embeddings) -> int | None:
    """The version whose weights produced `embeddings` (None if neither)."""
    for version, expected in EXPECTED.items():
        if np.allclose(embeddings, expected, atol=1e-5):
            return version
    return None


class Sender(threading.Thread):
    """Sends the same batch again and again, recording which version answered each request and every failure."""

    def __init__(self, embed, answered_by=None):
        super().__init__(daemon=True)
        self.embed, self.answered_by = embed, answered_by
        self.versions, self.failures = [], []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                embeddings, reported = self.embed()
                self.versions.append((which_version(embeddings), reported))
            except Exception as error:  # noqa: BLE001 - every failure is a test failure, collected to report
                self.failures.append(repr(error))


def test_new_version_is_served_without_failing_a_request(tmp_path):
    base = tmp_path / "encoder"
    write_test_model(base, 1)
    with ModelServer([ModelConfig("encoder", str(base))], port=0, rest_api_port=0, poll_wait_seconds=0.1) as server:
        grpc_client = EmbeddingClient(f"127.0.0.1:{server.grpc_port}", "encoder", timeout=10)
        rest_client = RestClient(f"http://127.0.0.1:{server.rest_port}", "encoder", timeout=10)

        def by_grpc():
            return grpc_client.embed(BATCH), grpc_client.last_version

        def by_rest():
            return rest_client.embed(BATCH), None

        senders = [Sender(by_grpc), Sender(by_rest)]
        for sender in senders:
            sender.start()
        time.sleep(0.3)
        # A half-copied version (no saved_model.pb yet) is not loaded, and breaks nothing.
        (base / "3" / "variables").mkdir(parents=True)
        write_test_model(base, 2)  # atomic: written beside, renamed into place
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(version == 2 for version, _ in senders[0].versions[-1:]):
            time.sleep(0.05)
        time.sleep(0.3)  # keep sending on the new version for a while
        for sender in senders:
            sender.stop.set()
            sender.join()
        status = {entry["version"]: entry["state"] for entry in grpc_client.status()}
        grpc_client.close()
        rest_client.close()

    for sender in senders:
        assert sender.failures == []
        answered = [version for version, _ in sender.versions]
        assert None not in answered  # every answer is exactly one version's embeddings
        assert answered[0] == 1 and answered[-1] == 2
        switch = answered.index(2)
        assert answered[switch:] == [2] * (len(answered) - switch)  # no going back once switched
    assert all(computed == reported for computed, reported in senders[0].versions)  # gRPC names the version it ran
    assert status == {2: "AVAILABLE", 1: "END"}  # the old version was unloaded, the half copy never loaded
    assert os.path.isdir(base / "3")

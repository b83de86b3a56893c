"""`mssl-tf serve` as a process, and the real `tensorflow_model_server` with the same flags, client and assertions.

The real server runs when `tensorflow_model_server` is on PATH (e.g. `apt-get install tensorflow-model-server`
from Google's repository, or inside the `tensorflow/serving` image); otherwise that case is skipped, saying so.
"""

import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="the serving tests need the serving extra: pip install 'mssl-tf[serving]'")

import tensorflow as tf  # noqa: E402

from mssl_tf.serving import EmbeddingClient, ModelServer, RestClient, ServingError  # noqa: E402
from mssl_tf.serving.config import ModelConfig, TlsConfig, ssl_config_text  # noqa: E402
from mssl_tf.serving.testing import reference_embeddings, write_test_model  # noqa: E402

REAL_SERVER = shutil.which("tensorflow_model_server")
IMAGES = np.random.default_rng(3).integers(0, 256, (5, 28, 28, 1)).astype(np.uint8)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed_certificate(directory, name="server"):
    """(key PEM, certificate PEM) for 127.0.0.1/localhost, made with the openssl command line."""
    key, certificate = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(certificate), "-days", "1", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return key.read_text(), certificate.read_text()


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command to make a certificate")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    write_test_model(base / "encoder", 1)
    write_test_model(base / "encoder", 2)
    write_test_model(base / "second", 5, seed=50)
    config = base / "models.config"
    config.write_text(f"""
        model_config_list {{
          config {{
            name: "encoder" base_path: "{base / 'encoder'}" model_platform: "tensorflow"
            model_version_policy {{ all {{}} }}
            version_labels {{ key: "stable" value: 1 }}
            version_labels {{ key: "canary" value: 2 }}
          }}
          config {{ name: "second" base_path: "{base / 'second'}" model_platform: "tensorflow" }}
        }}""")
    return base, config


def wait_until_available(address, credentials, process, seconds=90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            with EmbeddingClient(address, "encoder", timeout=2, root_certificates=credentials) as probe:
                states = {entry["version"]: entry["state"] for entry in probe.status()}
            with EmbeddingClient(address, "second", timeout=2, root_certificates=credentials) as probe:
                states_second = {entry["version"]: entry["state"] for entry in probe.status()}
            if states == {1: "AVAILABLE", 2: "AVAILABLE"} and states_second == {5: "AVAILABLE"}:
                return
        except ServingError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"models not available within {seconds} s")


def check_server(address, rest_url, root_certificates=None, ssl_context=None):
    """What a client sees of either server: predictions, labels, two models, error codes, metadata."""
    def grpc_client(model="encoder", **spec):
        return EmbeddingClient(address, model, timeout=10, root_certificates=root_certificates, **spec)

    def rest_client(model="encoder", **spec):
        return RestClient(rest_url, model, timeout=10, ssl_context=ssl_context, **spec)

    with grpc_client() as client, rest_client() as rest:
        np.testing.assert_allclose(client.embed(IMAGES), reference_embeddings(IMAGES, 2), atol=1e-5)
        assert client.last_version == 2
        np.testing.assert_allclose(rest.embed(IMAGES), reference_embeddings(IMAGES, 2), atol=1e-5)
        np.testing.assert_allclose(rest.embed(IMAGES, rows=True), reference_embeddings(IMAGES, 2), atol=1e-5)
        answer = client.few_shot(IMAGES[:3], [0, 1, 1], IMAGES[3:])
        assert answer["logits"].shape == (2, 2) and answer["predictions"].dtype == np.int32
        np.testing.assert_array_equal(rest.few_shot(IMAGES[:3], [0, 1, 1], IMAGES[3:])["predictions"],
                                      answer["predictions"])
        assert set(client.metadata()["signatures"]) >= {"serving_default", "few_shot"}
        assert rest.metadata()["model_spec"]["version"] == "2"
        for code, call in (
            ("FAILED_PRECONDITION", lambda: client.predict({"images": IMAGES}, signature="classify")),
            ("INVALID_ARGUMENT", lambda: client.predict({"images": IMAGES.astype(np.float32)}, conform=False)),
            ("INVALID_ARGUMENT", lambda: client.predict({"pictures": IMAGES})),
            ("INVALID_ARGUMENT", lambda: client.predict({}, signature="few_shot")),
        ):
            with pytest.raises(ServingError) as caught:
                call()
            assert caught.value.code == code, caught.value
        with pytest.raises(ServingError) as caught:  # REST tells FAILED_PRECONDITION by its HTTP status only: 400
            rest.predict(IMAGES, signature="classify")
        assert caught.value.http_status == 400 and "classify" in caught.value.message
    for version, label in ((1, "stable"), (2, "canary")):
        with grpc_client(version_label=label) as client, rest_client(version=version) as rest:
            np.testing.assert_allclose(client.embed(IMAGES), reference_embeddings(IMAGES, version), atol=1e-5)
            np.testing.assert_allclose(rest.embed(IMAGES), reference_embeddings(IMAGES, version), atol=1e-5)
    with grpc_client("second") as client:
        np.testing.assert_allclose(client.embed(IMAGES), reference_embeddings(IMAGES, 50), atol=1e-5)
    for make, code in ((lambda: grpc_client("nobody"), "NOT_FOUND"), (lambda: grpc_client(version=9), "NOT_FOUND"),
                       (lambda: rest_client("nobody"), "NOT_FOUND")):
        with make() as client, pytest.raises(ServingError) as caught:
            client.status()
        assert caught.value.code == code


def serve_flags(config, grpc_port, rest_port):
    return [f"--port={grpc_port}", f"--rest_api_port={rest_port}", f"--model_config_file={config}",
            "--file_system_poll_wait_seconds=1", "--allow_version_labels_for_unavailable_models=true"]


@pytest.mark.parametrize("server", [
    "mssl-tf serve",
    pytest.param("tensorflow_model_server", marks=pytest.mark.skipif(
        REAL_SERVER is None,
        reason="tensorflow_model_server is not on PATH: the real TF Serving check is skipped "
               "(install tensorflow-model-server or run inside the tensorflow/serving image to run it)")),
])
def test_same_flags_same_client_same_answers(server, exported, tmp_path):
    base, config = exported
    grpc_port, rest_port = free_port(), free_port()
    flags = serve_flags(config, grpc_port, rest_port)
    certificate = ssl_context = None
    if server == "mssl-tf serve":  # ours also runs over TLS here: TF Serving's ssl_config_file format
        key, certificate = self_signed_certificate(tmp_path)
        (tmp_path / "ssl.config").write_text(ssl_config_text(TlsConfig(key, certificate)))
        flags.append(f"--ssl_config_file={tmp_path / 'ssl.config'}")
        command = [sys.executable, "-m", "mssl_tf.cli", "serve", *flags, "--log_level=WARNING"]
        ssl_context = ssl.create_default_context(cadata=certificate)
    else:
        command = [REAL_SERVER, *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = certificate.encode() if certificate else None
    try:
        address = f"127.0.0.1:{grpc_port}"
        wait_until_available(address, root, process)
        scheme = "https" if certificate else "http"
        check_server(address, f"{scheme}://127.0.0.1:{rest_port}", root, ssl_context)
        if certificate:  # a plaintext client gets nowhere
            with EmbeddingClient(address, "encoder", timeout=3) as plain, pytest.raises(ServingError) as caught:
                plain.status()
            assert caught.value.code == "UNAVAILABLE"
        idle = RestClient(f"{scheme}://127.0.0.1:{rest_port}", "encoder", ssl_context=ssl_context)
        idle.status()  # a kept-alive connection left open must not hold up the shutdown
    finally:
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
        stopped_after = time.monotonic() - stopping
    if server == "mssl-tf serve":
        assert process.returncode == 0, output
        assert stopped_after < 15  # not held for the 30 s REST idle timeout by the open connection


@needs_openssl
def test_mutual_tls_refuses_clients_without_a_trusted_certificate(exported, tmp_path):
    base, _ = exported
    key, certificate = self_signed_certificate(tmp_path, "server")
    client_key, client_certificate = self_signed_certificate(tmp_path, "client")
    tls = TlsConfig(key, certificate, custom_ca=client_certificate, client_verify=True)
    with ModelServer([ModelConfig("encoder", str(base / "encoder"))], port=0, rest_api_port=0, poll_wait_seconds=0,
                     tls=tls) as server:
        address = f"127.0.0.1:{server.grpc_port}"
        with EmbeddingClient(address, "encoder", timeout=5, root_certificates=certificate.encode(),
                             private_key=client_key.encode(), certificate_chain=client_certificate.encode()) as client:
            np.testing.assert_allclose(client.embed(IMAGES), reference_embeddings(IMAGES, 2), atol=1e-5)
        with EmbeddingClient(address, "encoder", timeout=5, root_certificates=certificate.encode()) as anonymous:
            with pytest.raises(ServingError):
                anonymous.embed(IMAGES)
        context = ssl.create_default_context(cadata=certificate)
        context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
        with RestClient(f"https://127.0.0.1:{server.rest_port}", "encoder", ssl_context=context) as rest:
            assert rest.status()["model_version_status"][0]["state"] == "AVAILABLE"
        with RestClient(f"https://127.0.0.1:{server.rest_port}", "encoder",
                        ssl_context=ssl.create_default_context(cadata=certificate)) as anonymous:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                anonymous.status()


def test_serve_reports_a_bad_command_line(tmp_path):
    from mssl_tf.cli import main

    assert main(["serve", f"--model_config_file={tmp_path / 'missing.config'}"]) == 2
    assert main(["serve"]) == 2
    (tmp_path / "ssl.config").write_text('server_key: "-----BEGIN\nunterminated')
    assert main(["serve", f"--model_base_path={tmp_path}", f"--ssl_config_file={tmp_path / 'ssl.config'}"]) == 2
    (tmp_path / "bad.config").write_text("model_config_list { config { nme: 'x' } }")
    assert main(["serve", f"--model_config_file={tmp_path / 'bad.config'}"]) == 2
    assert tf.__version__  # TensorFlow stays importable after the failed starts

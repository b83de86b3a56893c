"""TLS for the endpoints from TF Serving's SSLConfig: the REST `SSLContext` and the gRPC server credentials."""

from __future__ import annotations

import os
import ssl
import tempfile

from mssl_tf.serving.config import TlsConfig


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """An SSLContext from PEM contents (written briefly to a private temporary directory to load them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="mssl-tf-tls-") as directory:
        certificate, key = os.path.join(directory, "certificate.pem"), os.path.join(directory, "key.pem")
        for path, text in ((certificate, tls.server_cert), (key, tls.server_key)):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as file:
                file.write(text)
        context.load_cert_chain(certificate, key)
    if tls.client_verify:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=tls.custom_ca)
    return context


def grpc_server_credentials(tls: TlsConfig):
    """gRPC server credentials from the same SSLConfig (client certificates required with `client_verify`)."""
    import grpc

    return grpc.ssl_server_credentials(
        [(tls.server_key.encode(), tls.server_cert.encode())],
        root_certificates=tls.custom_ca.encode() or None,
        require_client_auth=tls.client_verify,
    )

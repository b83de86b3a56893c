"""Serving: an embedded TF-Serving-compatible server (`mssl-tf serve`) and clients for served encoders.

    from mssl_tf.serving import EmbeddingClient
    with EmbeddingClient("127.0.0.1:8500", "omniglot_encoder") as client:
        embeddings = client.embed(images)

Needs the `serving` extra (grpcio, tensorflow-serving-api): `pip install 'mssl-tf[serving]'`.
"""

from __future__ import annotations

from mssl_tf.serving.errors import ServingError

_LAZY = {
    "EmbeddingClient": "mssl_tf.serving.client",
    "RestClient": "mssl_tf.serving.client",
    "ModelServer": "mssl_tf.serving.server",
    "ModelConfig": "mssl_tf.serving.config",
    "VersionPolicy": "mssl_tf.serving.config",
    "BatchingOptions": "mssl_tf.serving.config",
    "TlsConfig": "mssl_tf.serving.config",
    "Limits": "mssl_tf.serving.limits",
}

__all__ = ["ServingError", *_LAZY]


def __getattr__(name):
    """Imports the client and server on first use, so `import mssl_tf.serving` needs no gRPC."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mssl_tf.serving' has no attribute {name!r}")

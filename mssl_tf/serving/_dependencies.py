"""Imports of the `serving` extra (grpcio, tensorflow-serving-api) with an error that says how to install them."""

from __future__ import annotations

INSTALL_HINT = "pip install 'mssl-tf[serving]'"


def require_serving_api():
    """Imports grpc and tensorflow_serving, or raises ImportError naming the extra to install."""
    try:
        import grpc  # noqa: F401
        import tensorflow_serving.apis  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"mssl_tf.serving needs grpcio and tensorflow-serving-api ({error.name or error} is missing); "
            f"install them with: {INSTALL_HINT}"
        ) from error

"""mssl-tf: meta-self-supervised learning for TensorFlow/Keras."""

from setuptools import find_packages, setup

setup(
    name="mssl-tf",
    version="0.1.0",
    description="Meta-learning and self-supervised representation learning for TensorFlow/Keras, "
    "from training to a served embedding endpoint.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    # The zoo's cards and weights ship inside the package: `zoo/` is installed as `mssl_tf/zoo_entries/`.
    packages=[*find_packages(include=["mssl_tf", "mssl_tf.*"]), "mssl_tf.zoo_entries"],
    package_dir={"mssl_tf.zoo_entries": "zoo"},
    package_data={"mssl_tf.zoo_entries": ["*.json", "weights/*.weights.h5"], "mssl_tf.data": ["splits/*.json"]},
    install_requires=[
        "tensorflow==2.20.0",
        "keras==3.15.1",
        "numpy>=1.26,<2.5",
        "pillow>=10,<14",
    ],
    extras_require={
        "test": ["pytest==9.2.0", "tensorflow-serving-api==2.20.0", "grpcio==1.85.1", "aiohttp==3.14.3",
                 "tensorflow-datasets==4.9.10", "importlib_resources==7.1.0", "keras-hub==0.32.0",
                 "tensorflow-text==2.20.1"],
        "serving": ["tensorflow-serving-api==2.20.0", "grpcio==1.85.1", "aiohttp==3.14.3"],
        "tfds": ["tensorflow-datasets==4.9.10", "importlib_resources==7.1.0"],
        "models": ["tf-models-official==2.20.0"],
        # Text backbones (mssl_tf.backbones.text): keras-hub's tokenizer and layers, TensorFlow Text's ops.
        "text": ["keras-hub==0.32.0", "tensorflow-text==2.20.1"],
    },
    entry_points={"console_scripts": ["mssl-tf=mssl_tf.cli:main"]},
)

"""Dataset sources and episode pipelines."""

from mssl_tf.data.class_splits import (
    DATASETS,
    DatasetOptions,
    DatasetSpec,
    load_class_split,
    load_dataset,
    register_arrays,
)
from mssl_tf.data.episodes import EVALUATION_SEED, EpisodeSpec, episode_dataset, evaluation_episodes
from mssl_tf.data.omniglot import (
    DATA_DIR_ENV,
    DatasetNotFoundError,
    load_characters,
    load_split,
    read_split,
    resolve_data_dir,
)
from mssl_tf.data.sources import ImageDataset

__all__ = [
    "DATASETS",
    "DatasetOptions",
    "DatasetSpec",
    "load_class_split",
    "register_arrays",
    "DATA_DIR_ENV",
    "EVALUATION_SEED",
    "DatasetNotFoundError",
    "EpisodeSpec",
    "ImageDataset",
    "episode_dataset",
    "evaluation_episodes",
    "load_characters",
    "load_dataset",
    "load_split",
    "read_split",
    "resolve_data_dir",
]

"""Training runs: configure, train (with `model.fit` or the multi-worker driver), record and evaluate.

The modules import downward only (`tests/test_import_graph.py` checks it):

    config → artifacts → clusters → datasets → model → guards → backup → callbacks → records → snapshots → fit
    → distributed → run → evaluate

- `config`: `TrainConfig` and the checks of what no driver can train;
- `artifacts`: a run's files (`model.keras`, `train.json`) read back: `load_trained`;
- `clusters`: CACTUs k-means partitions of a trained encoder's embeddings, cached per run;
- `datasets`: the one choice of training data (labeled episodes, unsupervised tasks, multi-view batches) from any
  step on, for both drivers;
- `model`: the method built with what it declares it needs from a run (`RUN_ARGUMENTS`), compiled in the
  strategy's scope, `--init-from`;
- `backup`: `fit`'s backups, written so that a kill at any instant leaves a restorable one;
- `guards`, `callbacks`: stop on a non-finite loss, an exhausted dataset, the step limit, the time budget;
  the training clock and the validation curve;
- `records`: `train.json` and every evaluation record, one writer, one hardware description;
- `snapshots`: the model kept at marks of training time (`<output>/snapshots/<N>min/`), for accuracy against time;
- `fit`, `distributed`: the two drivers; `run.train` picks one;
- `evaluate`: few-shot, frozen-encoder and adaptation scores of a trained run, recorded.

Example:
    >>> from mssl_tf.training import TrainConfig, train
    >>> summary = train(TrainConfig(ways=20, shots=5, minutes=3, output="runs/first"))  # the default method
"""

from mssl_tf.training.artifacts import load_trained
from mssl_tf.training.config import TrainConfig
from mssl_tf.training.run import train

__all__ = ["TrainConfig", "load_trained", "train"]

"""Run as a script by tests/test_multiworker.py: the negative control of the multi-worker equivalence.

`python -m tests.workers.multiworker_bug_worker OUT` on each worker of a 2-worker cluster: exactly the equivalence
run of tests/workers/multiworker_worker.py (same episodes, seeds, steps and plain SGD), but for ProtoNet whose
`train_step` forgets the 1/replicas loss scaling (tests/workers/replica_bugs.py). Writes
`OUT/protonet_unscaled_loss_bug_<task>.npz`, `..._initial.npz` and, on the chief, `..._reference.npz` (the same
class trained by `model.fit` in one process, where the bug is invisible).
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mssl_tf  # noqa: E402
from mssl_tf import distribute  # noqa: E402
from mssl_tf.data import load_split  # noqa: E402
from tests.workers import multiworker_worker  # noqa: E402
from tests.workers.replica_bugs import ProtoNetUnscaledLoss  # noqa: E402

NAME = "protonet_unscaled_loss_bug"


def build():
    return ProtoNetUnscaledLoss(mssl_tf.conv4(filters=16))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    strategy = distribute.get_strategy("multiworker" if os.environ.get("TF_CONFIG") else "default")
    multiworker_worker.equivalence_run(out, strategy, load_split("train")[:60], NAME, build)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

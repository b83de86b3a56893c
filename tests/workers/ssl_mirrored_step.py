"""Run as a script: two SGD steps of each SSL method on one device and under MirroredStrategy on 2 logical CPUs.

Same initial weights, same two global batches of real Omniglot views. Prints a JSON line per method with both
losses, the norm of the single-device update and the norm of the difference between the two runs' weights
(trainable weights plus the EMA targets and the MoCo queue; batch-norm moving statistics are left out, see
below). A separate process is needed because logical devices must be configured before TensorFlow initializes.

Batch norm: per-replica batch statistics differ from the global batch's, so a plain batch-norm backbone would
make the two runs differ for a reason that is not a bug. The comparison is made meaningful by:
  - the projection / prediction heads' batch norm, synchronized across replicas by default (`MLPHead`);
  - for the backbone, Conv-4 with synchronized batch norm (`synchronized_batch_norm`), i.e. global-batch
    statistics on both sides; the methods' own cross-replica code (gathered negatives, all-reduced
    cross-correlation, replica loss scaling) is then the only thing that can make the runs differ;
  - MoCo and PsCo keep the plain per-call batch norm: their guard, shuffled BN over `batch_norm_groups` = 2 fixed
    groups of the global batch, is exactly what is under test (1 replica encodes 2 groups; 2 replicas encode 1 group
    each, the same groups), including the cross-replica permutation of the key batch.
Moving statistics are updated once per group call, so they legitimately differ and are not compared.

Negative controls (`*_bug` entries) re-create the classic distributed bugs and must make the runs differ:
SimCLR and SimCSE with negatives from this replica only, MoCo enqueueing only this replica's keys, PsCo building its
pseudo-labelled task (Sinkhorn, shots, negatives) from this replica's keys only, and Barlow Twins whose gradient is
the world size times too large (the full global loss on every replica, no 1/replicas scaling).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mssl_tf import distribute  # noqa: E402

distribute.split_cpu(2)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import mssl_tf  # noqa: E402
from mssl_tf.data import load_split  # noqa: E402
from mssl_tf.data.views import flatten_classes, multi_view_dataset  # noqa: E402
from mssl_tf.losses import in_batch_contrastive, nt_xent, replicas, supervised_contrastive  # noqa: E402
from mssl_tf.methods.base import replica_count  # noqa: E402
from mssl_tf.methods.ssl import BarlowTwins, MoCo, PsCo, SimCLR, SimCSE, synchronized_batch_norm  # noqa: E402
from tests.workers.replica_check import fit_from, report  # noqa: E402


class SimCLRLocalNegatives(SimCLR):
    def compute_ssl_loss(self, views, training):
        batch = tf.shape(views[0])[0]
        features = self.backbone(tf.concat(views, 0), training=training)
        projections = self.projector(features, training=training)
        return nt_xent(projections[:batch], projections[batch:], self.temperature, gather=False), features[:batch]


class SimCSELocalNegatives(SimCSE):
    def compute_ssl_loss(self, views, training):
        batch = tf.shape(views[0])[0]
        features = self.backbone(tf.concat([views[0], views[0]], 0), training=training)
        return in_batch_contrastive(features[:batch], features[batch:], self.temperature, gather=False), features[:batch]


class MoCoLocalQueue(MoCo):
    def shuffled_keys(self, images, training):
        keys, _ = super().shuffled_keys(images, training)
        return keys, keys


class PsCoLocalTask(PsCo):
    """Sinkhorn, the shots and the task's negatives from this replica's keys only (an N/R-way task per replica)."""

    def pseudo_supervised_loss(self, queries, all_keys):
        local = tf.shape(queries)[0]
        offset = replicas.replica_offset(local)
        support, support_labels = self.pseudo_task(all_keys[offset : offset + local])
        return supervised_contrastive(queries, tf.range(local), support, support_labels, self.support_temperature)


class BarlowTwinsWorldSize(BarlowTwins):
    def compute_ssl_loss(self, views, training):
        loss, features = super().compute_ssl_loss(views, training)
        return loss * replica_count(), features


SMALL = {"hidden_units": [32], "projection_units": 16}
OPTIONS = {
    "simclr": {**SMALL},
    "simcse": {"temperature": 0.5},  # on Conv-4 (no dropout): the gathered in-batch negatives are what is checked
    "moco": {**SMALL, "queue_size": 32, "batch_norm_groups": 2, "momentum": 0.9},
    "psco": {**SMALL, "queue_size": 32, "batch_norm_groups": 2, "momentum": 0.9, "shots": 2},
    "byol": {**SMALL, "total_steps": 4, "base_decay": 0.9},
    "simsiam": {**SMALL, "predictor_units": 8},
    "barlow_twins": {**SMALL},
    "transformation": {"transformations": ["rot0", "rot90", "hflip", "downsample"]},
}
BUGS = {
    "simclr_local_negatives_bug": (SimCLRLocalNegatives, OPTIONS["simclr"]),
    "simcse_local_negatives_bug": (SimCSELocalNegatives, OPTIONS["simcse"]),
    "moco_local_queue_bug": (MoCoLocalQueue, OPTIONS["moco"]),
    "psco_local_task_bug": (PsCoLocalTask, OPTIONS["psco"]),
    "barlow_twins_world_size_bug": (BarlowTwinsWorldSize, OPTIONS["barlow_twins"]),
}


def build(name):
    if name in BUGS:
        cls, options = BUGS[name]
    else:
        cls, options = mssl_tf.METHODS[name][0], OPTIONS[name]
    backbone = mssl_tf.conv4(filters=16)
    if not name.startswith(("moco", "psco")):
        backbone = synchronized_batch_norm(backbone)
    return cls(backbone, **options)


def compared(model):
    return [variable for variable in model.weights if "moving_" not in variable.path]


def main(names):
    images, _ = flatten_classes(load_split("train")[:20])
    batches = multi_view_dataset(images, 8, "omniglot", seed=3, num_batches=2).cache()
    for name in names:
        report(name, lambda strategy, initial: fit_from(
            strategy, lambda: build(name), initial, batches, 2, lambda: keras.optimizers.SGD(0.1), compared))


if __name__ == "__main__":
    main(sys.argv[1:] or [*OPTIONS, *BUGS])

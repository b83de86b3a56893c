"""Cross-replica helpers for losses that need the global batch (no-ops outside a multi-replica strategy).

Both collectives are differentiable under `tf.distribute`: the gradient of `all_gather` is the sum over replicas
of the upstream gradients, sliced to this replica's rows, and the gradient of `all_reduce(SUM)` is the sum over
replicas of the upstream gradients. With every replica's loss scaled by 1/replicas (as `SSLModel.train_step`
does) and gradients summed by the optimizer, a loss of globally gathered or reduced tensors gets exactly the
gradient of the global-batch loss.
"""

from __future__ import annotations

import tensorflow as tf


def replica_context():
    """The replica context when running inside a strategy with more than one replica, else `None`."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def all_gather(values: tf.Tensor) -> tf.Tensor:
    """Concatenates `values` of every replica along axis 0, in replica order."""
    context = replica_context()
    return values if context is None else context.all_gather(values, axis=0)


def all_reduce_sum(values: tf.Tensor) -> tf.Tensor:
    """Sum of `values` over the replicas."""
    context = replica_context()
    return values if context is None else context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def replica_offset(local_batch) -> tf.Tensor:
    """Row index of this replica's first example in the gathered global batch."""
    context = replica_context()
    if context is None:
        return tf.constant(0, tf.int32)
    return tf.cast(context.replica_id_in_sync_group, tf.int32) * tf.cast(local_batch, tf.int32)

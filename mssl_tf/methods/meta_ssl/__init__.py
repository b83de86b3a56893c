"""Meta-self-supervised learning: learners that adapt fast to tasks built without labels.

The families of the seed, each an `EpisodicModel` trained with `fit` on any task constructor of
`mssl_tf.data.unsupervised_tasks` (augmentation-made classes, transformation prediction, CACTUs clusters, a mixture):

- optimization-based: `maml` / `fomaml` (`mssl_tf.methods.maml`) on self-supervised tasks — the inner loop adapts on
  the task's support batch, the outer loop learns from the adapted model's query loss (`mssl-tf train --method maml
  --tasks mixture --ways 5`: transformation prediction and instance discrimination tasks);
- memory-based: `memory` (`MemoryNetwork`, a learned key–value memory written with the support set);
- network-based: `hypernetwork` (`HyperNetwork`, head weights emitted from the support set) and `metasgd` (learned
  per-parameter inner learning rates);
- BYOL + meta-learning: `byol_protonet` (`BYOLProtoNet`, BYOL's loss and ProtoNet's trained jointly on one encoder,
  from the views that make up augmentation tasks).

`adaptation_steps(model, n)` sets how much adaptation a model does at evaluation (inner steps or memory write
passes), for `mssl_tf.evaluation.adaptation_curve`.
"""

from __future__ import annotations

from contextlib import contextmanager

from mssl_tf.methods.meta_ssl.byol_protonet import BYOLProtoNet
from mssl_tf.methods.meta_ssl.hypernetwork import HyperNetwork
from mssl_tf.methods.meta_ssl.memory import MemoryNetwork

META_SSL_METHODS = {
    "memory": (MemoryNetwork, {}),
    "hypernetwork": (HyperNetwork, {}),
    "byol_protonet": (BYOLProtoNet, {}),
}

ADAPTATION_ATTRIBUTES = ("evaluation_inner_steps", "evaluation_write_passes")


def adaptation_attribute(model) -> str:
    """The attribute that sets how many adaptation steps (or memory write passes) `model` does when evaluating."""
    for name in ADAPTATION_ATTRIBUTES:
        if hasattr(model, name):
            return name
    raise ValueError(f"{type(model).__name__} adapts in one fixed way (no inner steps or memory writes); measure "
                     f"adaptation curves on models with one of {ADAPTATION_ATTRIBUTES} (maml, metasgd, anil, "
                     "memory, hypernetwork, ...)")


@contextmanager
def adaptation_steps(model, steps: int):
    """Within the block, `model` evaluates with `steps` inner steps or write passes; restored afterwards."""
    name = adaptation_attribute(model)
    previous = getattr(model, name)
    setattr(model, name, int(steps))
    try:
        yield model
    finally:
        setattr(model, name, previous)


__all__ = ["BYOLProtoNet", "HyperNetwork", "META_SSL_METHODS", "MemoryNetwork", "adaptation_attribute", "adaptation_steps"]

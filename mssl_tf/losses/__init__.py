"""Self-supervised losses: pure functions of embeddings (cross-replica aware where a method needs the global batch)."""

from mssl_tf.losses.barlow_twins import barlow_twins_loss, cross_correlation
from mssl_tf.losses.byol import byol_loss, multi_view_byol_loss, symmetric_byol_loss
from mssl_tf.losses.infonce import infonce
from mssl_tf.losses.nt_xent import nt_xent
from mssl_tf.losses.simcse import in_batch_contrastive
from mssl_tf.losses.simsiam import negative_cosine, simsiam_loss
from mssl_tf.losses.sinkhorn import sinkhorn, top_assignments
from mssl_tf.losses.supervised_contrastive import supervised_contrastive
from mssl_tf.losses.transformation import transformation_prediction_loss

__all__ = [
    "barlow_twins_loss",
    "byol_loss",
    "cross_correlation",
    "in_batch_contrastive",
    "infonce",
    "multi_view_byol_loss",
    "negative_cosine",
    "nt_xent",
    "simsiam_loss",
    "sinkhorn",
    "supervised_contrastive",
    "symmetric_byol_loss",
    "top_assignments",
    "transformation_prediction_loss",
]

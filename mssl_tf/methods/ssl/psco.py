"""PsCo: unsupervised meta-learning via few-shot pseudo-supervised contrastive learning
(Jang, Hwang, Shin & Kim, ICLR 2023, arXiv:2303.00996)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mssl_tf.heads import prediction_head
from mssl_tf.losses import infonce, replicas, sinkhorn, supervised_contrastive, top_assignments
from mssl_tf.methods.episodic import task_cross_entropy
from mssl_tf.methods.ssl.base import update_moving_average
from mssl_tf.methods.ssl.moco import MoCo


@keras.saving.register_keras_serializable(package="mssl_tf")
class PsCo(MoCo):
    """MoCo with a predictor plus, at every step, a pseudo-labelled N-way K-shot task built from the queue.

    Each step (the global batch of N images, view 0 for the online network, view 1 for the momentum network):
      1. queries q_i = normalize(predictor(projector(backbone(view 0)))), online, with gradient;
      2. momentum keys z_i = normalize(key_projector(key_backbone(view 1))) of the global batch;
      3. the Sinkhorn-Knopp assignment A = sinkhorn(z Qᵀ, ε) of the N keys to the M queue entries (equal
         partition: every queue entry carries the same mass, every key a distribution over entries);
      4. support: the `shots` (K) queue entries with the largest A in each row are key i's shots, labelled i;
      5. loss = supervised_contrastive(q, support, τ_support) (N-way K-shot pseudo-supervised contrast, the
         negatives being the other keys' shots) + infonce(q, z, queue, τ) (MoCo's instance term);
      6. the N keys enter the queue (FIFO), the momentum network follows by EMA (`momentum`, updated at the start
         of the step as in MoCo here and in the reference code).

    Taken from the paper and its reference code (github.com/alinlab/PsCo, `PsCoMoCo`): both terms with weight 1,
    τ = 0.2 (MoCo term), τ_support = 1, ε = 0.05, 3 Sinkhorn iterations (columns then rows; rows last, so each
    key's row sums to 1), top-K shots (K = 1 on Omniglot, 4 on miniImageNet), momentum 0.99 (constant), queue
    16384, projector [Dense 4096, BN, ReLU, Dense 256], predictor [Dense 4096, BN, ReLU, Dense 256], keys from the
    second view. The reference trains 400 epochs with SGD (lr 0.03·batch/256, momentum 0.9, weight decay 5e-4,
    cosine schedule), batch 256; its Omniglot views are both RandomResizedCrop(28, scale 0.2-1) + horizontal flip
    (its "strong" and "weak" views are the same on Omniglot), over the training characters in 4 rotations.

    What differs here:
      - Distribution: Sinkhorn, the top-K shots and the task's negatives use the *global* batch (keys all-gathered,
        the same computation on every replica), so an R-replica step equals the single-device step of the global
        batch. The reference all-reduces Sinkhorn's column sums (global assignment) but contrasts each GPU's
        queries with that GPU's shots only (an N/R-way task per GPU); on one GPU, as for its Omniglot runs, the two
        coincide.
      - Batch norm: keys go through MoCo's shuffled batch-norm groups (`batch_norm_groups`, default 1 = the whole
        batch, the reference's single-GPU setting; under R replicas set it to a multiple of R). The heads' batch
        norm is synchronized across replicas (`MLPHead`). The projector has no output batch norm (the reference's
        last BN without affine parameters), and the key network's batch-norm moving statistics are its own (the
        reference copies the online buffers; they only matter in inference mode, which training never uses).
      - The Conv-4 here pools to 1×1×64 on 28×28 (the reference's ceil-mode pooling gives 2×2×64 = 256-d).
      - Evaluation: by default (`evaluation="backbone"`) like every `SSLModel`, nearest prototype (squared
        Euclidean) on the frozen online backbone's features. `evaluation="heads"` is the paper's protocol
        ("supcon"): cosine between the predictor's outputs for the queries and the normalized mean of the
        projector's outputs for each class's support, all online and in inference mode (logits divided by
        τ_support). The paper's fine-tuning of the heads on the support set (cross-domain tasks, 50 SGD steps) is
        not done here.

    Args:
        backbone: images → features.
        temperature: τ of the MoCo (InfoNCE) term.
        support_temperature: τ of the pseudo-supervised contrastive term.
        momentum: EMA decay of the momentum network.
        queue_size: M, queue entries (candidates for the shots); at least the global batch.
        shots: K, support entries per pseudo-class.
        sinkhorn_epsilon: ε of the Sinkhorn-Knopp assignment.
        sinkhorn_iterations: Sinkhorn-Knopp iterations.
        batch_norm_groups: key batch-norm groups of the global batch (MoCo's shuffled BN).
        hidden_units: hidden widths of the projector and of the predictor.
        projection_units: projection (and prediction) width.
        seed: seed of the queue's initial entries and of the key-batch permutations.
        evaluation: few-shot scoring, "backbone" (nearest prototype on backbone features) or "heads" (the paper's
            cosine prototypes of projector outputs against predictor outputs).
        probe_classes: classes of the online linear probe (0: none).
    """

    PROJECTOR_OPTIONS = {"batch_norm": True}
    EVALUATIONS = ("backbone", "heads")
    EVALUATION_OPTIONS = {"evaluation": EVALUATIONS}  # `mssl-tf eval --evaluation-option evaluation=heads`

    def __init__(self, backbone, temperature=0.2, support_temperature=1.0, momentum=0.99, queue_size=16384, shots=1,
                 sinkhorn_epsilon=0.05, sinkhorn_iterations=3, batch_norm_groups=1, hidden_units=(4096,),
                 projection_units=256, seed=0, evaluation="backbone", probe_classes=0, **kwargs):
        super().__init__(backbone, temperature=temperature, momentum=momentum, queue_size=queue_size,
                         batch_norm_groups=batch_norm_groups, hidden_units=hidden_units,
                         projection_units=projection_units, seed=seed, probe_classes=probe_classes, **kwargs)
        self.support_temperature, self.shots = float(support_temperature), int(shots)
        self.sinkhorn_epsilon, self.sinkhorn_iterations = float(sinkhorn_epsilon), int(sinkhorn_iterations)
        if not 1 <= self.shots <= self.queue_size:
            raise ValueError(f"shots={self.shots} must be between 1 and queue_size={self.queue_size}")
        if evaluation not in self.EVALUATIONS:
            raise ValueError(f"evaluation={evaluation!r} is not one of {self.EVALUATIONS}")
        self.evaluation = evaluation
        self.predictor = prediction_head(self.projection_units, self.hidden_units)

    def pseudo_task(self, all_keys):
        """Global keys `[N, dim]` → (support `[N·K, dim]` from the queue, support labels `[N·K]`: key indices)."""
        keys = tf.math.l2_normalize(all_keys, axis=-1)
        queue = tf.math.l2_normalize(self.queue, axis=-1)
        assignment = sinkhorn(tf.matmul(keys, queue, transpose_b=True), self.sinkhorn_epsilon,
                              self.sinkhorn_iterations)
        chosen = top_assignments(assignment, self.shots)
        support = tf.gather(queue, tf.reshape(chosen, [-1]))
        return support, tf.repeat(tf.range(tf.shape(keys)[0]), self.shots)

    def pseudo_supervised_loss(self, queries, all_keys):
        """This replica's queries against the global batch's pseudo-labelled task (query i has label offset + i)."""
        support, support_labels = self.pseudo_task(all_keys)
        local = tf.shape(queries)[0]
        query_labels = tf.range(local) + replicas.replica_offset(local)
        return supervised_contrastive(queries, query_labels, support, support_labels, self.support_temperature)

    def compute_ssl_loss(self, views, training):
        if training:
            update_moving_average(self.key_pairs, self.momentum)
        features, projections = self.encode_in_groups(self.backbone, self.projector, views[0], training)
        queries = self.predictor(projections, training=training)
        keys, all_keys = self.shuffled_keys(views[1], training)
        loss = self.pseudo_supervised_loss(queries, all_keys) + infonce(queries, keys, self.queue, self.temperature)
        if training:
            self.enqueue(all_keys)
        return loss, features

    # === Few-shot evaluation ===
    def head_logits(self, support_images, support_labels, query_images):
        """The paper's scoring of one task: cosine(predictor(query), normalized mean projector(support)) / τ."""
        support = tf.shape(support_images)[0]
        features = self.backbone(tf.concat([support_images, query_images], axis=0), training=False)
        projections = self.projector(features, training=False)
        queries = tf.math.l2_normalize(self.predictor(projections[support:], training=False), axis=-1)
        ways = tf.reduce_max(support_labels) + 1
        prototypes = tf.math.unsorted_segment_mean(tf.math.l2_normalize(projections[:support], axis=-1),
                                                   support_labels, ways)
        prototypes = tf.math.l2_normalize(prototypes, axis=-1)
        return tf.stop_gradient(tf.matmul(queries, prototypes, transpose_b=True) / self.support_temperature)

    def meta_batch_learn(self, batch, training=False):
        if self.evaluation == "backbone":
            return super().meta_batch_learn(batch, training)
        logits = tf.stack([
            self.head_logits(batch["support_images"][task], batch["support_labels"][task], batch["query_images"][task])
            for task in range(batch["support_images"].shape[0])
        ])
        return task_cross_entropy(batch["query_labels"], logits), logits

    def few_shot_logits(self, support_images, support_labels, query_images):
        if self.evaluation == "backbone":
            return super().few_shot_logits(support_images, support_labels, query_images)
        return self.head_logits(support_images, support_labels, query_images)

    def get_config(self):
        return {**super().get_config(), "support_temperature": self.support_temperature, "shots": self.shots,
                "sinkhorn_epsilon": self.sinkhorn_epsilon, "sinkhorn_iterations": self.sinkhorn_iterations,
                "evaluation": self.evaluation}

"""`mssl-tf train`: its flags and the `TrainConfig` they make."""

from __future__ import annotations

import argparse
from pathlib import Path

from mssl_tf.backbones import BACKBONES
from mssl_tf.cli.common import add_data_argument, add_dataset_arguments, parse_option
from mssl_tf.data.unsupervised_tasks import TASK_KINDS
from mssl_tf.data.text_views import TEXT_VIEW_PRESETS
from mssl_tf.data.views import VIEW_PRESETS
from mssl_tf.methods import DEFAULT_METHOD, METHODS
from mssl_tf.training.config import OPTIMIZERS

VIEW_CHOICES = sorted({**VIEW_PRESETS, **TEXT_VIEW_PRESETS})
METHOD_SHORTCUTS = ("inner_steps", "evaluation_inner_steps", "inner_learning_rate")  # flags that are method options


def parse_minutes(text: str) -> tuple[float, ...]:
    """`"10,30,60"` → `(10.0, 30.0, 60.0)` (positive)."""
    try:
        marks = tuple(float(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--snapshot-minutes {text!r} is not a comma-separated list of numbers")
    if min(marks) <= 0:
        raise argparse.ArgumentTypeError("--snapshot-minutes must be positive")
    return marks


def add_parser(commands) -> None:
    parser = commands.add_parser("train", help="train a method on a registered dataset with model.fit (or the "
                                 "multi-worker driver)")
    parser.add_argument("--method", choices=sorted(METHODS), default=DEFAULT_METHOD)
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="conv4",
                        help="built for the dataset's image size and channels (images), or from the training "
                        "split's sentences (text: transformer, bag_of_words)")
    parser.add_argument("--backbone-option", type=parse_option, action="append", default=None,
                        help="backbone builder argument key=value, e.g. num_layers=4 or embedding_dim=256")
    add_dataset_arguments(parser)
    add_data_argument(parser)
    parser.add_argument("--split", default="train",
                        help="the split trained on, e.g. trainval, or stl10's unlabeled / train+unlabeled (methods "
                        "trained on views or --tasks); validation always uses val")
    parser.add_argument("--ways", type=int, default=60)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--meta-batch", type=int, default=1, help="tasks per optimizer step")
    parser.add_argument("--tasks-per-pass", type=int, default=None,
                        help="episodic methods: compute the meta-batch's gradient this many tasks at a time (same "
                        "update, peak memory of that many tasks; must divide the meta-batch per replica)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="methods trained on views: images per optimizer step")
    parser.add_argument("--views", choices=VIEW_CHOICES, default=None,
                        help="augmentation preset of multi-view batches and of --tasks augmentation "
                        "(mssl_tf/data/views.py, text: mssl_tf/data/text_views.py); default: omniglot for 1-channel data, "
                        "rgb for 3-channel data, identity for sentences")
    parser.add_argument("--view-preset", dest="views", choices=VIEW_CHOICES, default=argparse.SUPPRESS,
                        help="the same as --views")
    parser.add_argument("--probe", action="store_true",
                        help="methods trained on views: online linear probe on stop-gradient features (uses labels)")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps (meta-iterations) at most")
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=None, help="stop after this much training time")
    parser.add_argument("--snapshot-minutes", type=parse_minutes, default=(), metavar="M1,M2,...",
                        help="keep the model when training time (the --minutes clock) reaches each mark, in "
                        "OUTPUT/snapshots/<M>min/ (loadable by mssl-tf eval): accuracy against training time")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                        help="adam, or sgd (momentum 0.9, as the self-supervised papers' reference code)")
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="decoupled weight decay: each step w -= learning rate x this x w (PyTorch's SGD "
                             "weight_decay W acts like about 10 W here, through its momentum)")
    parser.add_argument("--halve-every", type=int, default=2000, help="halve the learning rate every N steps")
    parser.add_argument("--lr-schedule", choices=("halve", "cosine"), default="halve",
                        help="halve: every --halve-every steps; cosine: from --learning-rate to 0 over the budget "
                             "(--steps or --minutes, whichever ends the run first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--strategy", choices=["default", "mirrored", "multiworker"], default="default",
        help="multiworker: run the same command on every host, each with its TF_CONFIG (docs/multiworker.md)",
    )
    parser.add_argument("--devices", type=int, default=None, help="logical CPU devices for --strategy mirrored")
    parser.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--inner-steps", type=int, default=None)
    parser.add_argument("--evaluation-inner-steps", type=int, default=None)
    parser.add_argument("--inner-learning-rate", type=float, default=None)
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--option", type=parse_option, action="append", help="method option key=value")
    parser.add_argument("--validate-episodes", type=int, default=200,
                        help="validation-split episodes scored after every epoch (learning curve)")
    parser.add_argument("--tensorboard", default=None, help="write TensorBoard logs to this directory")
    parser.add_argument("--output", default="runs/model")
    parser.add_argument("--backup-dir", default=None,
                        help="checkpoints for resuming a killed run (default OUTPUT/backup; shared by all workers of "
                        "a multiworker run)")
    parser.add_argument("--backup-every", type=int, default=100, help="steps between backups")
    parser.add_argument("--early-stop", default=None, metavar="METRIC",
                        help="stop when this epoch metric stops improving, e.g. validation_accuracy or loss")
    parser.add_argument("--patience", type=int, default=3, help="epochs without improvement for --early-stop")
    parser.add_argument("--preemption-checkpoint", action="store_true",
                        help="multiworker: on SIGTERM every worker saves a checkpoint and exits with code 42")
    tasks = parser.add_argument_group("unsupervised meta-learning")
    tasks.add_argument("--tasks", choices=TASK_KINDS, default="labeled",
                       help="episodes of labeled classes, or tasks made from the images alone (labels unused): "
                       "augmented views of one image as a class, transformations as classes, clusters of a trained "
                       "encoder's embeddings as classes, or a mixture (mssl_tf/data/unsupervised_tasks.py); "
                       "augmentation tasks use the --views preset")
    tasks.add_argument("--cluster-encoder", default=None,
                       help="trained model (model.keras or its directory) whose embeddings are clustered for "
                       "--tasks clusters (and mixture)")
    tasks.add_argument("--init-from", default=None,
                       help="initialize the backbone from this trained model (model.keras or its directory), e.g. a "
                       "self-supervised encoder")
    tasks.add_argument("--task-option", type=parse_option, action="append", default=None,
                       help="unsupervised task option key=value: clusters, partitions, iterations (k-means), mixture "
                       "(comma-separated kinds), mixture_weights (JSON list), original_support (UMTRA shots)")
    parser.set_defaults(handler=train_command)


def train_config(args):
    """The `TrainConfig` of parsed `mssl-tf train` flags."""
    from mssl_tf.training import TrainConfig

    options = dict(args.option or [])
    for name in METHOD_SHORTCUTS:
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.first_order:
        options["first_order"] = True
    return TrainConfig(
        method=args.method, backbone=args.backbone,
        backbone_options=dict(args.backbone_option or []), dataset=args.dataset, image_size=args.image_size,
        channels=args.channels, min_images=args.min_images, data_dir=args.data_dir, source=args.source,
        split=args.split,
        ways=args.ways, shots=args.shots,
        queries=args.queries, meta_batch=args.meta_batch, tasks_per_pass=args.tasks_per_pass,
        batch_size=args.batch_size, views=args.views,
        probe=args.probe, steps=args.steps, steps_per_epoch=args.steps_per_epoch, minutes=args.minutes,
        snapshot_minutes=args.snapshot_minutes,
        learning_rate=args.learning_rate, optimizer=args.optimizer, weight_decay=args.weight_decay,
        halve_every=args.halve_every or None,
        lr_schedule=args.lr_schedule, seed=args.seed,
        strategy=args.strategy, devices=args.devices, jit_compile=args.jit_compile, method_options=options,
        validate_episodes=args.validate_episodes, tensorboard=args.tensorboard, output=args.output,
        backup_dir=args.backup_dir, backup_every=args.backup_every, early_stop=args.early_stop,
        patience=args.patience, preemption_checkpoint=args.preemption_checkpoint, command=args.command_line,
        tasks=args.tasks, cluster_encoder=args.cluster_encoder, init_from=args.init_from,
        task_options=dict(args.task_option or []),
    )


def train_command(args) -> int:
    from mssl_tf.training import train

    summary = train(train_config(args))
    print(f"trained {summary['steps']} steps ({summary['episodes']} tasks) in {summary['train_seconds']} s → "
          f"{Path(args.output) / 'model.keras'}")
    return 0

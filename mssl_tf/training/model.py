"""The run's model: built from the registry with what the method asks of the run, compiled in the strategy's
scope, optionally started from another run's backbone (`--init-from`)."""

from __future__ import annotations

import keras

from mssl_tf import distribute
from mssl_tf.backbones import IMAGE_BACKBONES, TEXT_BACKBONES, build_backbone, is_text_backbone
from mssl_tf.backbones.text import PretrainedTextEncoder, is_keras_hub_preset
from mssl_tf.data.modality import is_text
from mssl_tf.methods import build_method, method_class
from mssl_tf.methods.episodic import EpisodicModel
from mssl_tf.training.artifacts import load_trained
from mssl_tf.training.config import TrainConfig, load_classes

# What a run can give a method's constructor (the names a class lists in `RUN_ARGUMENTS`); None leaves it unset.
RUN_VALUES = {
    "ways": lambda config: config.ways,
    "total_steps": lambda config: config.steps,  # e.g. an EMA schedule that ends at the last planned step
    "probe_classes": lambda config: len(load_classes(config, config.split)) if config.probe else None,
}


def run_arguments(config: TrainConfig) -> dict:
    """The constructor arguments the method declares in `RUN_ARGUMENTS`, from the run's settings."""
    wanted = method_class(config.method).RUN_ARGUMENTS
    unknown = [name for name in wanted if name not in RUN_VALUES]
    if unknown:
        raise ValueError(f"{config.method} asks the run for {unknown}, which no run supplies; known: "
                         f"{sorted(RUN_VALUES)}")
    values = {name: RUN_VALUES[name](config) for name in wanted}
    return {name: value for name, value in values.items() if value is not None}


def image_shape(class_images) -> tuple[int, int, int]:
    """(H, W, C) of class arrays `[classes, per class, H, W(, C)]`."""
    return (*class_images.shape[2:4], class_images.shape[4] if class_images.ndim == 5 else 1)


def build_backbone_for(config: TrainConfig, class_images, train_images=None) -> keras.Model:
    """The run's backbone: an image backbone built for the shape of `class_images`, or a text backbone built from
    the training split's sentences (its vocabulary), or the pretrained encoder of a keras-hub preset directory given
    as `--init-from` (its architecture, vocabulary and weights); `config.backbone_options` are the builder's keyword
    arguments (for a preset: `sequence_length`)."""
    if config.init_from and is_keras_hub_preset(config.init_from):
        if not is_text(class_images):
            raise ValueError(f"--init-from {config.init_from} is a keras-hub text preset; --dataset {config.dataset} "
                             "holds images")
        return PretrainedTextEncoder.from_preset(config.init_from, **config.backbone_options)
    text_data, text_backbone = is_text(class_images), is_text_backbone(config.backbone)
    if text_data and config.init_from:
        # The source's whole text backbone: its vocabulary goes with its weights (a vocabulary learned anew from
        # this run's corpus would give the same shapes and silently different tokens).
        source = source_model(config.init_from).backbone
        if not getattr(source, "TAKES_TEXT", False):
            raise ValueError(f"--init-from {config.init_from} has an image backbone; --dataset {config.dataset} holds "
                             "sentences")
        backbone = type(source).from_config(source.get_config())
        backbone.set_weights(source.get_weights())
        return backbone
    if text_data != text_backbone:
        kind = sorted(TEXT_BACKBONES if text_data else IMAGE_BACKBONES)
        raise ValueError(f"--dataset {config.dataset} holds {'sentences' if text_data else 'images'}; --backbone "
                         f"{config.backbone} takes {'images' if text_data else 'sentences'}: use one of {kind}")
    if text_data:
        corpus = load_classes(config, config.split) if train_images is None else train_images
        return build_backbone(config.backbone, corpus=corpus, **config.backbone_options)
    return build_backbone(config.backbone, input_shape=image_shape(class_images), **config.backbone_options)


def build_model(config: TrainConfig, class_images=None, train_images=None) -> keras.Model:
    """The method on its backbone, built for the examples of `class_images` (default: the run's validation split;
    a text backbone learns its vocabulary from `train_images`, default the training split); explicit
    `method_options` win over what the run supplies."""
    class_images = load_classes(config, "val") if class_images is None else class_images
    backbone = build_backbone_for(config, class_images, train_images)
    model = build_method(config.method, backbone, **{**run_arguments(config), **config.method_options})
    if config.tasks_per_pass:
        if getattr(type(model), "train_step", None) is not EpisodicModel.train_step:
            raise ValueError(f"--tasks-per-pass splits the meta-batch of episodic methods that use the shared "
                             f"training step; {config.method} has its own")
        model.tasks_per_pass = int(config.tasks_per_pass)
    return model


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam, or SGD with momentum 0.9 (`config.optimizer`), with decoupled weight decay when asked.

    Keras' `weight_decay` shrinks each weight by learning_rate · weight_decay per step, outside the momentum.
    PyTorch's SGD adds weight_decay · w to the gradient instead, which momentum 0.9 amplifies about tenfold in
    the steady state: a reference's 5e-4 corresponds to about 5e-3 here.
    """
    learning_rate = config.learning_rate
    if config.lr_schedule != "cosine" and config.halve_every:  # cosine: a variable set by callbacks.CosineOverBudget
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, config.halve_every, 0.5, staircase=True
        )
    decay = {"weight_decay": config.weight_decay} if config.weight_decay else {}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, **decay)
    return keras.optimizers.Adam(learning_rate, **decay)


def source_model(path) -> keras.Model:
    """The model `--init-from` names: a `mssl-tf train` output (directory or .keras file) or a zoo entry."""
    from mssl_tf import zoo

    source = zoo.load(path) if str(path) in zoo.available() else load_trained(path)[0]
    if not hasattr(source, "backbone"):
        raise ValueError(f"{path} holds a {type(source).__name__} without a backbone; --init-from needs a model "
                         "trained by `mssl-tf train` (any method), a zoo entry or a keras-hub preset directory")
    return source


def initialize_backbone(model: keras.Model, path) -> None:
    """Copies the backbone weights of a trained model (a `mssl-tf train` output, or a zoo entry's name) into
    `model.backbone` (same architecture). A keras-hub preset directory was already the backbone it was built with."""
    if is_keras_hub_preset(path):
        return
    source = source_model(path)
    target_shapes = [tuple(weight.shape) for weight in model.backbone.weights]
    source_shapes = [tuple(weight.shape) for weight in source.backbone.weights]
    if target_shapes != source_shapes:
        raise ValueError(f"--init-from {path}: its backbone ({source.backbone.name}, {len(source_shapes)} weights) "
                         f"does not match --backbone ({model.backbone.name}, {len(target_shapes)} weights); train "
                         "with the same --backbone")
    model.backbone.set_weights(source.backbone.get_weights())


def prepare(config: TrainConfig):
    """What both drivers start from: the seeded model, built and compiled in the strategy's scope (optionally
    initialized from another run), and the train and validation data.

    Returns:
        (strategy, model, train class images, validation class images).
    """
    keras.utils.set_random_seed(config.seed)
    strategy = distribute.get_strategy(config.strategy, config.devices)
    train_images = load_classes(config, config.split)
    validation_images = load_classes(config, "val")
    with strategy.scope():
        model = build_model(config, validation_images, train_images)
        model.compile(optimizer=make_optimizer(config), jit_compile=config.jit_compile)
    if config.init_from:
        initialize_backbone(model, config.init_from)
    return strategy, model, train_images, validation_images

"""Evaluation keeps its trace between passes (validation after every epoch does not retrace) and traces again when
a setting the trace reads changes (MAML's evaluation inner steps), without keeping the model alive."""

import gc
import weakref

import keras
import numpy as np

from mssl_tf import backbones, evaluation
from mssl_tf.data import EpisodeSpec
from mssl_tf.methods import build_method
from mssl_tf.methods.meta_ssl import adaptation_steps
from tests.conftest import labelled_classes

SPEC = EpisodeSpec(5, 1, 2)
EPISODES = dict(episodes=4, tasks_per_call=2, seed=7)


def counting_traces(model):
    """Counts runs of the Python body of `meta_batch_learn`: inside a `tf.function`, one per trace."""
    traces = []
    learn = model.meta_batch_learn

    def counted(batch, training):
        traces.append(1)
        return learn(batch, training)

    model.meta_batch_learn = counted
    return traces


def test_a_second_pass_reuses_the_trace():
    keras.utils.set_random_seed(0)
    model = build_method("protonet", backbones.conv4(filters=8))
    traces = counting_traces(model)
    images = labelled_classes(classes=6, drawings=4)
    first = evaluation.episode_predictions(model, images, SPEC, **EPISODES)
    second = evaluation.episode_predictions(model, images, SPEC, **EPISODES)
    assert len(traces) == 1
    np.testing.assert_array_equal(first[1], second[1])
    evaluation.episode_predictions(model, images, EpisodeSpec(3, 1, 2), **EPISODES)  # another shape: its own trace
    assert len(traces) == 2


def test_changing_the_evaluation_inner_steps_traces_again():
    keras.utils.set_random_seed(0)
    model = build_method("maml", backbones.conv4(filters=8), ways=5, inner_steps=1, inner_learning_rate=0.4)
    traces = counting_traces(model)
    images = labelled_classes(classes=6, drawings=4)
    with adaptation_steps(model, 0):
        unadapted = evaluation.episode_predictions(model, images, SPEC, **EPISODES)[1]
    with adaptation_steps(model, 3):
        adapted = evaluation.episode_predictions(model, images, SPEC, **EPISODES)[1]
    assert not np.allclose(adapted, unadapted, atol=1e-4), "3 inner steps must change the query probabilities"
    with adaptation_steps(model, 0):  # back to a setting traced before: its trace is kept
        np.testing.assert_allclose(evaluation.episode_predictions(model, images, SPEC, **EPISODES)[1], unadapted,
                                   rtol=1e-5, atol=1e-6)
    assert len(traces) == 2
    evaluation._SCORERS.clear()  # a new trace of 3 steps gives what the kept one gave
    with adaptation_steps(model, 3):
        np.testing.assert_allclose(evaluation.episode_predictions(model, images, SPEC, **EPISODES)[1], adapted,
                                   rtol=1e-5, atol=1e-6)


def test_the_kept_trace_does_not_keep_the_model_alive():
    model = build_method("protonet", backbones.conv4(filters=8))
    evaluation.episode_predictions(model, labelled_classes(classes=6, drawings=4), SPEC, **EPISODES)
    reference = weakref.ref(model)
    del model
    gc.collect()
    assert reference() is None

"""How long a backbone's start lasts (issue 13, BYOL-then-ProtoNet): ProtoNet on augmentation tasks (the meta-SSL
table's settings) from a random or a zoo encoder's backbone, validated after a few step counts on the training
run's validation episodes, with the relative weight change and the linear CKA of features against the start.

    python benchmarks/init_start_curve.py random 0,10,25,50,100,250 > benchmarks/results/init_start_curve_random.log
    python benchmarks/init_start_curve.py momentum-contrast-v2-conv4-omniglot-unsupervised 0,10,25,50,100,250 \
        > benchmarks/results/init_start_curve_moco.log
"""
import json, sys, tempfile, time
import keras, numpy as np, tensorflow as tf
from mssl_tf import zoo
from mssl_tf.data import EpisodeSpec
from mssl_tf.evaluation import confidence_interval, episode_accuracies
from mssl_tf.training import TrainConfig
from mssl_tf.training.callbacks import VALIDATION_SEED
from mssl_tf.training.config import view_preset
from mssl_tf.training.datasets import training_dataset
from mssl_tf.training.model import prepare
from dataclasses import replace

init = sys.argv[1]  # random | zoo entry name
marks = [int(x) for x in sys.argv[2].split(",")]
config = TrainConfig(method="protonet", tasks="augmentation", views="omniglot", ways=50, shots=1, queries=3,
                     steps=max(marks), seed=0, output=tempfile.mkdtemp())
strategy, model, train_images, val = prepare(config)
if init != "random":
    source = zoo.load(init)
    model.backbone.set_weights(source.backbone.get_weights())
probe = val[:, :4].reshape(-1, *val.shape[2:])[:2000].astype("float32") / 255.0
probe = probe[..., None] if probe.ndim == 3 else probe
def features():
    return model.backbone(probe, training=False).numpy()
def cka(a, b):
    a = a - a.mean(0); b = b - b.mean(0)
    return float(np.linalg.norm(a.T @ b) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))
start_weights = [w.copy() for w in model.backbone.get_weights()]
start_features = features()
names = [w.path for w in model.backbone.weights]
spec = EpisodeSpec(5, 1, 15)
done, rows = 0, []
for mark in marks:
    if mark > done:
        model.fit(training_dataset(config, train_images, done), steps_per_epoch=mark - done, epochs=1, verbose=0)
        done = mark
    mean, half = confidence_interval(episode_accuracies(model, val, spec, 200, seed=VALIDATION_SEED))
    now = model.backbone.get_weights()
    conv = [i for i, n in enumerate(names) if n.endswith("kernel")]
    change = [float(np.linalg.norm(now[i] - start_weights[i]) / np.linalg.norm(start_weights[i])) for i in conv]
    row = {"init": init, "steps": done, "val_5w1s": round(100 * mean, 2), "ci95": round(100 * half, 2),
           "kernel_relative_change": [round(c, 3) for c in change], "cka_to_init_features": round(cka(start_features, features()), 3)}
    rows.append(row); print(json.dumps(row), flush=True)

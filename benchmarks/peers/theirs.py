"""The PyTorch side of the peers benchmark: the same workloads as `ours.py`, written as a PyTorch user writes them.

    benchmarks/peers/.venv/bin/python benchmarks/peers/theirs.py WORKLOAD [--inner-steps K] [--warmup W]
                                                                 [--steps N] [--quick]
                                                                 [--ways W] [--shots S] [--queries Q] [--meta-batch B]
    benchmarks/peers/.venv/bin/python benchmarks/peers/theirs.py --check IN.npz OUT.npz

WORKLOAD is `maml_learn2learn` (`l2l.algorithms.MAML(model, lr, first_order=False)`, `clone`/`adapt` per task,
one backward per task as learn2learn's examples do), `maml_torch_func` (the same second-order algorithm with
`torch.func`: `functional_call` + `grad` for the inner steps, tasks in a loop), `protonet` or `simclr`
(plain PyTorch). Our code, not the libraries' example scripts; the network is the same Conv-4 as mssl-tf's:
4 x [3x3 conv, 64 filters, no bias (batch norm cancels it), batch norm, ReLU, 2x2 max-pool] on 1x28x28 images,
then a linear classifier for MAML or SimCLR's projection MLP. Inputs are fixed random tensors, as on our side.

`--check` computes the training loss and its gradient for given weights and inputs (no optimizer step), so
`tests/test_peers_benchmark.py` can compare them with mssl-tf's on the same numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

harness.pin_thread_environment()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(harness.THREADS)
torch.set_num_interop_threads(harness.THREADS)

try:
    import learn2learn as l2l
except ImportError as error:  # make_venv.sh could not build it: maml_torch_func stands in (said in the record)
    l2l, LEARN2LEARN_ERROR = None, f"{type(error).__name__}: {error}"
else:
    LEARN2LEARN_ERROR = None

WORKLOADS = ("maml_learn2learn", "maml_torch_func", "protonet", "simclr")


def conv4(ways: int | None = None, track_running_stats: bool = True) -> nn.Sequential:
    """Conv-4 on [n, 1, 28, 28] → 64 features, with a `ways`-way linear classifier when `ways` is given.

    MAML uses the batch's statistics in every pass (as mssl-tf's MAML does), so it needs no running statistics.
    """
    layers, channels = [], 1
    for _ in range(4):
        layers += [nn.Conv2d(channels, 64, 3, padding=1, bias=False),
                   nn.BatchNorm2d(64, eps=1e-5, momentum=0.1, track_running_stats=track_running_stats),
                   nn.ReLU(), nn.MaxPool2d(2)]
        channels = 64
    layers.append(nn.Flatten())
    if ways:
        layers.append(nn.Linear(64, ways))
    return nn.Sequential(*layers)


def projection_head() -> nn.Sequential:
    """SimCLR's projection MLP as mssl-tf's default: 64 → 256 (no bias) → batch norm → ReLU → 128."""
    return nn.Sequential(nn.Linear(64, 256, bias=False), nn.BatchNorm1d(256, eps=1e-5, momentum=0.1), nn.ReLU(),
                         nn.Linear(256, 128))


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's loss over the 2N anchors: each view's positive is the other view of its image."""
    count = a.shape[0]
    z = F.normalize(torch.cat([a, b]), dim=1)
    logits = (z @ z.T / temperature).masked_fill(torch.eye(2 * count, dtype=torch.bool), float("-inf"))
    targets = torch.cat([torch.arange(count, 2 * count), torch.arange(count)])
    return F.cross_entropy(logits, targets)


# === Losses of one training step (shared by the timed steps and --check) ===
def maml_learn2learn_loss(maml, batch, inner_steps):
    """Mean query loss over the tasks, each adapted from a `clone`; backward per task frees its graph early."""
    tasks = batch["support_images"].shape[0]
    total = 0.0
    for task in range(tasks):
        learner = maml.clone()
        for _ in range(inner_steps):
            learner.adapt(F.cross_entropy(learner(batch["support_images"][task]), batch["support_labels"][task]))
        loss = F.cross_entropy(learner(batch["query_images"][task]), batch["query_labels"][task]) / tasks
        loss.backward()
        total += loss.item()
    return total


def maml_torch_func_loss(model, batch, inner_steps, inner_learning_rate=harness.INNER_LEARNING_RATE):
    """The same as `maml_learn2learn_loss` with `torch.func`: `grad` of a `functional_call` for each inner step.

    Tasks run one after another, not under `torch.func.vmap`: on torch 2.14.1 (CPU) the vmapped meta-gradient of
    this network is off by about 1e-3 relative even in float64 (the loop's equals learn2learn's to 1e-16).
    """
    params = dict(model.named_parameters())

    def support_loss(weights, images, labels):
        return F.cross_entropy(torch.func.functional_call(model, weights, (images,)), labels)

    tasks = batch["support_images"].shape[0]
    total = 0.0
    for task in range(tasks):
        weights = params
        for _ in range(inner_steps):
            gradients = torch.func.grad(support_loss)(weights, batch["support_images"][task],
                                                      batch["support_labels"][task])
            weights = {name: weights[name] - inner_learning_rate * gradients[name] for name in weights}
        loss = support_loss(weights, batch["query_images"][task], batch["query_labels"][task]) / tasks
        loss.backward()
        total += loss.item()
    return total


def protonet_loss(model, support_images, query_images, query_labels, ways, shots):
    embeddings = model(torch.cat([support_images, query_images]))
    prototypes = embeddings[: ways * shots].reshape(ways, shots, -1).mean(1)
    logits = -torch.cdist(embeddings[ways * shots:], prototypes).pow(2)
    return F.cross_entropy(logits, query_labels)


def simclr_loss(encoder, projector, views):
    count = views.shape[0]
    projections = projector(encoder(torch.cat([views[:, 0], views[:, 1]])))
    return nt_xent(projections[:count], projections[count:])


# === Timed steps ===
def episode_labels(ways, per_class, tasks=None):
    labels = torch.arange(ways).repeat_interleave(per_class)
    return labels if tasks is None else labels.repeat(tasks, 1)


def random_images(rng, *leading):
    """Random images [*leading, 1, 28, 28] (NCHW, PyTorch's layout)."""
    return torch.from_numpy(rng.random((*leading, *harness.IMAGE_SHAPE), dtype=np.float32)).movedim(-1, -3)


def maml_batch(rng, ways, shots, queries, meta_batch):
    return {"support_images": random_images(rng, meta_batch, ways * shots),
            "support_labels": episode_labels(ways, shots, meta_batch),
            "query_images": random_images(rng, meta_batch, ways * queries),
            "query_labels": episode_labels(ways, queries, meta_batch)}


def maml_step(variant, inner_steps, ways, shots, queries, meta_batch):
    rng = np.random.default_rng(0)
    batch = maml_batch(rng, ways, shots, queries, meta_batch)
    model = conv4(ways, track_running_stats=False)
    if variant == "maml_learn2learn":
        if l2l is None:
            raise SystemExit(f"learn2learn is not importable ({LEARN2LEARN_ERROR}): time maml_torch_func instead")
        maml = l2l.algorithms.MAML(model, lr=harness.INNER_LEARNING_RATE, first_order=False)
        parameters, meta_loss = maml.parameters(), lambda: maml_learn2learn_loss(maml, batch, inner_steps)
    else:
        parameters, meta_loss = model.parameters(), lambda: maml_torch_func_loss(model, batch, inner_steps)
    optimizer = torch.optim.Adam(parameters, harness.OUTER_LEARNING_RATE)

    def step():
        optimizer.zero_grad()
        loss = meta_loss()  # back-propagates the meta-gradient into the parameters' .grad
        optimizer.step()
        return loss
    return step


def protonet_step(ways, shots, queries):
    rng = np.random.default_rng(0)
    support_images, query_images = random_images(rng, ways * shots), random_images(rng, ways * queries)
    query_labels = episode_labels(ways, queries)
    model = conv4()
    optimizer = torch.optim.Adam(model.parameters(), harness.OUTER_LEARNING_RATE)

    def step():
        optimizer.zero_grad()
        loss = protonet_loss(model, support_images, query_images, query_labels, ways, shots)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def simclr_step(batch_size):
    views = random_images(np.random.default_rng(0), batch_size, 2)
    encoder, projector = conv4(), projection_head()
    optimizer = torch.optim.Adam([*encoder.parameters(), *projector.parameters()], harness.OUTER_LEARNING_RATE)

    def step():
        optimizer.zero_grad()
        loss = simclr_loss(encoder, projector, views)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def build_step(args):
    maml, protonet, batch_size = harness.task_shapes(args.quick, harness.maml_overrides(args))
    if args.workload.startswith("maml"):
        return maml_step(args.workload, args.inner_steps, **maml), {**maml, "inner_steps": args.inner_steps}
    if args.workload == "simclr":
        return simclr_step(batch_size), {"batch_size": batch_size, "views": 2}
    return protonet_step(**protonet), protonet


# === --check: loss and gradient for given weights and inputs ===
def load_conv4_weights(model: nn.Sequential, arrays) -> None:
    """Sets Conv-4 (and its classifier) from mssl-tf's layout: per block HWIO kernel, gamma, beta; Dense [in, out]."""
    convolutions = [layer for layer in model if isinstance(layer, nn.Conv2d)]
    norms = [layer for layer in model if isinstance(layer, nn.BatchNorm2d)]
    with torch.no_grad():
        for block, (convolution, norm) in enumerate(zip(convolutions, norms)):
            convolution.weight.copy_(torch.from_numpy(arrays[f"block{block}_kernel"]).permute(3, 2, 0, 1))
            norm.weight.copy_(torch.from_numpy(arrays[f"block{block}_gamma"]))
            norm.bias.copy_(torch.from_numpy(arrays[f"block{block}_beta"]))
        if isinstance(model[-1], nn.Linear):
            model[-1].weight.copy_(torch.from_numpy(arrays["classifier_kernel"]).T)
            model[-1].bias.copy_(torch.from_numpy(arrays["classifier_bias"]))


def conv4_gradients(model: nn.Sequential) -> dict:
    """Gradients in mssl-tf's layout (the inverse of `load_conv4_weights`)."""
    convolutions = [layer for layer in model if isinstance(layer, nn.Conv2d)]
    norms = [layer for layer in model if isinstance(layer, nn.BatchNorm2d)]
    gradients = {}
    for block, (convolution, norm) in enumerate(zip(convolutions, norms)):
        gradients[f"block{block}_kernel"] = convolution.weight.grad.permute(2, 3, 1, 0).numpy()
        gradients[f"block{block}_gamma"] = norm.weight.grad.numpy()
        gradients[f"block{block}_beta"] = norm.bias.grad.numpy()
    if isinstance(model[-1], nn.Linear):
        gradients["classifier_kernel"] = model[-1].weight.grad.T.numpy()
        gradients["classifier_bias"] = model[-1].bias.grad.numpy()
    return gradients


def nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3)


def check(input_path: str, output_path: str) -> None:
    """Loss and gradient of `workload` (in the file) at the file's weights and inputs, in mssl-tf's layout."""
    arrays = dict(np.load(input_path))
    workload = str(arrays["workload"])
    results = {}
    if workload == "maml":
        batch = {"support_images": nchw(arrays["support_images"]),
                 "support_labels": torch.from_numpy(arrays["support_labels"]).long(),
                 "query_images": nchw(arrays["query_images"]),
                 "query_labels": torch.from_numpy(arrays["query_labels"]).long()}
        inner_steps, ways = int(arrays["inner_steps"]), int(arrays["ways"])
        variants = ["maml_torch_func"] + (["maml_learn2learn"] if l2l is not None else [])
        for variant in variants:
            model = conv4(ways, track_running_stats=False)
            load_conv4_weights(model, arrays)
            if variant == "maml_learn2learn":
                loss = maml_learn2learn_loss(l2l.algorithms.MAML(model, lr=float(arrays["inner_learning_rate"]),
                                                                 first_order=False), batch, inner_steps)
            else:
                loss = maml_torch_func_loss(model, batch, inner_steps, float(arrays["inner_learning_rate"]))
            results.update({f"{variant}/loss": loss,
                            **{f"{variant}/{name}": value for name, value in conv4_gradients(model).items()}})
    elif workload == "protonet":
        model = conv4()
        load_conv4_weights(model, arrays)
        ways, shots = int(arrays["ways"]), int(arrays["shots"])
        loss = protonet_loss(model, nchw(arrays["support_images"]), nchw(arrays["query_images"]),
                             torch.from_numpy(arrays["query_labels"]).long(), ways, shots)
        loss.backward()
        results.update({"protonet/loss": loss.item(),
                        **{f"protonet/{name}": value for name, value in conv4_gradients(model).items()}})
    else:
        raise ValueError(f"--check knows maml and protonet, not {workload!r}")
    np.savez(output_path, **results)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", nargs="?", choices=WORKLOADS)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--quick", action="store_true", help="smaller meta-batch, ways and batch (sanity run)")
    harness.add_maml_shape_arguments(parser)
    parser.add_argument("--check", nargs=2, metavar=("IN_NPZ", "OUT_NPZ"))
    args = parser.parse_args(argv)
    if args.check:
        check(*args.check)
        return
    if args.workload is None:
        parser.error("give a WORKLOAD or --check")
    torch.manual_seed(0)
    step, shapes = build_step(args)
    result = harness.time_steps(step, args.warmup, args.steps)
    harness.emit({
        "side": "theirs", "workload": args.workload, "shapes": shapes, **result,
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "versions": {"torch": torch.__version__, "learn2learn": getattr(l2l, "__version__", None),
                     "numpy": np.__version__},
        "learn2learn_import_error": LEARN2LEARN_ERROR,
    })


if __name__ == "__main__":
    main()

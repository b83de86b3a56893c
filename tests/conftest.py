import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mssl_tf.data import omniglot  # noqa: E402


@pytest.fixture(scope="session")
def omniglot_dir():
    """The real Omniglot directory ($MSSL_TF_OMNIGLOT_DIR or ../shared/data/omniglot); its absence is a failure."""
    return omniglot.resolve_data_dir(None)


@pytest.fixture(scope="session")
def train_images(omniglot_dir):
    return omniglot.load_split("train", omniglot_dir)


def labelled_classes(classes=12, drawings=20, size=28):
    """Synthetic uint8 classes whose pixel (0,0) is the class id and (0,1) the drawing id."""
    images = np.zeros([classes, drawings, size, size], np.uint8)
    images[:, :, 0, 0] = np.arange(classes)[:, None]
    images[:, :, 0, 1] = np.arange(drawings)[None, :]
    rng = np.random.default_rng(0)
    images[:, :, 2:, 2:] = rng.integers(0, 255, [classes, drawings, size - 2, size - 2], dtype=np.uint8)
    return images


def central_differences(loss, variables, step):
    """The gradient of the scalar `loss()` with respect to `variables` by central differences, flattened in order."""
    numeric = []
    for variable in variables:
        original = np.array(variable.numpy())
        for index in np.ndindex(original.shape):
            values = []
            for sign in (1, -1):
                shifted = original.copy()
                shifted[index] += sign * step
                variable.assign(shifted)
                values.append(float(loss()))
            variable.assign(original)
            numeric.append((values[0] - values[1]) / (2 * step))
    return np.array(numeric)


@pytest.fixture
def float64():
    """Keras floats in float64 for the test (finite-difference checks), float32 again afterwards."""
    import keras

    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(policy)


# Opt-in per-test CPU record: `MSSL_TF_TEST_CPU=path.json python -m pytest ...` writes, for each test, the CPU seconds
# of this process (time.process_time) plus those of its finished children (RUSAGE_CHILDREN), for setup (its fixtures),
# call and teardown, and the wall seconds. CPU seconds depend little on what else runs on the machine; wall seconds do.
# Under pytest-xdist each worker writes its own file, the worker's id appended to the name (path.json.gw0).
_CPU_RECORD_PATH = os.environ.get("MSSL_TF_TEST_CPU")
if _CPU_RECORD_PATH and os.environ.get("PYTEST_XDIST_WORKER"):
    _CPU_RECORD_PATH += "." + os.environ["PYTEST_XDIST_WORKER"]
_cpu_record = {}


def _cpu_seconds():
    import resource
    import time

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


if _CPU_RECORD_PATH:

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        import time

        cpu, wall = _cpu_seconds(), time.perf_counter()
        yield
        _cpu_record[item.nodeid] = {"cpu_seconds": round(_cpu_seconds() - cpu, 3),
                                    "wall_seconds": round(time.perf_counter() - wall, 3)}

    def pytest_sessionfinish(session):
        import json

        total = {"cpu_seconds": round(sum(test["cpu_seconds"] for test in _cpu_record.values()), 3),
                 "wall_seconds": round(sum(test["wall_seconds"] for test in _cpu_record.values()), 3)}
        ranked = dict(sorted(_cpu_record.items(), key=lambda entry: -entry[1]["cpu_seconds"]))
        with open(_CPU_RECORD_PATH, "w", encoding="utf-8") as file:
            json.dump({"total": total, "tests": ranked}, file, indent=1)

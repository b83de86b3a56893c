"""REST's numeric-array fast path gives what the general path (json.loads, np.asarray, json.dumps) gives, or declines."""

import json

import numpy as np
import pytest

pytest.importorskip("grpc", reason="the serving tests need the serving extra: pip install 'mssl-tf[serving]'")

from mssl_tf.serving import json_arrays  # noqa: E402
from mssl_tf.serving.json_arrays import ParsedArray, integer_array_json, loads, parse_array  # noqa: E402
from mssl_tf.serving.limits import json_depth  # noqa: E402


def general(text):
    return np.asarray(json.loads(text))


def plain(value):
    """A `loads` document as `json.loads` gives it (each ParsedArray checked against its own text)."""
    if isinstance(value, ParsedArray):
        expected = general(value.text)
        assert value.array.dtype == expected.dtype and value.array.shape == expected.shape
        assert value.array.tobytes() == expected.tobytes()
        return json.loads(value.text)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


INTEGER_ARRAYS = [
    "[0]", "[-0]", "[1,-2,30]", "[[1,2,3],[4,5,6]]", "[[[[0],[255]],[[7],[8]]]]", " [ [ 1 , -2 ] ,\n\t[3,4]\r] ",
    "[999999999999999999,-99999999999999999,0,10,100,1000]", json.dumps(np.arange(-600, 600).reshape(4, 3, 100).tolist()),
]


@pytest.mark.parametrize("text", INTEGER_ARRAYS)
def test_integer_arrays_parse_to_what_numpy_makes_of_json_loads(text):
    array = parse_array(text.encode())
    assert array is not None
    expected = general(text)
    assert array.dtype == expected.dtype and array.shape == expected.shape and np.array_equal(array, expected)


DECLINED = [
    "[[1,2],[3]]", "[[1],2]", "[1,[2]]", "[[1,2],[3,4]", "[[1,2]],[3,4]]", "[1,,2]", "[,1]", "[1,]", "[]", "[[]]",
    "[[],[]]", "[1 2]", "[1,2][3]", "[01]", "[-01]", "[-]", "[1-2]", "[--1]", "[+1]", "[1.5]", "[1e3]", "[true]",
    "[null]", '["1"]', "[1234567890123456789]", "[-999999999999999999]", "1", "[[1,2],[3,4]]]", "[[[1]],[[2],[3]]]",
]


@pytest.mark.parametrize("text", DECLINED)
def test_anything_but_a_rectangular_integer_array_is_declined(text):
    assert parse_array(text.encode()) is None


def test_random_texts_parse_exactly_or_are_declined():
    rng = np.random.default_rng(0)
    alphabet = list("[],0123456789- \n") + ["00", "-0", "]]", "[[", ",,", "1.5", "e"]
    parsed = 0
    for _ in range(400):
        shape = tuple(rng.integers(1, 4, rng.integers(1, 4)))
        text = list(json.dumps(rng.integers(-300, 300, shape).tolist()))
        for _ in range(rng.integers(0, 3)):
            text[rng.integers(0, len(text))] = alphabet[rng.integers(0, len(alphabet))]
        text = "".join(text)
        array = parse_array(text.encode())
        if array is None:
            continue
        parsed += 1
        expected = general(text)  # raises if the fast path accepted what json.loads refuses
        assert array.dtype == expected.dtype and array.shape == expected.shape and np.array_equal(array, expected)
    assert parsed > 150


IMAGES = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1)).tolist()
BIG = json.dumps(IMAGES)


@pytest.mark.parametrize("body, arrays", [
    ('{"signature_name": "serving_default", "inputs": %s}' % BIG, 1),
    ('{"instances":%s}' % BIG.replace(" ", ""), 1),
    ('{"inputs": {"images": %s, "more": %s}, "signature_name": "x"}' % (BIG, BIG), 2),
    ('{"k": "a: \\"[1]\\" \\\\", "inputs": %s}' % BIG, 1),  # escapes and brackets in a string before the array
])
def test_documents_load_as_json_loads_with_arrays_already_converted(body, arrays):
    document = loads(body.encode(), max_depth=32)
    assert document is not None
    assert plain(document) == json.loads(body)
    inputs = document.get("inputs")
    values = [*document.values(), *(inputs.values() if isinstance(inputs, dict) else [])]
    assert sum(isinstance(value, ParsedArray) for value in values) == arrays


@pytest.mark.parametrize("body", [
    '{"inputs": %s}' % BIG[:-1],  # unclosed
    '{"inputs": %s, }' % BIG,  # malformed elsewhere
    '{"inputs": %s, "x": "\\u0000mssl_tf.parsed_array.0"}' % BIG,  # a string that looks like a placeholder
    '{"inputs": %s, "\\u0000mssl_tf.parsed_array.0": 1}' % BIG,
    '{"instances": [{"images": %s}]}' % BIG,  # deeper than the REST API looks for arrays
    '{"k": "x: %s"}' % BIG,  # in a string
    '{"inputs": %s}' % BIG.replace("[0]", "[0.0]", 1),  # a fraction
    '{"inputs": %s}' % BIG.replace("]]]", "], [1]]]", 1),  # ragged
    '{"inputs": [1, 2]}',  # too small to be worth it
    '[%s]' % BIG,  # not an object value
])
def test_documents_that_might_differ_from_json_loads_are_declined(body):
    assert loads(body.encode(), max_depth=32) is None


def test_depth_limit_is_counted_as_limits_counts_it():
    body = ('{"inputs": {"images": %s}}' % BIG).encode()
    depth = json_depth(body)
    assert depth == 6
    assert loads(body, max_depth=depth) is not None
    assert loads(body, max_depth=depth - 1) is None  # the general path then refuses it with its message
    assert loads(body.replace(b'{"images"', b'{"a": [[[[[[0]]]]]], "images"'), max_depth=depth) is None


def test_utf8_with_bom_and_utf16_bodies_are_left_to_json_loads():
    body = '{"inputs": %s}' % BIG
    assert loads(b"\xef\xbb\xbf" + body.encode(), 32) is None
    assert loads(body.encode("utf-16"), 32) is None


@pytest.mark.parametrize("array", [
    np.arange(6).reshape(2, 3, 1), np.array([-5, 0, 5], np.int8), np.array([2**63 - 1, -2**63 + 1], np.int64),
    np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.uint8), np.array([[7]], np.uint64),
    np.array([2**64 - 1], np.uint64), np.array([-2**63], np.int64), np.array(3), np.zeros((2, 0)), np.ones(3),
    np.random.default_rng(1).integers(-10**12, 10**12, (3, 5, 2)),  # beyond the looked-up range: digit by digit
])
def test_integer_arrays_are_written_as_json_dumps_writes_them(array):
    text = integer_array_json(array)
    if text is None:
        assert array.dtype.kind not in "iu" or array.ndim == 0 or array.size == 0 or array.max() >= 2**63 \
            or array.min() == -2**63
    else:
        assert text == json.dumps(array.tolist(), separators=(",", ":"))


# --- the REST API: the same answers with and without the fast path ---


@pytest.fixture(scope="module")
def rest_api(tmp_path_factory):
    from mssl_tf.serving.config import ModelConfig
    from mssl_tf.serving.limits import Limits
    from mssl_tf.serving.models import ModelManager
    from mssl_tf.serving.rest import RestApi
    from mssl_tf.serving.testing import write_test_model

    base = tmp_path_factory.mktemp("json-arrays") / "encoder"
    write_test_model(base, 1)
    manager = ModelManager([ModelConfig("encoder", str(base))], poll_wait_seconds=0)
    manager.start()
    yield RestApi(manager, Limits(max_json_depth=8))
    manager.stop()


def bodies():
    images = np.random.default_rng(2).integers(0, 256, (4, 28, 28, 1))
    rows = json.dumps(images.tolist())
    return [
        '{"inputs": %s}' % rows,
        '{"signature_name": "serving_default", "instances": %s}' % rows,
        '{"inputs": {"images": %s}}' % rows,
        '{"inputs": %s}' % rows.replace("[0]", "[256]"),  # out of uint8's range
        '{"inputs": %s}' % rows.replace("[0]", "[-1]"),
        '{"inputs": %s}' % rows.replace("]]]", "], [1]]]", 1),  # ragged
        '{"inputs": %s}' % rows.replace("], [", "]  [", 1),  # malformed
        '{"inputs": %s}' % rows.replace("[0]", "[0.5]"),
        '{"inputs": [%s]}' % rows,  # one axis too many
        '{"inputs": {"images": %s, "more": %s}}' % (rows, rows),  # an extra input
        '{"signature_name": "few_shot", "instances": %s}' % rows,  # rows for a three-input signature
        '{"signature_name": "few_shot", "inputs": {"support_images": %s, "support_labels": [0, 1, 2, 3], '
        '"query_images": %s}}' % (rows, rows),
        '{"signature_name": %s, "inputs": %s}' % (rows, rows),  # a signature name that is an array
        '{"inputs": {"a": {"b": {"c": {"d": {"e": {"f": %s}}}}}}}' % rows,  # deeper than max_json_depth=8
    ]


def test_rest_takes_the_fast_path_for_image_batches():
    for body in bodies()[:3]:
        assert loads(body.encode(), max_depth=8) is not None


@pytest.mark.parametrize("body", bodies())
def test_rest_answers_are_the_same_with_and_without_the_fast_path(rest_api, body, monkeypatch):
    fast = rest_api.handle("POST", "/v1/models/encoder:predict", body.encode())
    monkeypatch.setattr(json_arrays, "MIN_ARRAY_BYTES", 1 << 62)  # every body goes the general way
    slow = rest_api.handle("POST", "/v1/models/encoder:predict", body.encode())
    assert fast[0] == slow[0]
    if body in bodies()[:3]:
        assert fast[0] == 200 and np.shape(fast[1].get("outputs", fast[1].get("predictions"))) == (4, 64)
    assert json.dumps(fast[1], default=np.ndarray.tolist) == json.dumps(slow[1], default=np.ndarray.tolist)


def test_parsing_stays_within_the_memory_admitted_for_a_json_body():
    import tracemalloc

    from mssl_tf.serving.admission import JSON_PARSE_EXPANSION

    for text in ["[" + ",".join(["0"] * 200_000) + "]", json.dumps([[[0]] * 28] * 2000)]:  # one-digit numbers: worst
        body = ('{"inputs": %s}' % text).encode()
        tracemalloc.start()
        try:
            document = loads(body, max_depth=32)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert np.array_equal(document["inputs"].array, general(text))  # over several passes of 65,536 numbers
        assert peak < JSON_PARSE_EXPANSION * len(body) / 2, peak / len(body)

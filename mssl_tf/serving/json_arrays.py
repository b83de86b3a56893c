"""Numeric JSON arrays straight to and from numpy, for REST bodies of image batches.

`json.loads` turns a [64, 28, 28, 1] batch into 50,176 Python numbers in 50,000 lists, and `np.asarray` walks them
again: together several times the model's own run. Here an integer array's text is checked and converted with
byte translations and vectorized numpy operations instead, and an integer array is written without Python numbers.

Each function gives exactly what the general path gives, or declines (returns None) so that the general path runs:
- `parse_array(text)` is `np.asarray(json.loads(text))` (same dtype, same values) for a non-empty rectangular
  array of JSON integers, and None for anything else (ragged, empty, malformed, fractions or exponents, booleans,
  null, strings, integers of 19 characters or more);
- `loads(body, max_depth)` is `json.loads(body)` with such arrays (object values of at least `MIN_ARRAY_BYTES`)
  left as `ParsedArray`s, or None whenever `json.loads` would fail, the depth limit would refuse the body, or the
  result might differ;
- `integer_array_json(array)` is `json.dumps(array.tolist(), separators=(",", ":"))` for integer arrays.
"""

from __future__ import annotations

import functools
import json

import numpy as np

from mssl_tf.serving.limits import string_mask

MIN_ARRAY_BYTES = 4096  # below this, json.loads and np.asarray are faster than the vectorized passes
PLACEHOLDER = "\x00mssl_tf.parsed_array."


def _table(classes: dict, default: int) -> bytes:
    table = bytearray([default]) * 256
    for characters, value in classes.items():
        for character in characters:
            table[character] = value
    return bytes(table)


# Byte classes (`bytes.translate` runs at memory speed; numpy's table lookups are several times slower).
DIGIT, SIGN, FLOAT_ONLY, OPEN, CLOSE, COMMA, SPACE, OTHER = range(8)  # numbers: classes up to FLOAT_ONLY
_CLASSES = _table({b"0123456789": DIGIT, b"-": SIGN, b"+.eE": FLOAT_ONLY, b"[": OPEN, b"]": CLOSE, b",": COMMA,
                   b" \t\n\r": SPACE}, OTHER)
_STRUCTURE = _table({b"0123456789-+.eE": ord("n"), b"[": ord("["), b"]": ord("]"), b",": ord(","),
                     b" \t\n\r": ord(" ")}, ord("?"))
MINUS, ZERO, COLON = ord("-"), ord("0"), ord(":")
_MAX_INTEGER_CHARS = 18  # an integer of at most 18 characters (sign included) fits int64
_TOKENS_PER_PASS = 1 << 16
_POWERS_OF_TEN = 10 ** np.arange(1, 19, dtype=np.int64)


class ParsedArray:
    """A numeric JSON array already converted: `array` is `np.asarray(json.loads(text))`."""

    __slots__ = ("array", "text")

    def __init__(self, array: np.ndarray, text: bytes):
        self.array, self.text = array, text

    def as_json_value(self):
        """The value `json.loads` gives for the array's text (nested lists), for the general path."""
        return json.loads(self.text)


def parse_array(text: bytes) -> np.ndarray | None:
    """`np.asarray(json.loads(text))` for a non-empty rectangular JSON array of integers; None for anything else."""
    classes_text = text.translate(_CLASSES)
    if len(text) < 3 or bytes([OTHER]) in classes_text:
        return None
    if bytes([FLOAT_ONLY]) in classes_text:
        return None  # fractions, exponents: measured no faster here than json.loads and np.asarray
    number = np.frombuffer(classes_text, np.uint8) <= FLOAT_ONLY
    starts = number.copy()
    starts[1:] &= ~number[:-1]
    ends = number.copy()
    ends[:-1] &= ~number[1:]
    # The text without whitespace and with every number as one `n` must be the one a rectangular array has.
    keep = ~number | starts
    if bytes([SPACE]) in classes_text:
        keep &= np.frombuffer(classes_text, np.uint8) != SPACE
    structure = np.frombuffer(text.translate(_STRUCTURE), np.uint8)[keep].tobytes()
    shape = _shape(structure)
    if shape is None or structure != _structure_of(shape):
        return None
    del number, keep, structure
    token_starts = np.flatnonzero(starts).astype(np.int32)  # bodies are far below 2**31 bytes (--max_request_bytes)
    del starts
    token_ends = np.flatnonzero(ends).astype(np.int32) + 1
    del ends
    values = _integers(text, token_starts, token_ends)
    return None if values is None else values.reshape(shape)


def _shape(structure: bytes) -> tuple[int, ...] | None:
    """The shape a structure (`[`, `]`, `,`, `n`) has if it is a rectangular array's (checked by the caller): the
    first array at each level ends at the first run of as many `]` as levels it holds; its children are separated
    by `]...],[...[`."""
    ndim = len(structure) - len(structure.lstrip(b"["))
    if ndim == 0 or structure[ndim:ndim + 1] != b"n":
        return None
    shape = []
    for level in range(ndim):  # 0: the outermost array
        depth = ndim - level  # levels of arrays in it, itself included
        end = structure.find(b"]" * depth)
        if end < 0:
            return None
        separator = b"]" * (depth - 1) + b"," + b"[" * (depth - 1)
        shape.append(structure.count(separator, level, end + depth) + 1)
    length = 1  # of the structure of `shape`, checked before building it
    for size in reversed(shape):
        length = 2 + size * length + size - 1
    return tuple(shape) if length == len(structure) else None


def _structure_of(shape) -> bytes:
    item = b"n"
    for size in reversed(shape):
        item = b"[" + (item + b",") * (size - 1) + item + b"]"  # not bytes.join: ~80 bytes per item
    return item


def _integers(text: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """JSON integers (`-?(0|[1-9][0-9]*)`) as int64, what `np.asarray` makes of Python ints; None if not all are."""
    data = np.frombuffer(text, np.uint8)
    if int((ends - starts).max()) > _MAX_INTEGER_CHARS:
        return None
    if text.count(b"-") != np.count_nonzero(data[starts] == MINUS):
        return None  # a "-" inside a number
    values = np.empty(len(starts), np.int64)
    for first in range(0, len(starts), _TOKENS_PER_PASS):  # temporaries of a bounded size, whatever the body's
        piece = slice(first, first + _TOKENS_PER_PASS)
        piece_values = _integer_values(data, starts[piece], ends[piece])
        if piece_values is None:
            return None
        values[piece] = piece_values
    return values


def _integer_values(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    negative = data[starts] == MINUS
    digit_counts = ends - starts - negative
    if (digit_counts == 0).any() or ((data[starts + negative] == ZERO) & (digit_counts > 1)).any():
        return None  # a lone "-", or a leading zero
    values = np.zeros(len(starts), np.int64)
    for place in range(int(digit_counts.max())):  # the digits from the last one
        present = digit_counts > place
        digits = data[np.where(present, ends - 1 - place, 0)].astype(np.int64) - ZERO
        values += np.where(present, digits * 10 ** place, 0)
    return np.where(negative, -values, values)


def loads(body: bytes, max_depth: int, min_array_bytes: int | None = None):
    """`json.loads(body)` with each large numeric array that is a value of the root object, or of an object that is
    one, left as a `ParsedArray`.

    Returns None when the body has no such array, nests deeper than `max_depth` (as `limits.json_depth` counts), or
    whenever the result might differ from `json.loads`' (the caller then runs the depth check and `json.loads`
    itself, with their errors). The document around the arrays is parsed by `json.loads`, with placeholders
    in their place.
    """
    min_array_bytes = MIN_ARRAY_BYTES if min_array_bytes is None else min_array_bytes
    if len(body) < min_array_bytes or json.detect_encoding(body) != "utf-8" or body.startswith(b"\xef\xbb\xbf"):
        return None
    spans = _array_spans(body, min_array_bytes)
    if not spans:
        return None
    arrays, pieces, placeholders, previous, size = {}, [], [], 0, 0
    for index, (start, end) in enumerate(spans):
        text = body[start:end]
        array = parse_array(text)
        if array is None:
            return None
        placeholder = json.dumps(PLACEHOLDER + str(index)).encode("ascii")
        arrays[PLACEHOLDER + str(index)] = ParsedArray(array, text)
        size += start - previous
        placeholders.append((size, array.ndim))
        pieces += [body[previous:start], placeholder]
        size += len(placeholder)
        previous = end
    pieces.append(body[previous:])
    skeleton = b"".join(pieces)
    if _depth(skeleton, placeholders) > max_depth:
        return None
    try:
        document = json.loads(skeleton)
    except (ValueError, RecursionError):
        return None
    found = []
    document = _substitute(document, arrays, found, 0)
    return document if sorted(found) == sorted(arrays) else None


def _array_spans(body: bytes, min_array_bytes: int) -> list[tuple[int, int]]:
    """(start, end) of the arrays of at least `min_array_bytes` of number characters that follow a `:` outside
    strings (object values)."""
    data = np.frombuffer(body, np.uint8)
    padded = np.zeros(len(data) + 2, bool)
    padded[1:-1] = np.frombuffer(body.translate(_CLASSES), np.uint8) != OTHER
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    runs = [(int(start), int(end)) for start, end in zip(changes[0::2], changes[1::2])
            if end - start >= min_array_bytes and start > 0 and data[start - 1] == COLON]
    if not runs:
        return []
    inside = string_mask(data)[0] if b"\\" in body else None
    spans = []
    for start, end in runs:
        colon = start - 1
        if (inside[colon] if inside is not None else body.count(b'"', 0, colon) % 2):
            continue  # a colon in a string
        run = data[start:end]
        first = start + len(body[start:end]) - len(body[start:end].lstrip())
        if body[first:first + 1] != b"[":
            continue
        run = data[first:end]
        levels = np.cumsum((run == ord("[")).view(np.int8) - (run == ord("]")).view(np.int8), dtype=np.int32)
        closed = np.flatnonzero(levels == 0)
        if len(closed) and closed[0] + 1 >= min_array_bytes:
            spans.append((first, first + int(closed[0]) + 1))
    return spans


def _depth(skeleton: bytes, placeholders) -> int:
    """The nesting depth of the body: the skeleton's, or at a placeholder its level plus the array's dimensions."""
    data = np.frombuffer(skeleton, np.uint8)
    inside, _ = string_mask(data)
    delta = ((data == ord("[")) | (data == ord("{"))).view(np.int8) - (
        (data == ord("]")) | (data == ord("}"))).view(np.int8)
    delta[inside] = 0
    levels = np.cumsum(delta, dtype=np.int32)
    return max(int(levels.max()), *(int(levels[position - 1]) + ndim for position, ndim in placeholders))


def _substitute(value, arrays: dict, found: list, depth: int):
    """`value` with the placeholders replaced by their arrays; `found` collects the placeholders met, and gets an
    extra entry for one where the REST API does not look for arrays or as a key (so the caller declines)."""
    if isinstance(value, dict):
        if any(key.startswith(PLACEHOLDER) for key in value):
            found.append("")
        return {key: _substitute(item, arrays, found, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, arrays, found, depth + 1) for item in value]
    if isinstance(value, str) and value.startswith(PLACEHOLDER):
        found.append(value if depth <= 2 else "")
        return arrays.get(value, value)
    return value


def integer_array_json(array: np.ndarray) -> str | None:
    """`json.dumps(array.tolist(), separators=(",", ":"))` for a non-empty integer array of at least one axis,
    built with vectorized numpy operations; None for other arrays or values beyond int64.

    Each element becomes a row of `[number, left-aligned][separator]` in a byte matrix with a mask of the bytes that
    are written; the masked matrix read row by row is the text.
    """
    if array.dtype.kind not in "iu" or array.ndim == 0 or array.size == 0:
        return None
    if array.dtype.kind == "u" and array.dtype.itemsize == 8 and int(array.max()) >= 1 << 63:
        return None
    values = array.reshape(-1).astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low == np.iinfo(np.int64).min:
        return None
    count, ndim = len(values), array.ndim
    if high - low < _SMALL_RANGE:  # the numbers' texts looked up (an image batch: 0..255)
        table, lengths = _number_texts(low, high)
        numbers = table[values - low].view(np.uint8).reshape(count, table.itemsize)
        numbers_written = np.arange(table.itemsize) < lengths[values - low][:, None]
    else:
        numbers, numbers_written = _number_digits(values)
    # After element i: `closes` times "]", a comma and as many "[" (nothing after the last element).
    closes = np.zeros(count, np.intp)
    period = 1
    for size in reversed(array.shape[1:]):
        period *= size
        closes[period - 1::period] += 1
    closes[-1] = ndim
    separators = np.array([b"]" * depth + b"," + b"[" * depth for depth in range(ndim)] + [b""],
                          dtype=f"S{2 * ndim - 1}")
    separator_lengths = np.array([2 * depth + 1 for depth in range(ndim)] + [0])
    width = numbers.shape[1]
    rows = np.empty((count, width + separators.itemsize), np.uint8)
    rows[:, :width] = numbers
    rows[:, width:] = separators[closes].view(np.uint8).reshape(count, separators.itemsize)
    written = np.empty(rows.shape, bool)
    written[:, :width] = numbers_written
    written[:, width:] = np.arange(separators.itemsize) < separator_lengths[closes][:, None]
    return "[" * ndim + rows[written].tobytes().decode("ascii") + "]" * ndim


_SMALL_RANGE = 4096


@functools.lru_cache(maxsize=16)
def _number_texts(low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """The decimal texts of `low..high` (fixed-width bytes, zero-padded on the right) and their lengths."""
    texts = [str(value).encode("ascii") for value in range(low, high + 1)]
    return np.array(texts), np.array([len(text) for text in texts])


def _number_digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `[sign][digits, right-aligned]` and the mask of the bytes written, computed digit by digit."""
    negative = values < 0
    magnitudes = np.abs(values)
    digit_counts = 1 + np.searchsorted(_POWERS_OF_TEN, magnitudes, side="right")
    width = int(digit_counts.max())
    places = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    rows = np.empty((len(values), width + 1), np.uint8)
    rows[:, 0] = MINUS
    rows[:, 1:] = magnitudes[:, None] // places % 10 + ZERO
    written = np.empty(rows.shape, bool)
    written[:, 0] = negative
    written[:, 1:] = np.arange(width) >= width - digit_counts[:, None]
    return rows, written

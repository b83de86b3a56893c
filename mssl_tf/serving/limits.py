"""Request limits the embedded server enforces beyond TF Serving: request size, JSON nesting, tensor elements,
memory, few-shot classes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mssl_tf.serving.errors import ServingError

QUOTE, BACKSLASH = ord('"'), ord("\\")
OPENING, CLOSING = (ord("["), ord("{")), (ord("]"), ord("}"))


@dataclass(frozen=True)
class Limits:
    """Caps checked before a request reaches a model.

    Args:
        max_request_bytes: largest gRPC message or REST body accepted (gRPC answers RESOURCE_EXHAUSTED, REST 413).
        max_json_depth: deepest nesting of arrays/objects in a REST body (a [N, 28, 28, 1] image batch in the row
            format nests 6 deep inside `{"instances": ...}`).
        max_tensor_elements: most elements in one input tensor.
        memory_budget_bytes: memory the requests in progress may use together, by their estimated cost
            (`mssl_tf.serving.admission`); beyond it requests answer RESOURCE_EXHAUSTED (REST 429).
        memory_per_input_element: working bytes a model run is assumed to take per input element.
        max_rows_per_run: a batch of a signature whose rows are independent (one input, batch axis first) runs
            in pieces of at most this many rows, so its working memory does not grow with the batch.
    """

    max_request_bytes: int = 64 << 20
    max_json_depth: int = 32
    max_tensor_elements: int = 1 << 24
    memory_budget_bytes: int = 4 << 30
    memory_per_input_element: int = 512
    max_rows_per_run: int = 256

    def check_json_depth(self, body: bytes) -> None:
        depth = json_depth(body, stop_above=self.max_json_depth)
        if depth > self.max_json_depth:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"JSON nesting is deeper than this server's limit of {self.max_json_depth} levels "
                "(--max_json_depth); send tensors in the columnar format or with fewer nested levels",
            )


def json_depth(body: bytes, chunk_bytes: int = 1 << 20, stop_above: int | None = None) -> int:
    """Deepest nesting of `[`/`{` in a JSON document, without parsing it (vectorized; brackets in strings skipped).

    Args:
        body: the document's bytes (UTF-8).
        chunk_bytes: bytes scanned per numpy pass.
        stop_above: return as soon as the depth exceeds this (the result is then only known to be larger).
    """
    depth = deepest = 0
    in_string = False
    backslash_run = 0  # backslashes ending the previous chunk
    for start in range(0, len(body), chunk_bytes):
        data = np.frombuffer(body[start:start + chunk_bytes], np.uint8)
        inside, backslash_run = string_mask(data, in_string, backslash_run)
        delta = ((data == OPENING[0]) | (data == OPENING[1])).view(np.int8) - (
            (data == CLOSING[0]) | (data == CLOSING[1])).view(np.int8)
        delta[inside] = 0
        levels = np.cumsum(delta, dtype=np.int32)
        deepest = max(deepest, depth + int(levels.max()))
        if stop_above is not None and deepest > stop_above:
            return deepest
        depth, in_string = depth + int(levels[-1]), bool(inside[-1])
    return deepest


def string_mask(data: np.ndarray, in_string: bool = False, backslash_run: int = 0) -> tuple[np.ndarray, int]:
    """Which bytes of JSON text lie in a string, from its opening quote to its closing one (vectorized).

    Args:
        data: the text's bytes (uint8), possibly one chunk of a longer text.
        in_string: whether the text before `data` ended inside a string.
        backslash_run: backslashes ending the text before `data`.

    Returns:
        `(inside, backslash_run)`: the mask, and the backslashes ending `data` (for the next chunk).
    """
    if backslash_run or BACKSLASH in data:
        positions = np.arange(len(data))
        # Position of the last non-backslash at or before i (a run carried from the last chunk counts as before 0).
        last_plain = np.maximum.accumulate(np.where(data == BACKSLASH, -1 - backslash_run, positions))
        run_before = np.empty(len(data), np.int64)
        run_before[0] = backslash_run
        run_before[1:] = positions[:-1] - last_plain[:-1]
        quotes = (data == QUOTE) & (run_before % 2 == 0)  # an odd run of backslashes escapes the quote
        backslash_run = int(positions[-1] - last_plain[-1])
    else:
        quotes = data == QUOTE
    inside = (np.cumsum(quotes, dtype=np.int32) + in_string) % 2 == 1
    return inside, backslash_run

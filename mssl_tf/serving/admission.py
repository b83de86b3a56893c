"""Admission by memory: what a request will cost, and a server-wide budget that concurrent requests share.

A request's cost is estimated before the work that spends it:
- a REST body, before it is parsed: `JSON_PARSE_EXPANSION` bytes per body byte (Python's `json` turns `[0],` into
  a list object and a pointer: a uint8 image batch in the row format measured 21–28 bytes per body byte);
- a model run, before it starts: the inputs as arrays, plus `memory_per_input_element` working bytes for every
  input element of one run (activations; a Conv-4 run on 28×28 images measured about 450 bytes per pixel), where
  a run holds at most `max_rows_per_run` rows of a signature whose rows are independent (longer batches are
  split) and every row otherwise (`few_shot`: support and queries run together). A string element (an encoded
  image for `embed_png`, `few_shot_png`) counts as the image it is decoded to: the model's input size as its
  `assets.extra/mssl_tf.json` records it (`decoded_image_elements`), 28×28 when a SavedModel does not say.

The budget refuses a request whose cost does not fit in what concurrent requests leave (RESOURCE_EXHAUSTED:
gRPC's code, HTTP 429), rather than letting the process grow until the machine swaps or kills it.
"""

from __future__ import annotations

import threading

import numpy as np

from mssl_tf.serving.errors import ServingError

JSON_PARSE_EXPANSION = 40
DECODED_IMAGE_ELEMENTS = 28 * 28


def json_parse_cost(body_bytes: int) -> int:
    """Bytes that parsing a JSON body of `body_bytes` bytes into arrays can take at its peak."""
    return int(body_bytes) * JSON_PARSE_EXPANSION


def decoded_image_elements(version_dir) -> int:
    """Elements one encoded image decodes to for the SavedModel at `version_dir` (its recorded input shape; for a
    text model, the tokens one sentence becomes)."""
    import json
    from pathlib import Path

    metadata = Path(version_dir) / "assets.extra" / "mssl_tf.json"
    try:
        recorded = json.loads(metadata.read_text())["input"]
        return int(recorded.get("elements_per_example") or np.prod(recorded["shape"]))
    except (OSError, ValueError, KeyError, TypeError):
        return DECODED_IMAGE_ELEMENTS


def run_cost(inputs: dict, rows_per_run: int | None, memory_per_input_element: int,
             decoded_elements: int = DECODED_IMAGE_ELEMENTS) -> int:
    """Estimated peak bytes of running a signature on `inputs` (name → array), split into runs of `rows_per_run`
    rows (None: one run of everything); an encoded image counts as `decoded_elements` elements."""
    cost = 0
    for array in inputs.values():
        array = np.asarray(array)
        elements = int(array.size) * (decoded_elements if array.dtype == object else 1)
        if rows_per_run is not None and array.ndim and len(array) > rows_per_run:
            elements = elements // len(array) * rows_per_run
        cost += int(array.nbytes) + elements * int(memory_per_input_element)
    return cost


def megabytes(count: int) -> str:
    return f"{count / (1 << 20):.0f} MiB"


class Reservation:
    """Bytes held in a `MemoryBudget` until `release()` (or the end of a `with` block); releasing twice is harmless."""

    def __init__(self, budget: "MemoryBudget", cost: int):
        self.budget, self.cost = budget, cost
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.budget._give_back(self.cost)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()


class MemoryBudget:
    """Bytes that the requests in progress may use together.

    Args:
        total_bytes: the budget (`--request_memory_budget_bytes`).

    Example:
        >>> budget = MemoryBudget(1 << 30)
        >>> with budget.reserve(200 << 20, "this request"):
        ...     run()
    """

    def __init__(self, total_bytes: int):
        self.total_bytes = int(total_bytes)
        self.in_use = 0
        self.refused = 0
        self._lock = threading.Lock()

    def reserve(self, cost: int, what: str = "this request") -> Reservation:
        """Holds `cost` bytes, or raises RESOURCE_EXHAUSTED when they do not fit in what is left.

        Raises:
            ServingError: RESOURCE_EXHAUSTED, saying whether the request could ever fit (send smaller batches) or
                only not now (retry later).
        """
        cost = int(cost)
        with self._lock:
            if self.in_use + cost <= self.total_bytes:
                self.in_use += cost
                return Reservation(self, cost)
            self.refused += 1
            in_use = self.in_use
        if cost > self.total_bytes:
            advice = "it can never fit: send smaller batches (or raise --request_memory_budget_bytes)"
        else:
            advice = f"{megabytes(in_use)} are held by requests in progress: retry later"
        raise ServingError(
            "RESOURCE_EXHAUSTED",
            f"{what} needs about {megabytes(cost)} of memory, more than this server's request memory budget of "
            f"{megabytes(self.total_bytes)} has free; {advice}",
        )

    def _give_back(self, cost: int) -> None:
        with self._lock:
            self.in_use -= cost

"""Server-side batching: concurrent requests to one signature merged into one call, as TF Serving's batcher does.

A batch is formed when a batch thread is free: it takes the queued requests, oldest first, until `max_batch_size`
rows, and waits at most `batch_timeout_micros` after the oldest request arrived for more to come. Under load this
adapts by itself: while every batch thread is busy, requests accumulate and the next batch takes them all.

Differences from TF Serving, on purpose:
- Only signatures with a single input are batched. TF Serving concatenates every input of every signature along
  the first axis, which is wrong for inputs whose rows are not independent examples: two `few_shot` requests
  merged into one call would compute prototypes from both requests' support sets.
- A request with more rows than `max_batch_size` runs on its own instead of failing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from mssl_tf.serving.config import BatchingOptions
from mssl_tf.serving.errors import ServingError


class _Task:
    __slots__ = ("array", "rows", "enqueued", "deadline", "done", "result", "error")

    def __init__(self, array: np.ndarray, deadline: float | None = None):
        self.array = array
        self.rows = len(array)
        self.enqueued = time.monotonic()
        self.deadline = deadline
        self.done = threading.Event()
        self.result = None
        self.error = None


class BatchScheduler:
    """Merges concurrent calls of a single-input function into batched calls.

    Args:
        run: the function, `{input_name: array} → {output_name: array}`; every output's first axis must be the
            batch axis.
        input_name: the function's only input.
        options: batch sizes, timeout, threads and queue capacity.
        name: for thread names and messages.

    Example:
        >>> scheduler = BatchScheduler(signature_call, "images", BatchingOptions(max_batch_size=64))
        >>> outputs = scheduler.submit({"images": images})   # blocks until its rows come back
    """

    def __init__(self, run: Callable, input_name: str, options: BatchingOptions, name: str = "batch"):
        self.run = run
        self.input_name = input_name
        self.options = options
        self.name = name
        self.batches_run = 0
        self.tasks_run = 0
        self.tasks_expired = 0  # dropped from the queue because their deadline passed before a batch took them
        self._queue: deque[_Task] = deque()
        self._queued_rows = 0
        self._condition = threading.Condition()
        self._closed = False
        self._free_threads = threading.Semaphore(options.num_batch_threads)
        self._executor = ThreadPoolExecutor(options.num_batch_threads, thread_name_prefix=f"{name}-run")
        self._former = threading.Thread(target=self._form_batches, name=f"{name}-former", daemon=True)
        self._former.start()

    def submit(self, inputs: dict, deadline: float | None = None) -> dict:
        """Runs `inputs` as part of a batch and returns this request's rows of every output.

        Args:
            inputs: `{input_name: array}`.
            deadline: a `time.monotonic()` value; if it passes while the request is queued, the request is
                dropped unrun and DEADLINE_EXCEEDED raised.
        """
        array = inputs[self.input_name]
        if array.ndim == 0 or len(array) > self.options.max_batch_size or len(array) == 0:
            return self.run(inputs)
        task = _Task(array, deadline)
        with self._condition:
            if self._closed:  # the version is being unloaded: its last requests run unbatched
                task = None
            else:
                capacity = self.options.max_enqueued_batches * self.options.max_batch_size
                if self._queued_rows + task.rows > capacity:
                    raise ServingError(
                        "UNAVAILABLE",
                        f"The batch scheduling queue to which this task was submitted is full ({self._queued_rows} "
                        f"rows queued for {self.name}, capacity max_enqueued_batches * max_batch_size = {capacity}); "
                        "retry later or raise max_enqueued_batches",
                    )
                self._queue.append(task)
                self._queued_rows += task.rows
                self._condition.notify_all()
        if task is None:
            return self.run(inputs)
        if not task.done.wait(None if deadline is None else max(deadline - time.monotonic(), 0.0)):
            with self._condition:
                if task in self._queue:  # not taken by a batch yet: drop it unrun
                    self._queue.remove(task)
                    self._queued_rows -= task.rows
                    self.tasks_expired += 1
                    raise ServingError(
                        "DEADLINE_EXCEEDED",
                        f"Deadline exceeded while queued for a batch of {self.name}: the request was not run; give "
                        "the call a longer deadline or retry later",
                    )
            task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self) -> None:
        """Runs what is queued, then stops the threads; later submissions run unbatched."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._former.join()
        self._executor.shutdown(wait=True)

    # --- batch thread ---

    def _take_batch(self) -> list[_Task] | None:
        """Waits for queued tasks and returns the next batch (None once closed and drained)."""
        timeout = self.options.batch_timeout_micros / 1e6
        with self._condition:
            while True:
                self._drop_expired()
                if self._queue:
                    break
                if self._closed:
                    return None
                self._condition.wait()
            while True:
                self._drop_expired()
                if not self._queue:
                    return []
                batch, rows = [], 0
                first = self._queue[0]
                for task in self._queue:
                    compatible = task.array.shape[1:] == first.array.shape[1:] and task.array.dtype == first.array.dtype
                    if not compatible or rows + task.rows > self.options.max_batch_size:
                        break
                    batch.append(task)
                    rows += task.rows
                full = rows >= self.options.max_batch_size or len(batch) < len(self._queue)
                remaining = first.enqueued + timeout - time.monotonic()
                if full or remaining <= 0 or self._closed:
                    for _ in batch:
                        self._queue.popleft()
                    self._queued_rows -= rows
                    return batch
                self._condition.wait(remaining)

    def _drop_expired(self) -> None:
        """Fails the queued tasks whose deadline has passed (called with the condition held)."""
        now = time.monotonic()
        if not any(task.deadline is not None and task.deadline <= now for task in self._queue):
            return
        kept = deque()
        for task in self._queue:
            if task.deadline is not None and task.deadline <= now:
                task.error = ServingError(
                    "DEADLINE_EXCEEDED",
                    f"Deadline exceeded while queued for a batch of {self.name} ({(now - task.enqueued) * 1000:.0f} "
                    "ms in the queue): the request was not run; give the call a longer deadline or retry later",
                )
                task.done.set()
                self._queued_rows -= task.rows
                self.tasks_expired += 1
            else:
                kept.append(task)
        self._queue = kept

    def _form_batches(self) -> None:
        while True:
            self._free_threads.acquire()  # form a batch only when a thread can run it: the queue grows meanwhile
            batch = self._take_batch()
            if not batch:
                self._free_threads.release()
                if batch is None:
                    return
                continue
            self._executor.submit(self._run_batch, batch)

    def _run_batch(self, batch: list[_Task]) -> None:
        try:
            rows = [task.rows for task in batch]
            total = sum(rows)
            merged = batch[0].array if len(batch) == 1 else np.concatenate([task.array for task in batch])
            padded = next((size for size in self.options.allowed_batch_sizes if size >= total), total)
            if padded > total:
                merged = np.concatenate([merged, np.repeat(merged[:1], padded - total, axis=0)])
            outputs = self.run({self.input_name: merged})
            for output_name, value in outputs.items():
                if np.ndim(value) == 0 or len(value) != padded:
                    raise ServingError(
                        "INTERNAL",
                        f"batching needs every output's first axis to be the batch axis, but {output_name} has shape "
                        f"{list(np.shape(value))} for a batch of {padded}; serve this model without --enable_batching",
                    )
            start = 0
            for task in batch:
                task.result = {name: value[start:start + task.rows] for name, value in outputs.items()}
                start += task.rows
            self.batches_run += 1
            self.tasks_run += len(batch)
        except Exception as error:  # every request of a failed batch gets the batch's error
            for task in batch:
                task.error = error
        finally:
            for task in batch:
                task.done.set()
            self._free_threads.release()

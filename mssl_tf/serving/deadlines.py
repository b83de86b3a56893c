"""Client deadlines as `time.monotonic()` values: work whose deadline has passed is not started (TF Serving's rule).

A gRPC call's deadline comes from the client (`context.time_remaining()`); a REST request's is its arrival plus
`--rest_api_timeout_in_ms`. The deadline is checked when work leaves a queue (a REST worker, the batcher) and
before each piece of a split batch; a model call already running is not interrupted.
"""

from __future__ import annotations

import time

from mssl_tf.serving.errors import ServingError


def deadline_after(seconds: float | None) -> float | None:
    """The deadline `seconds` from now (None for none)."""
    return None if seconds is None else time.monotonic() + seconds


def check_deadline(deadline: float | None, when: str) -> None:
    """Raises DEADLINE_EXCEEDED if `deadline` has passed; `when` says where the work stopped."""
    if deadline is not None and time.monotonic() >= deadline:
        late = time.monotonic() - deadline
        raise ServingError(
            "DEADLINE_EXCEEDED",
            f"Deadline exceeded {late * 1000:.0f} ms ago, {when}: the request was not run further; give the call "
            "a longer deadline (gRPC timeout, --rest_api_timeout_in_ms) or retry when the server is less busy",
        )

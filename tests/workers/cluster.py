"""Local clusters for the multi-worker tests: worker processes on 127.0.0.1 with free ephemeral ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]
WORKER_MODULE = "tests.workers.multiworker_worker"


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free right now (bound to port 0, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def start(arguments: list[str], log: Path, tf_config_text: str | None = None, environment=None,
          module: str = WORKER_MODULE) -> subprocess.Popen:
    """One process of `python -m module` (`tests.workers.multiworker_worker`), in its own process group, output to
    `log`."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **(environment or {})}
    environment.pop("TF_CONFIG", None)
    if tf_config_text:
        environment["TF_CONFIG"] = tf_config_text
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *(str(argument) for argument in arguments)], cwd=ROOT, env=environment,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    process.stdout_path = Path(log)
    return process


def start_workers(arguments: list[str], directory: Path, name: str, count: int = 2, ports=None, environment=None,
                  module: str = WORKER_MODULE):
    """`count` workers of one cluster running the same command; logs `directory/<name>_<index>.log`."""
    ports = ports or free_ports(count)
    return [
        start(arguments, directory / f"{name}_{index}.log", tf_config(ports, index), environment, module)
        for index in range(count)
    ], ports


def finish(processes, timeout: float, expected_code: int = 0) -> None:
    """Waits for every process (killing all on timeout); fails on another exit code than `expected_code`."""
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        kill(processes)
        raise AssertionError(f"processes still running after {timeout} s:\n" + tail(processes))
    failed = [process for process in processes if process.returncode != expected_code]
    assert not failed, "a process failed:\n" + tail(failed)


def kill(processes) -> None:
    """SIGKILL to each process's group (the process and anything it started)."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    for process in processes:
        process.wait(timeout=30)


def tail(processes, characters: int = 3000) -> str:
    text = []
    for process in processes:
        text.append(f"--- pid {process.pid} exit {process.returncode}\n" + process.stdout_path.read_text()[-characters:])
    return "\n".join(text)


def wait_for(predicate, processes, timeout: float, what: str) -> None:
    """Polls `predicate()` every 20 ms until true; fails if a process exits first or on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        finished = [process for process in processes if process.poll() is not None]
        if finished:
            raise AssertionError(f"a process exited before {what}:\n" + tail(processes))
        if time.monotonic() > deadline:
            kill(processes)
            raise AssertionError(f"no {what} after {timeout} s:\n" + tail(processes))
        time.sleep(0.02)


def json_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]

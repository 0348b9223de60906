"""A ``diffjscc worker`` process on this machine, for examples, tests and benchmarks.

::

    with LocalWorker(["--engine", "synthetic"]) as worker:    # started, answering
        client = WorkerClient(worker.address)

:meth:`LocalWorker.start` spawns ``python -m diffjscc worker --bind ADDRESS ...``
on a free 127.0.0.1 port and returns once the worker's broker answers a status
request with a worker joined; it raises :class:`WorkerError` with the tail of
the process's output when the process exits or stays silent instead. With
``program`` replaces ``python -m diffjscc worker`` (e.g. ``... worker broker`` with
``name=None, wait_for_worker=False`` for a broker alone). With
``--connect`` among ``extra_args`` the process joins a broker elsewhere and has
no address of its own: ``start`` then only checks it did not exit at once, and
the broker's status tells when it has joined.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from diffjscc.worker.protocol import WorkerError


def free_tcp_address(host: str = "127.0.0.1") -> str:
    """tcp://HOST:PORT with a port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return f"tcp://{host}:{sock.getsockname()[1]}"


class LocalWorker:
    """One worker subprocess; ``start()`` / ``stop()`` or a ``with`` block."""

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        bind: str | None = None,
        name: str | None = "local",
        ready_timeout_s: float = 60.0,
        env: dict | None = None,
        log_path: str | os.PathLike | None = None,
        *,
        program: Sequence[str] | None = None,
        wait_for_worker: bool = True,
    ):
        self.extra_args = [str(a) for a in extra_args]
        self.connects = "--connect" in self.extra_args
        self.address = None if self.connects else (bind or free_tcp_address())
        self.name = name
        self.ready_timeout_s = float(ready_timeout_s)
        self.env = env
        self.log_path = Path(log_path) if log_path else None
        # The command before the options; a benchmark may run its own script with serve().
        self.program = list(program or [sys.executable, "-m", "diffjscc", "worker"])
        # False for a broker alone: ready once it answers, before any worker joined.
        self.wait_for_worker = wait_for_worker
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def command(self) -> list[str]:
        bind = [] if self.connects else ["--bind", self.address]
        name = [] if self.name is None else ["--name", self.name]
        return [*self.program, *bind, *name, *self.extra_args]

    def start(self) -> LocalWorker:
        if self.process is not None:
            raise WorkerError("LocalWorker already started")
        if self.log_path is not None:
            self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        else:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115  (a pipe could fill and block it)
        env = None if self.env is None else {**os.environ, **self.env}
        self.process = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def output_tail(self, chars: int = 2000) -> str:
        """The last characters the process wrote (stdout and stderr together)."""
        if self._log is None or self._log.closed:
            if self.log_path is not None and self.log_path.is_file():
                return self.log_path.read_text(errors="replace")[-chars:]
            return ""
        self._log.flush()
        with open(self._log.fileno(), "rb", closefd=False) as fh:
            fh.seek(0)
            return fh.read().decode(errors="replace")[-chars:]

    def _wait_ready(self) -> None:
        if self.connects:
            time.sleep(0.2)
            if not self.alive:
                raise self._failed("exited at start")
            return
        from diffjscc.worker.client import WorkerClient

        deadline = time.monotonic() + self.ready_timeout_s
        last = "no answer"
        with WorkerClient(self.address, timeout_s=1.0, retries=0) as client:
            while time.monotonic() < deadline:
                if not self.alive:
                    raise self._failed(f"exited with status {self.process.returncode}")
                try:
                    status = client.status(timeout_s=5)
                    if not self.wait_for_worker or status.get("broker", {}).get("workers", 0) >= 1:
                        return
                    last = "broker up, no worker joined yet"
                except WorkerError as exc:
                    last = str(exc)
                time.sleep(0.1)
        raise self._failed(f"did not answer within {self.ready_timeout_s:g} s ({last})")

    def _failed(self, what: str) -> WorkerError:
        tail = self.output_tail().strip()
        return WorkerError(
            f"local worker {' '.join(self.command)} {what}"
            + (f"; its output:\n{tail}" if tail else "")
        )

    def stop(self, timeout_s: float = 2.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the exit status (None if never started)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
        if self._log is not None and not self._log.closed and self.log_path is not None:
            self._log.close()
        return None if process is None else process.returncode

    def close(self) -> None:
        """Stop it and drop the captured output."""
        self.stop()
        if self._log is not None and not self._log.closed:
            self._log.close()

    def __enter__(self) -> LocalWorker:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.close()

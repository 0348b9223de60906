"""The client the GNU Radio sink uses: asynchronous, bounded in time, never stuck.

::

    client = WorkerClient("tcp://127.0.0.1:5555", timeout_s=10, retries=1, fallback=LocalDecoder())
    fut = client.submit(DecodeRequest(...))    # returns at once: a concurrent.futures.Future
    reply = fut.result()                        # DecodeReply; ok False says why
    client.close()

Each attempt waits ``timeout_s`` for its reply. A timeout, or a reply saying
the service is unavailable or failed internally, moves the request to the next
address (with one address: the same broker, which then picks another worker)
until ``retries`` extra attempts are spent; then the ``fallback`` decodes it
locally (JSCC only), or the future resolves with an explicit failure. So every
future resolves exactly once, within ``timeout_s * (retries + 1)`` plus the
local decode. A reply that arrives after its attempt was given up is dropped.

One background thread owns the sockets (ZMQ sockets are not thread-safe);
``submit`` only serialises the request and wakes that thread through a pipe,
so it never blocks on the network.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import zmq

from diffjscc.worker.keys import CurveClient
from diffjscc.worker.protocol import (
    DEFAULT_LIMITS,
    INTERNAL,
    INVALID,
    UNAVAILABLE,
    DecodeReply,
    DecodeRequest,
    Limits,
    ProtocolError,
    StatusRequest,
    WorkerError,
    decode_reply,
    decode_request,
    encode_request,
)

log = logging.getLogger(__name__)


class LocalDecoder:
    """JSCC decoding in this process, on the CPU by default: the last resort.

    Models load on first use (``diffjscc.zoo.load_codec``, or ``codec_loader``).
    Refinement is not done here: a request with refine on gets the JSCC image,
    with ``metrics["refine_skipped"]`` saying why.
    """

    def __init__(self, device: str = "cpu", codec_loader=None, threads: int | None = None):
        self.device = device
        self._codec_loader = codec_loader
        self._threads = threads
        self._engine = None
        self._lock = threading.Lock()

    def _get_engine(self):
        if self._engine is None:
            from diffjscc.worker.engine import CodecEngine

            if self._threads:
                import torch

                torch.set_num_threads(self._threads)
            self._engine = CodecEngine(
                device=self.device, codec_loader=self._codec_loader, half=False
            )
        return self._engine

    def decode(self, request: DecodeRequest) -> DecodeReply:
        start = time.perf_counter()
        try:  # the same checks and messages as a worker's
            checked = decode_request(
                encode_request(DecodeRequest(**{**request.__dict__, "refine": False}))
            )
        except (ProtocolError, TypeError, ValueError) as exc:
            reply = DecodeReply.failure(request, str(exc), INVALID, "local")
            reply.timing["local_ms"] = (time.perf_counter() - start) * 1e3
            return reply
        with self._lock:  # one decode at a time: the fallback must not starve the flowgraph's CPU
            try:
                reply = self._get_engine().decode_batch([checked])[0]
            except Exception as exc:
                log.exception("local decode of %r failed", request.request_id)
                reply = DecodeReply.failure(
                    request, f"local decode failed: {type(exc).__name__}: {exc}", INTERNAL
                )
        if request.refine and reply.ok:
            reply.metrics["refine_skipped"] = "local fallback decodes JSCC only"
        reply.served_by = "local"
        reply.timing["local_ms"] = (time.perf_counter() - start) * 1e3
        return reply

    __call__ = decode


@dataclass
class _Pending:
    request: DecodeRequest | StatusRequest
    payload: bytes
    future: concurrent.futures.Future
    submitted: float
    attempt: int = 0
    address_index: int = 0
    deadline: float = 0.0
    tag: bytes = b""
    last_error: str = ""


class WorkerClient:
    """Submit requests to one or more worker/broker addresses; see the module docstring."""

    def __init__(
        self,
        address: str | Sequence[str],
        timeout_s: float = 10.0,
        retries: int = 1,
        fallback: LocalDecoder | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        curve: CurveClient | None = None,
        max_pending: int = 10000,
    ):
        addresses = [address] if isinstance(address, str) else list(address)
        if not addresses:
            raise WorkerError("WorkerClient needs at least one address")
        for item in addresses:
            if not isinstance(item, str) or not item.startswith(("tcp://", "ipc://", "inproc://")):
                raise WorkerError(f"worker address {item!r} must look like tcp://HOST:PORT")
        if timeout_s <= 0 or retries < 0:
            raise WorkerError(
                f"timeout_s must be > 0 and retries >= 0 (got {timeout_s}, {retries})"
            )
        self.addresses = addresses
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.fallback = fallback
        self.limits = limits
        self.curve = curve
        self.max_pending = max_pending
        self.stats = collections.Counter()
        self._inbox: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._tags = itertools.count(1)
        self._next_address = itertools.count()
        self._closed = threading.Event()
        self._fallback_pool = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="diffjscc-fallback")
            if fallback
            else None
        )
        self._context = zmq.Context()
        self._thread = threading.Thread(target=self._io_loop, name="diffjscc-client", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    def submit(self, request: DecodeRequest | StatusRequest) -> concurrent.futures.Future:
        """Queue a request; the future resolves with a DecodeReply (ok or an explicit failure)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        if self._closed.is_set():
            future.set_result(DecodeReply.failure(request, "client is closed", UNAVAILABLE))
            return future
        try:
            payload = encode_request(request)
        except (TypeError, ValueError) as exc:
            future.set_result(DecodeReply.failure(request, f"request not writable: {exc}", INVALID))
            return future
        if len(payload) > self.limits.max_message_bytes:
            error = f"request of {len(payload)} bytes exceeds the limit of {self.limits.max_message_bytes}"
            future.set_result(DecodeReply.failure(request, error, INVALID))
            return future
        self._inbox.put(_Pending(request, payload, future, time.monotonic()))
        self._wake()
        return future

    @property
    def budget_s(self) -> float:
        """Longest a future waits for the network before the fallback (or failure) takes over."""
        return self.timeout_s * (self.retries + 1)

    def decode(self, request: DecodeRequest) -> DecodeReply:
        """Blocking convenience: submit and wait for the reply."""
        return self.submit(request).result()

    def status(self, timeout_s: float | None = None) -> dict:
        """The broker's status dict (its queue, its workers), or WorkerError."""
        reply = self.submit(StatusRequest(request_id=f"status-{next(self._tags)}")).result(
            timeout_s
        )
        if not reply.ok:
            raise WorkerError(f"status request failed: {reply.error}")
        return reply.status

    def close(self, timeout_s: float = 5.0) -> None:
        """Fail what is still pending, stop the thread, close the sockets."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake()
        self._thread.join(timeout_s)
        if self._fallback_pool is not None:
            self._fallback_pool.shutdown(wait=True)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ I/O thread
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the thread is already due to wake

    def _socket(self, address: str) -> zmq.Socket:
        sock = self._context.socket(zmq.DEALER)
        sock.linger = 0
        # Queue nothing for a peer that is not connected: a dead address fails at once.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_reply_bytes)
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(address)
        return sock

    def _io_loop(self) -> None:
        sockets: list[zmq.Socket] = []
        pending: dict[bytes, _Pending] = {}
        unsent: collections.deque[_Pending] = collections.deque()
        self._pending, self._unsent, self._sockets = pending, unsent, sockets
        try:
            sockets.extend(self._socket(a) for a in self.addresses)
            poller = zmq.Poller()
            for sock in sockets:
                poller.register(sock, zmq.POLLIN)
            poller.register(self._wake_r, zmq.POLLIN)
            while not self._closed.is_set():
                timeout_ms = self._poll_timeout_ms(pending, unsent)
                events = dict(poller.poll(timeout_ms))
                if self._wake_r in events:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                while True:
                    try:
                        item = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    if len(pending) + len(unsent) >= self.max_pending:
                        self._resolve(
                            item,
                            DecodeReply.failure(
                                item.request, "client has too many requests pending", UNAVAILABLE
                            ),
                        )
                        continue
                    item.address_index = next(self._next_address) % len(sockets)
                    self._start_attempt(item)
                for index, sock in enumerate(sockets):
                    if sock in events:
                        self._receive(sock, index)
                self._send_unsent()
                self._check_deadlines(time.monotonic())
        except Exception:
            log.exception("worker client thread failed")
            self._closed.set()  # later submits fail at once instead of waiting on a dead thread
        finally:
            for item in list(pending.values()) + list(unsent):
                self._resolve(
                    item,
                    DecodeReply.failure(item.request, "client closed before a reply", UNAVAILABLE),
                )
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                self._resolve(
                    item,
                    DecodeReply.failure(item.request, "client closed before sending", UNAVAILABLE),
                )
            for sock in sockets:
                sock.close(linger=0)
            self._context.term()

    def _poll_timeout_ms(self, pending, unsent) -> int:
        if unsent:
            return 5  # a disconnected peer: try sending again soon
        if not pending:
            return 1000
        nearest = min(item.deadline for item in pending.values())
        return max(0, min(1000, int((nearest - time.monotonic()) * 1000) + 1))

    def _start_attempt(self, item: _Pending) -> None:
        item.attempt += 1
        item.tag = next(self._tags).to_bytes(8, "big")
        item.deadline = time.monotonic() + self.timeout_s
        self._unsent.append(item)

    def _send_unsent(self) -> None:
        for _ in range(len(self._unsent)):
            item = self._unsent.popleft()
            sock = self._sockets[item.address_index]
            try:
                # [tag, delimiter, payload]: the broker returns the frames before the payload.
                sock.send_multipart([item.tag, b"", item.payload], zmq.NOBLOCK, copy=False)
            except zmq.Again:
                if time.monotonic() >= item.deadline:
                    item.last_error = f"{self.addresses[item.address_index]} not reachable"
                    self._retry_or_give_up(item)
                else:
                    self._unsent.append(item)
                continue
            self._pending[item.tag] = item
            self.stats["sent"] += 1

    def _receive(self, sock: zmq.Socket, index: int) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3 or frames[1] != b"":
                self.stats["bad_replies"] += 1
                continue
            item = self._pending.pop(frames[0], None)
            if item is None:
                self.stats["late_replies"] += 1  # its attempt was already given up
                continue
            try:
                reply = decode_reply(frames[2], self.limits)
            except ProtocolError as exc:
                self.stats["bad_replies"] += 1
                item.last_error = f"unreadable reply from {self.addresses[index]}: {exc}"
                self._retry_or_give_up(item)
                continue
            if reply.ok or reply.error_kind == INVALID:
                self._resolve(item, reply)
            else:
                item.last_error = f"{reply.served_by or self.addresses[index]}: {reply.error}"
                self._retry_or_give_up(item)

    def _check_deadlines(self, now: float) -> None:
        for tag, item in list(self._pending.items()):
            if now >= item.deadline:
                del self._pending[tag]
                self.stats["timeouts"] += 1
                item.last_error = f"no reply from {self.addresses[item.address_index]} within {self.timeout_s:g} s"
                self._retry_or_give_up(item)

    def _retry_or_give_up(self, item: _Pending) -> None:
        if item.attempt <= self.retries:
            self.stats["retries"] += 1
            item.address_index = (item.address_index + 1) % len(self.addresses)
            self._start_attempt(item)
            return
        if self.fallback is not None and isinstance(item.request, DecodeRequest):
            self.stats["fallbacks"] += 1
            reason = item.last_error
            log.info("request %r: decoding locally (%s)", item.request.request_id, reason)

            def run_fallback(item=item, reason=reason):
                reply = self.fallback.decode(item.request)
                reply.metrics["fallback_reason"] = reason
                self._resolve(item, reply)

            try:
                self._fallback_pool.submit(run_fallback)
                return
            except RuntimeError:  # pool shut down by close()
                pass
        error = f"gave up after {item.attempt} attempt(s): {item.last_error}"
        self._resolve(item, DecodeReply.failure(item.request, error, UNAVAILABLE))

    def _resolve(self, item: _Pending, reply: DecodeReply) -> None:
        reply.timing["client_ms"] = round((time.monotonic() - item.submitted) * 1e3, 3)
        reply.timing["attempts"] = item.attempt
        try:
            item.future.set_result(reply)
        except concurrent.futures.InvalidStateError:  # already resolved: exactly one answer
            return
        self.stats["ok" if reply.ok else "failed"] += 1

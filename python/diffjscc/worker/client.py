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

import atexit
import collections
import concurrent.futures
import gc
import itertools
import logging
import os
import queue
import threading
import time
import weakref
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


CANCELLED = "cancelled"  # error_kind of a reply to a request its sender abandoned

# A daemon thread that is inside torch when the interpreter finalises is torn down with
# C++ frames on its stack: "terminate called without an active exception", exit 134. So
# the exit closes the local decoders still open and waits for decodes still running (a
# decode cannot be interrupted; it ends on its own).
_OPEN_DECODERS: weakref.WeakSet = weakref.WeakSet()
_BUSY_AFTER_CLOSE: set[threading.Thread] = set()
EXIT_WAIT_S = 60.0


class DecodeInterrupted(BaseException):
    """Raised inside an abandoned local decode. A BaseException, as asyncio's
    CancelledError, so that the engine's per-batch ``except Exception`` lets it by."""


# What the decode thread of a LocalDecoder is doing: ``abandoned()`` says whether the
# request it decodes has been given up (cancelled, timed out, decoder closed).
_decode_state = threading.local()
_INTERRUPTION_HOOK = None


def _interruption_point(module, args) -> None:
    abandoned = getattr(_decode_state, "abandoned", None)
    if abandoned is not None and abandoned():
        raise DecodeInterrupted()


def _install_interruption_point() -> None:
    """Before every torch module's forward: a decode given up stops there, within
    milliseconds, instead of holding the CPU (and the interpreter's exit) for a whole
    decode. Other threads' forwards only read an unset thread-local."""
    global _INTERRUPTION_HOOK
    if _INTERRUPTION_HOOK is None:
        try:
            import torch
        except ImportError:  # a codec_loader without torch: nothing to interrupt
            return
        _INTERRUPTION_HOOK = torch.nn.modules.module.register_module_forward_pre_hook(
            _interruption_point
        )
        # A process with torch spends most of its exit in the final garbage collections
        # (0.7 s of 0.8 s here); its memory goes back to the system anyway. Frozen objects
        # are not collected: the exit after a stop signal takes a fraction of that.
        atexit.register(gc.freeze)


@atexit.register
def _wait_for_busy_decodes() -> None:
    deadline = time.monotonic() + EXIT_WAIT_S
    for decoder in list(_OPEN_DECODERS):
        decoder.close(timeout_s=max(0.0, deadline - time.monotonic()))
    for thread in list(_BUSY_AFTER_CLOSE):
        thread.join(max(0.0, deadline - time.monotonic()))


def cancelled_reply(request, served_by: str = "") -> DecodeReply:
    return DecodeReply.failure(request, "cancelled by the sender", CANCELLED, served_by)


def _resolve_future(future: concurrent.futures.Future, reply: DecodeReply) -> bool:
    """Set the result unless the future already has one; True when this call resolved it."""
    try:
        future.set_result(reply)
    except concurrent.futures.InvalidStateError:
        return False
    return True


class LocalDecoder:
    """JSCC decoding in this process, on the CPU by default: the last resort.

    Models load on first use (``diffjscc.zoo.load_codec``, or ``codec_loader``).
    Refinement is not done here: a request with refine on gets the JSCC image,
    with ``metrics["refine_skipped"]`` saying why.

    The decoder interface (shared with :class:`WorkerClient`, docs/CONTRACTS.md):
    ``submit(request) -> Future`` decodes on one thread of its own (started by
    :meth:`start` or the first submit), at most ``max_pending`` requests at a
    time (more get a failure reply "busy", counted in ``stats``); every future
    resolves with a DecodeReply within :attr:`budget_s` (``timeout_s``): a
    decode still running then resolves it with a failure reply, and its result
    is counted as late. ``cancel(future)`` resolves it at once with a failure
    reply (``error_kind`` "cancelled"); ``close()`` resolves what is pending.
    ``decode(request)`` decodes in the calling thread.
    """

    def __init__(
        self,
        device: str = "cpu",
        codec_loader=None,
        threads: int | None = None,
        *,
        timeout_s: float = 60.0,
        max_pending: int = 4,
    ):
        if not timeout_s > 0 or max_pending < 1:
            raise WorkerError(
                f"timeout_s must be > 0 and max_pending >= 1 (got {timeout_s}, {max_pending})"
            )
        self.device = device
        self._codec_loader = codec_loader
        self._threads = threads
        self._engine = None
        self._lock = threading.Lock()
        self.timeout_s = float(timeout_s)
        self.max_pending = int(max_pending)
        self.stats = collections.Counter()
        self._state = threading.Condition()
        self._waiting: collections.deque = collections.deque()  # (request, future, deadline)
        # future -> (deadline, request): what is submitted and not yet resolved
        self._pending: dict[concurrent.futures.Future, tuple[float, DecodeRequest]] = {}
        self._running: list[threading.Thread] = []
        self._closed = False

    # ------------------------------------------------------------------ decoder interface
    @property
    def budget_s(self) -> float:
        """A submitted request's future is resolved by then (a failure reply if need be)."""
        return self.timeout_s

    def start(self) -> LocalDecoder:
        with self._state:
            if self._closed:
                raise WorkerError("local decoder is closed")
            if not self._running:
                self._running = [
                    threading.Thread(target=self._decode_loop, name="diffjscc-local", daemon=True),
                    threading.Thread(
                        target=self._watch_loop, name="diffjscc-local-watch", daemon=True
                    ),
                ]
                for thread in self._running:
                    thread.start()
                _OPEN_DECODERS.add(self)
        return self

    def submit(self, request: DecodeRequest) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        with self._state:
            if self._closed:
                self.stats["refused_closed"] += 1
                future.set_result(
                    DecodeReply.failure(request, "local decoder is closed", UNAVAILABLE, "local")
                )
                return future
            if len(self._pending) >= self.max_pending:
                self.stats["refused_busy"] += 1
                error = f"busy: local decoder has {self.max_pending} requests pending"
                future.set_result(DecodeReply.failure(request, error, UNAVAILABLE, "local"))
                return future
            self._pending[future] = (time.monotonic() + self.timeout_s, request)
            self._waiting.append((request, future))
            self.stats["submitted"] += 1
            self._state.notify_all()
        self.start()
        return future

    def cancel(self, future: concurrent.futures.Future) -> bool:
        """Resolve ``future`` now with a "cancelled" failure; False when it was already resolved."""
        with self._state:
            _, request = self._pending.pop(future, (0.0, None))
            self._state.notify_all()
        if _resolve_future(future, cancelled_reply(request, "local")):
            self.stats["cancelled"] += 1
            return True
        return False

    def close(self, timeout_s: float = 2.0) -> None:
        """Resolve every pending future (failure replies) and join the threads."""
        with self._state:
            self._closed = True
            pending = list(self._pending.items())
            self._pending.clear()
            self._waiting.clear()
            self._state.notify_all()
            threads, self._running = self._running, []
        _OPEN_DECODERS.discard(self)
        for future, (_, request) in pending:
            _resolve_future(
                future, DecodeReply.failure(request, "local decoder closed", UNAVAILABLE, "local")
            )
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():  # a decode cannot be interrupted; it ends on its own
                _BUSY_AFTER_CLOSE.add(thread)
                log.info("local decoder thread %s still busy after close", thread.name)

    def _decode_loop(self) -> None:
        while True:
            with self._state:
                while not self._waiting and not self._closed:
                    self._state.wait(0.5)
                if self._closed:
                    return
                request, future = self._waiting.popleft()
                if future not in self._pending:  # cancelled or expired while waiting
                    continue
            # Abandoned (cancelled, timed out, closed): the decode stops at its next layer.
            _decode_state.abandoned = lambda f=future: self._closed or f not in self._pending
            try:
                reply = self.decode(request)
            except DecodeInterrupted:
                self.stats["interrupted"] += 1  # its future is resolved already
                continue
            except Exception as exc:  # decode() answers; this guard keeps the thread serving
                log.exception("local decode of %r failed", getattr(request, "request_id", None))
                reply = DecodeReply.failure(request, f"internal: {type(exc).__name__}", INTERNAL)
            finally:
                _decode_state.abandoned = None
            with self._state:
                self._pending.pop(future, None)
            if not _resolve_future(future, reply):
                self.stats["late_results"] += 1  # cancelled or timed out meanwhile

    def _watch_loop(self) -> None:
        while True:
            with self._state:
                if self._closed:
                    return
                now = time.monotonic()
                expired = [(f, r) for f, (d, r) in self._pending.items() if d <= now]
                for future, _ in expired:
                    del self._pending[future]
                nearest = min((d for d, _ in self._pending.values()), default=now + 0.5)
                if not expired:
                    self._state.wait(min(0.5, max(0.005, nearest - now)))
                    continue
            for future, request in expired:
                error = f"local decode did not finish within {self.timeout_s:g} s"
                reply = DecodeReply.failure(request, error, UNAVAILABLE, "local")
                if _resolve_future(future, reply):
                    self.stats["timeouts"] += 1

    # ------------------------------------------------------------------ blocking decode
    def _get_engine(self):
        if self._engine is None:
            from diffjscc.worker.engine import CodecEngine

            if self._threads:
                import torch

                torch.set_num_threads(self._threads)
            self._engine = CodecEngine(
                device=self.device, codec_loader=self._codec_loader, half=False
            )
            _install_interruption_point()
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
    """Submit requests to one or more worker/broker addresses; see the module docstring.

    The decoder interface (as :class:`LocalDecoder`): ``submit``, ``cancel``,
    ``budget_s``, ``close``; ``decode`` blocks. A cancelled request's future
    resolves at once with a failure reply (``error_kind`` "cancelled"); a
    reply that arrives for it later is ignored and counted
    (``stats["ignored_replies"]``).
    """

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
        fallback_timeout_s: float | None = None,
        fallback_max_pending: int = 4,
    ):
        addresses = [address] if isinstance(address, str) else list(address)
        if not addresses:
            raise WorkerError("WorkerClient needs at least one address")
        for item in addresses:
            if not isinstance(item, str) or not item.startswith(("tcp://", "ipc://", "inproc://")):
                raise WorkerError(f"worker address {item!r} must look like tcp://HOST:PORT")
        if not timeout_s > 0 or retries < 0:
            raise WorkerError(
                f"timeout_s must be > 0 and retries >= 0 (got {timeout_s}, {retries})"
            )
        self.addresses = addresses
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.fallback = fallback
        if fallback_timeout_s is None:
            fallback_timeout_s = float(getattr(fallback, "budget_s", 60.0) or 60.0)
        self.fallback_timeout_s = float(fallback_timeout_s)
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
        self._fallback_slots = threading.Semaphore(fallback_max_pending)
        self._fallback_pool = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="diffjscc-fallback")
            if fallback
            else None
        )
        self._in_fallback: dict[bytes, _Pending] = {}  # I/O thread only
        self._by_future: dict[concurrent.futures.Future, _Pending] = {}
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
            error = f"request not writable: {exc}"[:300]
            future.set_result(DecodeReply.failure(request, error, INVALID))
            return future
        if len(payload) > self.limits.max_message_bytes:
            error = f"request of {len(payload)} bytes exceeds the limit of {self.limits.max_message_bytes}"
            future.set_result(DecodeReply.failure(request, error, INVALID))
            return future
        if len(self._by_future) >= self.max_pending:  # bounded before the inbox, too
            self.stats["refused_busy"] += 1
            error = "busy: client has too many requests pending"
            future.set_result(DecodeReply.failure(request, error, UNAVAILABLE))
            return future
        item = _Pending(request, payload, future, time.monotonic())
        if not self._thread.is_alive():  # should not happen; if it does, the fallback serves
            self.stats["io_thread_dead"] += 1
            item.last_error = "client I/O thread stopped"
            self._retry_or_give_up(item, final=True)
            return future
        self._by_future[future] = item
        future.add_done_callback(self._forget)
        self._inbox.put(item)
        self._wake()
        return future

    def cancel(self, future: concurrent.futures.Future) -> bool:
        """Abandon a request: its future resolves now with a "cancelled" failure reply.

        False when it had already resolved. A reply that comes later is ignored.
        """
        item = self._by_future.get(future)
        request = item.request if item is not None else None
        if _resolve_future(future, cancelled_reply(request)):
            self.stats["cancelled"] += 1
            return True
        return False

    @property
    def budget_s(self) -> float:
        """Every submitted future is resolved by then: the network attempts, then the fallback."""
        network = self.timeout_s * (self.retries + 1)
        return network + (self.fallback_timeout_s if self.fallback is not None else 0.0)

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

    def close(self, timeout_s: float = 2.0) -> None:
        """Resolve what is still pending (failure replies), stop the thread, close the sockets."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._wake()
        self._thread.join(timeout_s)
        if self._fallback_pool is not None:
            # A local decode already running cannot be interrupted: it is not waited for.
            self._fallback_pool.shutdown(wait=False, cancel_futures=True)
        for item in list(self._by_future.copy().values()):
            self._resolve(
                item, DecodeReply.failure(item.request, "client closed before a reply", UNAVAILABLE)
            )
        if not self._thread.is_alive():
            os.close(self._wake_r)
            os.close(self._wake_w)
        else:
            log.warning("worker client thread did not stop within %.1f s", timeout_s)

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ I/O thread
    def _forget(self, future: concurrent.futures.Future) -> None:
        self._by_future.pop(future, None)

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
        failures_in_a_row = 0
        try:
            sockets.extend(self._socket(a) for a in self.addresses)
            poller = zmq.Poller()
            for sock in sockets:
                poller.register(sock, zmq.POLLIN)
            poller.register(self._wake_r, zmq.POLLIN)
            while not self._closed.is_set():
                try:
                    self._io_step(poller, sockets, pending, unsent)
                    failures_in_a_row = 0
                except Exception:  # one guard per pass: count it, keep serving
                    self.stats["internal_errors"] += 1
                    failures_in_a_row += 1
                    log.exception("worker client: error in the I/O loop (counted, going on)")
                    if failures_in_a_row >= 100:  # the sockets themselves are broken
                        raise
                    time.sleep(0.01)
        except Exception:
            log.exception("worker client thread failed")
        finally:
            closing = DecodeReply.failure(None, "client closed before a reply", UNAVAILABLE)
            for item in list(pending.values()) + list(unsent) + list(self._in_fallback.values()):
                self._resolve(item, _for(item, closing))
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                self._resolve(item, _for(item, closing))
            for sock in sockets:
                sock.close(linger=0)
            self._context.term()

    def _io_step(self, poller, sockets, pending, unsent) -> None:
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
            if item.future.done():  # cancelled before it was sent
                continue
            if len(pending) + len(unsent) >= self.max_pending:
                self.stats["refused_busy"] += 1
                self._resolve(
                    item,
                    DecodeReply.failure(
                        item.request, "busy: client has too many requests pending", UNAVAILABLE
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

    def _poll_timeout_ms(self, pending, unsent) -> int:
        if unsent:
            return 5  # a disconnected peer: try sending again soon
        deadlines = [item.deadline for item in pending.values()]
        deadlines += [item.deadline for item in self._in_fallback.values()]
        if not deadlines:
            return 1000
        return max(0, min(1000, int((min(deadlines) - time.monotonic()) * 1000) + 1))

    def _start_attempt(self, item: _Pending) -> None:
        item.attempt += 1
        item.tag = next(self._tags).to_bytes(8, "big")
        item.deadline = time.monotonic() + self.timeout_s
        self._unsent.append(item)

    def _send_unsent(self) -> None:
        for _ in range(len(self._unsent)):
            item = self._unsent.popleft()
            if item.future.done():
                continue  # cancelled
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
        for _ in range(1024):  # a bounded burst: deadlines are checked between bursts
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._on_reply(frames, index)
            except Exception:  # one guard per message: count it, keep serving
                self.stats["internal_errors"] += 1
                log.exception("worker client: a reply could not be handled (counted)")

    def _on_reply(self, frames: list[bytes], index: int) -> None:
        if len(frames) != 3 or frames[1] != b"":
            self.stats["bad_replies"] += 1
            return
        item = self._pending.pop(frames[0], None)
        if item is None:
            self.stats["late_replies"] += 1  # its attempt was already given up
            return
        if item.future.done():
            self.stats["ignored_replies"] += 1  # cancelled by its sender
            return
        try:
            reply = decode_reply(frames[2], self.limits)
        except Exception as exc:  # ProtocolError, or anything a hostile reply provokes
            self.stats["bad_replies"] += 1
            reason = exc if isinstance(exc, ProtocolError) else type(exc).__name__
            item.last_error = f"unreadable reply from {self.addresses[index]}: {reason}"[:300]
            self._retry_or_give_up(item)
            return
        if reply.ok or reply.error_kind == INVALID:
            self._resolve(item, reply)
        else:
            item.last_error = f"{reply.served_by or self.addresses[index]}: {reply.error}"[:300]
            self._retry_or_give_up(item)

    def _check_deadlines(self, now: float) -> None:
        for tag, item in list(self._pending.items()):
            if now >= item.deadline:
                del self._pending[tag]
                if item.future.done():
                    continue  # cancelled: its reply did not come either
                self.stats["timeouts"] += 1
                item.last_error = f"no reply from {self.addresses[item.address_index]} within {self.timeout_s:g} s"
                self._retry_or_give_up(item)
        for tag, item in list(self._in_fallback.items()):
            if item.future.done():
                del self._in_fallback[tag]
            elif now >= item.deadline:
                del self._in_fallback[tag]
                self.stats["fallback_timeouts"] += 1
                error = (
                    f"{item.last_error}; local fallback did not finish within "
                    f"{self.fallback_timeout_s:g} s"
                )
                self._resolve(item, DecodeReply.failure(item.request, error, UNAVAILABLE))

    def _retry_or_give_up(self, item: _Pending, final: bool = False) -> None:
        if item.future.done():
            return
        if not final and item.attempt <= self.retries:
            self.stats["retries"] += 1
            item.address_index = (item.address_index + 1) % len(self.addresses)
            self._start_attempt(item)
            return
        if self.fallback is not None and isinstance(item.request, DecodeRequest):
            reason = item.last_error
            if not self._fallback_slots.acquire(blocking=False):
                self.stats["fallback_busy"] += 1
                error = f"gave up after {item.attempt} attempt(s): {reason}; local fallback busy"
                self._resolve(item, DecodeReply.failure(item.request, error, UNAVAILABLE))
                return
            self.stats["fallbacks"] += 1
            log.info("request %r: decoding locally (%s)", item.request.request_id, reason)

            def run_fallback(item=item, reason=reason):
                try:
                    if item.future.done():
                        return  # cancelled or timed out while waiting for the pool
                    reply = self.fallback.decode(item.request)
                    reply.metrics["fallback_reason"] = reason
                    if not self._resolve(item, reply):
                        self.stats["late_fallbacks"] += 1
                except Exception as exc:
                    log.exception("local fallback failed")
                    error = f"local fallback failed: {type(exc).__name__}"
                    self._resolve(item, DecodeReply.failure(item.request, error, INTERNAL))
                finally:
                    self._fallback_slots.release()

            item.deadline = time.monotonic() + self.fallback_timeout_s
            try:
                self._fallback_pool.submit(run_fallback)
            except RuntimeError:  # pool shut down by close()
                self._fallback_slots.release()
            else:
                if threading.current_thread() is self._thread:
                    self._in_fallback[item.tag or next(self._tags).to_bytes(8, "big")] = item
                return
        error = f"gave up after {item.attempt} attempt(s): {item.last_error}"
        self._resolve(item, DecodeReply.failure(item.request, error, UNAVAILABLE))

    def _resolve(self, item: _Pending, reply: DecodeReply) -> bool:
        reply.timing["client_ms"] = round((time.monotonic() - item.submitted) * 1e3, 3)
        reply.timing["attempts"] = item.attempt
        if not _resolve_future(item.future, reply):  # already resolved: exactly one answer
            return False
        self.stats["ok" if reply.ok else "failed"] += 1
        return True


def _for(item: _Pending, template: DecodeReply) -> DecodeReply:
    return DecodeReply.failure(item.request, template.error, template.error_kind)

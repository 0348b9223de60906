"""The broker: one address for clients, any number of workers behind it.

::

    clients (DEALER/REQ) ──► ROUTER frontend ─┐                 ┌─► worker DEALER ─► engine
    GNU Radio push_msg_sink ─► PULL ──────────┼─► broker queue ─┼─► worker DEALER ─► engine
    GNU Radio pull_msg_source ◄─ PUSH ◄───────┘   (credits)     └─► ...  ◄── ROUTER backend

Workers connect to the backend, announce READY with a capacity, and heartbeat;
the broker gives each request to the live worker with the most free capacity
(load balancing; a worker added later is used at once, nothing restarts). The
broker remembers which worker holds which request: if that worker stops
heartbeating (crashed, SIGKILLed, unplugged) its requests go to another worker,
up to ``max_attempts`` tries, and then come back as explicit failures. A reply
is forwarded only from the worker that holds the request, so none is lost or
sent twice. Requests are checked here first: bad ones are answered at once.

Frames between broker and worker (after the ROUTER's identity frame):
``READY json`` / ``HEARTBEAT json`` / ``REPLY ticket payload`` / ``BYE`` from the
worker; ``REQUEST ticket payload`` / ``HEARTBEAT`` / ``RESYNC`` from the broker.
Client envelopes follow ZMQ's REQ convention: every frame before the payload
comes back unchanged before the reply.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import zmq

from diffjscc.worker.keys import CurveServer, given_together
from diffjscc.worker.protocol import (
    DEFAULT_LIMITS,
    INTERNAL,
    INVALID,
    UNAVAILABLE,
    DecodeReply,
    Limits,
    ProtocolError,
    StatusRequest,
    WorkerError,
    bounded_text,
    bounded_value,
    check_reply,
    decode_request,
    encode_reply,
    encode_status_reply,
)

log = logging.getLogger(__name__)

READY, HEARTBEAT, REPLY, BYE = b"READY", b"HEARTBEAT", b"REPLY", b"BYE"
REQUEST, RESYNC = b"REQUEST", b"RESYNC"

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def _is_local(address: str) -> bool:
    if address.startswith(("inproc://", "ipc://")):
        return True
    return address[len("tcp://") :].rsplit(":", 1)[0] in LOOPBACK_HOSTS


def check_bind_address(address: str, allow_remote: bool) -> None:
    """Refuse to listen beyond this machine unless asked to, explicitly."""
    if address.startswith(("inproc://", "ipc://")):
        return
    if not address.startswith("tcp://"):
        raise WorkerError(
            f"unsupported address {address!r}: use tcp://HOST:PORT, ipc:// or inproc://"
        )
    if not allow_remote and not _is_local(address):
        raise WorkerError(
            f"{address} listens beyond this machine; pass --allow-remote (with CURVE keys, "
            "see 'diffjscc keys') to serve other hosts"
        )


def check_positive(**settings) -> None:
    """Refuse a zero, negative or NaN setting: a heartbeat of 0, say, has every worker
    declared dead the moment it joins, and the service churns without serving."""
    bad = [
        f"{name.removesuffix('_s')} {value!r}"
        for name, value in settings.items()
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
    ]
    if bad:
        raise WorkerError(f"these settings must be positive numbers: {', '.join(bad)}")


MAX_LINK_JSON_BYTES = 64 << 10  # READY / HEARTBEAT bodies on the worker link
MAX_LINK_JSON_DEPTH = 8
MAX_WORKER_CAPACITY = 1024
MAX_WORKERS = 256  # registered at once: the broker's table of workers is bounded too
MAX_ENVELOPE_FRAMES = 10  # before the payload, the ROUTER's identity included
MAX_ENVELOPE_FRAME_BYTES = 256


def _json_depth(text: str) -> int:
    """Deepest nesting of arrays and objects, strings skipped; stops counting past the limit."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_LINK_JSON_DEPTH:
                return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number this link accepts")


def parse_link_json(data: bytes) -> dict:
    """A READY / HEARTBEAT body: a JSON object of bounded size and depth, finite numbers.

    Raises ValueError with the reason; checked before ``json.loads``, whose
    recursion a 30,000-deep array would exhaust.
    """
    if len(data) > MAX_LINK_JSON_BYTES:
        raise ValueError(f"{len(data)} bytes exceeds the limit of {MAX_LINK_JSON_BYTES}")
    text = data.decode("utf-8")
    if _json_depth(text) > MAX_LINK_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_LINK_JSON_DEPTH}")
    value = json.loads(text, parse_constant=_refuse_constant)
    if not isinstance(value, dict):
        raise ValueError(f"a JSON object is needed, got {type(value).__name__}")
    return value


def percentiles(values, points=(50, 90, 99)) -> dict:
    values = sorted(values)
    if not values:
        return {}
    return {
        f"p{p}": round(values[min(len(values) - 1, int(p / 100 * len(values)))], 3) for p in points
    }


@dataclass
class _Job:
    ticket: bytes
    payload: bytes
    origin: str  # "router" or "pdu"
    envelope: list  # frames to put before the reply (router origin)
    request_id: object
    image_id: object
    received: float
    attempts: int = 0
    worker: bytes | None = None
    dispatched: float = 0.0
    held_bytes: int = 0  # counted in the broker's queue budget until answered


@dataclass
class _Worker:
    identity: bytes
    capacity: int
    last_seen: float
    info: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)
    inflight: set = field(default_factory=set)
    last_dispatch: float = 0.0
    served: int = 0

    @property
    def free(self) -> int:
        return self.capacity - len(self.inflight)


class Broker:
    """ROUTER frontend (+ optional PDU PULL/PUSH pair) to a ROUTER backend of workers.

    Addresses may end in ``:*`` / ``:0`` for an ephemeral port; the bound
    addresses are in ``frontend_address`` etc. after :meth:`start`.
    """

    def __init__(
        self,
        frontend: str = "tcp://127.0.0.1:5555",
        backend: str = "tcp://127.0.0.1:5556",
        pdu_pull: str | None = None,
        pdu_push: str | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        heartbeat_s: float = 1.0,
        liveness: int = 3,
        max_attempts: int = 2,
        queue_limit: int = 1000,
        queue_bytes: int = 256 << 20,
        queue_timeout_s: float = 30.0,
        request_timeout_s: float = 600.0,
        allow_remote: bool = False,
        curve: CurveServer | None = None,
        backend_curve: CurveServer | None = None,
        keys_reload_s: float = 2.0,
        context: zmq.Context | None = None,
    ):
        check_positive(
            heartbeat_s=heartbeat_s,
            liveness=liveness,
            max_attempts=max_attempts,
            queue_limit=queue_limit,
            queue_bytes=queue_bytes,
            keys_reload_s=keys_reload_s,
            queue_timeout_s=queue_timeout_s,
            request_timeout_s=request_timeout_s,
        )
        for address in (frontend, backend, pdu_pull, pdu_push):
            if address:
                check_bind_address(address, allow_remote)
        if curve is not None and backend_curve is None and not backend.startswith("inproc://"):
            # Otherwise any process that reaches the worker port could pose as a worker
            # and read (or answer) every request the encrypted front takes in.
            raise WorkerError(
                "CURVE on the client port needs CURVE on the worker port too "
                "(backend_curve), unless the workers are in this process (inproc://)"
            )
        self._addresses = {
            "frontend": frontend,
            "backend": backend,
            "pdu_pull": pdu_pull,
            "pdu_push": pdu_push,
        }
        self.limits = limits
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self.max_attempts = max_attempts
        self.queue_limit = queue_limit
        self.queue_bytes = int(queue_bytes)
        self._held_bytes = 0
        self.keys_reload_s = keys_reload_s
        self._keys_signature = None
        self.queue_timeout_s = queue_timeout_s
        self.request_timeout_s = request_timeout_s
        self.curve = curve
        self.backend_curve = backend_curve
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._auth = None
        self.bound: dict[str, str] = {}
        self._queue: collections.deque[_Job] = collections.deque()
        self._inflight: dict[bytes, _Job] = {}
        self._workers: dict[bytes, _Worker] = {}
        self._tickets = itertools.count(1)
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=4096)
        self._started = time.time()
        self.counters = collections.Counter()

    # ------------------------------------------------------------------ lifecycle
    @property
    def frontend_address(self) -> str:
        return self.bound.get("frontend", "")

    @property
    def backend_address(self) -> str:
        return self.bound.get("backend", "")

    def start(self, timeout_s: float = 10.0) -> Broker:
        self._thread = threading.Thread(
            target=self._run_guarded, name="diffjscc-broker", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise WorkerError(f"broker did not start within {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._thread is not None and self._thread.is_alive():
            log.warning("broker thread did not stop within %.1f s", timeout_s)
        elif self._own_context:
            self.context.term()

    def run(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or Ctrl-C)."""
        self._run_guarded()
        if self._error is not None:
            raise self._error

    def _run_guarded(self) -> None:
        try:
            self._serve()
        except (KeyboardInterrupt, WorkerError) as exc:  # reported by start()/run(), no traceback
            self._error = exc
        except BaseException as exc:  # surfaced by start()/run(); the thread must not die silently
            self._error = exc
            log.exception("broker stopped on an error")
        finally:
            self._ready.set()

    def _socket(self, kind: int, address: str, curve: CurveServer | None, name: str) -> zmq.Socket:
        sock = self.context.socket(kind)
        sock.linger = 0
        # Workers send replies (whole images), clients send requests (symbols).
        limit = (
            self.limits.max_reply_bytes if name == "backend" else self.limits.zmq_max_message_bytes
        )
        sock.setsockopt(zmq.MAXMSGSIZE, limit)
        if curve is not None:
            curve.apply(sock)
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise WorkerError(f"cannot listen on {address} ({name}): {exc}") from None
        self.bound[name] = (
            sock.getsockopt_string(zmq.LAST_ENDPOINT)
            if not address.startswith("inproc")
            else address
        )
        return sock

    def _serve(self) -> None:
        if self.curve is not None or self.backend_curve is not None:
            self._auth = (self.curve or self.backend_curve).start_authenticator(self.context)
            self._keys_signature = self._clients_signature()
            if (
                self.curve
                and self.backend_curve
                and self.curve.clients_dir != self.backend_curve.clients_dir
            ):
                raise WorkerError(
                    "frontend and backend CURVE keys must share one authorised folder"
                )
        sockets = []
        try:
            self.frontend = self._socket(
                zmq.ROUTER, self._addresses["frontend"], self.curve, "frontend"
            )
            sockets.append(self.frontend)
            self.backend = self._socket(
                zmq.ROUTER, self._addresses["backend"], self.backend_curve, "backend"
            )
            # A restarted worker may reuse its identity: the new connection takes over.
            self.backend.setsockopt(zmq.ROUTER_HANDOVER, 1)
            sockets.append(self.backend)
            self.pdu_pull = self.pdu_push = None
            if self._addresses["pdu_pull"]:
                self.pdu_pull = self._socket(
                    zmq.PULL, self._addresses["pdu_pull"], None, "pdu_pull"
                )
                sockets.append(self.pdu_pull)
            if self._addresses["pdu_push"]:
                self.pdu_push = self._socket(
                    zmq.PUSH, self._addresses["pdu_push"], None, "pdu_push"
                )
                sockets.append(self.pdu_push)
            self._ready.set()
            log.info("broker: clients %s, workers %s", self.frontend_address, self.backend_address)
            self._loop()
        finally:
            for sock in sockets:
                sock.close(linger=0)
            if self._auth is not None:
                self._auth.stop()

    # ------------------------------------------------------------------ main loop
    def _loop(self) -> None:
        handlers = [(self.backend, self._on_backend), (self.frontend, self._on_frontend)]
        if self.pdu_pull is not None:
            handlers.append((self.pdu_pull, self._on_pdu))
        poller = zmq.Poller()
        for sock, _ in handlers:
            poller.register(sock, zmq.POLLIN)
        next_heartbeat = time.monotonic() + self.heartbeat_s
        next_keys_check = time.monotonic() + self.keys_reload_s
        tick_ms = max(10, int(self.heartbeat_s * 1000 / 4))
        while not self._stop.is_set():
            events = dict(poller.poll(tick_ms))
            for sock, handler in handlers:
                if sock in events:
                    # A bounded burst, so one busy socket cannot starve the others.
                    for _ in range(256):
                        if not self._poll_once(sock, handler):
                            break
            now = time.monotonic()
            try:  # the housekeeping is guarded like a message: count it, keep serving
                self._expire(now)
                self._dispatch(now)
                if now >= next_heartbeat:
                    for identity in list(self._workers):
                        self.backend.send_multipart([identity, HEARTBEAT], zmq.NOBLOCK)
                    next_heartbeat = now + self.heartbeat_s
                if self._auth is not None and now >= next_keys_check:
                    self._reload_keys()
                    next_keys_check = now + self.keys_reload_s
            except Exception:
                self.counters["internal_errors"] += 1
                log.exception("broker: housekeeping failed (counted, going on)")
        for identity in list(self._workers):  # tell workers to re-register with the next broker
            try:
                self.backend.send_multipart([identity, RESYNC], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def _poll_once(self, sock: zmq.Socket, handler) -> bool:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return False
        try:
            handler(frames)
        except Exception:  # one guard per message: count it, keep serving
            self.counters["internal_errors"] += 1
            log.exception("broker: a message could not be handled (counted, going on)")
        return True

    # ------------------------------------------------------------------ CURVE keys
    def _clients_signature(self):
        folder = (self.curve or self.backend_curve).clients_dir
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
            return tuple(
                (e.name, e.stat().st_mtime_ns, e.stat().st_size)
                for e in entries
                if e.name.endswith(".key")
            )
        except OSError:
            return None

    def _reload_keys(self) -> None:
        """Re-read the authorised-clients folder when it changed: a removed key is refused
        from the next connection on, without a restart."""
        signature = self._clients_signature()
        if signature == self._keys_signature:
            return
        folder = (self.curve or self.backend_curve).clients_dir
        self._auth.configure_curve(domain="*", location=folder)
        self._keys_signature = signature
        self.counters["keys_reloaded"] += 1
        log.info("broker: authorised keys re-read from %s (%d keys)", folder, len(signature or ()))

    # ------------------------------------------------------------------ clients
    def _on_frontend(self, frames: list[bytes]) -> None:
        # [identity, *routing frames, payload]; REQ adds an empty delimiter frame.
        if len(frames) < 2:  # nothing after the identity: no message to answer
            self.counters["bad_envelopes"] += 1
            return
        envelope, payload = frames[:-1], frames[-1]
        if len(envelope) > MAX_ENVELOPE_FRAMES or any(
            len(f) > MAX_ENVELOPE_FRAME_BYTES for f in envelope
        ):
            # Answered through the identity alone, as to a REQ socket: [identity, "", reply].
            self.counters["bad_envelopes"] += 1
            error = (
                f"envelope of {len(envelope)} frames (limit {MAX_ENVELOPE_FRAMES}) or a frame "
                f"over {MAX_ENVELOPE_FRAME_BYTES} bytes: send [payload] or [tag, '', payload]"
            )
            self._refuse("router", [frames[0], b""], error)
            return
        self._accept_guarded("router", envelope, payload)

    def _on_pdu(self, frames: list[bytes]) -> None:
        if len(frames) != 1:  # GNU Radio's push_msg_sink sends one frame per message
            self.counters["bad_envelopes"] += 1
            self._refuse("pdu", [], f"a PDU message is one frame, got {len(frames)}")
            return
        self._accept_guarded("pdu", [], frames[0])

    def _refuse(self, origin: str, envelope: list, error: str, kind: str = INVALID) -> None:
        self._answer(
            origin, envelope, encode_reply(DecodeReply.failure(None, error, kind, "broker"))
        )

    def _accept_guarded(self, origin: str, envelope: list, payload: bytes) -> None:
        try:
            self._accept(origin, envelope, payload)
        except Exception as exc:  # one guard per message: an answer, a count, and on
            self.counters["internal_errors"] += 1
            log.exception("broker: request could not be handled (answered 'internal')")
            self._refuse(
                origin, envelope, f"broker failed on this request: {type(exc).__name__}", INTERNAL
            )

    def _accept(self, origin: str, envelope: list, payload: bytes) -> None:
        self.counters["requests"] += 1
        now = time.monotonic()
        try:
            request = decode_request(payload, self.limits)
        except ProtocolError as exc:
            self.counters["invalid"] += 1
            log.debug("refused request: %s", exc)
            self._answer(
                origin,
                envelope,
                encode_reply(DecodeReply.failure(exc, str(exc), exc.kind, "broker")),
            )
            return
        if isinstance(request, StatusRequest):
            self._answer(origin, envelope, encode_status_reply(request, self.status(), "broker"))
            return
        job = _Job(
            ticket=next(self._tickets).to_bytes(8, "big"),
            payload=payload,
            origin=origin,
            envelope=envelope,
            request_id=request.request_id,
            image_id=request.image_id,
            received=now,
        )
        if len(self._queue) >= self.queue_limit:
            self.counters["refused_queue_full"] += 1
            self._fail(job, f"broker queue full ({self.queue_limit} requests waiting)")
            return
        if self._held_bytes + len(payload) > self.queue_bytes:
            self.counters["refused_queue_bytes"] += 1
            self._fail(
                job,
                f"broker queue full ({self._held_bytes} of {self.queue_bytes} bytes held)",
            )
            return
        job.held_bytes = len(payload)
        self._held_bytes += job.held_bytes
        self._queue.append(job)

    def _answer(self, origin: str, envelope: list, payload: bytes) -> None:
        try:
            if origin == "router":
                self.frontend.send_multipart([*envelope, payload], zmq.NOBLOCK)
            elif self.pdu_push is not None:
                self.pdu_push.send(payload, zmq.NOBLOCK)
            else:
                self.counters["replies_dropped"] += 1
                return
            self.counters["replies"] += 1
        except zmq.Again:  # a reader that stopped reading must not stall the broker
            self.counters["replies_dropped"] += 1

    def _release(self, job: _Job) -> None:
        self._held_bytes -= job.held_bytes
        job.held_bytes = 0

    def _fail(self, job: _Job, error: str, kind: str = UNAVAILABLE) -> None:
        self._release(job)
        self.counters["failures"] += 1
        log.info("request %r failed: %s", job.request_id, error)
        reply = DecodeReply(
            job.request_id,
            job.image_id,
            ok=False,
            error=error,
            error_kind=kind,
            served_by="broker",
        )
        self._answer(job.origin, job.envelope, encode_reply(reply))

    # ------------------------------------------------------------------ workers
    def _on_backend(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return
        identity, command = frames[0], frames[1]
        now = time.monotonic()
        worker = self._workers.get(identity)
        if command == READY:
            try:
                info = parse_link_json(frames[2]) if len(frames) > 2 else {}
                capacity = info.get("capacity", 1)
                if isinstance(capacity, bool) or not isinstance(capacity, int):
                    raise ValueError("'capacity' is not an integer")
                if not 1 <= capacity <= MAX_WORKER_CAPACITY:
                    raise ValueError(f"'capacity' {capacity} outside 1..{MAX_WORKER_CAPACITY}")
                if not isinstance(info.get("info", {}), dict):  # merged into status()
                    raise ValueError("'info' is not an object")
                info = bounded_value(info)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                self.counters["bad_worker_messages"] += 1
                log.warning("worker %r sent an unreadable READY: %s", identity[:64], exc)
                return
            if worker is None and len(self._workers) >= MAX_WORKERS:
                self.counters["refused_workers"] += 1
                return
            if worker is not None:  # a restarted session: what it held is lost
                self._drop_worker(worker, "re-registered")
            self._workers[identity] = _Worker(identity, capacity, now, info=info)
            log.info("worker %s joined (capacity %d)", identity.decode(errors="replace"), capacity)
            return
        if worker is None:
            # Unknown (e.g. this broker restarted, or it was declared dead): ask it to register.
            self.backend.send_multipart([identity, RESYNC], zmq.NOBLOCK)
            self.counters["late_replies" if command == REPLY else "unknown_worker_messages"] += 1
            return
        worker.last_seen = now
        if command == HEARTBEAT:
            if len(frames) > 2:
                try:
                    worker.status = bounded_value(parse_link_json(frames[2]))
                except (ValueError, RecursionError):
                    self.counters["bad_worker_messages"] += 1  # the last good status stays
        elif command == REPLY and len(frames) == 4:
            ticket, payload = frames[2], frames[3]
            job = self._inflight.get(ticket)
            if job is None or job.worker != identity:
                self.counters["late_replies"] += 1  # already answered or given to another worker
                return
            del self._inflight[ticket]
            worker.inflight.discard(ticket)
            worker.served += 1
            try:  # a worker's reply is checked like a request before it goes on
                check_reply(payload, self.limits, job.request_id)
            except ProtocolError as exc:
                self.counters["bad_worker_replies"] += 1
                name = bounded_text(identity.decode(errors="replace"), 64)
                log.warning("worker %s sent a bad reply: %s", name, exc)
                self._fail(job, f"worker {name} sent an unusable reply: {exc}", INTERNAL)
                return
            self._release(job)
            self._latency_ms.append((now - job.received) * 1e3)
            self._answer(job.origin, job.envelope, payload)
        elif command == BYE:
            self._drop_worker(worker, "left")
        else:
            self.counters["bad_worker_messages"] += 1

    def _drop_worker(self, worker: _Worker, why: str) -> None:
        self._workers.pop(worker.identity, None)
        log.log(
            logging.INFO if why == "left" else logging.WARNING,
            "worker %s %s holding %d requests",
            worker.identity.decode(errors="replace"),
            why,
            len(worker.inflight),
        )
        # Oldest first back to the head of the queue, so they keep their place.
        for ticket in sorted(worker.inflight, reverse=True):
            job = self._inflight.pop(ticket, None)
            if job is None:
                continue
            if job.attempts >= self.max_attempts:
                self._fail(
                    job,
                    f"worker {worker.identity.decode(errors='replace')} {why} while decoding; "
                    f"gave up after {job.attempts} attempts",
                )
            else:
                self.counters["redispatched"] += 1
                job.worker = None
                self._queue.appendleft(job)
        worker.inflight.clear()

    def _expire(self, now: float) -> None:
        deadline = self.heartbeat_s * self.liveness
        for worker in list(self._workers.values()):
            if now - worker.last_seen > deadline:
                self._drop_worker(worker, f"stopped answering (no heartbeat for {deadline:.1f} s)")
        while self._queue and now - self._queue[0].received > self.queue_timeout_s:
            self._fail(self._queue.popleft(), f"no worker free within {self.queue_timeout_s:.0f} s")
        if self._inflight:
            for ticket, job in list(self._inflight.items()):
                if now - job.dispatched > self.request_timeout_s:
                    self._inflight.pop(ticket)
                    worker = self._workers.get(job.worker)
                    if worker is not None:
                        worker.inflight.discard(ticket)
                    self._fail(job, f"no reply within {self.request_timeout_s:.0f} s")

    def _dispatch(self, now: float) -> None:
        while self._queue and self._workers:
            # Most free capacity first; among equals the one served longest ago.
            worker = max(self._workers.values(), key=lambda w: (w.free, -w.last_dispatch))
            if worker.free <= 0:
                return
            job = self._queue.popleft()
            job.attempts += 1
            job.worker = worker.identity
            job.dispatched = now
            worker.inflight.add(job.ticket)
            worker.last_dispatch = now
            self._inflight[job.ticket] = job
            try:
                self.backend.send_multipart(
                    [worker.identity, REQUEST, job.ticket, job.payload], zmq.NOBLOCK, copy=False
                )
            except zmq.Again:  # its queue is full: the heartbeat check will judge the worker
                self.counters["dropped_sends"] += 1

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        return {
            "broker": {
                "uptime_s": round(time.time() - self._started, 1),
                "queue_depth": len(self._queue),
                "inflight": len(self._inflight),
                "workers": len(self._workers),
                "queue_bytes": self._held_bytes,
                # Built by the broker's serving thread itself: while it answers, it lives.
                "threads_alive": {"broker": True},
                "latency_ms": percentiles(self._latency_ms),
                **{k: int(v) for k, v in sorted(self.counters.items())},
            },
            "workers": [
                {
                    "id": w.identity.decode(errors="replace"),
                    "capacity": w.capacity,
                    "inflight": len(w.inflight),
                    "served_via_broker": w.served,
                    "heartbeat_age_s": round(time.monotonic() - w.last_seen, 2),
                    **(w.info.get("info") if isinstance(w.info.get("info"), dict) else {}),
                    **w.status,
                }
                for w in self._workers.values()
            ],
        }


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serving")
    group.add_argument("--bind", default="tcp://127.0.0.1:5555", help="address clients connect to")
    group.add_argument(
        "--pdu-pull",
        metavar="ADDRESS",
        help="also take PDUs from a GNU Radio push_msg_sink (PULL bind)",
    )
    group.add_argument(
        "--pdu-push",
        metavar="ADDRESS",
        help="send their replies to a GNU Radio pull_msg_source (PUSH bind)",
    )
    group.add_argument(
        "--allow-remote", action="store_true", help="allow binding to non-loopback interfaces"
    )
    group.add_argument(
        "--insecure", action="store_true", help="with --allow-remote: serve without CURVE"
    )
    group.add_argument(
        "--curve-secret", metavar="FILE", help="server NAME.key_secret: enables CURVE"
    )
    group.add_argument(
        "--curve-clients", metavar="DIR", help="folder of authorised client/worker NAME.key files"
    )
    group.add_argument(
        "--max-message-mb", type=float, default=32.0, help="larger requests get an error reply"
    )
    group.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_LIMITS.max_image_pixels,
        help="largest image (H*W) a request may ask for (default %(default)s: 2048x2048)",
    )
    group.add_argument(
        "--max-user-kb",
        type=float,
        default=DEFAULT_LIMITS.max_user_bytes / 1024,
        help="largest 'user' metadata dict per request, serialised (default %(default)s)",
    )
    group.add_argument(
        "--max-steps",
        type=int,
        default=DEFAULT_LIMITS.max_steps,
        help="most refiner sampling steps a request may ask for (default %(default)s)",
    )
    group.add_argument("--queue-limit", type=int, default=1000, help="requests waiting, at most")
    group.add_argument(
        "--queue-mb",
        type=float,
        default=256.0,
        help="bytes of requests the broker holds (waiting or in flight), at most",
    )
    group.add_argument(
        "--queue-timeout", type=float, default=30.0, help="seconds a request may wait for a worker"
    )
    group.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    group.add_argument("--max-attempts", type=int, default=2, help="workers tried per request")


def limits_from_args(args) -> Limits:
    check_positive(
        max_message_mb=args.max_message_mb,
        max_pixels=args.max_pixels,
        max_user_kb=args.max_user_kb,
        max_steps=args.max_steps,
    )
    return Limits(
        max_message_bytes=int(args.max_message_mb * (1 << 20)),
        max_image_pixels=int(args.max_pixels),
        max_user_bytes=int(args.max_user_kb * 1024),
        max_steps=int(args.max_steps),
    )


def broker_from_args(args, backend: str, context: zmq.Context | None = None) -> Broker:
    curve = None
    if given_together(curve_secret=args.curve_secret, curve_clients=args.curve_clients):
        curve = CurveServer.from_files(args.curve_secret, args.curve_clients)
    for address in (args.pdu_pull, args.pdu_push):
        # GNU Radio's zeromq blocks have no CURVE option: the PDU sockets are always plain.
        if address and not _is_local(address) and not args.insecure:
            raise WorkerError(
                f"PDU socket {address} would be unencrypted and open to anyone (GNU Radio's "
                "zeromq blocks cannot use CURVE): bind it to 127.0.0.1, or pass --insecure"
            )
    if args.allow_remote and curve is None and not args.insecure:
        raise WorkerError(
            "--allow-remote without CURVE keys would serve anyone in clear text: add "
            "--curve-secret/--curve-clients (see 'diffjscc keys'), or --insecure to accept that"
        )
    return Broker(
        args.bind,
        backend,
        args.pdu_pull,
        args.pdu_push,
        limits=limits_from_args(args),
        heartbeat_s=args.heartbeat,
        max_attempts=args.max_attempts,
        queue_limit=args.queue_limit,
        queue_bytes=int(args.queue_mb * (1 << 20)) if args.queue_mb > 0 else 0,
        queue_timeout_s=args.queue_timeout,
        allow_remote=args.allow_remote,
        curve=curve,
        backend_curve=curve if not backend.startswith("inproc") else None,
        context=context,
    )


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM (systemd, kill, a test's terminate()) stops as cleanly as Ctrl-C: workers say BYE."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def main(argv: list[str] | None = None) -> int:
    """``diffjscc worker broker``: a broker alone; workers join with ``diffjscc worker --connect``."""
    parser = argparse.ArgumentParser(
        prog="diffjscc worker broker",
        description="Serve one client address in front of any number of workers.",
    )
    add_broker_arguments(parser)
    parser.add_argument(
        "--backend", default="tcp://127.0.0.1:5556", help="address workers connect to"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    broker = broker_from_args(args, args.backend)
    stop_on_sigterm()
    print(f"broker: clients -> {args.bind}, workers -> {args.backend}", flush=True)
    try:
        broker.run()
    except KeyboardInterrupt:
        pass
    except WorkerError:
        raise  # a setting or address that does not work: the CLI's one-line error
    except Exception:  # logged by the broker; a supervisor restarts a non-zero exit
        return 1
    return 0

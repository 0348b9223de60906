#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""Image sink: frame PDUs -> whole images -> decoder (worker) -> PNG files and a message."""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import math
import queue
import string
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pmt
from gnuradio import gr

from diffjscc.errors import ConfigError, DiffJSCCError
from diffjscc.metrics import psnr

from ._frames import BadPDU, check_frame_meta, meta_to_pmt, pdu_parts

IN_PDUS = pmt.intern("pdus")
IN_TX_INFO = pmt.intern("tx_info")
OUT_IMAGES = pmt.intern("images")
POLICIES = ("latest", "all")
DEFAULT_NAME_TEMPLATE = "{prefix}{seq:04d}_id{image_id}{suffix}.png"
# Frames waiting for the sink's thread: it only assembles (decoding runs elsewhere), so a
# full queue means a flood, not a slow decoder; more frames are dropped and counted.
FRAME_QUEUE_SIZE = 1024
MAX_IN_FLIGHT = 64
# Messages the thread takes in one pass before it looks at decodes and timeouts again.
BATCH = 256
# How often the thread looks at its decodes when no frame arrives.
TICK_S = 0.02
# stop() without a drain: how long it waits for the thread, then for the decoder to close.
STOP_THREAD_S = 0.5
STOP_DECODER_S = 1.2
# A reply may come this long after the decoder's own budget before the image is given up.
REPLY_MARGIN_S = 1.0
# zlib level of the PNGs: a live sink writes one per image; level 1 takes about a sixth of
# the default's time (0.04 s against 0.24 s for 768x512 here) for a tenth more bytes.
PNG_LEVEL = 1
# What the block keeps for results() and PSNR (bounded, however long it runs).
RESULTS_KEPT = 1000
ORIGINALS_KEPT = 1024
LATENCIES_KEPT = 512
COUNTERS = (
    "messages_in",
    "frames_in",
    "frames_malformed",
    "frames_dropped_queue_full",
    "tx_info_malformed",
    "images_complete",
    "images_partial",
    "images_decoded",
    "images_dropped_stale",
    "images_dropped_queue_full",
    "images_cancelled",
    "decode_errors",
    "decode_timeouts",
    "write_errors",
    "internal_errors",
)


@dataclass
class _Job:
    """An assembled image on its way through the decoder."""

    image: object  # diffjscc.radio.AssembledImage
    first_frame_at: float  # time.monotonic() when its first frame reached the sink
    seq: int = -1
    future: concurrent.futures.Future | None = None
    submitted_at: float = 0.0
    deadline: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)


def _check_template(template: str) -> str:
    template = str(template)
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        sample = template.format(prefix="img", seq=1, image_id=2, kind="received", suffix="")
    except (ValueError, KeyError, IndexError) as exc:
        raise ConfigError(f"name_template {template!r} is not a usable template: {exc}") from None
    allowed = {"prefix", "seq", "image_id", "kind", "suffix"}
    if fields - allowed:
        raise ConfigError(f"name_template {template!r}: unknown fields {sorted(fields - allowed)}")
    if not sample.endswith(".png") or "/" in sample or "\\" in sample or sample.startswith("."):
        raise ConfigError(
            f"name_template {template!r} must give a file name ending in .png, not a path"
        )
    if not fields & {"kind", "suffix"}:
        raise ConfigError(f"name_template {template!r} needs {{kind}} or {{suffix}}")
    return template


class image_sink(gr.basic_block):
    """Gathers the frames of each image, has them decoded, writes PNGs, reports.

    Frames (PDUs from ``jscc_receiver``) are queued by the message handler and
    handled by a thread of this block, which assembles them per image
    (``diffjscc.radio.ImageAssembler``); an image whose frames stop arriving
    for ``assembly_timeout_s`` is decoded with what arrived (zeros for the
    missing symbols) and marked partial. The CSI handed to the decoder is the
    receiver's estimate, never the channel's true SNR.

    Decoding goes through the decoder interface of ``diffjscc.worker.client``
    (``submit`` / ``cancel`` / ``budget_s`` / ``close``): a ``WorkerClient``
    for the worker at ``worker_address`` (with in-process decoding as
    fallback), or a ``LocalDecoder`` (this process, its own thread) when no
    address is set. At most ``max_in_flight`` images are being decoded at a
    time. Which assembled images are decoded is the ``policy``:

    - ``latest`` (live displays): the newest image waiting is decoded next;
      older ones are dropped and counted (``images_dropped_stale``), so what is
      shown stays current however fast images arrive;
    - ``all`` (measurements): every image, through a queue of ``queue_size``
      images; when it is full, new images are dropped and counted
      (``images_dropped_queue_full``).

    For each image it writes a PNG named by ``name_template`` (fields prefix,
    seq, image_id, kind = received / refined, suffix = "" / "_refined"; the
    default gives ``<prefix><seq>_id<image_id>.png``, and "{kind}.png" keeps
    one current file of each kind) into ``output_dir``, atomically, and sends
    on ``images`` a dict: image_id, seq, path, refined_path, partial,
    frames_received, frame_count, snr_db, h, decode_s, latency_s (first frame
    received -> PNG written), served_by, error, counters (``stats()``), and
    psnr / psnr_refined when the original is known (``tx_info`` from the
    image source, same process). The decoder's CSI is the receiver's estimate:
    for AWGN models the image's SNR, for block-Rayleigh models the link's average
    SNR kept across images with h scaled to it (``diffjscc.radio.csi.LinkCSI``).
    With ``print_stats`` a line of statistics
    goes to stdout every ``stats_interval_s`` seconds.

    Connect ``tx_info`` only in flowgraphs that run until stopped: GNU Radio
    ends a block with only message inputs when the first of its message
    sources ends, so in a run that ends by itself (a source without repeat)
    the sink would stop before the receiver's last frames reach it.

    Bad input (any PDU that is not a frame, or whose numbers are absurd) is
    dropped and counted, never fatal: see ``stats()``. At the end of a stream
    (the upstream blocks have finished) the images already received are
    decoded within ``drain_timeout_s``; a stop of the flowgraph (closing the
    GUI, Ctrl-C) returns within 2 s: waiting images and decodes in flight are
    cancelled and counted (``images_cancelled``).
    """

    def __init__(
        self,
        output_dir="received",
        worker_address="",
        refine=False,
        assembly_timeout_s=2.0,
        decode_timeout_s=60.0,
        drain_timeout_s=10.0,
        prefix="img",
        queue_size=16,
        decoder=None,
        policy="latest",
        max_in_flight=1,
        print_stats=True,
        stats_interval_s=5.0,
        name_template=DEFAULT_NAME_TEMPLATE,
    ):
        gr.basic_block.__init__(self, name="diffjscc_image_sink", in_sig=None, out_sig=None)
        # The block's GRC asserts, for Python callers: a bad value would otherwise fail in
        # start(), on GNU Radio's thread, or make stop() give up on decoding at once.
        for name, value in (
            ("assembly_timeout_s", assembly_timeout_s),
            ("decode_timeout_s", decode_timeout_s),
            ("stats_interval_s", stats_interval_s),
        ):
            if not float(value) > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if not float(drain_timeout_s) >= 0:
            raise ConfigError(f"drain_timeout_s must be >= 0, got {drain_timeout_s!r}")
        self.set_policy(policy)
        self.set_max_in_flight(max_in_flight)
        self.set_queue_size(queue_size)
        self.name_template = _check_template(name_template)
        self.output_dir = Path(output_dir).expanduser()
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DiffJSCCError(f"cannot create output folder {self.output_dir}: {exc}") from exc
        self.worker_address = str(worker_address or "")
        self.refine = bool(refine)
        self.assembly_timeout_s = float(assembly_timeout_s)
        self.decode_timeout_s = float(decode_timeout_s)
        self.drain_timeout_s = float(drain_timeout_s)
        self.stats_interval_s = float(stats_interval_s)
        self.print_stats = bool(print_stats)
        self.prefix = str(prefix)
        self._decoder = decoder
        self._owns_decoder = decoder is None
        self._inbox: queue.Queue = queue.Queue(maxsize=FRAME_QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._stop_mode: str | None = None  # None while running; "drain" or "abort"
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._originals: collections.OrderedDict[int, str] = collections.OrderedDict()
        self._references: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._results: collections.deque[dict] = collections.deque(maxlen=RESULTS_KEPT)
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCIES_KEPT)
        self._first_frame_at: dict[int, float] = {}  # image id -> arrival of its first frame
        self._waiting: collections.deque[_Job] = collections.deque()  # assembled, not submitted
        self._in_flight: list[_Job] = []
        self._assembler = None
        self._link_csi = None
        self._started_at = time.monotonic()
        self._next_stats_at = 0.0
        self._internal_logged = 0
        self._last_latency: float | None = None
        self._counters = dict.fromkeys(COUNTERS, 0)
        self.message_port_register_in(IN_PDUS)
        self.set_msg_handler(IN_PDUS, self._on_pdu)
        self.message_port_register_in(IN_TX_INFO)
        self.set_msg_handler(IN_TX_INFO, self._on_tx_info)
        self.message_port_register_out(OUT_IMAGES)

    # -- run-time settings (GRC callbacks) ------------------------------------------------

    def set_policy(self, policy) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"policy must be one of {POLICIES}, not {policy!r}")
        self.policy = policy

    def set_max_in_flight(self, max_in_flight) -> None:
        if isinstance(max_in_flight, bool) or not 1 <= int(max_in_flight) <= MAX_IN_FLIGHT:
            raise ConfigError(
                f"max_in_flight must be an integer in 1..{MAX_IN_FLIGHT}, got {max_in_flight!r}"
            )
        self.max_in_flight = int(max_in_flight)

    def set_queue_size(self, queue_size) -> None:
        if isinstance(queue_size, bool) or not 1 <= int(queue_size) <= 4096:
            raise ConfigError(f"queue_size must be an integer in 1..4096, got {queue_size!r}")
        self.queue_size = int(queue_size)

    def set_print_stats(self, print_stats) -> None:
        self.print_stats = bool(print_stats)

    def set_refine(self, refine) -> None:
        self.refine = bool(refine)

    # -- what users read ------------------------------------------------------------------

    def stats(self) -> dict:
        with self._lock:
            counters = dict(self._counters)
            latencies = sorted(self._latencies)
            counters["waiting"] = len(self._waiting)
            counters["in_flight"] = len(self._in_flight)
            asm = self._assembler
        counters["frames_queued"] = self._inbox.qsize()
        counters["serving"] = self._thread is not None and self._thread.is_alive()
        counters["latency_last_s"] = self._last_latency
        counters["latency_p50_s"] = _quantile(latencies, 0.50)
        counters["latency_p95_s"] = _quantile(latencies, 0.95)
        if asm is not None:
            counters.update({f"assembler_{k}": v for k, v in dict(asm.stats).items()})
        return counters

    def results(self) -> list[dict]:
        """The dicts sent on ``images`` lately (the last 1000): decoded images, their metrics."""
        with self._lock:
            return list(self._results)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    # -- message handlers: enqueue only, never block, never raise -------------------------

    def _enqueue(self, kind: str, msg) -> None:
        try:
            self._count("messages_in")
            self._inbox.put_nowait((kind, msg, time.monotonic()))
        except queue.Full:
            self._count("frames_dropped_queue_full")
        except Exception:  # an exception here would end GNU Radio's thread of this block
            self._count("internal_errors")

    def _on_pdu(self, msg) -> None:
        self._enqueue("pdu", msg)

    def _on_tx_info(self, msg) -> None:
        self._enqueue("tx_info", msg)

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> bool:
        from diffjscc.radio import ImageAssembler
        from diffjscc.radio.csi import LinkCSI

        if self._decoder is None:
            self._decoder = self._make_decoder()
        self._assembler = ImageAssembler(timeout_s=self.assembly_timeout_s)
        self._link_csi = LinkCSI()
        self._stop_mode = None
        self._stop_event.clear()
        self._started_at = time.monotonic()
        self._next_stats_at = self._started_at + self.stats_interval_s
        self._thread = threading.Thread(
            target=self._serve, name=f"{self.alias()}-sink", daemon=True
        )
        self._thread.start()
        return True

    def stop(self) -> bool:
        """Drain at the end of a stream; otherwise cancel what is left and return within 2 s."""
        thread, self._thread = self._thread, None
        # GNU Radio marks a message-only block finished when its upstream blocks have
        # ended (the end of a finite run); a flowgraph stopped by the user leaves it unset.
        drain = bool(self.to_basic_block().finished()) and self.drain_timeout_s > 0
        self._stop_mode = "drain" if drain else "abort"
        self._stop_event.set()
        if thread is not None:
            thread.join(self.drain_timeout_s + STOP_THREAD_S if drain else STOP_THREAD_S)
            if thread.is_alive():
                self._stop_mode = "abort"  # the drain ran out: the thread cancels the rest
                thread.join(STOP_THREAD_S)
            if thread.is_alive():
                self.logger.error("sink thread did not stop in time")
        if self._owns_decoder and self._decoder is not None:
            try:
                self._decoder.close(timeout_s=STOP_DECODER_S)
            except Exception as exc:  # stop() must return
                self.logger.error(f"closing the decoder failed: {exc!r}")
            self._decoder = None
        return True

    def _make_decoder(self):
        from diffjscc.worker.client import LocalDecoder, WorkerClient

        # The sink bounds what it submits (max_in_flight, settable at run time up to 64).
        local = LocalDecoder(timeout_s=self.decode_timeout_s, max_pending=MAX_IN_FLIGHT)
        if not self.worker_address:
            return local
        return WorkerClient(
            self.worker_address,
            timeout_s=self.decode_timeout_s,
            retries=1,
            fallback=local,
        )

    # -- the sink's thread ----------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            try:
                if self._step():
                    return
            except Exception:  # one guard per pass: a bug costs a pass, never the sink
                self._internal_error("serving loop")
                if self._stop_mode == "abort":
                    return  # stopping: no second try at what just failed
                time.sleep(TICK_S)

    def _internal_error(self, where: str) -> None:
        self._count("internal_errors")
        if self._internal_logged < 20:  # a flood of one bug must not flood the log
            self._internal_logged += 1
            self.logger.error(f"{where}: {traceback.format_exc(limit=8)}")

    def _step(self) -> bool:
        """One pass: take messages, judge timeouts, submit, collect. True when finished."""
        timeout = 0.0 if self._stop_event.is_set() else TICK_S
        try:
            item = self._inbox.get(timeout=timeout) if timeout else self._inbox.get_nowait()
        except queue.Empty:
            item = None
        taken = 0
        while item is not None:
            self._handle_guarded(item)
            taken += 1
            if taken >= BATCH:
                break
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                item = None
        # Frames already queued are added before timeouts are judged, so a slow
        # pass never makes an image look partial.
        if taken < BATCH:
            self._take(self._assembler.poll())
        self._collect()
        self._schedule()
        self._maybe_print_stats()
        mode = self._stop_mode
        if mode is None or (mode == "drain" and taken):
            return False
        return self._finish_stopping()

    def _handle_guarded(self, item) -> None:
        try:
            self._handle(item)
        except Exception:  # one guard per message
            self._internal_error("message dropped")

    def _handle(self, item) -> None:
        kind, msg, arrived = item
        if kind == "tx_info":
            self._on_original(msg)
            return
        self._count("frames_in")
        try:
            meta, symbols = pdu_parts(msg)
            check_frame_meta(meta)
        except BadPDU as exc:
            self._count("frames_malformed")
            self.logger.debug(f"dropping malformed frame PDU: {exc}")
            return
        # Frames whose fields do not fit together are counted by the assembler (bad_frame).
        self._take(self._assembler.add_meta(meta, symbols), arrived)

    def _on_original(self, msg) -> None:
        try:
            info = pmt.to_python(msg) if pmt.is_dict(msg) and pmt.length(msg) <= 64 else None
            image_id, path = int(info["image_id"]), str(info["path"])
        except (TypeError, KeyError, ValueError, OverflowError, RecursionError):
            self._count("tx_info_malformed")
            return
        if len(path) > 4096:
            self._count("tx_info_malformed")
            return
        self._originals[image_id] = path
        self._originals.move_to_end(image_id)
        while len(self._originals) > ORIGINALS_KEPT:
            self._originals.popitem(last=False)

    def _take(self, images, arrived: float | None = None) -> None:
        """Assembled images -> the waiting list (by the policy); note new images' first frame."""
        now = time.monotonic() if arrived is None else arrived
        for image in images:
            first = self._first_frame_at.pop(int(image.image_id), now)
            self._count("images_partial" if image.partial else "images_complete")
            self._wait(_Job(image=image, first_frame_at=first))
        pending = set(self._assembler.pending_ids)
        for image_id in pending:
            self._first_frame_at.setdefault(image_id, now)
        for image_id in [k for k in self._first_frame_at if k not in pending]:
            del self._first_frame_at[image_id]

    def _wait(self, job: _Job) -> None:
        with self._lock:
            if self.policy == "latest":
                self._counters["images_dropped_stale"] += len(self._waiting)
                self._waiting.clear()
            elif len(self._waiting) >= self.queue_size:
                self._counters["images_dropped_queue_full"] += 1
                return
            self._waiting.append(job)

    def _schedule(self) -> None:
        while True:
            with self._lock:
                if not self._waiting or len(self._in_flight) >= self.max_in_flight:
                    return
                # latest: the list holds one image; all: oldest first.
                job = self._waiting.popleft()
            self._submit(job)

    def _submit(self, job: _Job) -> None:
        from diffjscc.registry import get_model_spec
        from diffjscc.worker.protocol import DecodeRequest

        image = job.image
        job.seq = next(self._seq)
        job.submitted_at = time.monotonic()
        try:
            # The CSI in the form the model was trained with (diffjscc.radio.csi): AWGN models
            # the image's own estimate, Rayleigh models the link's average SNR with h.
            snr_db, h = self._link_csi.for_decoder(
                get_model_spec(image.model).channel_type,
                float(image.snr_db),
                complex(image.h),
                float(image.design_snr_db),
            )
            request = DecodeRequest(
                request_id=job.seq,
                image_id=int(image.image_id),
                model=image.model,
                image_shape=tuple(int(v) for v in image.image_shape),
                snr_db=snr_db,
                h=h,
                symbols=np.asarray(image.symbols, dtype=np.complex64),
                refine=self.refine,
            )
            job.future = self._decoder.submit(request)
            job.deadline = job.submitted_at + float(self._decoder.budget_s) + REPLY_MARGIN_S
        except Exception as exc:  # the interface answers with failure replies; just in case
            job.error = f"cannot submit: {type(exc).__name__}: {exc}"[:300]
            self._finish(job, None)
            return
        with self._lock:
            self._in_flight.append(job)

    def _collect(self) -> None:
        now = time.monotonic()
        with self._lock:
            jobs = list(self._in_flight)
        for job in jobs:
            if job.future.done():
                try:
                    reply = job.future.result(timeout=0)
                except Exception as exc:  # the interface resolves with replies; just in case
                    reply, job.error = None, f"{type(exc).__name__}: {exc}"[:300]
            elif now >= job.deadline:
                self._cancel(job)
                self._count("decode_timeouts")
                reply, job.error = None, f"no reply within {job.deadline - job.submitted_at:.0f} s"
            else:
                continue
            with self._lock:
                self._in_flight.remove(job)
            self._finish(job, reply)

    def _cancel(self, job: _Job) -> None:
        try:
            self._decoder.cancel(job.future)
        except Exception:
            self._internal_error("cancel")

    def _finish_stopping(self) -> bool:
        """Stopping: drain (end of stream) until done or out of time, else cancel. True: done."""
        if self._stop_mode == "drain":
            self._take(self._assembler.flush())
            self._schedule()
            with self._lock:
                busy = bool(self._waiting or self._in_flight)
            if busy:
                futures = [job.future for job in list(self._in_flight)]
                concurrent.futures.wait(
                    futures, timeout=TICK_S, return_when=concurrent.futures.FIRST_COMPLETED
                )
                return False
        with self._lock:
            dropped, self._waiting = list(self._waiting), collections.deque()
            cancelled, self._in_flight = self._in_flight, []
            self._counters["images_cancelled"] += len(dropped) + len(cancelled)
        for job in cancelled:
            self._cancel(job)
        unprocessed = self._inbox.qsize()
        if unprocessed:
            self.logger.info(f"stopped with {unprocessed} frames not looked at")
        self._maybe_print_stats(force=self.print_stats)
        return True

    # -- results --------------------------------------------------------------------------

    def _finish(self, job: _Job, reply) -> None:
        try:
            self._report(job, reply)
        except Exception:  # a bug must cost one image, not the sink
            self._internal_error(f"image {job.image.image_id} lost")

    def _file_name(self, job: _Job, kind: str) -> Path:
        name = self.name_template.format(
            prefix=self.prefix,
            seq=job.seq,
            image_id=int(job.image.image_id),
            kind=kind,
            suffix="" if kind == "received" else f"_{kind}",
        )
        return self.output_dir / name

    def _reference(self, image_id: int):
        from diffjscc.image import load_image

        path = self._originals.get(image_id)
        if path is None:
            return None, None
        if path not in self._references:
            try:
                self._references[path] = load_image(path)
            except DiffJSCCError:
                return path, None
            while len(self._references) > 4:
                self._references.popitem(last=False)
        return path, self._references[path]

    def _report(self, job: _Job, reply) -> None:
        from diffjscc.image import save_png

        image = job.image
        result = {
            "image_id": int(image.image_id),
            "seq": job.seq,
            "path": None,
            "refined_path": None,
            "partial": bool(image.partial),
            "frames_received": int(image.frames_received),
            "frame_count": int(image.frame_count),
            "snr_db": float(image.snr_db),
            "h": complex(image.h),
            "decode_s": time.monotonic() - job.submitted_at,
            "first_frame_at": job.first_frame_at,  # time.monotonic() clock, for breakdowns
            "submitted_at": job.submitted_at,
            "written_at": None,
            "latency_s": None,
            "served_by": None,
            "error": job.error,
        }
        if reply is not None:
            result["served_by"] = getattr(reply, "served_by", None)
            if not reply.ok or reply.image is None:
                result["error"] = str(reply.error or "decoder returned no image")[:300]
        if result["error"] is not None:
            self._count("decode_errors")
            self.logger.warn(f"image {image.image_id}: decoding failed: {result['error']}")
        else:
            outputs = [
                ("path", reply.image, "received"),
                ("refined_path", reply.refined, "refined"),
            ]
            for key, pixels, kind in outputs:
                if pixels is None:
                    continue
                target = self._file_name(job, kind)
                try:
                    result[key] = str(save_png(target, pixels, compress_level=PNG_LEVEL))
                except (OSError, DiffJSCCError) as exc:
                    self._count("write_errors")
                    self.logger.error(f"cannot write {target}: {exc}")
            written = time.monotonic()
            result["written_at"] = written
            if result["path"] is not None:
                self._count("images_decoded")
                result["latency_s"] = written - job.first_frame_at
                with self._lock:
                    self._latencies.append(result["latency_s"])
                    self._last_latency = result["latency_s"]
            original, reference = self._reference(int(image.image_id))
            if reference is not None:
                for key, pixels in (("psnr", reply.image), ("psnr_refined", reply.refined)):
                    # uint8 by the protocol; a stray dtype costs the PSNR, not the image.
                    if (
                        pixels is not None
                        and pixels.shape == reference.shape
                        and pixels.dtype == reference.dtype
                    ):
                        result[key] = psnr(reference, pixels)
                result["original_path"] = original
            for key, value in dict(getattr(reply, "metrics", None) or {}).items():
                result.setdefault(key, value)
            result["timing"] = dict(getattr(reply, "timing", None) or {})
        result["counters"] = self.stats()  # bad input so far, for whoever reads the messages
        with self._lock:
            self._results.append(result)
        self.message_port_pub(OUT_IMAGES, meta_to_pmt(result))

    # -- the statistics line --------------------------------------------------------------

    def _maybe_print_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self.print_stats or now < self._next_stats_at):
            return
        self._next_stats_at = now + self.stats_interval_s
        print(self.stats_line(now), file=sys.stdout, flush=True)

    def stats_line(self, now: float | None = None) -> str:
        """One line: decoded images and their rate, latency, drops, frames, errors."""
        s = self.stats()
        elapsed = max(1e-9, (time.monotonic() if now is None else now) - self._started_at)
        latency = "latency -"
        if s["latency_p50_s"] is not None:
            latency = f"latency p50 {s['latency_p50_s']:.2f} s p95 {s['latency_p95_s']:.2f} s"
        errors = s["decode_errors"] + s["write_errors"] + s["internal_errors"]
        return (
            f"{self.alias()}: {s['images_decoded']} images decoded "
            f"({s['images_decoded'] / elapsed:.2f}/s), {latency}, "
            f"dropped {s['images_dropped_stale']} stale {s['images_dropped_queue_full']} "
            f"queue-full, {s['images_partial']} partial, "
            f"frames {s['frames_in']} ({s['frames_malformed']} bad, "
            f"{s['frames_dropped_queue_full']} dropped), {s['in_flight']} in flight, "
            f"{errors} errors"
        )


def _quantile(ordered: list[float], q: float):
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""Image sink: frame PDUs -> whole images -> decoder (worker) -> PNG files and a message."""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pmt
from gnuradio import gr

from diffjscc.errors import ConfigError, DiffJSCCError
from diffjscc.metrics import psnr

from ._frames import BadPDU, meta_to_pmt, pdu_parts

IN_PDUS = pmt.intern("pdus")
IN_TX_INFO = pmt.intern("tx_info")
OUT_IMAGES = pmt.intern("images")
_STOP = object()


class image_sink(gr.basic_block):
    """Gathers the frames of each image, has them decoded, writes PNGs, reports.

    Frames (PDUs from ``jscc_receiver``) are queued by the message handler and
    handled by a thread of this block, so decoding never blocks the scheduler.
    The thread assembles frames per image (``diffjscc.radio.ImageAssembler``);
    an image whose frames stop arriving for ``assembly_timeout_s`` is decoded
    with what arrived (zeros for the missing symbols) and marked partial.
    Decoding goes to the worker at ``worker_address`` (ZMQ, with in-process
    decoding as fallback) or, with no address, runs in this process. The CSI
    handed to the decoder is the receiver's estimate, never the channel's
    true SNR.

    For each image it writes ``<prefix><seq>_id<image_id>.png`` (and
    ``..._refined.png`` when refinement is on and available) into
    ``output_dir``, atomically, and sends on ``images`` a dict: image_id,
    seq, path, refined_path, partial, frames_received, frame_count, snr_db,
    h, decode_s, served_by, error, counters (``stats()``), and psnr /
    psnr_refined when the original is known (``tx_info`` from the image source, same process).

    Connect ``tx_info`` only in flowgraphs that run until stopped: GNU Radio
    ends a block with only message inputs when the first of its message
    sources ends, so in a run that ends by itself (a source without repeat)
    the sink would stop before the receiver's last frames reach it.

    Bad input is dropped and counted, never fatal: see ``stats()``.
    On stop, frames already received are decoded within ``drain_timeout_s``.
    """

    def __init__(
        self,
        output_dir="received",
        worker_address="",
        refine=False,
        assembly_timeout_s=2.0,
        decode_timeout_s=60.0,
        drain_timeout_s=120.0,
        prefix="img",
        queue_size=4096,
        decoder=None,
    ):
        gr.basic_block.__init__(self, name="diffjscc_image_sink", in_sig=None, out_sig=None)
        # The block's GRC asserts, for Python callers: a bad value would otherwise fail in
        # start(), on GNU Radio's thread, or make stop() give up on decoding at once.
        for name, value in (
            ("assembly_timeout_s", assembly_timeout_s),
            ("decode_timeout_s", decode_timeout_s),
        ):
            if not float(value) > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if not float(drain_timeout_s) >= 0:
            raise ConfigError(f"drain_timeout_s must be >= 0, got {drain_timeout_s!r}")
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
        self.prefix = str(prefix)
        self._decoder = decoder
        self._owns_decoder = decoder is None
        self._queue: queue.Queue = queue.Queue(maxsize=int(queue_size))
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._originals: dict[int, str] = {}  # image_id -> original image path (from tx_info)
        self._results: list[dict] = []
        self._assembler = None
        self._counters = dict.fromkeys(
            (
                "messages_in",
                "frames_in",
                "frames_malformed",
                "frames_dropped_queue_full",
                "images_complete",
                "images_partial",
                "images_decoded",
                "decode_errors",
                "write_errors",
                "internal_errors",
            ),
            0,
        )
        self.message_port_register_in(IN_PDUS)
        self.set_msg_handler(IN_PDUS, self._on_pdu)
        self.message_port_register_in(IN_TX_INFO)
        self.set_msg_handler(IN_TX_INFO, self._on_tx_info)
        self.message_port_register_out(OUT_IMAGES)

    # -- what users read ------------------------------------------------------------------

    def stats(self) -> dict:
        with self._lock:
            counters = dict(self._counters)
            asm = self._assembler
        if asm is not None and hasattr(asm, "stats"):
            counters.update({f"assembler_{k}": v for k, v in dict(asm.stats).items()})
        return counters

    def results(self) -> list[dict]:
        """The dicts sent on ``images`` so far (decoded images and their metrics)."""
        with self._lock:
            return list(self._results)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    # -- message handlers: enqueue only, never block -------------------------------------

    def _enqueue(self, item) -> None:
        self._count("messages_in")
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count("frames_dropped_queue_full")

    def _on_pdu(self, msg) -> None:
        self._enqueue(("pdu", msg))

    def _on_tx_info(self, msg) -> None:
        self._enqueue(("tx_info", msg))

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> bool:
        from diffjscc.radio import ImageAssembler

        if self._decoder is None:
            self._decoder = self._make_decoder()
        self._assembler = ImageAssembler(timeout_s=self.assembly_timeout_s)
        self._thread = threading.Thread(
            target=self._run, name=f"{self.alias()}-decode", daemon=True
        )
        self._thread.start()
        return True

    def stop(self) -> bool:
        thread, self._thread = self._thread, None
        if thread is not None:
            try:
                self._queue.put(_STOP, timeout=1.0)
            except queue.Full:
                self.logger.warn("queue full at stop: frames still queued are dropped")
                self._drop_queue()
                self._queue.put(_STOP)
            thread.join(timeout=self.drain_timeout_s)
            if thread.is_alive():
                self.logger.warn(
                    f"decoding did not finish within {self.drain_timeout_s:.0f} s; giving up on it"
                )
        if self._owns_decoder and self._decoder is not None:
            close = getattr(self._decoder, "close", None)
            if close is not None:
                close()
            self._decoder = None
        return True

    def _drop_queue(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _make_decoder(self):
        from diffjscc.worker.client import LocalDecoder, WorkerClient

        if not self.worker_address:
            return LocalDecoder()
        return WorkerClient(
            self.worker_address,
            timeout_s=self.decode_timeout_s,
            retries=1,
            fallback=LocalDecoder(),
        )

    # -- the decoding thread --------------------------------------------------------------

    def _run(self) -> None:
        pending = []  # (future, image, seq, submitted_at)
        stopping = False
        while True:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                item = None
            completed = []
            while item is not None:
                if item is _STOP:
                    stopping = True
                else:
                    try:
                        completed += self._handle(item)
                    except Exception:  # a bug must cost one message, not the sink
                        self._count("internal_errors")
                        self.logger.error(f"message dropped: {traceback.format_exc()}")
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            # Frames already queued are added before timeouts are judged, so a slow
            # decode never makes an image look partial.
            completed += self._assembler.flush() if stopping else self._assembler.poll()
            for image in completed:
                pending.append(self._submit(image))
            pending = self._collect(pending, wait=stopping)
            if stopping:
                return

    def _handle(self, item) -> list:
        kind, msg = item
        if kind == "tx_info":
            info = pmt.to_python(msg) if pmt.is_dict(msg) else None
            if isinstance(info, dict) and "image_id" in info and "path" in info:
                self._originals[int(info["image_id"])] = str(info["path"])
            return []
        self._count("frames_in")
        try:
            meta, symbols = pdu_parts(msg)
        except BadPDU as exc:
            self._count("frames_malformed")
            self.logger.debug(f"dropping malformed frame PDU: {exc}")
            return []
        # Frames whose fields do not fit together are counted by the assembler (bad_frame).
        return list(self._assembler.add_meta(meta, symbols))

    def _submit(self, image):
        from diffjscc.worker.protocol import DecodeRequest

        seq = next(self._seq)
        self._count("images_partial" if image.partial else "images_complete")
        request = DecodeRequest(
            request_id=seq,
            image_id=int(image.image_id),
            model=image.model,
            image_shape=tuple(int(v) for v in image.image_shape),
            snr_db=float(image.snr_db),
            h=complex(image.h),
            symbols=np.asarray(image.symbols, dtype=np.complex64),
            refine=self.refine,
        )
        submitted = time.monotonic()
        try:
            if hasattr(self._decoder, "submit"):  # WorkerClient: asynchronous
                future = self._decoder.submit(request)
            else:  # LocalDecoder: decodes in this (the sink's own) thread
                future = concurrent.futures.Future()
                future.set_result(self._decoder.decode(request))
        except Exception as exc:  # a decoder failure must not kill the thread
            future = exc
        return future, image, seq, submitted

    def _collect(self, pending: list, wait: bool) -> list:
        still = []
        for future, image, seq, submitted in pending:
            if isinstance(future, Exception):
                self._finish(image, seq, None, submitted, error=str(future))
                continue
            deadline = self._reply_deadline_s()
            if not wait and not future.done():
                if time.monotonic() - submitted < deadline:
                    still.append((future, image, seq, submitted))
                    continue
            try:
                remaining = deadline - (time.monotonic() - submitted)
                reply = future.result(timeout=max(0.0, remaining))
            except Exception as exc:  # timeouts and decoder errors alike: report, go on
                self._finish(image, seq, None, submitted, error=f"{type(exc).__name__}: {exc}")
                continue
            self._finish(image, seq, reply, submitted)
        return still

    def _reply_deadline_s(self) -> float:
        """How long an image may wait for its reply before it is reported as failed.

        A WorkerClient's future always resolves: within its network budget, then one
        local fallback decode. Waiting only ``decode_timeout_s`` (its per-attempt
        timeout) would drop fallback results that arrive a little later.
        """
        budget = getattr(self._decoder, "budget_s", None)
        if isinstance(budget, (int, float)):
            return float(budget) + self.decode_timeout_s
        return self.decode_timeout_s

    def _finish(self, image, seq, reply, submitted, error=None) -> None:
        try:
            self._report(image, seq, reply, submitted, error)
        except Exception:  # a bug must cost one image, not the sink
            self._count("internal_errors")
            self.logger.error(f"image {image.image_id} lost: {traceback.format_exc()}")

    def _report(self, image, seq, reply, submitted, error) -> None:
        from diffjscc.image import load_image, save_png

        result = {
            "image_id": int(image.image_id),
            "seq": seq,
            "path": None,
            "refined_path": None,
            "partial": bool(image.partial),
            "frames_received": int(image.frames_received),
            "frame_count": int(image.frame_count),
            "snr_db": float(image.snr_db),
            "h": complex(image.h),
            "decode_s": time.monotonic() - submitted,
            "submitted_at": submitted,  # time.monotonic() clock, for timing breakdowns
            "written_at": None,
            "served_by": None,
            "error": error,
        }
        if reply is not None:
            result["served_by"] = getattr(reply, "served_by", None)
            if not reply.ok or reply.image is None:
                result["error"] = reply.error or "decoder returned no image"
        if result["error"] is not None:
            self._count("decode_errors")
            self.logger.warn(f"image {image.image_id}: decoding failed: {result['error']}")
        else:
            self._count("images_decoded")
            stem = self.output_dir / f"{self.prefix}{seq:04d}_id{int(image.image_id)}"
            outputs = [
                ("path", reply.image, ".png"),
                ("refined_path", reply.refined, "_refined.png"),
            ]
            for key, pixels, suffix in outputs:
                if pixels is None:
                    continue
                try:
                    result[key] = str(save_png(f"{stem}{suffix}", pixels))
                except (OSError, DiffJSCCError) as exc:
                    self._count("write_errors")
                    self.logger.error(f"cannot write {stem}{suffix}: {exc}")
            original = self._originals.get(int(image.image_id))
            if original is not None:
                try:
                    reference = load_image(original)
                except DiffJSCCError:
                    reference = None
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
            result["written_at"] = time.monotonic()
            for key, value in dict(getattr(reply, "metrics", None) or {}).items():
                result.setdefault(key, value)
            result["timing"] = dict(getattr(reply, "timing", None) or {})
        result["counters"] = self.stats()  # bad input so far, for whoever reads the messages
        with self._lock:
            self._results.append(result)
        self.message_port_pub(OUT_IMAGES, meta_to_pmt(result))

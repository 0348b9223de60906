#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""Live statistics of a JSCC link, from the messages its blocks already send.

A headless over-the-air run must never be silent: this block counts what the image
source sent (``tx_info``), what the receiver detected (``pdus``) and what the image
sink decoded (``images``), and prints one line every few seconds. It also sends the line
as a message (``text``), which a Qt ``Message Edit Box`` shows in GUI flowgraphs.
"""

from __future__ import annotations

import math
import sys
import threading
import time

import pmt
from gnuradio import gr

IN_TX_INFO = pmt.intern("tx_info")
IN_PDUS = pmt.intern("pdus")
IN_IMAGES = pmt.intern("images")
OUT_TEXT = pmt.intern("text")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class LinkStats:
    """Counters of one link; thread-safe, plain Python (the block is a thin wrapper)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self.counts = dict.fromkeys(
            ("images_sent", "frames_received", "images_decoded", "images_partial", "errors"), 0
        )
        self.bad_messages = 0
        self.last: dict = {}  # latest snr_db, cfo, psnr, latency_s, image_id
        self._frame_times: list[float] = []

    def tx_info(self, info: dict) -> None:
        with self._lock:
            self.counts["images_sent"] += 1

    def frame(self, meta: dict) -> None:
        now = self._clock()
        with self._lock:
            self.counts["frames_received"] += 1
            for key in ("snr_db", "cfo", "image_id"):
                if key in meta:
                    self.last[f"frame_{key}"] = meta[key]
            self._frame_times.append(now)
            # Only the last 10 s matter for the rate: the list stays bounded.
            while self._frame_times and self._frame_times[0] < now - 10.0:
                self._frame_times.pop(0)

    def image(self, info: dict) -> None:
        with self._lock:
            if info.get("error"):
                self.counts["errors"] += 1
                return
            self.counts["images_decoded"] += 1
            if info.get("partial"):
                self.counts["images_partial"] += 1
            for key in ("image_id", "psnr", "latency_s", "snr_db"):
                if key in info:
                    self.last[key] = info[key]
            counters = info.get("counters")
            if isinstance(counters, dict):
                self.last["dropped"] = sum(
                    v for k, v in counters.items() if "dropped" in k and _finite(v)
                )

    def snapshot(self) -> dict:
        now = self._clock()
        with self._lock:
            out = dict(self.counts, bad_messages=self.bad_messages, **self.last)
            recent = [t for t in self._frame_times if t >= now - 10.0]
        out["elapsed_s"] = now - self._started
        out["frames_per_s"] = len(recent) / min(10.0, max(out["elapsed_s"], 1e-9))
        return out

    def text(self) -> str:
        s = self.snapshot()
        parts = [f"{s['elapsed_s']:.0f} s"]
        if s["images_sent"]:
            parts.append(f"sent {s['images_sent']} images")
        receiving = s["frames_received"] or s["images_decoded"] or not s["images_sent"]
        if not receiving:  # a transmitter's line: what it sent is all there is
            return ", ".join(parts)
        parts.append(f"frames {s['frames_received']} ({s['frames_per_s']:.1f}/s)")
        if _finite(s.get("frame_snr_db")):
            parts.append(f"SNR est {s['frame_snr_db']:.1f} dB")
        if _finite(s.get("frame_cfo")):
            parts.append(f"CFO {s['frame_cfo']:+.2e} cyc/sample")
        parts.append(f"decoded {s['images_decoded']} ({s['images_partial']} partial)")
        if s["errors"]:
            parts.append(f"errors {s['errors']}")
        if _finite(s.get("latency_s")):
            parts.append(f"latency {s['latency_s']:.2f} s")
        if _finite(s.get("psnr")):
            parts.append(f"PSNR {s['psnr']:.2f} dB")
        if s.get("dropped"):
            parts.append(f"dropped {int(s['dropped'])}")
        return ", ".join(parts)


class link_stats(gr.basic_block):
    """Counts a link's messages; every ``interval_s`` sends (and prints) a statistics line.

    Message inputs (each optional): ``tx_info`` from an image source, ``pdus`` from a
    JSCC receiver, ``images`` from an image sink. Message output ``text``: the line, as a
    string, every ``interval_s``; with ``print_lines`` it also goes to stderr. ``stats()``
    gives the counters and latest values, ``text()`` the line. ``interval_s`` 0: neither.
    The printing thread starts in ``start()`` and is gone within a second of ``stop()``,
    which prints the last line.
    """

    def __init__(self, interval_s=5.0, print_lines=True, label=""):
        gr.basic_block.__init__(self, name="diffjscc_link_stats", in_sig=None, out_sig=None)
        self.interval_s = float(interval_s)
        if not self.interval_s >= 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s!r}")
        self.print_lines = bool(print_lines)
        self.label = str(label)
        self.core = LinkStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for port, handler in (
            (IN_TX_INFO, self._on_tx_info),
            (IN_PDUS, self._on_pdu),
            (IN_IMAGES, self._on_image),
        ):
            self.message_port_register_in(port)
            self.set_msg_handler(port, handler)
        self.message_port_register_out(OUT_TEXT)

    def stats(self) -> dict:
        return self.core.snapshot()

    def text(self) -> str:
        line = self.core.text()
        return f"[{self.label}] {line}" if self.label else line

    def start(self) -> bool:
        self._stop.clear()
        if self.interval_s > 0:
            self._thread = threading.Thread(
                target=self._print_loop, name=f"{self.alias()}-print", daemon=True
            )
            self._thread.start()
        return True

    def stop(self) -> bool:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=1.0)
            if self.print_lines:
                self._print(self.text())  # the totals of a run that ended between two lines
        return True

    def _print_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            line = self.text()
            self.message_port_pub(OUT_TEXT, pmt.intern(line))
            if self.print_lines:
                self._print(line)

    def _print(self, line: str) -> None:
        try:
            print(line, file=sys.stderr, flush=True)
        except Exception as exc:  # a closed stderr must not end the flowgraph
            self.logger.debug(f"cannot print statistics: {exc}")

    def _dict(self, msg):
        info = pmt.to_python(msg) if pmt.is_dict(msg) else None
        if not isinstance(info, dict):
            self.core.bad_messages += 1
            return None
        return info

    def _on_tx_info(self, msg) -> None:
        info = self._dict(msg)
        if info is not None:
            self.core.tx_info(info)

    def _on_image(self, msg) -> None:
        info = self._dict(msg)
        if info is not None:
            self.core.image(info)

    def _on_pdu(self, msg) -> None:
        # Only the metadata is read: converting the symbols would cost more than the rest.
        meta = (
            pmt.to_python(pmt.car(msg)) if pmt.is_pair(msg) and pmt.is_dict(pmt.car(msg)) else None
        )
        if not isinstance(meta, dict):
            self.core.bad_messages += 1
            return
        self.core.frame(meta)

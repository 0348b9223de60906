#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""Image source: images -> ONNX JSCC encoder -> pilot-aided bursts of baseband samples."""

from __future__ import annotations

import math
import numbers
import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import pmt
from gnuradio import gr

from diffjscc.errors import ConfigError, DiffJSCCError, ImageError
from diffjscc.registry import DEFAULT_MODEL, get_model_spec

from ._frames import frame_config, meta_to_pmt

# Image ids wrap at the width of the frame header's id field.
IMAGE_ID_MODULO = 1 << 16
BURST_TAG_MODES = ("packet_len", "sob_eob")
# Images whose bursts a repeating source keeps (a few MB at most).
CACHE_SIZE = 32
# Zeros after the last burst of a run, beyond twice the longest burst: covers the
# receiver's batch (4096 samples) and look-ahead with room to spare.
END_SILENCE = 16384
# Seconds between images unless set: a CPU decoder (about 1 s per 768x512 image) keeps up.
DEFAULT_INTERVAL_S = 2.0
# Images asked for on ``next`` that wait at most; more requests are counted and dropped.
MAX_REQUESTED = 16
# Longest wait in one call of work() while no image is due: bounds how late stop() acts.
IDLE_WAIT_S = 0.05
IN_NEXT = pmt.intern("next")
_SOB = pmt.intern("tx_sob")
_EOB = pmt.intern("tx_eob")


def default_image_path() -> Path:
    """scikit-image's astronaut sample (512x512), the image sent when none is named."""
    try:
        import skimage
    except ImportError as exc:
        raise ImageError(
            "no image given and scikit-image (whose sample image is the default) is not "
            "installed: name an image file or folder, or pip install scikit-image"
        ) from exc
    return Path(skimage.data_dir) / "astronaut.png"


def _image_paths(path) -> list[Path]:
    from diffjscc.image import list_images

    if not str(path or "").strip():
        return [default_image_path()]
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise ImageError(f"{path}: no such file or folder")
    if path.is_dir():
        paths = list_images(path)
        if not paths:
            raise ImageError(f"{path}: folder holds no image files")
        return paths
    return [path]


def _opt_steps(value) -> int:
    """``tx_opt_steps`` as an integer >= 0, or a ConfigError that says what is wrong."""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Integral)
        or (isinstance(value, numbers.Real) and float(value).is_integer())
    ):
        raise ConfigError(f"tx_opt_steps must be an integer >= 0, not {value!r}")
    if value < 0:
        raise ConfigError(f"tx_opt_steps must be an integer >= 0, got {value}")
    return int(value)


def _repeat_count(value) -> int:
    """``repeat`` as a number of passes, 0 = forever; True / False as before (forever / once)."""
    if isinstance(value, bool):
        return 0 if value else 1
    if not (
        isinstance(value, numbers.Integral)
        or (isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
    ):
        raise ConfigError(f"repeat must be a count >= 0 (0 = forever), not {value!r}")
    if value < 0:
        raise ConfigError(f"repeat must be a count >= 0 (0 = forever), got {value}")
    return int(value)


def _seconds(name, value) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of seconds >= 0, not {value!r}") from None
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return seconds


def _snr(value) -> float:
    try:
        snr = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"design_snr_db must be a number, not {value!r}") from None
    if not -50.0 <= snr <= 100.0:
        raise ConfigError(f"design_snr_db must be in -50..100 dB, got {value!r}")
    return snr


class image_source(gr.sync_block):
    """Sends images as deep-JSCC bursts, paced for a receiver that decodes them live.

    Each image (a file, or every image of a folder in name order; scikit-image's
    astronaut sample when ``path`` is empty) is encoded
    by the ONNX JSCC encoder (no torch needed) into complex symbols, which ``diffjscc.radio``
    splits into frames: preamble, CRC-protected header, and payload with
    pilots, root-raised-cosine shaped at ``sps`` samples per symbol. Each frame
    leaves as one burst followed by ``gap_samples`` zeros (the first burst is
    also preceded by them).

    ``waveform`` "ofdm" sends OFDM bursts instead (``diffjscc.radio.ofdm``; the
    single carrier's sps, rolloff and pilot_spacing are then unused): ``fft_size``,
    ``cp_length``, ``used_carriers``, ``ofdm_pilot_spacing`` and ``pilot_stagger``
    set the layout (0 = the default of ``OfdmConfig``), ``clip_ratio_db``
    clip-and-filter (0 = off). The receiver must use the same layout: the frame
    header does not carry it.

    Pacing: an image starts every ``interval_s`` seconds (wall clock; 0 sends
    them back to back, for measurements), and a message of any content on
    ``next`` sends the next image at once (a ``blocks.message_strobe`` gives a
    steady rate; with ``on_demand`` images go only on such messages). Between
    images the block produces nothing, after a stretch of silence that lets a
    batching receiver complete the last burst, so a free-running simulated
    channel does not burn the CPU and a USRP sees separate bursts.
    ``repeat`` is the number of passes over the images (1 = once, 0 = forever);
    after the last pass the block ends the flowgraph run (after some silence).

    Bursts are tagged for ``uhd.usrp_sink`` as they are: either a tagged
    stream (``len_tag_key`` at the first sample, value = burst + gap length)
    or ``tx_sob`` / ``tx_eob`` at the burst's first and last sample.
    Files that are not readable images are skipped and counted.

    Run-time setters (GRC callbacks): ``set_design_snr_db`` (the next image is
    encoded at the new SNR), ``set_interval_s``, ``set_on_demand``,
    ``set_repeat``, ``set_amplitude`` (from the next sample on).

    ``tx_opt_steps`` > 0 (opt-in; default 0) turns on transmitter-side symbol
    optimisation (``diffjscc.symbol_opt``): the torch codec's symbols for each
    image are refined by that many gradient steps through the decoder at the
    design SNR, same symbol count and power, so the receiver does not change.
    It needs torch (and the torch weights) at the transmitter and costs about
    one decoder forward and backward pass per step and image.

    Message output ``tx_info``: one dict per image sent (image_id, path,
    height, width, frames, symbols, model, design_snr_db, tx_opt_steps),
    which lets an image sink compare what it received with the original.
    """

    def __init__(
        self,
        path,
        model=DEFAULT_MODEL,
        design_snr_db=7.0,
        repeat=1,
        sps=2,
        rolloff=0.35,
        pilot_spacing=0,
        max_payload_symbols=0,
        header_version=0,
        gap_samples=1000,
        burst_tags="packet_len",
        len_tag_key="packet_len",
        amplitude=1.0,
        first_image_id=0,
        tx_opt_steps=0,
        interval_s=DEFAULT_INTERVAL_S,
        on_demand=False,
        encoder=None,
        waveform="sc",
        fft_size=0,
        cp_length=0,
        used_carriers=0,
        ofdm_pilot_spacing=0,
        pilot_stagger=0,
        clip_ratio_db=0.0,
        **waveform_settings,
    ):
        gr.sync_block.__init__(
            self, name="diffjscc_image_source", in_sig=None, out_sig=[np.complex64]
        )
        if burst_tags not in BURST_TAG_MODES:
            raise ConfigError(f"burst_tags must be one of {BURST_TAG_MODES}, not {burst_tags!r}")
        if int(gap_samples) < 0:
            raise ConfigError(f"gap_samples must be >= 0, got {gap_samples}")
        self.tx_opt_steps = _opt_steps(tx_opt_steps)
        self.spec = get_model_spec(model)
        if self.tx_opt_steps and self.spec.channel_type != "awgn":
            # The block gives the encoder no channel gain; a fading model optimises for one.
            raise ConfigError(
                f"tx_opt_steps > 0 needs an AWGN model; {self.spec.name} is "
                f"{self.spec.channel_type}"
            )
        self.design_snr_db = _snr(design_snr_db)
        self.repeat = _repeat_count(repeat)
        self.interval_s = _seconds("interval_s", interval_s)
        self.on_demand = bool(on_demand)
        self.cfg = frame_config(sps, rolloff, pilot_spacing, max_payload_symbols, header_version)
        # The waveform ("sc", "ofdm": diffjscc.radio.waveform) takes the settings it knows
        # (0 = its default): OFDM's layout below, waveform_settings for any other waveform's.
        from diffjscc.radio.waveform import SingleCarrier, waveform_from_block_params

        if waveform == "sc" and not waveform_settings:
            self.waveform = SingleCarrier(self.cfg)
        else:
            self.waveform = waveform_from_block_params(
                waveform,
                sps=sps,
                rolloff=rolloff,
                pilot_spacing=pilot_spacing,
                max_payload_symbols=max_payload_symbols,
                header_version=header_version,
                fft_size=fft_size,
                cp_length=cp_length,
                used_carriers=used_carriers,
                ofdm_pilot_spacing=ofdm_pilot_spacing,
                pilot_stagger=pilot_stagger,
                clip_ratio_db=clip_ratio_db,
                **waveform_settings,
            )
        self.gap_samples = int(gap_samples)
        self.burst_tags = burst_tags
        self.len_tag_key = pmt.intern(str(len_tag_key))
        self.amplitude = np.float32(amplitude)
        self.paths = _image_paths(path)
        if encoder is None:
            from diffjscc.zoo import load_transmitter

            encoder = load_transmitter(self.spec.name, self.tx_opt_steps)
        self.encoder = encoder
        self._next_id = int(first_image_id) % IMAGE_ID_MODULO
        self._path_index = 0
        self._sent_this_pass = 0
        self._cache: dict = {}  # (path, mtime, snr) -> (bursts, tx_info), when repeating
        self._ids: dict[str, int] = {}  # path -> image id, when repeating
        self._gap = np.zeros(self.gap_samples, dtype=np.complex64)
        # Waiting: (samples with the gaps, index of the burst's first sample, burst length).
        self._bursts: deque[tuple[np.ndarray, int, int]] = deque()
        self._current: np.ndarray | None = None
        self._sob = self._eob = 0  # where the current burst's first and last samples are
        self._longest_burst = 0
        self._pos = 0
        self._finished = False
        self._unflushed = False  # bursts went out since the last silence
        # Pacing: setters and the ``next`` handler run on other threads than work().
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._due = 0.0  # time.monotonic() when the next timed image may start
        self._requested = 0  # images asked for on ``next`` and not yet sent
        self._stopping = False
        self._stats = {
            "images_sent": 0,
            "images_skipped": 0,
            "bursts_queued": 0,
            "bursts_sent": 0,
            "samples_sent": 0,
            "passes": 0,
            "next_received": 0,
            "next_dropped": 0,
        }
        self.message_port_register_out(pmt.intern("tx_info"))
        self.message_port_register_in(IN_NEXT)
        self.set_msg_handler(IN_NEXT, self._on_next)

    def stats(self) -> dict:
        return dict(self._stats)

    # -- run-time settings (GRC callbacks) and the ``next`` port ---------------------------

    def set_design_snr_db(self, snr_db) -> None:
        """The SNR the encoder is told, from the next image on (cached bursts are per SNR)."""
        snr = _snr(snr_db)
        with self._lock:
            self.design_snr_db = snr

    set_snr_db = set_design_snr_db

    def set_interval_s(self, interval_s) -> None:
        seconds = _seconds("interval_s", interval_s)
        with self._lock:
            # The image in progress keeps its start; the next one is due by the new interval.
            self._due += seconds - self.interval_s
            self.interval_s = seconds
        self._wake.set()

    def set_on_demand(self, on_demand) -> None:
        with self._lock:
            self.on_demand = bool(on_demand)
        self._wake.set()

    def set_repeat(self, repeat) -> None:
        count = _repeat_count(repeat)
        with self._lock:
            self.repeat = count

    def set_amplitude(self, amplitude) -> None:
        self.amplitude = np.float32(amplitude)

    def _on_next(self, msg) -> None:
        # Any message is a request (a strobe sends PMT_T); never raises, never blocks.
        with self._lock:
            self._stats["next_received"] += 1
            if self._requested >= MAX_REQUESTED:
                self._stats["next_dropped"] += 1
            else:
                self._requested += 1
        self._wake.set()

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> bool:
        with self._lock:
            self._stopping = False
        return True

    def stop(self) -> bool:
        # work() waits for the next image in slices of IDLE_WAIT_S; this ends the wait now.
        with self._lock:
            self._stopping = True
        self._wake.set()
        return True

    # -- pacing ---------------------------------------------------------------------------

    def _last_pass_done(self) -> bool:
        """Every image of the last pass has been queued: nothing will come, do not wait."""
        if self._path_index < len(self.paths):
            return False
        return self._sent_this_pass == 0 or (
            self.repeat != 0 and self._stats["passes"] + 1 >= self.repeat
        )

    def _take_turn(self) -> bool:
        """True when the next image is to start now (and books its start)."""
        now = time.monotonic()
        with self._lock:
            if self._stopping:
                return False
            if self._requested > 0:
                self._requested -= 1
            elif self.on_demand or now < self._due:
                return False
            self._due = now + self.interval_s
            return True

    def _idle_wait(self) -> None:
        with self._lock:
            wait = IDLE_WAIT_S
            if not self.on_demand:
                wait = min(wait, max(0.0, self._due - time.monotonic()))
        if wait > 0:
            self._wake.wait(wait)
        self._wake.clear()

    def _encode_next(self) -> bool:
        """Queue the bursts of the next readable image; False when there is none left."""
        while True:
            if self._path_index >= len(self.paths):
                if self._sent_this_pass == 0:
                    if self._stats["images_sent"] == 0:
                        self.logger.error(f"no readable image among {len(self.paths)} files")
                    return False
                self._stats["passes"] += 1
                if self.repeat != 0 and self._stats["passes"] >= self.repeat:
                    return False
                self._path_index, self._sent_this_pass = 0, 0
            path = self.paths[self._path_index]
            self._path_index += 1
            prepared = self._prepare(path)
            if prepared is None:
                continue
            bursts, info = prepared
            for burst in bursts:
                # Silence before the very first burst too: a receiver (or a resampler in
                # a channel model, which eats a few samples) should not start mid-burst.
                lead = self._gap if self._stats["bursts_queued"] == 0 else self._gap[:0]
                self._stats["bursts_queued"] += 1
                self._longest_burst = max(self._longest_burst, burst.size)
                self._bursts.append(
                    (np.concatenate([lead, burst, self._gap]), lead.size, burst.size)
                )
            self._sent_this_pass += 1
            self._stats["images_sent"] += 1
            self._unflushed = True
            self.message_port_pub(pmt.intern("tx_info"), meta_to_pmt(info))
            return True

    def _prepare(self, path):
        """(bursts, tx_info) of one image, or None when it is not a readable image.

        When repeating, an image keeps its id and its bursts are kept (per design
        SNR), so a repeating source neither re-reads nor re-encodes (the receiver's
        assembler takes a repeated frame as the start of a new copy of the image).
        """
        from diffjscc.image import load_image

        snr_db = self.design_snr_db
        try:
            key = (str(path), os.stat(path).st_mtime_ns, snr_db)
        except OSError:
            key = None
        cached = self._cache.get(key) if key is not None else None
        if cached is not None:
            return cached
        try:
            image = load_image(path)
        except ImageError as exc:
            self._stats["images_skipped"] += 1
            self.logger.warn(f"skipping {exc}")
            return None
        image_id = self._ids.get(str(path), self._next_id)
        try:
            if self.tx_opt_steps:
                encoded = self.encoder.encode(image, snr_db=snr_db, optimise=self.tx_opt_steps)
            else:
                # Injected encoders (the tests' fakes) need not take ``optimise``.
                encoded = self.encoder.encode(image, snr_db=snr_db)
            bursts = [
                np.asarray(b, dtype=np.complex64)
                for b in self.waveform.build_bursts(encoded, image_id)
            ]
        except (DiffJSCCError, ValueError, RuntimeError) as exc:
            # One image the encoder or the frame cannot take (too large for the header,
            # say) must not end the flowgraph: skip it, count it, say why.
            self._stats["images_skipped"] += 1
            self.logger.error(f"skipping {path}: {exc}")
            return None
        if image_id == self._next_id:
            self._next_id = (self._next_id + 1) % IMAGE_ID_MODULO
        repeating = self.repeat != 1
        if repeating:
            self._ids[str(path)] = image_id
        info = {
            "image_id": image_id,
            "path": str(path),
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "frames": len(bursts),
            "symbols": int(encoded.num_symbols),
            "model": encoded.model,
            "design_snr_db": snr_db,
            "tx_opt_steps": self.tx_opt_steps,
        }
        if repeating and key is not None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (bursts, info)
        return bursts, info

    def _silence(self) -> None:
        """Silence after the last burst sent, so a receiver completes that burst.

        The receiver works in batches and looks ahead; without this the stream could
        end, or pause until the next image, while it still holds the last burst. Not
        a burst: no tags.
        """
        if self._unflushed:
            tail = np.zeros(2 * self._longest_burst + END_SILENCE, dtype=np.complex64)
            self._bursts.append((tail, -1, 0))
            self._unflushed = False

    def _tag(self, offset: int, key, value) -> None:
        self.add_item_tag(0, offset, key, value, pmt.intern(self.alias()))

    def _refill(self) -> bool:
        """Queue what goes out next (an image, or silence); False when nothing is due now."""
        if self._finished:
            return False
        if self._last_pass_done() or self._take_turn():
            if not self._encode_next():
                self._finished = True
                self._silence()
            return bool(self._bursts)
        self._silence()  # pausing until the next image
        return bool(self._bursts)

    def work(self, input_items, output_items):
        out = output_items[0]
        produced = 0
        while produced < len(out):
            if self._current is None:
                if not self._bursts and not self._refill():
                    break
                self._current, lead, burst_len = self._bursts.popleft()
                self._sob, self._eob = lead, lead + burst_len - 1
                self._pos = 0
                is_burst = burst_len > 0
                if is_burst and self.burst_tags == "packet_len":
                    start = self.nitems_written(0) + produced
                    self._tag(start, self.len_tag_key, pmt.from_long(self._current.size))
                self._stats["bursts_sent"] += int(is_burst)
            n = min(len(out) - produced, self._current.size - self._pos)
            if self.burst_tags == "sob_eob" and self._eob >= self._sob >= 0:
                # Tagged when written, so a tag never points past the items produced.
                for index, key in ((self._sob, _SOB), (self._eob, _EOB)):
                    if self._pos <= index < self._pos + n:
                        self._tag(
                            self.nitems_written(0) + produced + index - self._pos, key, pmt.PMT_T
                        )
            chunk = self._current[self._pos : self._pos + n]
            amplitude = self.amplitude
            out[produced : produced + n] = chunk if amplitude == 1 else chunk * amplitude
            produced += n
            self._pos += n
            if self._pos >= self._current.size:
                self._current = None
        self._stats["samples_sent"] += produced
        if produced == 0:
            if self._finished and not self._bursts:
                return -1  # WORK_DONE: the last image and the silence after it have gone out
            self._idle_wait()
        return produced

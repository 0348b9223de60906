"""``diffjscc replay RECORDING``: receive and decode a SigMF recording as if it were live.

    diffjscc replay examples/recordings/awgn_7db.sigmf-meta
    diffjscc replay rx.sigmf-meta --out replayed --realtime --device cuda

The samples go through the same numpy receiver as the ``jscc_receiver`` block
(``diffjscc.radio.BurstReceiver``), in chunks as a flowgraph would deliver
them; frames are gathered into images (``ImageAssembler``) and decoded by the
local decoder (``--device``) or a worker (``--worker``). No GNU Radio is needed,
so a machine with a GPU and no radio can run it; ``grc/replay_no_gui.grc`` is the
same with GNU Radio blocks.

Prints one JSON line per image (``"kind": "image"``: image_id, frames, SNR
estimate, PSNR when the recording names the original and its hash still
matches, file written) and a last one (``"kind": "summary"``). With ``--out``
the PNGs and ``summary.json`` are written there, each atomically.

Without ``--realtime`` the stream is read as fast as it decodes and the
assembler's timeout runs on the recording's own clock (samples / sample
rate); with it, the samples are paced at the meta's sample rate (times
``--speed``) and latencies are wall-clock, first frame -> image decoded.

Bad input is one line and exit status 2: a missing or malformed meta, a
missing or truncated data file, another sample rate than ``--sample-rate``,
another samples-per-symbol than the meta's, and samples in which none of the
frames that the annotations mark are found (or no frame at all).
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffjscc.errors import DiffJSCCError
from diffjscc.radio.recording import RecordingError, open_recording

CHUNK = 4096  # samples per feed, about what GNU Radio hands a block per work() call


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffjscc replay",
        description="Run the JSCC receiver and decoder on a SigMF recording, as if live.",
    )
    p.add_argument("recording", help="NAME, NAME.sigmf-meta or NAME.sigmf-data")
    p.add_argument("--out", metavar="DIR", help="write the decoded PNGs and summary.json here")
    p.add_argument(
        "--realtime", action="store_true", help="pace the samples at the recorded sample rate"
    )
    p.add_argument(
        "--speed", type=float, default=1.0, help="with --realtime: times real time (default 1)"
    )
    p.add_argument(
        "--sps", type=int, default=None, help="samples per symbol (default: the meta's, else 2)"
    )
    p.add_argument("--waveform", default=None, help="sc or ofdm (default: the meta's, else sc)")
    p.add_argument(
        "--sample-rate",
        type=float,
        default=None,
        help="the rate the receiver is set up for; a recording of another rate is refused",
    )
    p.add_argument("--device", default="cpu", help="decoder device: cpu, cuda, cuda:1 ...")
    p.add_argument("--worker", default="", help="decode at this worker (tcp://host:port)")
    p.add_argument("--refine", action="store_true", help="ask the worker to refine as well")
    p.add_argument(
        "--worker-timeout",
        type=float,
        default=30.0,
        help="seconds a worker may take per attempt (two attempts; default 30)",
    )
    p.add_argument(
        "--assembly-timeout",
        type=float,
        default=2.0,
        help="seconds an image waits for missing frames (default 2)",
    )
    p.add_argument("--no-decode", action="store_true", help="receive and assemble only")
    p.add_argument(
        "--no-dc-removal",
        action="store_true",
        help="do not subtract the stream's running mean first (the receiver block's "
        "dc_removal, on by default there and here)",
    )
    p.add_argument("--quiet", action="store_true", help="print the summary line only")
    return p


@dataclass
class _Tally:
    images: int = 0
    complete: int = 0
    partial: int = 0
    decode_errors: int = 0
    psnr: list = field(default_factory=list)
    decode_s: float = 0.0
    latencies: list = field(default_factory=list)


def _check_args(args) -> None:
    if not (math.isfinite(args.speed) and args.speed > 0):
        raise DiffJSCCError(f"--speed must be a positive number, got {args.speed}")
    if not (math.isfinite(args.worker_timeout) and args.worker_timeout > 0):
        raise DiffJSCCError(f"--worker-timeout must be positive, got {args.worker_timeout}")
    if not (math.isfinite(args.assembly_timeout) and args.assembly_timeout > 0):
        raise DiffJSCCError(f"--assembly-timeout must be positive, got {args.assembly_timeout}")
    if args.sample_rate is not None and not (
        math.isfinite(args.sample_rate) and args.sample_rate > 0
    ):
        raise DiffJSCCError(f"--sample-rate must be a positive number, got {args.sample_rate}")


def _make_decoder(args):
    """The local decoder or a worker client, checked before any sample is read."""
    if args.no_decode:
        return None
    if args.worker:
        from diffjscc.worker.client import WorkerClient

        client = WorkerClient(args.worker, timeout_s=args.worker_timeout, retries=1)
        wait_s = min(10.0, args.worker_timeout)
        try:
            client.status(timeout_s=wait_s)
        except (concurrent.futures.TimeoutError, TimeoutError):
            client.close()
            raise DiffJSCCError(f"--worker {args.worker}: no answer within {wait_s:g} s") from None
        except BaseException:  # a WorkerError says why itself (exit 2)
            client.close()
            raise
        return client
    if args.device != "cpu":
        import torch

        try:
            torch.empty(1, device=args.device)
        except (RuntimeError, AssertionError) as exc:
            message = " ".join(str(exc).split())[:200]
            raise DiffJSCCError(f"--device {args.device}: not usable here ({message})") from None
    from diffjscc.worker.client import LocalDecoder

    return LocalDecoder(device=args.device)


def _matched(annotations, frames, tolerance: float) -> int:
    """Annotations for which the replay found the same frame at the same place."""
    found: dict[tuple[int, int], list[float]] = {}
    for image_id, frame_index, timing in frames:
        found.setdefault((image_id, frame_index), []).append(timing)
    return sum(
        any(
            abs(t - a.sample_start) <= tolerance for t in found.get((a.image_id, a.frame_index), [])
        )
        for a in annotations
    )


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    _check_args(args)
    rec = open_recording(args.recording, expect_sample_rate=args.sample_rate)
    if args.sps is not None and rec.sps is not None and args.sps != rec.sps:
        raise RecordingError(
            f"{rec.meta_path}: recorded at {rec.sps} samples per symbol (diffjscc:sps), "
            f"--sps asks for {args.sps}"
        )
    if (
        args.waveform
        and args.waveform != rec.waveform_name
        and ("diffjscc:waveform" in rec.global_info)
    ):
        raise RecordingError(
            f"{rec.meta_path}: recorded with the {rec.waveform_name} waveform, "
            f"--waveform asks for {args.waveform}"
        )
    waveform = rec.waveform(args.sps, args.waveform)
    cfg = getattr(waveform, "cfg", None)
    sps = getattr(cfg, "sps", None)
    out = Path(args.out).expanduser() if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise DiffJSCCError(f"--out {out}: exists and is not a folder")

    from diffjscc.radio import ImageAssembler
    from diffjscc.radio.frontend import DcRemover

    stream_clock = [0.0]  # seconds of recording received so far
    clock = time.monotonic if args.realtime else (lambda: stream_clock[0])
    rx = waveform.make_receiver()
    # As the GNU Radio receiver block does: a front end's DC offset taken out first.
    dc = None if args.no_dc_removal else DcRemover()
    asm = ImageAssembler(timeout_s=args.assembly_timeout, clock=clock)
    decoder = _make_decoder(args)
    originals: dict[int, np.ndarray | None] = {}
    # image id -> (stream s, monotonic s, sample) at the image's first frame
    first_seen: dict[int, tuple[float, float, float]] = {}
    recorded = _RecordedSNR(rec.annotations)
    # samples between a frame found now and its annotation
    tolerance = max(16.0, 4.0 * (sps or 0))
    frames_found: list[tuple[int, int, float]] = []  # (image id, frame index, sample)
    tally = _Tally()
    seq = 0
    received = 0  # samples read so far
    wall_start = time.monotonic()

    def handle(image) -> None:
        nonlocal seq
        arrival = first_seen.pop(image.image_id, None)
        snr = None
        if arrival is not None:
            snr = recorded.between(image.image_id, arrival[2] - tolerance, received + tolerance)
        line = _image_line(image, seq, snr)
        if arrival is not None:
            line["stream_time_s"] = round(arrival[0], 6)
        seq += 1
        tally.images += 1
        tally.partial += int(image.partial)
        tally.complete += int(not image.partial)
        if decoder is not None:
            _decode(decoder, image, line, args, out, rec, originals, tally)
        if args.realtime and arrival is not None and line.get("decoded", True):
            # As live: from the first frame of the image received to the image decoded.
            latency = time.monotonic() - arrival[1]
            line["latency_s"] = round(latency, 4)
            tally.latencies.append(latency)
        if not args.quiet:
            print(json.dumps(line), flush=True)

    def take(frames, now) -> None:
        for frame in frames:
            frames_found.append((frame.image_id, frame.frame_index, frame.timing))
            arrival = (stream_clock[0], time.monotonic(), frame.timing)
            first_seen.setdefault(frame.image_id, arrival)
            for image in asm.add(frame, now):
                handle(image)
            # A frame that closed the previous copy of its image (a repeat) starts the next.
            if frame.image_id in asm.pending_ids and frame.image_id not in first_seen:
                first_seen[frame.image_id] = arrival
        for image in asm.poll(now):
            handle(image)

    try:
        for chunk in rec.iter_samples(CHUNK):
            received += chunk.size
            stream_clock[0] = received / rec.sample_rate
            if args.realtime:
                lag = wall_start + stream_clock[0] / args.speed - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
            take(rx.feed(chunk if dc is None else dc.process(chunk)), clock())
        take(rx.flush(), clock())
        for image in asm.flush():
            handle(image)
    finally:
        if decoder is not None and hasattr(decoder, "close"):
            decoder.close()

    matched = _matched(rec.annotations, frames_found, tolerance)
    hint = (
        f"the samples are not what {rec.meta_path.name} says (recorded at another sample rate "
        f"or samples per symbol than its {rec.sample_rate:g} samples/s, "
        f"{f'sps {sps}' if sps else waveform.name}?)"
    )
    if rec.annotations and matched == 0:
        raise RecordingError(
            f"{rec.data_path}: none of the {len(rec.annotations)} frames its annotations mark "
            f"were found: {hint}"
        )
    if not frames_found:
        raise RecordingError(
            f"{rec.data_path}: no JSCC frame found in {rec.num_samples} samples: {hint}"
        )
    summary = {
        "kind": "summary",
        "recording": str(rec.meta_path),
        "samples": rec.num_samples,
        "duration_s": round(rec.duration_s, 6),
        "sample_rate": rec.sample_rate,
        "waveform": waveform.name,
        "sps": sps,
        "frames_found": len(frames_found),
        "annotations": len(rec.annotations),
        "annotations_matched": matched,
        "images": tally.images,
        "images_complete": tally.complete,
        "images_partial": tally.partial,
        "decode_errors": tally.decode_errors,
        "psnr_mean": round(float(np.mean(tally.psnr)), 3) if tally.psnr else None,
        "decode_s": round(tally.decode_s, 3),
        "latency_p95_s": (
            round(float(np.percentile(tally.latencies, 95)), 4) if tally.latencies else None
        ),
        "wall_s": round(time.monotonic() - wall_start, 3),
        "realtime": bool(args.realtime),
        "receiver": dict(rx.stats),
        "assembler": dict(asm.stats),
    }
    if out is not None:
        from diffjscc.io import atomic_write_text

        try:
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        except OSError as exc:
            raise DiffJSCCError(f"cannot write into {out}: {exc.strerror}") from None
    print(json.dumps(summary), flush=True)
    if rec.annotations and matched < len(rec.annotations):
        print(
            f"diffjscc replay: {len(rec.annotations) - matched} of the {len(rec.annotations)} "
            "annotated frames were not received in the replay",
            file=sys.stderr,
        )
    return 1 if tally.decode_errors else 0


class _RecordedSNR:
    """The SNR the recording's receiver estimated for an image: the mean (linear, as the
    assembler's) over the annotations of its id between its first frame and now, so that
    the copies of a repeated image each get their own."""

    def __init__(self, annotations):
        self._by_id: dict[int, tuple[list[int], list[float]]] = {}
        for a in sorted(annotations, key=lambda a: a.sample_start):
            if a.snr_db is not None:
                starts, snrs = self._by_id.setdefault(a.image_id, ([], []))
                starts.append(a.sample_start)
                snrs.append(a.snr_db)

    def between(self, image_id: int, first: float, last: float) -> float | None:
        starts, snrs = self._by_id.get(image_id, ([], []))
        lo, hi = bisect.bisect_left(starts, first), bisect.bisect_right(starts, last)
        if lo >= hi:
            return None
        return 10.0 * math.log10(float(np.mean(10.0 ** (np.asarray(snrs[lo:hi]) / 10.0))))


def _image_line(image, seq: int, recorded_snr_db: float | None) -> dict:
    line = {
        "kind": "image",
        "seq": seq,
        "image_id": int(image.image_id),
        "model": image.model,
        "height": int(image.image_shape[0]),
        "width": int(image.image_shape[1]),
        "frames_received": int(image.frames_received),
        "frame_count": int(image.frame_count),
        "partial": bool(image.partial),
        "snr_db": round(float(image.snr_db), 3),
        "recorded_snr_db": None if recorded_snr_db is None else round(recorded_snr_db, 3),
        "design_snr_db": (
            round(float(image.design_snr_db), 3) if math.isfinite(image.design_snr_db) else None
        ),
    }
    return line


def _decode(decoder, image, line: dict, args, out, rec, originals: dict, tally: _Tally) -> None:
    from diffjscc.worker.protocol import DecodeRequest

    request = DecodeRequest(
        request_id=line["seq"],
        image_id=int(image.image_id),
        model=image.model,
        image_shape=tuple(int(v) for v in image.image_shape),
        snr_db=float(image.snr_db),
        h=complex(image.h),
        symbols=np.asarray(image.symbols, dtype=np.complex64),
        refine=bool(args.refine),
    )
    start = time.perf_counter()
    reply = decoder.decode(request)
    decode_s = time.perf_counter() - start
    tally.decode_s += decode_s
    line["decode_s"] = round(decode_s, 4)
    line["served_by"] = str(reply.served_by)[:100]
    line["decoded"] = bool(reply.ok and reply.image is not None)
    if not line["decoded"]:
        tally.decode_errors += 1
        line["error"] = str(reply.error)[:300]
        return
    if image.image_id not in originals:
        originals[image.image_id] = _load_original(rec, image.image_id)
    original = originals[image.image_id]
    if original is not None and original.shape == reply.image.shape:
        from diffjscc.metrics import psnr

        value = float(psnr(original, reply.image))
        line["psnr"] = round(value, 3)
        tally.psnr.append(value)
    if out is not None:
        from diffjscc.image import save_png

        stem = (
            f"{rec.meta_path.name.removesuffix('.sigmf-meta')}_{line['seq']:04d}_id{image.image_id}"
        )
        try:
            line["path"] = str(save_png(out / f"{stem}.png", reply.image))
            if reply.refined is not None:
                line["refined_path"] = str(save_png(out / f"{stem}_refined.png", reply.refined))
        except OSError as exc:
            raise DiffJSCCError(f"cannot write into {out}: {exc.strerror}") from None


def _load_original(rec, image_id: int):
    path = rec.original_path(image_id)
    if path is None:
        return None
    from diffjscc.image import ImageError, load_image

    try:
        return load_image(path)
    except ImageError:
        return None


if __name__ == "__main__":
    sys.exit(main())

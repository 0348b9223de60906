"""SigMF recordings of received samples: a bounded streaming writer and a validating reader.

A recording is the pair SigMF defines: ``NAME.sigmf-data`` holds the complex
samples (``cf32_le``, what GNU Radio streams) and ``NAME.sigmf-meta`` the JSON
description: sample rate, centre frequency, hardware, the transmitter's
waveform and its settings in the ``diffjscc:`` namespace (``diffjscc.radio.
waveform`` names), and one annotation per frame the receiver found,
with its SNR estimate and frequency offset. ``SigMFRecorder`` writes it while
the samples arrive; ``open_recording`` reads one back and checks it before
anything is done with it.

What a writer guarantees, so a reader can trust a pair it finds:

- the samples go to ``NAME.sigmf-data.part`` and are renamed to
  ``NAME.sigmf-data`` only when the recording ends (``close``); the meta is
  written last, to a temporary file renamed into place. A meta therefore
  always describes a finished data file, and an interrupted recording leaves a
  ``.part`` file and no meta.
- it is bounded: at most ``max_samples`` samples and ``max_annotations``
  annotations; what does not fit is counted (``stats()``, and the meta's
  ``diffjscc:samples_dropped`` / ``diffjscc:annotations_dropped``), not kept.

What a reader checks (``RecordingError``, one line, on the first that fails):
the meta exists, is JSON and valid SigMF (the ``sigmf`` package's schema);
one channel of a supported complex datatype, a positive sample rate; the
data file exists, holds a whole number of samples and at least as many as
the last annotation ends at, and matches the meta's ``core:sha512``.

A recording cannot tell at what sample rate its samples were really taken:
the waveform is defined in samples per symbol, so samples of another rate with
the same samples per symbol decode as well (only times and real-time pacing
are off), and the meta's rate is checked only against what the caller expects
(``expect_sample_rate``). Samples with another number of samples per symbol
than ``diffjscc:sps`` leave the receiver with no frames where the annotations
say there are some: ``diffjscc replay`` reports that as an error.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffjscc.errors import ConfigError, DiffJSCCError
from diffjscc.radio.config import FrameConfig

META_EXT = ".sigmf-meta"
DATA_EXT = ".sigmf-data"
PART_SUFFIX = ".part"
DATATYPE = "cf32_le"  # what the recorder writes: GNU Radio's complex64
NAMESPACE = "diffjscc"
EXTENSION = {"name": NAMESPACE, "version": "1.0.0", "optional": True}
# Bounds of a recording: 2**27 samples are 1 GiB of cf32_le.
DEFAULT_MAX_SAMPLES = 1 << 27
DEFAULT_MAX_ANNOTATIONS = 100_000
MAX_ORIGINALS = 4096
MAX_ORIGINAL_BYTES = 64 << 20  # originals larger than this are not hashed
MAX_META_BYTES = 64 << 20  # a reader refuses larger metadata
MAX_TEXT = 200  # hardware, description and the like are cut to this many characters

# datatype -> (numpy dtype of one component, components per sample, scale to [-1, 1))
READ_DATATYPES = {
    "cf32_le": (np.dtype("<f4"), 2, 1.0),
    "ci16_le": (np.dtype("<i2"), 2, 1.0 / 32768.0),
    "ci8": (np.dtype("i1"), 2, 1.0 / 128.0),
}


class RecordingError(DiffJSCCError, ValueError):
    """A recording that is missing, malformed or does not match what it says it is."""


def recording_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(meta, data) paths of a recording named by its base name or either file."""
    path = Path(os.path.expanduser(str(path)))
    name = path.name
    for ext in (META_EXT, DATA_EXT):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    if not name:
        raise RecordingError(f"{path}: not the name of a recording")
    return path.with_name(name + META_EXT), path.with_name(name + DATA_EXT)


def _text(value) -> str:
    return str(value or "")[:MAX_TEXT]


def _utc_now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _half_band(waveform, sample_rate: float) -> float | None:
    """Half the occupied bandwidth in Hz, for the waveforms whose shape says it."""
    cfg = getattr(waveform, "cfg", None)
    if hasattr(cfg, "rolloff") and hasattr(cfg, "sps"):  # single carrier, RRC shaped
        return (1.0 + cfg.rolloff) / (2.0 * cfg.sps) * sample_rate
    if hasattr(cfg, "used_carriers") and hasattr(cfg, "fft_size"):  # OFDM
        return cfg.used_carriers / (2.0 * cfg.fft_size) * sample_rate
    return None


def frame_annotation(meta: dict, waveform, sample_rate: float) -> dict:
    """A SigMF annotation (sample start and count, label, comment, band, ``diffjscc:``
    fields) for one received frame given as ``ReceivedFrame.meta()``; ``waveform`` is
    the ``diffjscc.radio.waveform.Waveform`` it was sent with (the burst's length).

    Raises ValueError / KeyError / TypeError when the fields are missing or unusable.
    """
    timing = float(meta["timing"])
    snr_db = float(meta["snr_db"])
    cfo = float(meta.get("cfo", 0.0))
    if not (math.isfinite(timing) and timing >= 0 and math.isfinite(cfo)):
        raise ValueError(f"frame timing {timing!r} or frequency offset {cfo!r} unusable")
    image_id, index, count = (int(meta[k]) for k in ("image_id", "frame_index", "frame_count"))
    shape = [int(v) for v in meta.get("image_shape", [])][:2]
    num_symbols = int(meta["num_symbols"])
    if num_symbols < 0 or not 0 <= index < count:
        raise ValueError(f"frame {index} of {count} with {num_symbols} symbols")
    half_band = _half_band(waveform, sample_rate)
    snr_text = f"{snr_db:.1f} dB" if math.isfinite(snr_db) else "unknown"
    annotation = {
        "core:sample_start": int(round(timing)),
        "core:sample_count": int(waveform.frame_samples(num_symbols)),
        "core:label": f"img{image_id} {index + 1}/{count}"[:20],
        "core:comment": (
            f"image {image_id} frame {index + 1} of {count}: SNR {snr_text}, "
            f"CFO {cfo * sample_rate:+.1f} Hz ({cfo:+.3e} cycles/sample)"
        ),
        "diffjscc:image_id": image_id,
        "diffjscc:frame_index": index,
        "diffjscc:frame_count": count,
        "diffjscc:snr_db": snr_db if math.isfinite(snr_db) else None,
        "diffjscc:cfo": cfo,
        "diffjscc:num_symbols": num_symbols,
        "diffjscc:image_shape": shape,
    }
    if half_band is not None:
        annotation["core:freq_lower_edge"] = cfo * sample_rate - half_band
        annotation["core:freq_upper_edge"] = cfo * sample_rate + half_band
    if "model" in meta:
        annotation["diffjscc:model"] = _text(meta["model"])
    design = float(meta.get("design_snr_db", float("nan")))
    if math.isfinite(design):
        annotation["diffjscc:design_snr_db"] = design
    return annotation


class SigMFRecorder:
    """Writes a SigMF recording while samples arrive; thread safe.

    ``open()`` starts it, ``write(samples)`` appends, ``annotate_frame(meta)``
    adds a received frame (``ReceivedFrame.meta()``, whose ``timing`` counts
    samples from the start of this recording), ``add_original(image_id, path)``
    names the image a frame's id was sent from, ``close()`` finishes the files
    (see the module's docstring for what is guaranteed) and returns the meta's
    path. After ``close()`` writes and annotations are counted as dropped.
    An existing recording of the same name is replaced when the new one closes.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_rate: float,
        center_freq: float = 0.0,
        hw: str = "",
        description: str = "",
        cfg: FrameConfig | None = None,
        waveform=None,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        max_annotations: int = DEFAULT_MAX_ANNOTATIONS,
        author: str = "",
        extra_global: dict | None = None,
    ):
        self.meta_path, self.data_path = recording_paths(path)
        self.part_path = self.data_path.with_name(self.data_path.name + PART_SUFFIX)
        try:
            self.sample_rate = float(sample_rate)
            self.center_freq = float(center_freq)
        except (TypeError, ValueError):
            raise ConfigError(
                f"sample_rate and center_freq must be numbers, got {sample_rate!r}, {center_freq!r}"
            ) from None
        if not (math.isfinite(self.sample_rate) and self.sample_rate > 0):
            raise ConfigError(f"sample_rate must be a positive number, got {sample_rate!r}")
        if not math.isfinite(self.center_freq):
            raise ConfigError(f"center_freq must be a finite number, got {center_freq!r}")
        if int(max_samples) < 1 or int(max_annotations) < 0:
            raise ConfigError(
                f"max_samples must be >= 1 and max_annotations >= 0, got {max_samples}, "
                f"{max_annotations}"
            )
        from diffjscc.radio.waveform import SingleCarrier

        if cfg is not None and waveform is not None:
            raise ConfigError("give a FrameConfig or a waveform, not both")
        self.waveform = waveform if waveform is not None else SingleCarrier(cfg or FrameConfig())
        self.cfg = getattr(self.waveform, "cfg", None)
        self.hw = _text(hw)
        self.description = _text(description)
        self.author = _text(author)
        self.max_samples = int(max_samples)
        self.max_annotations = int(max_annotations)
        self.extra_global = dict(extra_global or {})
        self._lock = threading.Lock()
        self._file = None
        self._state = "new"  # -> "open" -> "closed"
        self._datetime = None
        self._sha512 = None
        self._annotations: list[dict] = []
        self._originals: dict[int, dict] = {}
        self._stats = dict.fromkeys(
            (
                "samples_written",
                "samples_dropped",
                "annotations",
                "annotations_dropped",
                "annotations_bad",
                "write_errors",
            ),
            0,
        )

    def __enter__(self) -> SigMFRecorder:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict:
        with self._lock:
            return dict(self._stats)

    def open(self) -> None:
        with self._lock:
            if self._state != "new":
                raise RecordingError(f"{self.data_path}: recorder already {self._state}")
            try:
                self.part_path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.part_path, "wb")  # noqa: SIM115  (closed in close())
            except OSError as exc:
                raise RecordingError(f"cannot write {self.part_path}: {exc.strerror}") from exc
            self._datetime = _utc_now()
            self._sha512 = hashlib.sha512()
            self._state = "open"

    def write(self, samples) -> int:
        """Append samples (complex, any shape is flattened); returns how many were kept."""
        samples = np.asarray(samples).reshape(-1)
        with self._lock:
            room = self.max_samples - self._stats["samples_written"]
            if self._state != "open" or self._file is None:
                room = 0
            kept = samples[: max(room, 0)]
            self._stats["samples_dropped"] += samples.size - kept.size
            if kept.size:
                raw = kept.astype("<c8", copy=False).tobytes()
                try:
                    self._file.write(raw)
                except OSError:
                    # A full disk: stop recording samples; close() trims to what is whole.
                    self._stats["write_errors"] += 1
                    self._stats["samples_dropped"] += kept.size
                    self.max_samples = self._stats["samples_written"]
                    return 0
                # Hashed as written, so that stopping does not read the whole file again.
                self._sha512.update(raw)
                self._stats["samples_written"] += kept.size
            return int(kept.size)

    def annotate_frame(self, meta: dict) -> bool:
        """Add one received frame (``ReceivedFrame.meta()``); False when it is not kept."""
        try:
            annotation = frame_annotation(meta, self.waveform, self.sample_rate)
        except (KeyError, TypeError, ValueError, OverflowError):
            with self._lock:
                self._stats["annotations_bad"] += 1
            return False
        with self._lock:
            if self._state == "closed" or len(self._annotations) >= self.max_annotations:
                self._stats["annotations_dropped"] += 1
                return False
            self._annotations.append(annotation)
            self._stats["annotations"] += 1
            return True

    def add_original(self, image_id: int, path: str | os.PathLike) -> bool:
        """Record which image file ``image_id`` was sent from (with its SHA-256), so a
        replay can compute the PSNR. Paths inside the recording's folder are kept relative."""
        try:
            image_id = int(image_id)
            path = Path(os.path.expanduser(str(path))).resolve()
            if not path.is_file() or path.stat().st_size > MAX_ORIGINAL_BYTES:
                return False
            digest = _sha256_file(path)
        except (OSError, TypeError, ValueError):
            return False
        folder = self.meta_path.parent.resolve()
        name = str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)
        with self._lock:
            if image_id not in self._originals and len(self._originals) >= MAX_ORIGINALS:
                return False
            self._originals[image_id] = {"image_id": image_id, "file": name, "sha256": digest}
            return True

    def close(self) -> Path | None:
        """Finish the recording; returns the meta's path (None if it was never opened).

        Idempotent. Raises RecordingError when the files cannot be written.
        """
        with self._lock:
            if self._state != "open":
                self._state = "closed"
                return None
            self._state = "closed"
            written = self._stats["samples_written"]
            # No fsync: on a slow disk it could hold stop() for seconds; a file that did not
            # reach the disk whole is caught by the reader's core:sha512 check.
            try:
                self._file.flush()
                self._file.truncate(written * 8)
            except OSError:
                self._stats["write_errors"] += 1
            finally:
                self._file.close()
                self._file = None
            kept = []
            for a in self._annotations:
                if a["core:sample_start"] + a["core:sample_count"] <= written:
                    kept.append(a)
                else:  # beyond the samples kept (max_samples reached, or a stream cut short)
                    self._stats["annotations_dropped"] += 1
            self._stats["annotations"] = len(kept)
            metadata = self._metadata(kept)
            metadata["global"]["core:sha512"] = self._sha512.hexdigest()
        # Never a meta beside data it does not describe: the old meta goes first.
        try:
            self.meta_path.unlink(missing_ok=True)
            os.replace(self.part_path, self.data_path)
            _validate_schema(metadata, str(self.meta_path))
            from diffjscc.io import atomic_write_text

            atomic_write_text(self.meta_path, json.dumps(metadata, indent=2) + "\n")
        except OSError as exc:
            raise RecordingError(f"cannot finish the recording {self.meta_path}: {exc}") from exc
        return self.meta_path

    def _metadata(self, annotations: list[dict]) -> dict:
        sigmf = _sigmf()
        stats = self._stats
        glob = {
            "core:datatype": DATATYPE,
            "core:sample_rate": self.sample_rate,
            "core:version": sigmf.__specification__,
            "core:num_channels": 1,
            "core:recorder": "gr-diffjscc SigMFRecorder",
            "core:extensions": [dict(EXTENSION)],
            "diffjscc:waveform": self.waveform.name,
            "diffjscc:waveform_settings": dict(self.waveform.settings()),
            "diffjscc:samples_dropped": stats["samples_dropped"],
            "diffjscc:annotations_dropped": stats["annotations_dropped"],
        }
        for key, value in (
            ("core:hw", self.hw),
            ("core:description", self.description),
            ("core:author", self.author),
        ):
            if value:
                glob[key] = value
        if isinstance(self.cfg, FrameConfig):  # single carrier: what grc/replay_no_gui reads
            glob["diffjscc:sps"] = self.cfg.sps
            glob["diffjscc:rolloff"] = float(self.cfg.rolloff)
            glob["diffjscc:pilot_spacing"] = self.cfg.pilot_spacing
            glob["diffjscc:filter_span"] = self.cfg.filter_span
        if self._originals:
            glob["diffjscc:originals"] = [self._originals[k] for k in sorted(self._originals)]
        for key, value in self.extra_global.items():
            glob[key if ":" in key else f"{NAMESPACE}:{key}"] = value
        capture = {
            "core:sample_start": 0,
            "core:frequency": self.center_freq,
            "core:datetime": self._datetime,
        }
        annotations = sorted(annotations, key=lambda a: a["core:sample_start"])
        return {"global": glob, "captures": [capture], "annotations": annotations}


def _sha512_file(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sigmf():
    """The ``sigmf`` package, or a ConfigError that says how to install it."""
    try:
        import jsonschema  # noqa: F401  (sigmf's validator raises its errors)
        import sigmf
        import sigmf.validate
    except ImportError as exc:
        raise ConfigError(
            f"SigMF recordings need the Python package {exc.name!r}: "
            "pip install -e '.[sigmf]' (or pip install sigmf)"
        ) from exc
    return sigmf


def _validate_schema(metadata: dict, name: str) -> None:
    """The ``sigmf`` package's schema check, as a RecordingError with one line."""
    sigmf = _sigmf()
    import jsonschema

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undeclared extensions and the like
            sigmf.validate.validate(metadata)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        message = " ".join(str(exc.message).split())[:MAX_TEXT]
        raise RecordingError(f"{name}: not valid SigMF metadata at {where}: {message}") from None
    except Exception as exc:  # the validator on something it cannot walk
        raise RecordingError(f"{name}: not valid SigMF metadata: {exc!r}"[:300]) from None


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameAnnotation:
    """One frame annotation of a recording (what the recording receiver found)."""

    sample_start: int
    sample_count: int
    image_id: int
    frame_index: int
    frame_count: int
    snr_db: float | None
    cfo: float

    @classmethod
    def from_dict(cls, a: dict) -> FrameAnnotation | None:
        """None for an annotation that is not a ``diffjscc`` frame (another tool's)."""
        if "diffjscc:image_id" not in a:
            return None
        snr = a.get("diffjscc:snr_db")
        return cls(
            sample_start=int(a["core:sample_start"]),
            sample_count=int(a.get("core:sample_count", 0)),
            image_id=int(a["diffjscc:image_id"]),
            frame_index=int(a["diffjscc:frame_index"]),
            frame_count=int(a["diffjscc:frame_count"]),
            snr_db=None if snr is None else float(snr),
            cfo=float(a.get("diffjscc:cfo", 0.0)),
        )


@dataclass
class Recording:
    meta_path: Path
    data_path: Path
    datatype: str
    sample_rate: float
    center_freq: float
    num_samples: int
    hw: str = ""
    description: str = ""
    sps: int | None = None  # diffjscc:sps, when the meta has it
    rolloff: float | None = None
    pilot_spacing: int | None = None
    filter_span: int | None = None
    waveform_name: str = "sc"  # diffjscc:waveform (single carrier when the meta does not say)
    waveform_settings: dict = field(default_factory=dict)  # diffjscc:waveform_settings
    annotations: list[FrameAnnotation] = field(default_factory=list)
    originals: list[dict] = field(default_factory=list)
    global_info: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    def frame_config(self, sps: int | None = None, **overrides) -> FrameConfig:
        """The receiver's frame settings: the meta's, with ``sps`` or others given apart."""
        kwargs = {}
        for name in ("sps", "rolloff", "pilot_spacing", "filter_span"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        if sps is not None:
            kwargs["sps"] = int(sps)
        kwargs.update(overrides)
        try:
            return FrameConfig(**kwargs)
        except ConfigError as exc:
            raise RecordingError(f"{self.meta_path}: frame settings unusable: {exc}") from None

    def waveform(self, sps: int | None = None, name: str | None = None):
        """The ``diffjscc.radio.waveform.Waveform`` to receive with: the meta's, or
        ``name`` with its defaults; ``sps`` replaces a single carrier's samples per symbol."""
        from diffjscc.radio.waveform import get_waveform

        name = name or self.waveform_name
        settings = dict(self.waveform_settings) if name == self.waveform_name else {}
        if name == "sc":
            for key in ("sps", "rolloff", "pilot_spacing", "filter_span"):
                if getattr(self, key) is not None:
                    settings.setdefault(key, getattr(self, key))
            if sps is not None:
                settings["sps"] = int(sps)
        elif sps is not None:
            raise RecordingError(f"--sps is a single-carrier setting; {name} has none")
        try:
            return get_waveform(name, **settings)
        except (ConfigError, TypeError) as exc:
            raise RecordingError(f"{self.meta_path}: waveform {name!r} unusable: {exc}") from None

    def iter_samples(self, chunk: int = 1 << 16) -> Iterator[np.ndarray]:
        """The samples as complex64, ``chunk`` at a time (the last chunk may be shorter)."""
        component, per_sample, scale = READ_DATATYPES[self.datatype]
        sample_bytes = component.itemsize * per_sample
        left = self.num_samples
        try:
            f = open(self.data_path, "rb")  # noqa: SIM115  (closed below, also on error)
        except OSError as exc:
            raise RecordingError(f"{self.data_path}: cannot read: {exc.strerror}") from None
        with f:
            while left > 0:
                try:
                    raw = f.read(min(chunk, left) * sample_bytes)
                except OSError as exc:
                    raise RecordingError(f"{self.data_path}: cannot read: {exc.strerror}") from None
                if len(raw) < sample_bytes:
                    raise RecordingError(f"{self.data_path}: file shrank while being read")
                values = np.frombuffer(raw[: len(raw) // sample_bytes * sample_bytes], component)
                pairs = values.astype(np.float32).reshape(-1, 2)
                out = (pairs[:, 0] + 1j * pairs[:, 1]).astype(np.complex64)
                if scale != 1.0:
                    out *= np.float32(scale)
                left -= out.size
                yield out

    def original_path(self, image_id: int) -> Path | None:
        """The original image of ``image_id`` when the meta names it and the file's
        SHA-256 still matches; None otherwise."""
        for entry in self.originals:
            if entry.get("image_id") != image_id:
                continue
            path = Path(str(entry.get("file", "")))
            if not path.is_absolute():
                path = self.meta_path.parent / path
            try:
                if path.is_file() and path.stat().st_size <= MAX_ORIGINAL_BYTES:
                    if _sha256_file(path) == entry.get("sha256"):
                        return path
            except OSError:
                return None
        return None


def open_recording(
    path: str | os.PathLike,
    expect_sample_rate: float | None = None,
    check_hash: bool = True,
) -> Recording:
    """Read and check a recording's meta and data file (see the module's docstring).

    ``expect_sample_rate``: the rate the receiver is set up for; another rate in
    the meta is a RecordingError. Raises RecordingError with one line.
    """
    meta_path, data_path = recording_paths(path)
    if not meta_path.is_file():
        hint = ""
        if meta_path.with_name(meta_path.name[: -len(META_EXT)] + ".sigmf").exists():
            hint = " (SigMF archives are not read: extract the .sigmf file with tar first)"
        elif data_path.is_file():
            hint = f" (the samples {data_path.name} are there, their description is missing)"
        raise RecordingError(f"{meta_path}: no such file{hint}")
    try:
        size = meta_path.stat().st_size
        if size > MAX_META_BYTES:
            raise RecordingError(
                f"{meta_path}: {size} bytes of metadata, more than the {MAX_META_BYTES} read"
            )
        metadata = json.loads(meta_path.read_bytes())
    except OSError as exc:
        raise RecordingError(f"{meta_path}: cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordingError(f"{meta_path}: not JSON ({str(exc)[:MAX_TEXT]})") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("global"), dict):
        raise RecordingError(f"{meta_path}: not SigMF metadata (no 'global' object)")
    _validate_schema(metadata, str(meta_path))
    glob = metadata["global"]
    captures = metadata.get("captures") or [{}]

    datatype = glob.get("core:datatype")
    if datatype not in READ_DATATYPES:
        raise RecordingError(
            f"{meta_path}: samples of type {datatype!r} are not read; "
            f"supported: {', '.join(READ_DATATYPES)}"
        )
    if int(glob.get("core:num_channels", 1)) != 1:
        raise RecordingError(f"{meta_path}: {glob['core:num_channels']} channels; one is read")
    if (
        glob.get("core:dataset")
        or glob.get("core:metadata_only")
        or glob.get("core:trailing_bytes")
    ):
        raise RecordingError(f"{meta_path}: non-conforming or metadata-only datasets are not read")
    if any(c.get("core:header_bytes") for c in captures):
        raise RecordingError(f"{meta_path}: captures with header bytes are not read")
    rate = glob.get("core:sample_rate")
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not (math.isfinite(rate) and rate > 0)
    ):
        raise RecordingError(
            f"{meta_path}: core:sample_rate must be a positive number, got {rate!r}"
        )
    rate = float(rate)
    if expect_sample_rate is not None and not math.isclose(
        rate, float(expect_sample_rate), rel_tol=1e-9
    ):
        raise RecordingError(
            f"{meta_path}: recorded at {rate:g} samples/s, the receiver is set up for "
            f"{float(expect_sample_rate):g} samples/s"
        )
    sps = glob.get("diffjscc:sps")
    if sps is not None and (
        isinstance(sps, bool) or not isinstance(sps, int) or not 2 <= sps <= 64
    ):
        raise RecordingError(f"{meta_path}: diffjscc:sps must be an integer in 2..64, got {sps!r}")

    try:
        annotations = [
            a
            for a in (FrameAnnotation.from_dict(d) for d in metadata.get("annotations", []))
            if a is not None
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordingError(f"{meta_path}: a frame annotation is unusable: {exc!r}") from None

    if not data_path.is_file():
        raise RecordingError(f"{data_path}: no such file (the samples {meta_path.name} describes)")
    component, per_sample, _ = READ_DATATYPES[datatype]
    sample_bytes = component.itemsize * per_sample
    nbytes = data_path.stat().st_size
    num_samples, remainder = divmod(nbytes, sample_bytes)
    if remainder:
        raise RecordingError(
            f"{data_path}: truncated: {nbytes} bytes is not a whole number of {datatype} "
            f"samples ({sample_bytes} bytes each)"
        )
    ends = [
        a["core:sample_start"] + a.get("core:sample_count", 0)
        for a in metadata.get("annotations", [])
    ]
    if ends and max(ends) > num_samples:
        raise RecordingError(
            f"{data_path}: truncated: {num_samples} samples, an annotation ends at sample "
            f"{max(ends)}"
        )
    digest = glob.get("core:sha512")
    if check_hash and digest and _sha512_file(data_path) != digest:
        raise RecordingError(
            f"{data_path}: does not match the core:sha512 of {meta_path.name} "
            "(changed or cut after recording)"
        )
    waveform_name = glob.get("diffjscc:waveform", "sc")
    waveform_settings = glob.get("diffjscc:waveform_settings", {})
    if not isinstance(waveform_name, str) or not isinstance(waveform_settings, dict):
        raise RecordingError(
            f"{meta_path}: diffjscc:waveform must be a name and diffjscc:waveform_settings "
            "an object"
        )
    for key in ("sps", "rolloff", "pilot_spacing", "filter_span"):
        if (
            waveform_name == "sc"
            and key in waveform_settings
            and f"diffjscc:{key}" in glob
            and waveform_settings[key] != glob[f"diffjscc:{key}"]
        ):
            raise RecordingError(
                f"{meta_path}: diffjscc:{key} ({glob[f'diffjscc:{key}']!r}) contradicts "
                f"diffjscc:waveform_settings ({waveform_settings[key]!r})"
            )
    originals = glob.get("diffjscc:originals") or []
    return Recording(
        meta_path=meta_path,
        data_path=data_path,
        datatype=datatype,
        sample_rate=rate,
        center_freq=float(captures[0].get("core:frequency", 0.0) or 0.0),
        num_samples=int(num_samples),
        hw=_text(glob.get("core:hw")),
        description=_text(glob.get("core:description")),
        sps=sps,
        rolloff=_number(glob.get("diffjscc:rolloff")),
        pilot_spacing=_integer(glob.get("diffjscc:pilot_spacing")),
        filter_span=_integer(glob.get("diffjscc:filter_span")),
        waveform_name=waveform_name[:40],
        waveform_settings=waveform_settings,
        annotations=annotations,
        originals=[o for o in originals if isinstance(o, dict)]
        if isinstance(originals, list)
        else [],
        global_info=glob,
    )


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _integer(value) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

"""The radio core: JSCC symbols <-> pulse-shaped bursts, in numpy and scipy.

Transmitter: ``build_bursts(enc, image_id, cfg)``. Receiver:
``BurstReceiver(cfg).feed(samples)`` -> ``ReceivedFrame`` (equalised payload and
CSI estimated from pilots), and ``ImageAssembler`` -> ``AssembledImage``.
Waveforms (single carrier "sc", OFDM "ofdm") share one interface:
``get_waveform(name, **settings)`` (``diffjscc.radio.waveform``). The
GNU Radio blocks of ``gr-diffjscc`` are thin wrappers over these. No torch and
no GNU Radio are imported here.
"""

from diffjscc.radio.assembler import AssembledImage, ImageAssembler
from diffjscc.radio.config import FrameConfig, ReceiverTuning, noise_voltage, sample_snr_db
from diffjscc.radio.estimation import ChannelEstimate, estimate_channel, snr_crb, snr_crb_db
from diffjscc.radio.frame import (
    FrameError,
    ReceivedFrame,
    build_bursts,
    frame_length,
    frame_slice,
    header_payload_slice,
    image_symbol_count,
)
from diffjscc.radio.header import FrameHeader
from diffjscc.radio.receiver import BurstReceiver
from diffjscc.radio.waveform import (
    WAVEFORMS,
    Receiver,
    SingleCarrier,
    Waveform,
    get_waveform,
)

__all__ = [
    "AssembledImage",
    "BurstReceiver",
    "ChannelEstimate",
    "FrameConfig",
    "FrameError",
    "FrameHeader",
    "ImageAssembler",
    "ReceivedFrame",
    "Receiver",
    "ReceiverTuning",
    "SingleCarrier",
    "WAVEFORMS",
    "Waveform",
    "build_bursts",
    "estimate_channel",
    "frame_length",
    "frame_slice",
    "get_waveform",
    "header_payload_slice",
    "image_symbol_count",
    "noise_voltage",
    "sample_snr_db",
    "snr_crb",
    "snr_crb_db",
]

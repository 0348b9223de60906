#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""What the blocks share: frame settings, and received frames <-> PDUs.

A received frame leaves the receiver as a PDU, the convention of gr-ieee802-11
and friends: ``pmt.cons(metadata dict, c32vector of equalised symbols)``.
"""

from __future__ import annotations

import numpy as np
import pmt

from diffjscc.errors import DiffJSCCError


class BadPDU(DiffJSCCError, ValueError):
    """A message that is not a well-formed received-frame PDU."""


def frame_config(sps=2, rolloff=0.35, pilot_spacing=0, max_payload_symbols=0):
    """A ``diffjscc.radio.FrameConfig``; 0 for the spacing or payload size means the default."""
    from diffjscc.radio import FrameConfig

    kwargs = {"sps": int(sps), "rolloff": float(rolloff)}
    if pilot_spacing:
        kwargs["pilot_spacing"] = int(pilot_spacing)
    if max_payload_symbols:
        kwargs["max_payload_symbols"] = int(max_payload_symbols)
    return FrameConfig(**kwargs)  # ConfigError with the reason when a value does not fit


def _plain(value):
    """numpy scalars and arrays -> the plain Python values pmt.to_pmt understands."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def meta_to_pmt(meta: dict):
    return pmt.to_pmt(_plain(meta))


def frame_to_pdu(frame):
    """A ``ReceivedFrame`` -> PDU (metadata dict, equalised symbols)."""
    symbols = np.asarray(frame.symbols, dtype=np.complex64).reshape(-1)
    # From a list: the bindings take a numpy array element by element, 7x slower.
    vector = pmt.init_c32vector(symbols.size, symbols.tolist())
    return pmt.cons(meta_to_pmt(frame.meta()), vector)


def pdu_parts(pdu) -> tuple[dict, np.ndarray]:
    """PDU -> (metadata as a Python dict, complex64 symbols); BadPDU if malformed."""
    if not pmt.is_pair(pdu):
        raise BadPDU("not a PDU (a pair of metadata and vector)")
    meta_pmt, vector = pmt.car(pdu), pmt.cdr(pdu)
    if not pmt.is_dict(meta_pmt):
        raise BadPDU("PDU metadata is not a dictionary")
    if not pmt.is_c32vector(vector):
        raise BadPDU("PDU payload is not a c32vector")
    meta = pmt.to_python(meta_pmt)
    if not isinstance(meta, dict):
        raise BadPDU("PDU metadata is not a dictionary")
    symbols = np.asarray(pmt.c32vector_elements(vector), dtype=np.complex64)
    return meta, symbols


def pdu_to_frame(pdu):
    """PDU -> ``ReceivedFrame``; BadPDU when it is malformed or does not describe a frame."""
    from diffjscc.radio import FrameError, ReceivedFrame

    meta, symbols = pdu_parts(pdu)
    try:
        return ReceivedFrame.from_meta(meta, symbols)
    except FrameError as exc:
        raise BadPDU(str(exc)) from exc

#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""SigMF recorder: complex samples in, a ``.sigmf-data`` + ``.sigmf-meta`` recording out."""

from __future__ import annotations

import numpy as np
import pmt
from gnuradio import gr

from diffjscc.errors import DiffJSCCError

from ._frames import BadPDU, pdu_parts

IN_FRAMES = pmt.intern("frames")
IN_TX_INFO = pmt.intern("tx_info")


class sigmf_recorder(gr.sync_block):
    """Records the samples it is given as a SigMF recording, with one annotation per frame.

    Wraps ``diffjscc.radio.recording.SigMFRecorder``. The samples go to
    ``<path>.sigmf-data`` (cf32_le); ``<path>.sigmf-meta`` holds the sample
    rate, centre frequency, hardware, description, the frame settings
    (``diffjscc:sps`` ...) and the annotations. The recording starts with the
    flowgraph and is finished when it stops: the data file is renamed into
    place and the meta written last, atomically, so a meta always describes a
    complete data file. A recording of the same name is replaced.

    Message input ``frames``: the PDUs of a ``jscc_receiver`` (or their
    metadata dicts). Each becomes an annotation at the frame's ``timing``
    (its sample index), so the receiver must be fed the same stream from the
    same start: connect both to the same output. Label and comment name
    the image id and frame, the SNR estimate and the frequency offset.

    Message input ``tx_info`` (optional): the image source's dicts; the
    original image of each id is named in the meta with its SHA-256, so
    ``diffjscc replay`` can compute the PSNR.

    ``waveform`` and its settings (``sps``, ``rolloff``, ``pilot_spacing``; for
    OFDM ``fft_size``, ``cp_length``, ``used_carriers``, ``ofdm_pilot_spacing``,
    ``pilot_stagger``, 0 = default; other waveforms' keywords too) are the
    transmitter's, as the receiver block takes them: they give the annotations'
    lengths and go into the meta (``diffjscc:waveform_settings``), from which a
    replay builds its receiver.

    At most ``max_megabytes`` of samples and ``max_annotations`` annotations
    are kept; what does not fit is dropped and counted (``stats()`` and the
    meta). Bad messages are counted, never fatal.

    An empty ``path`` records nothing (the samples are counted as dropped),
    so a flowgraph can carry the block and record only when asked to.
    """

    def __init__(
        self,
        path="recording",
        sample_rate=1e6,
        center_freq=0.0,
        hw="",
        description="",
        sps=2,
        rolloff=0.35,
        pilot_spacing=0,
        max_megabytes=1024,
        max_annotations=100000,
        waveform="sc",
        fft_size=0,
        cp_length=0,
        used_carriers=0,
        ofdm_pilot_spacing=0,
        pilot_stagger=0,
        **settings,
    ):
        gr.sync_block.__init__(
            self, name="diffjscc_sigmf_recorder", in_sig=[np.complex64], out_sig=None
        )
        from diffjscc.errors import ConfigError
        from diffjscc.radio.recording import SigMFRecorder
        from diffjscc.radio.waveform import waveform_from_block_params

        if not float(max_megabytes) > 0:
            raise ConfigError(f"max_megabytes must be > 0, got {max_megabytes!r}")
        self._recorder = None
        self.meta_path = None
        self._dropped = 0  # samples, while not recording
        self._bad_messages = 0
        self.message_port_register_in(IN_FRAMES)
        self.set_msg_handler(IN_FRAMES, self._on_frame)
        self.message_port_register_in(IN_TX_INFO)
        self.set_msg_handler(IN_TX_INFO, self._on_tx_info)
        # The transmitter's waveform, as the receiver block takes it: burst lengths, and
        # the settings a replay receives with.
        wave = waveform_from_block_params(
            waveform,
            sps=sps,
            rolloff=rolloff,
            pilot_spacing=pilot_spacing,
            fft_size=fft_size,
            cp_length=cp_length,
            used_carriers=used_carriers,
            ofdm_pilot_spacing=ofdm_pilot_spacing,
            pilot_stagger=pilot_stagger,
            **settings,
        )
        if not str(path or "").strip():
            return
        self._recorder = SigMFRecorder(
            str(path),
            sample_rate=sample_rate,
            center_freq=center_freq,
            hw=hw,
            description=description,
            waveform=wave,
            max_samples=max(1, int(float(max_megabytes) * (1 << 20)) // 8),
            max_annotations=int(max_annotations),
        )
        self.meta_path = self._recorder.meta_path

    def stats(self) -> dict:
        """samples_written, samples_dropped, annotations, annotations_dropped, ..."""
        if self._recorder is None:
            counters = {"samples_written": 0, "samples_dropped": self._dropped, "annotations": 0}
        else:
            counters = self._recorder.stats()
        counters["bad_messages"] = self._bad_messages
        return counters

    def start(self) -> bool:
        if self._recorder is None:
            return super().start()
        try:
            self._recorder.open()
        except DiffJSCCError as exc:
            self.logger.error(str(exc))
            return False
        return super().start()

    def stop(self) -> bool:
        if self._recorder is None:
            return super().stop()
        try:
            path = self._recorder.close()
            if path is not None:
                s = self._recorder.stats()
                self.logger.info(
                    f"recorded {s['samples_written']} samples, {s['annotations']} frames: {path}"
                )
        except DiffJSCCError as exc:
            self.logger.error(str(exc))
        return super().stop()

    def work(self, input_items, output_items):
        if self._recorder is None:
            self._dropped += len(input_items[0])
        else:
            self._recorder.write(input_items[0])
        return len(input_items[0])

    def _on_frame(self, msg) -> None:
        if self._recorder is None:
            return
        try:
            if pmt.is_dict(msg):
                meta = pmt.to_python(msg)
            else:
                meta, _ = pdu_parts(msg)
            if not self._recorder.annotate_frame(meta):
                return  # counted by the recorder (bad fields, or over the bound)
        except (BadPDU, ValueError, TypeError, RuntimeError):
            self._bad_messages += 1

    def _on_tx_info(self, msg) -> None:
        if self._recorder is None:
            return
        try:
            info = pmt.to_python(msg)
            if not isinstance(info, dict) or "image_id" not in info or "path" not in info:
                raise ValueError("not a tx_info dict")
            self._recorder.add_original(int(info["image_id"]), str(info["path"]))
        except (ValueError, TypeError, RuntimeError):
            self._bad_messages += 1

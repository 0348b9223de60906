"""The channel state a decoder is given, in the form its model was trained with.

AWGN models take the image's own SNR estimate. Block-Rayleigh models were trained with
CSI [SNR_avg, Re h, Im h]: the link's average SNR and a gain h ~ CN(0, 1) around it
(``diffjscc.channels.rayleigh_block_fading``). A receiver measures the instantaneous
SNR_inst = |h|^2 SNR_avg of the equalised symbols and a gain of unknown scale, so
:class:`LinkCSI` keeps SNR_avg as a running mean of the images' linear SNR estimates
(started from the frame header's design SNR, which the encoder was given) and hands the
decoder h = e^{j arg h_est} sqrt(SNR_inst / SNR_avg). docs/training.md has the measurement
behind this choice.
"""

from __future__ import annotations

import cmath
import math
from collections import deque

# Estimates outside this range are not estimates (and overflow 10 ** (snr / 10)).
_SNR_LIMIT_DB = 100.0


def _linear(snr_db: float) -> float:
    return 10.0 ** (min(max(float(snr_db), -_SNR_LIMIT_DB), _SNR_LIMIT_DB) / 10.0)


class LinkCSI:
    """Decoder CSI per image, with the link's average SNR kept across images.

    ``window`` images (default 32: the mean of K exponential |h|^2 draws has a relative
    spread of 1/sqrt(K)) make the average, plus the design SNR as one prior sample.
    """

    def __init__(self, window: int = 32):
        if int(window) < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.window = int(window)
        self._recent: deque[float] = deque(maxlen=self.window)
        self._prior: float | None = None

    @property
    def average_snr_db(self) -> float | None:
        samples = list(self._recent) + ([self._prior] if self._prior is not None else [])
        if not samples:
            return None
        return 10.0 * math.log10(max(sum(samples) / len(samples), 1e-12))

    def reset(self) -> None:
        self._recent.clear()
        self._prior = None

    def for_decoder(
        self, channel_type: str, snr_db: float, h: complex, design_snr_db: float = float("nan")
    ) -> tuple[float, complex]:
        """(snr_db, h) for a model trained on ``channel_type``; updates the average."""
        if channel_type != "rayleigh":
            return float(snr_db), complex(h)
        if not math.isfinite(snr_db):
            return float(snr_db), complex(h)
        if self._prior is None and math.isfinite(design_snr_db):
            self._prior = _linear(design_snr_db)
        inst = _linear(snr_db)
        self._recent.append(inst)
        avg_db = self.average_snr_db
        avg = _linear(avg_db)
        phase = cmath.phase(complex(h)) if complex(h) != 0 else 0.0
        return avg_db, cmath.rect(math.sqrt(inst / avg), phase)

#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""GNU Radio blocks for deep joint source-channel coding (JSCC) image transmission.

``from gnuradio import diffjscc`` gives the blocks; the signal processing they
wrap (framing, detection, estimation, equalisation) is the numpy core package
``diffjscc.radio``, and decoding goes through ``diffjscc.worker``. Importing
this package imports neither torch nor Qt.
"""

from .image_display import image_display
from .image_sink import image_sink
from .image_source import image_source
from .jscc_receiver import jscc_receiver
from .link_stats import link_stats
from .on_change import on_change
from .peak_meter import peak_meter
from .sigmf_recorder import sigmf_recorder

__all__ = [
    "image_source",
    "jscc_receiver",
    "image_sink",
    "image_display",
    "link_stats",
    "on_change",
    "peak_meter",
    "sigmf_recorder",
]

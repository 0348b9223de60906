#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""Qt display of received images: the JSCC image and the refined image side by side.

PyQt5 is imported when a display is constructed, not when this module is, so
``from gnuradio import diffjscc`` works on machines without Qt or a display.
"""

from __future__ import annotations

import functools
import math

import pmt
from gnuradio import gr

IN_IMAGES = pmt.intern("images")


def caption(info: dict) -> str:
    """One line describing a received image, from an image sink's message."""
    parts = [f"image {info.get('image_id', '?')}"]
    snr = info.get("snr_db")
    if isinstance(snr, (int, float)) and math.isfinite(snr):
        parts.append(f"estimated SNR {snr:.1f} dB")
    if "frames_received" in info and "frame_count" in info:
        parts.append(f"frames {info['frames_received']}/{info['frame_count']}")
    for key, label in (("psnr", "PSNR"), ("psnr_refined", "refined PSNR")):
        value = info.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{label} {value:.2f} dB")
    if info.get("partial"):
        parts.append("PARTIAL")
    if info.get("error"):
        parts.append(f"error: {info['error']}")
    return "  |  ".join(parts)


@functools.lru_cache(maxsize=1)
def _widget_class():
    from PyQt5 import QtCore, QtGui, QtWidgets

    class ImageDisplayWidget(QtWidgets.QWidget):
        # Messages arrive on GNU Radio's thread; a queued signal hands them to the GUI thread.
        received = QtCore.pyqtSignal(dict)

        def __init__(self, title: str, max_side: int, parent=None):
            super().__init__(parent)
            self.max_side = max_side
            layout = QtWidgets.QGridLayout(self)
            if title:
                heading = QtWidgets.QLabel(f"<b>{title}</b>")
                layout.addWidget(heading, 0, 0, 1, 2)
            self.panels = {}
            for col, (key, name) in enumerate((("path", "JSCC"), ("refined_path", "refined"))):
                box = QtWidgets.QVBoxLayout()
                label = QtWidgets.QLabel(name)
                label.setAlignment(QtCore.Qt.AlignCenter)
                image = QtWidgets.QLabel("(waiting)")
                image.setAlignment(QtCore.Qt.AlignCenter)
                image.setMinimumSize(160, 120)
                box.addWidget(label)
                box.addWidget(image, 1)
                layout.addLayout(box, 1, col)
                self.panels[key] = image
            self.status = QtWidgets.QLabel("no image yet")
            layout.addWidget(self.status, 2, 0, 1, 2)
            self._qtgui = QtGui
            self.received.connect(self.show_result, QtCore.Qt.QueuedConnection)

        def show_result(self, info: dict) -> None:
            for key, panel in self.panels.items():
                path = info.get(key)
                pixmap = self._qtgui.QPixmap(path) if path else self._qtgui.QPixmap()
                if pixmap.isNull():
                    panel.setPixmap(self._qtgui.QPixmap())
                    panel.setText("(none)" if not path else f"(cannot read {path})")
                    continue
                if max(pixmap.width(), pixmap.height()) > self.max_side:
                    pixmap = pixmap.scaled(
                        self.max_side,
                        self.max_side,
                        aspectRatioMode=1,  # Qt.KeepAspectRatio
                        transformMode=1,  # Qt.SmoothTransformation
                    )
                panel.setPixmap(pixmap)
            self.status.setText(caption(info))

    return ImageDisplayWidget


class image_display(gr.basic_block):
    """Shows what an image sink reports: JSCC image, refined image, estimated SNR.

    Message input ``images``: the dicts sent by ``diffjscc.image_sink``
    (paths of the PNG files it wrote, estimated SNR, frames, PSNR). Needs a
    running QApplication, as every Qt GUI block; ``qwidget()`` gives the
    widget to place in the window.
    """

    def __init__(self, title="", max_side=512, parent=None):
        gr.basic_block.__init__(self, name="diffjscc_image_display", in_sig=None, out_sig=None)
        self._widget = _widget_class()(str(title), int(max_side), parent)
        self.last = None
        self.message_port_register_in(IN_IMAGES)
        self.set_msg_handler(IN_IMAGES, self._on_image)

    def qwidget(self):
        return self._widget

    def _on_image(self, msg) -> None:
        info = pmt.to_python(msg) if pmt.is_dict(msg) else None
        if not isinstance(info, dict):
            self.logger.debug("ignoring a message that is not a dict")
            return
        self.last = info
        self._widget.received.emit(info)

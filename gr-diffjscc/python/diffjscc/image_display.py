#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""Qt display of received images: transmitted, JSCC and refined image side by side.

PyQt5 is imported when a display is constructed, not when this module is, so
``from gnuradio import diffjscc`` works on machines without Qt or a display.
"""

from __future__ import annotations

import collections
import functools
import math
import time

import pmt
from gnuradio import gr

IN_IMAGES = pmt.intern("images")
IN_TX_INFO = pmt.intern("tx_info")
# Paths of transmitted images kept for matching received ones: a repeating source cycles
# through its images, so a few dozen ids are enough and the table stays bounded.
MAX_KNOWN_ORIGINALS = 64
PANELS = (("original_path", "transmitted"), ("path", "JSCC"), ("refined_path", "refined"))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def caption(info: dict) -> str:
    """One line describing a received image, from an image sink's message."""
    parts = [f"image {info.get('image_id', '?')}"]
    snr = info.get("snr_db")
    if _number(snr):
        parts.append(f"estimated SNR {snr:.1f} dB")
    if "frames_received" in info and "frame_count" in info:
        parts.append(f"frames {info['frames_received']}/{info['frame_count']}")
    for key, label in (("psnr", "PSNR"), ("psnr_refined", "refined PSNR")):
        value = info.get(key)
        if _number(value):
            parts.append(f"{label} {value:.2f} dB")
    latency = info.get("latency_s")
    if _number(latency):
        parts.append(f"latency {latency:.2f} s")
    counters = info.get("counters")
    if isinstance(counters, dict):
        dropped = sum(v for k, v in counters.items() if "dropped" in k and _number(v) and v > 0)
        if dropped:
            parts.append(f"dropped {int(dropped)}")
    if info.get("partial"):
        parts.append("PARTIAL")
    if info.get("error"):
        parts.append(f"error: {str(info['error'])[:200]}")
    return "  |  ".join(parts)


@functools.lru_cache(maxsize=1)
def _widget_class():
    from PyQt5 import QtCore, QtGui, QtWidgets

    class ScaledImage(QtWidgets.QLabel):
        """A picture that fills its cell and keeps its aspect ratio as the window resizes."""

        def __init__(self, parent=None):
            super().__init__(parent)
            self._source = QtGui.QPixmap()
            self.setAlignment(QtCore.Qt.AlignCenter)
            # Ignored: the picture never asks for its own size, so a large image cannot
            # push the window's layout around; the cell decides, the picture follows.
            self.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Ignored)
            self.setMinimumSize(80, 60)

        def set_source(self, pixmap, text: str = "") -> None:
            self._source = pixmap
            if pixmap.isNull():
                self.setPixmap(QtGui.QPixmap())
                self.setText(text)
            else:
                self._rescale()

        def source(self):
            return self._source

        def resizeEvent(self, event):  # noqa: N802  (Qt's name)
            super().resizeEvent(event)
            if not self._source.isNull():
                self._rescale()

        def _rescale(self) -> None:
            self.setPixmap(
                self._source.scaled(
                    self.size(), QtCore.Qt.KeepAspectRatio, QtCore.Qt.SmoothTransformation
                )
            )

    class ImageDisplayWidget(QtWidgets.QWidget):
        # Messages arrive on GNU Radio's thread; a queued signal hands them to the GUI thread.
        received = QtCore.pyqtSignal(dict)

        def __init__(self, title: str, parent=None):
            super().__init__(parent)
            layout = QtWidgets.QGridLayout(self)
            row = 0
            if title:
                layout.addWidget(QtWidgets.QLabel(f"<b>{title}</b>"), row, 0, 1, len(PANELS))
                row += 1
            self.panels = {}
            for col, (key, name) in enumerate(PANELS):
                heading = QtWidgets.QLabel(name)
                heading.setAlignment(QtCore.Qt.AlignCenter)
                layout.addWidget(heading, row, col)
                image = ScaledImage()
                image.setText("(waiting)")
                layout.addWidget(image, row + 1, col)
                layout.setColumnStretch(col, 1)
                self.panels[key] = image
            layout.setRowStretch(row + 1, 1)
            self.status = QtWidgets.QLabel("no image yet")
            self.status.setWordWrap(True)
            self.status.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
            layout.addWidget(self.status, row + 2, 0, 1, len(PANELS))
            self.shown_at = None  # time.monotonic() of the last caption update
            self._cache = collections.OrderedDict()  # path -> QPixmap (originals repeat)
            self._qtgui = QtGui
            self.received.connect(self.show_result, QtCore.Qt.QueuedConnection)

        def _pixmap(self, path: str, cache: bool):
            pixmap = self._cache.get(path) if cache else None
            if pixmap is None:
                pixmap = self._qtgui.QPixmap(path)
                if cache and not pixmap.isNull():
                    self._cache[path] = pixmap
                    while len(self._cache) > 8:
                        self._cache.popitem(last=False)
            return pixmap

        def show_result(self, info: dict) -> None:
            for key, panel in self.panels.items():
                path = info.get(key)
                if not path:
                    panel.set_source(self._qtgui.QPixmap(), "(none)")
                    continue
                pixmap = self._pixmap(str(path), cache=key == "original_path")
                panel.set_source(pixmap, f"(cannot read {path})")
            self.status.setText(caption(info))
            self.shown_at = time.monotonic()

    return ImageDisplayWidget


class image_display(gr.basic_block):
    """Shows what an image sink reports: transmitted, JSCC and refined image, and a caption.

    Message input ``images``: the dicts sent by ``diffjscc.image_sink`` (paths of the
    PNG files it wrote, estimated SNR, frames, PSNR, latency). Message input
    ``tx_info`` (optional): the image source's dicts, which give the transmitted image
    of each image id. Needs a running QApplication, as every Qt GUI block;
    ``qwidget()`` gives the widget to place in the window.
    """

    def __init__(self, title="", parent=None):
        gr.basic_block.__init__(self, name="diffjscc_image_display", in_sig=None, out_sig=None)
        self._widget = _widget_class()(str(title), parent)
        self.last = None
        self._originals: collections.OrderedDict[int, str] = collections.OrderedDict()
        self.message_port_register_in(IN_IMAGES)
        self.set_msg_handler(IN_IMAGES, self._on_image)
        self.message_port_register_in(IN_TX_INFO)
        self.set_msg_handler(IN_TX_INFO, self._on_tx_info)

    def qwidget(self):
        return self._widget

    def _on_tx_info(self, msg) -> None:
        info = pmt.to_python(msg) if pmt.is_dict(msg) else None
        if not isinstance(info, dict) or not info.get("path"):
            return
        try:
            image_id = int(info["image_id"])
        except (KeyError, TypeError, ValueError):
            return
        self._originals[image_id] = str(info["path"])
        self._originals.move_to_end(image_id)
        while len(self._originals) > MAX_KNOWN_ORIGINALS:
            self._originals.popitem(last=False)

    def _on_image(self, msg) -> None:
        info = pmt.to_python(msg) if pmt.is_dict(msg) else None
        if not isinstance(info, dict):
            self.logger.debug("ignoring a message that is not a dict")
            return
        if not info.get("original_path"):
            try:
                info["original_path"] = self._originals.get(int(info.get("image_id")))
            except (TypeError, ValueError):
                info["original_path"] = None
        self.last = info
        self._widget.received.emit(info)

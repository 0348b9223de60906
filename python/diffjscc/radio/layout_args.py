"""Command-line options for a waveform's layout, shared by the commands that build one.

    add_layout_options(parser)        # --fft-size --cp-length --used-carriers --pilot-spacing --pilot-stagger
    settings = layout_settings("ofdm", args)   # block keywords: {"fft_size": 512, ...}
    wave = get_waveform("ofdm", **settings)     # or pass settings to the image source and receiver

The option names are those of ``benchmarks/ofdm_robustness.py``. ``--pilot-spacing``
is the chosen waveform's: symbols between pilots for the single carrier, used
subcarriers between pilots of an OFDM symbol (the blocks' ``ofdm_pilot_spacing``).
The other options are OFDM's alone; given with another waveform they are refused
rather than ignored, since a layout that is silently dropped would look like one
that was tried. Both ends of a link must use the same layout: the frame header does
not carry it.
"""

from __future__ import annotations

import argparse

from diffjscc.errors import ConfigError

# OfdmConfig fields with an option of their own (the pilot spacing is shared).
OFDM_OPTIONS = ("fft_size", "cp_length", "used_carriers", "pilot_stagger")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text[:40]!r}") from None
    # 0 would mean "the default" to the blocks (Waveform.from_block_params) and a real
    # 0 to OfdmConfig: refused, so that what is checked here is what the blocks build.
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_layout_options(parser: argparse.ArgumentParser) -> None:
    """The layout options (each default None: the waveform's own default)."""
    group = parser.add_argument_group(
        "waveform layout", "both ends must use the same (docs/ofdm.md); default: the waveform's"
    )
    group.add_argument(
        "--fft-size", type=_positive_int, metavar="N", help="OFDM FFT size (1024; 512: mobile)"
    )
    group.add_argument(
        "--cp-length", type=_positive_int, metavar="N", help="OFDM cyclic prefix, samples (32)"
    )
    group.add_argument(
        "--used-carriers",
        type=_positive_int,
        metavar="N",
        help="OFDM subcarriers around DC that carry something (492; 256 at FFT size 512)",
    )
    group.add_argument(
        "--pilot-spacing",
        type=_positive_int,
        metavar="N",
        help="a pilot every N symbols (sc) or every N used subcarriers of an OFDM symbol "
        "(ofdm: 32; 16 at FFT size 512)",
    )
    group.add_argument(
        "--pilot-stagger",
        type=_positive_int,
        choices=[1, 2],
        help="OFDM comb positions stepped through symbol by symbol (2)",
    )


def layout_settings(waveform: str, args) -> dict:
    """The block keyword settings the options give for ``waveform``; ConfigError for an
    OFDM option with another waveform."""
    given = {k: getattr(args, k) for k in OFDM_OPTIONS if getattr(args, k, None) is not None}
    if given and waveform != "ofdm":
        flag = "--" + next(iter(given)).replace("_", "-")
        raise ConfigError(f"{flag} is an OFDM setting: add --waveform ofdm")
    spacing = getattr(args, "pilot_spacing", None)
    if spacing is not None:
        given["ofdm_pilot_spacing" if waveform == "ofdm" else "pilot_spacing"] = spacing
    return given

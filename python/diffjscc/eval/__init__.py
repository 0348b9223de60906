"""Evaluation of the codec against separation baselines at capacity: ``diffjscc eval``.

``run`` sends the images (JSCC, JSCC with optimised symbols, refined, JPEG 2000, AVIF),
``records`` holds the result format, ``plot`` draws it, ``command`` is the command line
(``main(argv)``; also ``python -m diffjscc.eval``).
"""

from diffjscc.eval.command import main, setup_args
from diffjscc.eval.plot import plot_results
from diffjscc.eval.records import (
    CODECS,
    FORMAT,
    JSCC_METHODS,
    METHODS,
    build_records,
    machine_info,
    markdown_table,
)
from diffjscc.eval.run import evaluate, jscc_for_image, load_images, separation_for_image

__all__ = [
    "CODECS",
    "FORMAT",
    "JSCC_METHODS",
    "METHODS",
    "build_records",
    "evaluate",
    "jscc_for_image",
    "load_images",
    "machine_info",
    "main",
    "markdown_table",
    "plot_results",
    "separation_for_image",
    "setup_args",
]

"""The one command line, ``diffjscc <command> ...``.

Each command lives in a module exposing ``main(argv) -> int``; this file only
dispatches, importing the module lazily so ``diffjscc --help`` stays fast and a
command that needs torch does not slow down one that does not.
"""

from __future__ import annotations

import importlib
import sys

from diffjscc.errors import DiffJSCCError

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "roundtrip": (
        "diffjscc.jscc.roundtrip",
        "encode, send over a simulated channel, decode one image",
    ),
    "train-jscc": ("diffjscc.train.jscc", "train the deep JSCC codec on an image folder"),
    "export-onnx": ("diffjscc.jscc.onnx_export", "export a JSCC encoder to ONNX"),
    "convert-official": (
        "diffjscc.jscc.convert",
        "convert an official DiffJSCC checkpoint's JSCC part",
    ),
    "eval": ("diffjscc.eval", "PSNR / MS-SSIM of JSCC and separation baselines"),
    "replay": ("diffjscc.radio.replay", "receive and decode a SigMF recording, as if live"),
    "worker": ("diffjscc.worker.server", "serve decoding and refinement over ZMQ"),
    "keys": ("diffjscc.worker.keys", "generate ZMQ CURVE key pairs for the worker"),
    "train-refiner": ("diffjscc.refiner.train", "stage-2 training of the diffusion control module"),
    "refine": ("diffjscc.refiner.cli", "refine a JSCC image with the diffusion refiner"),
    "convert-official-refiner": (
        "diffjscc.refiner.official",
        "convert an official DiffJSCC checkpoint into a refiner folder",
    ),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: diffjscc <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "diffjscc <command> --help shows the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from diffjscc import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"diffjscc: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except DiffJSCCError as exc:
        print(f"diffjscc {name}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        # An optional dependency (torch, diffusers, ...) of a lean, transmitter-only install.
        if not exc.name or exc.name.partition(".")[0] == "diffjscc":
            raise
        print(
            f"diffjscc {name}: error: needs the Python package {exc.name!r}, which is not "
            "installed; the optional extras bring it: pip install -e '.[torch,refiner,eval]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"diffjscc {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

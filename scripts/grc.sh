#!/usr/bin/env bash
# GNU Radio Companion with this checkout's blocks and interpreter, so that F6 runs every
# flowgraph in grc/; and the same environment for compiling or running them without GRC.
#
#   scripts/grc.sh [FILE.grc ...]               start GRC (optionally opening flowgraphs)
#   scripts/grc.sh --run FILE.grc [ARGS ...]    compile into build/grc/ and run it (ARGS: its options)
#   scripts/grc.sh --compile FILE.grc [...]     compile into build/grc/ (or DIFFJSCC_GRC_OUT)
#   scripts/grc.sh --env                        print the environment as shell exports
#
# Why: GRC runs a generated script with the interpreter GRC itself runs under (`{python}` of
# the options block's run command is sys.executable). Stock `gnuradio-companion` runs under
# /usr/bin/python3, which has no `diffjscc`, onnxruntime or torch; those live in .venv (made
# with --system-site-packages, so GNU Radio and GTK are visible from it). This script starts
# GRC's own entry point under the venv's python. The module's blocks come from the source tree:
# GRC_BLOCKS_PATH for the block yml, and a folder on PYTHONPATH holding `gnuradio/diffjscc` as a
# link to gr-diffjscc/python/diffjscc (the `gnuradio` package extends its path over PYTHONPATH,
# so `from gnuradio import diffjscc` finds it ahead of an installed copy).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${DIFFJSCC_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
OUT=${DIFFJSCC_GRC_OUT:-$ROOT/build/grc}
STAGE=$VENV/gr-diffjscc-source

die() { echo "grc.sh: $*" >&2; exit 2; }

ready() {
    [ -x "$PY" ] && "$PY" -c "import diffjscc, onnxruntime; from gnuradio import gr" 2>/dev/null
}
gui_ready() {
    "$PY" -c "import gi; gi.require_version('Gtk', '3.0'); from PyQt5 import Qt" 2>/dev/null
}

setup_env() {
    if ! ready || { [ "${1:-}" = gui ] && ! gui_ready; }; then
        echo "grc.sh: installing what is missing (DIFFJSCC_GUI=1 scripts/bootstrap.sh)" >&2
        DIFFJSCC_GUI=1 "$ROOT/scripts/bootstrap.sh" >&2
    fi
    ready || die "$PY cannot import diffjscc, onnxruntime and gnuradio (see scripts/bootstrap.sh)"
    mkdir -p "$STAGE/gnuradio"
    ln -sfn "$ROOT/gr-diffjscc/python/diffjscc" "$STAGE/gnuradio/diffjscc"
    export GRC_BLOCKS_PATH="$ROOT/gr-diffjscc/grc${GRC_BLOCKS_PATH:+:$GRC_BLOCKS_PATH}"
    export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}"
    export DIFFJSCC_PYTHON="$PY"
}

compile() {
    mkdir -p "$OUT"
    for grc in "$@"; do
        [ -f "$grc" ] || die "no such flowgraph: $grc"
    done
    local grcc
    grcc=$(command -v grcc) || die "grcc not found: apt-get install gnuradio"
    "$PY" "$grcc" -o "$OUT" "$@" >&2
}

generated_name() {
    # grcc names the script after the flowgraph's id, not its file name.
    "$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["options"]["parameters"]["id"])' "$1"
}

case "${1:-}" in
--env)
    setup_env
    # The venv's bin first, so that `python` and the generated scripts' own
    # `#!/usr/bin/env python3` run under the interpreter that has diffjscc.
    printf 'export GRC_BLOCKS_PATH=%q\nexport PYTHONPATH=%q\nexport DIFFJSCC_PYTHON=%q\nexport PATH=%q\n' \
        "$GRC_BLOCKS_PATH" "$PYTHONPATH" "$PY" "$(dirname "$PY"):$PATH"
    ;;
--compile)
    shift
    [ $# -gt 0 ] || die "--compile needs at least one .grc file"
    setup_env
    compile "$@"
    ;;
--run)
    shift
    [ $# -gt 0 ] || die "--run needs a .grc file"
    grc=$1
    shift
    setup_env
    compile "$grc"
    exec "$PY" -u "$OUT/$(generated_name "$grc").py" "$@"
    ;;
-h | --help)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    ;;
*)
    setup_env gui
    GRC=$(command -v gnuradio-companion) || die "gnuradio-companion not found: apt-get install gnuradio"
    exec "$PY" "$GRC" "$@"
    ;;
esac

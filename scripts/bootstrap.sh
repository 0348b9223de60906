#!/usr/bin/env bash
# Installs whatever is missing for gr-diffjscc on a Debian/Ubuntu machine:
# GNU Radio 3.10 from the distribution, a virtual environment made from the
# system python3 (so `gnuradio` and `pmt` are importable), and the package.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${DIFFJSCC_VENV:-$ROOT/.venv}
SYS_PY=/usr/bin/python3
# The CPU build of torch; a plain `torch` would pull a several-GB CUDA build.
TORCH_SPEC=${DIFFJSCC_TORCH_SPEC:-torch==2.13.0}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
$SYS_PY -c "from gnuradio import gr, digital, channels, zeromq; import pmt" 2>/dev/null \
    || need_apt+=(gnuradio)
dpkg -s gnuradio-dev >/dev/null 2>&1 || need_apt+=(gnuradio-dev)
command -v cmake >/dev/null || need_apt+=(cmake)
# GNU Radio's CMake package enables C and C++ to find its own dependencies.
command -v g++ >/dev/null || need_apt+=(g++)
$SYS_PY -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3-venv)
# With a GUI wanted (DIFFJSCC_GUI=1, as scripts/grc.sh asks): GTK 3 for GNU Radio Companion,
# Qt 5 for the Qt flowgraphs, Xvfb for running those without a screen (tests, benchmarks).
if [ "${DIFFJSCC_GUI:-0}" = 1 ]; then
    $SYS_PY -c "import gi; gi.require_version('Gtk', '3.0'); gi.require_foreign('cairo')" \
        2>/dev/null || need_apt+=(gir1.2-gtk-3.0 python3-gi-cairo)
    $SYS_PY -c "from PyQt5 import Qt" 2>/dev/null || need_apt+=(python3-pyqt5)
    command -v Xvfb >/dev/null || need_apt+=(xvfb)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "[bootstrap] apt-get install ${need_apt[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating $VENV from $SYS_PY (with system site packages)"
    $SYS_PY -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"

# Pin numpy to the distribution's build: numpy 2 in the venv breaks `from gnuradio import gr`.
SYS_NUMPY=$($SYS_PY -c "import numpy; print(numpy.__version__)")
CONSTRAINTS="$VENV/constraints.txt"
echo "numpy==$SYS_NUMPY" >"$CONSTRAINTS"

stamp="$VENV/.diffjscc-installed"
want=$(cat pyproject.toml "$CONSTRAINTS" | sha1sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[bootstrap] installing Python packages into $VENV"
    "$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "$TORCH_SPEC"
    "$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" \
        -e ".[torch,refiner,eval,dev,sigmf,fast]"
    echo "$want" >"$stamp"
fi
"$PY" - <<'PYCHECK'
import numpy
from gnuradio import gr  # noqa: F401  (fails loudly if numpy was upgraded)
assert numpy.__version__.startswith("1."), numpy.__version__
PYCHECK

# The receivers' numba kernels compile once (about 40 s on a 2-core VM) into numba's cache
# beside their sources; done here, so that the first run of the main job or of a live
# flowgraph does not stall on it. Again whenever the kernels' sources change.
kernels_stamp="$VENV/.diffjscc-kernels"
kernels=$(cat python/diffjscc/radio/_numba.py python/diffjscc/radio/_fast.py \
    python/diffjscc/radio/_fast_ofdm.py python/diffjscc/radio/frontend.py "$stamp" \
    | sha1sum | cut -d' ' -f1)
if [ "${DIFFJSCC_NUMBA:-1}" != 0 ] && { [ ! -f "$kernels_stamp" ] \
    || [ "$(cat "$kernels_stamp")" != "$kernels" ]; }; then
    echo "[bootstrap] compiling the receivers' kernels (numba, once)"
    "$PY" -c "from diffjscc.radio import _fast, _fast_ofdm, frontend
_fast.load(); _fast_ofdm.load(); frontend.load()" \
        && echo "$kernels" >"$kernels_stamp"
fi

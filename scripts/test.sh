#!/usr/bin/env bash
# The project's test command: lint, the Python tests (which include the GNU Radio
# module's qa_*.py), and the module's CMake build with its ctest QA run.
#
#   scripts/test.sh              # everything quick (slow / pretrained tests excluded)
#   scripts/test.sh -m slow      # extra pytest arguments are passed on
#
# Installs whatever is missing first (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# With GRC's GTK, Qt and Xvfb, so that the GUI tests (F6 in GRC, the Qt loopback) run, not skip.
DIFFJSCC_GUI=${DIFFJSCC_GUI:-1} scripts/bootstrap.sh
VENV=${DIFFJSCC_VENV:-$ROOT/.venv}
BUILD=${DIFFJSCC_BUILD:-$ROOT/build}

echo "[test] ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

echo "[test] pytest"
"$VENV/bin/pytest" -q "$@"

if command -v cmake >/dev/null && command -v ctest >/dev/null; then
    echo "[test] gr-diffjscc: cmake build and ctest"
    cmake -S "$ROOT" -B "$BUILD" -DDIFFJSCC_QA_PYTHON="$VENV/bin/python" >/dev/null
    # copy_module_for_tests is part of the build: ctest imports the module from there.
    cmake --build "$BUILD" >/dev/null
    ctest --test-dir "$BUILD" --output-on-failure --timeout 300
else
    echo "[test] cmake/ctest not found: skipping the gr-diffjscc CMake build" >&2
fi

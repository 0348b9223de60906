#!/usr/bin/env bash
# The project's main job on a fresh machine: install what is missing, then run the
# headless GNU Radio loopback (image -> JSCC -> radio -> channel -> receiver -> decoder).
#   scripts/loopback.sh [examples/loopback.py options, e.g. --snr 4 --image photo.png]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec "${DIFFJSCC_VENV:-$PWD/.venv}/bin/python" examples/loopback.py "$@"

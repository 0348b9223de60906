"""benchmarks/fuzz_soak.py in miniature: its generators and accounting hold on a short run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_a_short_soak_stops_no_service_and_answers_or_counts_everything(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("fuzz_soak", BENCHMARKS / "fuzz_soak.py")
        soak = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(soak)
        out = tmp_path / "soak.json"
        status = soak.main(["--messages", "800", "--out", str(out), "--seed", "3"])
    finally:
        sys.path.remove(str(BENCHMARKS))
    report = json.loads(out.read_text())
    assert status == 0, report
    assert report["service_stops"] == 0 and all(report["answered_or_counted"].values())
    assert report["hostile_messages"] == 800 and report["valid_probe"]["failed"] == 0
    assert report["by_target"]["frontend"]["kinds"]["targeted"] > 0

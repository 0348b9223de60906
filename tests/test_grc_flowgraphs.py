"""Every flowgraph compiles with grcc and uses only blocks that exist; block yml is complete.

grcc silently drops an unknown block that has no connections, so compiling is
not enough: each block id of each .grc is checked against the installed block
definitions and the module's own, and each block must appear in the output.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FLOWGRAPHS = sorted((ROOT / "grc").glob("*.grc"))
MODULE = ROOT / "gr-diffjscc"
MODULE_YML = sorted((MODULE / "grc").glob("*.block.yml"))
SYSTEM_BLOCKS = Path("/usr/share/gnuradio/grc/blocks")
GRCC = shutil.which("grcc")

needs_grcc = pytest.mark.skipif(GRCC is None, reason="grcc (GNU Radio Companion) not installed")


def _import_module_from_source():
    """``gnuradio.diffjscc`` from this checkout, ahead of any installed copy."""
    gnuradio = pytest.importorskip("gnuradio")
    source = str(MODULE / "python")
    if source not in gnuradio.__path__:
        gnuradio.__path__.insert(0, source)
    import gnuradio.diffjscc

    return gnuradio.diffjscc


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _known_block_ids() -> set[str]:
    ids = set()
    for path in list(SYSTEM_BLOCKS.glob("*.block.yml")) + MODULE_YML:
        data = _load(path)
        if isinstance(data, dict) and "id" in data:
            # GRC registers `import_` (a Python keyword with an underscore) as `import`.
            ids.add(data["id"].rstrip("_"))
    return ids


def _grc_platform():
    """GNU Radio Companion's own block library, with the module's blocks."""
    try:
        from gnuradio import gr
        from gnuradio.grc.core.platform import Platform
    except ImportError:
        pytest.skip("GNU Radio Companion is not installed")
    platform = Platform(
        version=gr.version(),
        version_parts=(gr.major_version(), gr.api_version(), gr.minor_version()),
        prefs=gr.prefs(),
    )
    platform.build_library()
    return platform


def test_flowgraphs_present():
    names = {p.stem for p in FLOWGRAPHS}
    assert {"loopback_sim", "loopback_sim_no_gui", "usrp_tx", "usrp_rx", "usrp_trx"} <= names


def test_every_gui_flowgraph_has_a_no_gui_twin():
    for path in FLOWGRAPHS:
        if _load(path)["options"]["parameters"]["generate_options"] == "qt_gui":
            assert (path.parent / f"{path.stem}_no_gui.grc").exists() or path.stem.startswith(
                "usrp"
            ), f"{path.name} has no no_gui twin"


@pytest.mark.skipif(not SYSTEM_BLOCKS.is_dir(), reason="GNU Radio block definitions not installed")
def test_every_block_id_exists():
    known = _known_block_ids()
    for path in FLOWGRAPHS:
        for block in _load(path)["blocks"]:
            assert block["id"] in known, f"{path.name}: unknown block id {block['id']!r}"


def test_usrp_flowgraphs_expose_radio_settings():
    for name, wanted in {
        "usrp_tx": {"dev_args", "freq", "tx_gain", "samp_rate"},
        "usrp_rx": {"dev_args", "freq", "rx_gain", "samp_rate"},
        "usrp_trx": {"dev_args", "freq", "tx_gain", "rx_gain", "samp_rate"},
    }.items():
        blocks = _load(ROOT / "grc" / f"{name}.grc")["blocks"]
        params = {b["name"] for b in blocks if b["id"] == "parameter"}
        assert wanted <= params, f"{name}.grc lacks parameters {wanted - params}"
        ids = {b["id"] for b in blocks}
        assert ids & {"uhd_usrp_sink", "uhd_usrp_source"}


def test_grc_loads_every_block_of_every_flowgraph(monkeypatch):
    """GRC turns an unknown block into a disabled placeholder: there must be none."""
    monkeypatch.setenv("GRC_BLOCKS_PATH", str(MODULE / "grc"))
    platform = _grc_platform()
    for path in FLOWGRAPHS:
        flowgraph = platform.make_flow_graph(str(path))
        flowgraph.rewrite()
        flowgraph.validate()
        for block in flowgraph.blocks:
            assert not block.is_dummy_block, f"{path.name}: {block.name} ({block.key}) is unknown"
            assert block.enabled, f"{path.name}: {block.name} is disabled"
        assert flowgraph.is_valid(), f"{path.name}: {flowgraph.get_error_messages()}"


@needs_grcc
def test_grcc_compiles_every_flowgraph(tmp_path):
    env = dict(os.environ, GRC_BLOCKS_PATH=str(MODULE / "grc"))
    proc = subprocess.run(
        [GRCC, "-o", str(tmp_path), *map(str, FLOWGRAPHS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in FLOWGRAPHS:
        flowgraph = _load(path)
        out = tmp_path / f"{flowgraph['options']['parameters']['id']}.py"
        assert out.exists(), f"grcc wrote nothing for {path.name}"
        code = out.read_text()
        compile(code, str(out), "exec")
        for block in flowgraph["blocks"]:
            if block["id"] == "import":
                assert block["parameters"]["imports"] in code
                continue
            if block["id"] == "note":
                continue
            # Dropped blocks leave no trace in the generated code.
            assert re.search(rf"\b{re.escape(block['name'])}\b", code), (
                f"{path.name}: block {block['name']} ({block['id']}) missing from generated code"
            )


def test_module_block_yml_is_complete():
    assert {p.name for p in MODULE_YML} >= {
        "diffjscc_image_source.block.yml",
        "diffjscc_jscc_receiver.block.yml",
        "diffjscc_image_sink.block.yml",
        "diffjscc_image_display.block.yml",
    }
    for path in MODULE_YML:
        data = _load(path)
        assert data["id"] == path.name.removesuffix(".block.yml")
        assert data.get("documentation", "").strip(), f"{path.name}: no documentation"
        assert data.get("file_format") == 1
        for param in data.get("parameters", []):
            assert param.get("label"), f"{path.name}: parameter {param['id']} has no label"
            if param["dtype"] != "gui_hint":
                # Each parameter is explained in the documentation section.
                assert param["label"].split(" (")[0] in data["documentation"], (
                    f"{path.name}: parameter {param['label']!r} not documented"
                )


def test_nothing_generated_left_unfixed():
    for path in MODULE.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".yml", ".txt", ".md", ".in", ".cmake"):
            text = path.read_text()
            assert "<+" not in text, f"{path}: template placeholder left"
            assert "FIX ME" not in text, f"{path}: FIX ME left"
    for absent in ("lib", "include", "python/diffjscc/bindings"):
        assert not (MODULE / absent).exists(), f"gr-diffjscc/{absent} should not exist"
    cmake = "\n".join(
        line.split("#")[0]
        for p in MODULE.rglob("CMakeLists.txt")
        for line in p.read_text().splitlines()
    )
    assert "bindings" not in cmake and "add_subdirectory(lib)" not in cmake
    assert "Config.cmake" not in cmake


def test_yml_parameters_match_block_constructors():
    gnuradio_diffjscc = _import_module_from_source()
    for path in MODULE_YML:
        data = _load(path)
        factory = getattr(gnuradio_diffjscc, data["id"].removeprefix("diffjscc_"))
        accepted = set(inspect.signature(factory.__init__).parameters)
        for param in data.get("parameters", []):
            if param["id"] != "gui_hint":
                assert param["id"] in accepted, (
                    f"{path.name}: {param['id']} not a constructor argument"
                )


def test_module_imports_neither_torch_nor_qt():
    """The transmitter and receiver blocks run without torch; no display is needed to import."""
    pytest.importorskip("gnuradio")
    code = (
        "import sys, gnuradio\n"
        f"gnuradio.__path__.insert(0, {str(MODULE / 'python')!r})\n"
        "from gnuradio import diffjscc\n"
        "assert diffjscc.__file__.startswith(" + repr(str(MODULE)) + "), diffjscc.__file__\n"
        "heavy = sorted(m for m in ('torch', 'PyQt5', 'matplotlib') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"importing gnuradio.diffjscc imported {proc.stdout.strip()}"

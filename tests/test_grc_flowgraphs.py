"""Every flowgraph compiles with grcc and uses only blocks that exist; block yml is complete.

grcc silently drops an unknown block that has no connections, so compiling is
not enough: each block id of each .grc is checked against the installed block
definitions and the module's own, and each block must appear in the output.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
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


def _blocks(name: str) -> dict:
    """name -> block of one flowgraph in grc/."""
    return {b["name"]: b for b in _load(ROOT / "grc" / f"{name}.grc")["blocks"]}


_COMPILED: dict = {}


def _compile_all(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """grcc on every flowgraph, once per session: (output folder, grcc's result)."""
    if _COMPILED:
        return _COMPILED["out"], _COMPILED["proc"]
    out = tmp_path_factory.mktemp("grcc-all")
    env = dict(os.environ, GRC_BLOCKS_PATH=str(MODULE / "grc"))
    proc = subprocess.run(
        [GRCC, "-o", str(out), *map(str, FLOWGRAPHS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    _COMPILED.update(out=out, proc=proc)
    return out, proc


def _generated(tmp_path_factory, name: str) -> str:
    """The Python that grcc makes of grc/<name>.grc."""
    out, proc = _compile_all(tmp_path_factory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return (out / f"{name}.py").read_text()


def _setters(code: str) -> dict[str, str]:
    """Body of each ``def set_<name>(self, ...)`` of a generated top block."""
    parts = re.split(r"\n    def ", code)
    return {m.group(1): part for part in parts if (m := re.match(r"set_(\w+)\(self, \w+\):", part))}


def _reaches_a_block(setters: dict[str, str], name: str, seen=()) -> bool:
    """Whether setting variable ``name`` calls a block's setter, directly or via variables."""
    body = setters.get(name, "")
    if re.search(r"self\.(?!set_)\w+\.set_\w+\(", body):
        return True
    return any(
        dep not in seen and _reaches_a_block(setters, dep, (*seen, name))
        for dep in re.findall(r"self\.set_(\w+)\(", body)
        if dep != name
    )


GUI_FLOWGRAPHS = ["loopback_sim", "usrp_tx", "usrp_rx", "usrp_trx"]


def test_flowgraphs_present():
    names = {p.stem for p in FLOWGRAPHS}
    assert {f"{n}_no_gui" for n in GUI_FLOWGRAPHS} | set(GUI_FLOWGRAPHS) <= names


def test_every_gui_flowgraph_has_a_no_gui_twin():
    for path in FLOWGRAPHS:
        kind = _load(path)["options"]["parameters"]["generate_options"]
        if kind == "qt_gui":
            twin = path.parent / f"{path.stem}_no_gui.grc"
            assert twin.exists(), f"{path.name} has no no_gui twin"
            assert _load(twin)["options"]["parameters"]["generate_options"] == "no_gui"
        else:
            assert path.stem.endswith("_no_gui"), (
                f"{path.name}: no_gui flowgraph without the suffix"
            )


@pytest.mark.skipif(not SYSTEM_BLOCKS.is_dir(), reason="GNU Radio block definitions not installed")
def test_every_block_id_exists():
    known = _known_block_ids()
    for path in FLOWGRAPHS:
        for block in _load(path)["blocks"]:
            assert block["id"] in known, f"{path.name}: unknown block id {block['id']!r}"


@pytest.mark.parametrize("gui", [True, False], ids=["qt", "no_gui"])
@pytest.mark.parametrize("kind", ["tx", "rx", "trx"])
def test_usrp_flowgraphs_have_the_over_the_air_controls(kind, gui):
    name = f"usrp_{kind}" if gui else f"usrp_{kind}_no_gui"
    blocks = _blocks(name)
    by_id: dict[str, list] = {}
    for b in blocks.values():
        by_id.setdefault(b["id"], []).append(b)
    params = {n for n, b in blocks.items() if b["id"] == "parameter"}
    tx, rx = kind in ("tx", "trx"), kind in ("rx", "trx")
    wanted = {"dev_args", "freq", "lo_offset", "samp_rate", "clock_source", "time_source"}
    assert wanted <= params, f"{name}: lacks parameters {wanted - params}"
    radios = by_id.get("uhd_usrp_sink", []) + by_id.get("uhd_usrp_source", [])
    assert len(radios) == tx + rx, f"{name}: expected {tx + rx} USRP blocks"
    for radio in radios:
        p = radio["parameters"]
        assert p["center_freq0"] == "uhd.tune_request(freq, lo_offset)", name
        assert (p["clock_source0"], p["time_source0"]) == ("clock_source", "time_source"), name
        assert p["dev_addr"] == "dev_args", f"{name}: the device address parameter is unused"
    # Gain, amplitude and pacing: sliders in the GUI (GRC callbacks), options without one.
    live = ({"tx_gain", "amplitude", "interval_s", "design_snr"} if tx else set()) | (
        {"rx_gain"} if rx else set()
    )
    widget = "variable_qtgui_range" if gui else "parameter"
    have = {n for n in live if n in blocks and blocks[n]["id"] == widget}
    assert have == live, f"{name}: {live - have} missing or not a {widget}"
    if tx:
        src = by_id["diffjscc_image_source"][0]["parameters"]
        assert (src["amplitude"], src["interval_s"]) == ("amplitude", "interval_s")
        assert by_id["uhd_usrp_sink"][0]["parameters"]["gain0"] == "tx_gain"
    if rx:
        assert by_id["uhd_usrp_source"][0]["parameters"]["gain0"] == "rx_gain"
    # A peak meter on each radio stream, and live statistics.
    assert len(by_id.get("diffjscc_peak_meter", [])) == tx + rx, name
    (stats,) = by_id["diffjscc_link_stats"]
    interval = stats["parameters"]["interval_s"]
    if rx:  # a SigMF recording of what was received, when a path is given
        (recorder,) = by_id["diffjscc_sigmf_recorder"]
        assert recorder["parameters"]["path"] == "record" and "record" in params, name
    if gui:
        assert {"qtgui_freq_sink_x", "qtgui_edit_box_msg"} <= by_id.keys(), name
        assert len(by_id.get("qtgui_number_sink", [])) == tx + rx, f"{name}: peak display"
        if rx:
            assert {"qtgui_const_sink_x", "diffjscc_image_display"} <= by_id.keys(), name
    else:
        assert interval == "stats_interval" and float(blocks[interval]["parameters"]["value"]) > 0
        assert stats["parameters"]["print_lines"] == "True", name
        assert not [i for i in by_id if i.startswith(("qtgui", "variable_qtgui"))], name


def test_usrp_gui_controls_act_at_once(tmp_path_factory):
    """Each slider's setter reaches a block (GRC callbacks), so moving it acts while running."""
    if GRCC is None:
        pytest.skip("grcc not installed")
    for name in GUI_FLOWGRAPHS:
        setters = _setters(_generated(tmp_path_factory, name))
        widgets = [
            n
            for n, b in _blocks(name).items()
            if b["id"] in ("variable_qtgui_range", "variable_qtgui_check_box")
        ]
        assert widgets, name
        for widget in widgets:
            assert _reaches_a_block(setters, widget), f"{name}: moving {widget} changes nothing"


def test_qt_loopback_controls(tmp_path_factory):
    blocks = _blocks("loopback_sim")
    ranges = {n for n, b in blocks.items() if b["id"] == "variable_qtgui_range"}
    assert {"snr_db", "enc_snr_db", "cfo", "drift_ppm", "fading_draw", "interval_s"} <= ranges
    checks = {n for n, b in blocks.items() if b["id"] == "variable_qtgui_check_box"}
    assert {"enc_follows", "fading"} <= checks
    chan = blocks["channels_channel_model_0"]["parameters"]
    assert (chan["noise_voltage"], chan["freq_offset"], chan["epsilon"], chan["taps"]) == (
        "noise_voltage",
        "cfo / band_ratio",
        "epsilon",
        "[h]",
    )
    assert blocks["diffjscc_image_source_0"]["parameters"]["design_snr_db"] == "design_snr"
    assert blocks["design_snr"]["parameters"]["value"] == "snr_db if enc_follows else enc_snr_db"
    for sink in ("qtgui_freq_sink_x_0", "qtgui_time_sink_x_0", "qtgui_const_sink_x_0"):
        assert sink in blocks
    # A moved control sends the next image at once (not at the next interval).
    flowgraph = _load(ROOT / "grc" / "loopback_sim.grc")
    assert ["diffjscc_on_change_0", "out", "diffjscc_image_source_0", "next"] in flowgraph[
        "connections"
    ]
    watched = blocks["diffjscc_on_change_0"]["parameters"]["value"]
    assert all(v in watched for v in ("design_snr", "noise_voltage", "cfo", "epsilon", "h"))
    time_sink = blocks["qtgui_time_sink_x_0"]["parameters"]
    assert (time_sink["label1"], time_sink["label2"]) == ("I", "Q")
    if GRCC is not None:
        setters = _setters(_generated(tmp_path_factory, "loopback_sim"))
        # The encoder follows the channel's SNR slider unless set apart, and the noise too.
        assert "self.set_noise_voltage(" in setters["snr_db"]
        assert "channels_channel_model_0.set_noise_voltage(" in setters["noise_voltage"]
        assert "set_design_snr_db" in setters["design_snr"]
        assert "self.set_design_snr(" in setters["snr_db"]
        assert "self.set_design_snr(" in setters["enc_follows"]
        assert "set_taps" in setters["h"] and "self.set_h(" in setters["fading_draw"]


# Blocks whose settings must be the transmitter's waveform.
WAVEFORM_BLOCKS = ("diffjscc_image_source", "diffjscc_jscc_receiver", "diffjscc_sigmf_recorder")


def test_the_waveform_is_one_parameter_wired_to_every_block():
    """One `waveform` per flowgraph (an option, -w/--waveform; the replay reads it from the
    recording's meta), and every transmitter, receiver and recorder uses it."""
    for path in FLOWGRAPHS:
        blocks = _blocks(path.stem)
        users = [b for b in blocks.values() if b["id"] in WAVEFORM_BLOCKS]
        assert users, path.name
        for block in users:
            assert block["parameters"]["waveform"] == "waveform", f"{path.name}: {block['name']}"
        chosen = blocks["waveform"]
        if path.stem == "replay_no_gui":
            assert chosen["id"] == "variable"
            assert "diffjscc:waveform" in chosen["parameters"]["value"]
        else:
            assert chosen["id"] == "parameter", path.name
            p = chosen["parameters"]
            assert (p["type"], p["value"], p["short_id"]) == ("str", "sc", "w"), path.name
        ids = {b["id"] for b in users}
        if path.stem.startswith(("loopback_sim", "usrp_trx")):  # both ends in one flowgraph
            assert {"diffjscc_image_source", "diffjscc_jscc_receiver"} <= ids, path.name


# The OFDM layout: block parameter -> OfdmConfig field (both ends must agree on it).
OFDM_LAYOUT = {
    "fft_size": "fft_size",
    "cp_length": "cp_length",
    "used_carriers": "used_carriers",
    "ofdm_pilot_spacing": "pilot_spacing",
    "pilot_stagger": "pilot_stagger",
}
# Flowgraphs with the layout as options, like -w/--waveform (the replay reads its meta).
LAYOUT_FLOWGRAPHS = [p.stem for p in FLOWGRAPHS if p.stem != "replay_no_gui"]


def test_the_ofdm_layout_is_wired_like_the_waveform():
    """The flowgraphs take the layout as parameters (--fft-size ...) with OfdmConfig's
    defaults, the replay from the recording's meta; every waveform block gets them."""
    from diffjscc.radio.ofdm import OfdmConfig

    defaults = OfdmConfig()
    for name in [*LAYOUT_FLOWGRAPHS, "replay_no_gui"]:
        blocks = _blocks(name)
        for block in blocks.values():
            if block["id"] in WAVEFORM_BLOCKS:
                for key in OFDM_LAYOUT:
                    assert block["parameters"][key] == key, f"{name}: {block['name']} {key}"
        for key, field in OFDM_LAYOUT.items():
            chosen = blocks[key]
            if name == "replay_no_gui":
                assert chosen["id"] == "variable"
                assert f"waveform_settings.get('{key}'" in chosen["parameters"]["value"]
            else:
                p = chosen["parameters"]
                assert (chosen["id"], p["type"]) == ("parameter", "intx"), f"{name}: {key}"
                assert int(p["value"]) == getattr(defaults, field), f"{name}: {key}"
    assert (
        "diffjscc:waveform_settings"
        in _blocks("replay_no_gui")["waveform_settings"]["parameters"]["value"]
    )


@needs_grcc
def test_the_ofdm_layout_reaches_the_blocks_in_the_generated_code(tmp_path_factory):
    for name in [*LAYOUT_FLOWGRAPHS, "replay_no_gui"]:
        code = _generated(tmp_path_factory, name)
        for block in _blocks(name).values():
            if block["id"] in WAVEFORM_BLOCKS:
                make = re.search(rf"self\.{block['name']} = .*", code).group(0)
                for key in OFDM_LAYOUT:
                    assert f"{key}={key}" in make, f"{name}: {make}"
        if name != "replay_no_gui":
            for key in OFDM_LAYOUT:
                assert f'"--{key.replace("_", "-")}", dest="{key}"' in code, f"{name}: {key}"


@needs_grcc
def test_the_waveform_reaches_the_blocks_in_the_generated_code(tmp_path_factory):
    for path in FLOWGRAPHS:
        code = _generated(tmp_path_factory, path.stem)
        for block in _blocks(path.stem).values():
            if block["id"] in WAVEFORM_BLOCKS:
                make = re.search(rf"self\.{block['name']} = .*", code).group(0)
                assert "waveform=waveform" in make, f"{path.name}: {make}"
        if path.stem != "replay_no_gui":
            assert '"-w", "--waveform"' in code, path.name


@pytest.mark.parametrize("name", ["loopback_sim", "loopback_sim_no_gui"])
def test_loopback_noise_follows_the_waveforms_snr_convention(name):
    """The channel's noise voltage is the waveform's own (``Waveform.noise_voltage`` of the
    waveform the blocks build), and the frequency offset is a fraction of the band that
    waveform occupies."""
    from diffjscc.radio.waveform import get_waveform

    blocks = _blocks(name)
    chan = blocks["channels_channel_model_0"]["parameters"]
    assert (chan["noise_voltage"], chan["freq_offset"]) == ("noise_voltage", "cfo / band_ratio")
    names = ("noise_voltage", "band_ratio")
    expr = {v: blocks[v]["parameters"]["value"] for v in names}
    imports = {}
    exec(blocks["import_waveform"]["parameters"]["imports"], imports)  # noqa: S102
    mobile = dict(fft_size=512, used_carriers=256, ofdm_pilot_spacing=16)
    cases = (("sc", dict(sps=2)), ("sc", dict(sps=4)), ("ofdm", {}), ("ofdm", mobile))
    for waveform, settings in cases:
        sps = settings.get("sps", 2)
        want = get_waveform(waveform, **settings)
        # The flowgraph's layout parameters: the OFDM waveform's (GRC defaults otherwise).
        layout = {k: int(blocks[k]["parameters"]["value"]) for k in OFDM_LAYOUT}
        layout.update({k: v for k, v in settings.items() if k in OFDM_LAYOUT})
        for snr_db in (-3.0, 10.0):
            ns = dict(imports, waveform=waveform, sps=sps, rolloff=0.35, snr_db=snr_db, **layout)
            for var in names:
                ns[var] = eval(expr[var], ns)  # noqa: S307
            assert ns["noise_voltage"] == pytest.approx(want.noise_voltage(snr_db), rel=1e-9)
            # sample rate over occupied band: sps, or the OFDM FFT over its used carriers
            ratio = sps if waveform == "sc" else want.cfg.fft_size / want.cfg.used_carriers
            assert ns["band_ratio"] == pytest.approx(ratio, rel=1e-9)
    # GRC under a python without diffjscc still evaluates the flowgraph (display values).
    ns = {}
    exec(blocks["import_waveform"]["parameters"]["imports"].replace("diffjscc", "no_such_pkg"), ns)  # noqa: S102
    ns.update(waveform="ofdm", sps=2, rolloff=0.35, snr_db=10.0, **layout)
    for var in names:
        ns[var] = eval(expr[var], ns)  # noqa: S307
    assert ns["waveform_from_block_params"] is None and ns["band_ratio"] == pytest.approx(2.0)


@needs_grcc
def test_replay_flowgraph_takes_the_waveform_from_the_recording(tmp_path_factory, tmp_path):
    """An OFDM recording is received with the OFDM receiver (its meta says so)."""
    from diffjscc.radio.recording import SigMFRecorder
    from diffjscc.radio.waveform import get_waveform
    from diffjscc.symbols import EncodedImage

    pytest.importorskip("sigmf")
    _import_module_from_source()
    code_path = _compile_all(tmp_path_factory)[0] / "replay_no_gui.py"
    rng = np.random.default_rng(5)
    # A layout other than the default: the flowgraph's receiver takes it from the meta.
    wave = get_waveform("ofdm", fft_size=512, used_carriers=256, ofdm_pilot_spacing=16)
    n = 2 * 4 * 8
    sym = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)
    enc = EncodedImage(sym, (64, 128), (2, 4, 8), "jscc-awgn-cbr1_384", 7.0)
    bursts = wave.build_bursts(enc, image_id=3)
    gap = np.zeros(800, np.complex64)
    x = np.concatenate([gap] + [np.concatenate([b, gap]) for b in bursts] + [np.zeros(30000)])
    noise = 0.05 * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))
    with SigMFRecorder(tmp_path / "ofdm", 5e6, waveform=wave) as rec:
        rec.write((x + noise).astype(np.complex64))
    spec = importlib.util.spec_from_file_location("replay_ofdm", code_path)
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    tb = generated.replay_no_gui(
        recording=str(tmp_path / "ofdm"), speed=0, output_dir=str(tmp_path / "out")
    )
    assert tb.waveform == "ofdm"
    assert tb.diffjscc_jscc_receiver_0.waveform == wave
    tb.start()
    done = threading.Event()
    threading.Thread(target=lambda: (tb.wait(), done.set()), daemon=True).start()
    if not done.wait(60):
        tb.stop()
        pytest.fail("replay flowgraph did not finish")
    assert tb.diffjscc_jscc_receiver_0.stats()["frames_ok"] == len(bursts)


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
def test_grcc_compiles_every_flowgraph(tmp_path_factory):
    tmp_path, proc = _compile_all(tmp_path_factory)
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


# -- the launcher: GRC and generated scripts under the project's interpreter ---------------

LAUNCHER = ROOT / "scripts" / "grc.sh"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
needs_venv = pytest.mark.skipif(
    not VENV_PYTHON.exists() or GRCC is None, reason="needs the project's .venv and grcc"
)


def _launcher_env() -> dict:
    proc = subprocess.run(
        ["bash", str(LAUNCHER), "--env"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    env = dict(os.environ)
    for line in proc.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = subprocess.run(
            ["bash", "-c", f"printf %s {value}"], capture_output=True, text=True
        ).stdout
    return env


@needs_venv
def test_launcher_environment_imports_everything_a_flowgraph_needs():
    env = _launcher_env()
    assert Path(env["DIFFJSCC_PYTHON"]) == VENV_PYTHON
    assert str(MODULE / "grc") in env["GRC_BLOCKS_PATH"].split(":")
    code = (
        "import sys\n"
        "import diffjscc, onnxruntime\n"
        "from gnuradio import diffjscc as block_module, gr\n"
        "from gnuradio.grc.core.platform import Platform\n"
        "p = Platform(version=gr.version(), version_parts=(gr.major_version(), "
        "gr.api_version(), gr.minor_version()), prefs=gr.prefs())\n"
        "p.build_library()\n"
        "fg = p.make_flow_graph(sys.argv[1])\n"
        "print(block_module.__file__)\n"
        # What GRC runs on F6: the options block's run command with {python} filled in.
        "print(fg.get_run_command('/x/loopback_sim.py', split=True)[0])\n"
    )
    proc = subprocess.run(
        [env["DIFFJSCC_PYTHON"], "-c", code, str(ROOT / "grc" / "loopback_sim.grc")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    module_file, f6_python = proc.stdout.split()[-2:]
    assert Path(module_file).resolve().parent == (MODULE / "python" / "diffjscc").resolve()
    # GRC started by the launcher runs F6 with the venv's interpreter, not /usr/bin/python3.
    assert Path(f6_python) == VENV_PYTHON


@needs_venv
def test_launcher_runs_the_no_gui_loopback(tmp_path):
    """`scripts/grc.sh --run` compiles and runs a flowgraph as F6 would, with real weights."""
    weights = ROOT / "python" / "diffjscc" / "weights"
    if not any(weights.glob("*.onnx")):
        pytest.skip("no committed ONNX weights")
    out = tmp_path / "received"
    env = dict(os.environ, DIFFJSCC_GRC_OUT=str(tmp_path / "gen"))
    proc = subprocess.run(
        [
            "bash",
            str(LAUNCHER),
            "--run",
            str(ROOT / "grc" / "loopback_sim_no_gui.grc"),
            "--output-dir",
            str(out),
            "--stats-interval",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "gen" / "loopback_sim_no_gui.py").exists()
    assert len(list(out.glob("*.png"))) == 1
    # The statistics line. (In a run that ends by itself the line stops with the receiver:
    # GNU Radio ends a message-only block with its first upstream block.)
    assert "[loopback]" in proc.stderr and "frames 1" in proc.stderr


def test_launcher_refuses_bad_use():
    for args, message in (
        (["--run"], "needs a .grc file"),
        (["--compile", "/nonexistent.grc"], "no such flowgraph"),
    ):
        proc = subprocess.run(
            ["bash", str(LAUNCHER), *args], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


# -- the canvases: no block drawn over another ----------------------------------------------

EXTENTS = r"""
import json, sys
import gi
gi.require_version("Gtk", "3.0")
from gi.repository import Gtk
from gnuradio import gr
import gnuradio.grc.gui.canvas.flowgraph as canvas_flowgraph
from gnuradio.grc.gui.Platform import Platform
canvas_flowgraph._ContextMenu = lambda *a: None  # no main window to attach a menu to
platform = Platform(version=gr.version(), version_parts=(gr.major_version(), gr.api_version(),
                    gr.minor_version()), prefs=gr.prefs(), install_prefix=gr.prefix())
platform.build_library()
app = Gtk.Application(application_id="org.diffjscc.layoutcheck")
app.register(None)
app.set_default()
out = {}
for path in sys.argv[1:]:
    fg = platform.make_flow_graph(path)
    fg.rewrite()
    fg.validate()
    boxes = {}
    for block in fg.blocks:
        block.create_labels()
        for port in block.active_ports():
            port.create_labels()
            port.create_shapes()
        block.create_shapes()
        boxes[block.name] = list(block.get_extents())
    out[path] = boxes
print(json.dumps(out))
"""


@pytest.mark.skipif(
    shutil.which("xvfb-run") is None, reason="xvfb-run not installed (DIFFJSCC_GUI=1 bootstrap)"
)
def test_no_block_is_drawn_over_another():
    """Block sizes as GRC's canvas draws them (GTK under Xvfb); no two may overlap."""
    try:
        import gi

        gi.require_version("Gtk", "3.0")
    except (ImportError, ValueError):
        pytest.skip("GTK 3 not installed (DIFFJSCC_GUI=1 scripts/bootstrap.sh)")
    env = dict(os.environ, GRC_BLOCKS_PATH=str(MODULE / "grc"))
    proc = subprocess.run(
        ["xvfb-run", "-a", sys.executable, "-c", EXTENTS, *map(str, FLOWGRAPHS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path, boxes in json.loads(proc.stdout.splitlines()[-1]).items():
        items = sorted(boxes.items())
        for i, (a, (ax0, ay0, ax1, ay1)) in enumerate(items):
            for b, (bx0, by0, bx1, by1) in items[i + 1 :]:
                overlap = ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1
                assert not overlap, f"{Path(path).name}: {a} and {b} overlap"


# -- CMake: install to a prefix, import from it, uninstall leaves nothing importable --------


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake_install_to_a_prefix_and_uninstall(tmp_path):
    build, prefix = tmp_path / "build", tmp_path / "prefix"
    run = dict(capture_output=True, text=True, timeout=300)
    proc = subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(build), f"-DCMAKE_INSTALL_PREFIX={prefix}"], **run
    )
    if proc.returncode != 0 and "Gnuradio" in proc.stderr:
        pytest.skip("GNU Radio's CMake package (gnuradio-dev) not installed")
    assert proc.returncode == 0, proc.stderr
    assert "QA tests run with" in proc.stdout
    for args in (["--build", str(build)], ["--install", str(build)]):
        proc = subprocess.run(["cmake", *args], **run)
        assert proc.returncode == 0, proc.stderr
    (site,) = prefix.glob("lib/python3*/*-packages")
    assert (prefix / "share/gnuradio/grc/blocks/diffjscc_image_sink.block.yml").exists()
    code = "from gnuradio import diffjscc; print(diffjscc.__file__)"
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", code], env=env, **run)
    assert proc.returncode == 0 and str(site) in proc.stdout, proc.stderr  # PYTHONPATH is enough
    proc = subprocess.run(["cmake", "--build", str(build), "--target", "uninstall"], **run)
    assert proc.returncode == 0, proc.stderr
    assert not (site / "gnuradio" / "diffjscc").exists(), "an empty package folder is left"
    assert not list(prefix.rglob("*diffjscc*"))
    proc = subprocess.run([sys.executable, "-c", code], env=env, **run)
    # Nothing of the prefix imports any more (a copy installed elsewhere may, that is fine).
    assert str(prefix) not in proc.stdout, proc.stdout
    assert proc.returncode != 0 or "diffjscc" in proc.stdout


# -- an over-the-air flowgraph run without a radio: UHD replaced by a loop of samples --------

FAKE_RADIO_RUN = r"""
import importlib.util, json, os, queue, signal, sys, threading, time, types
import numpy as np
import gnuradio
from gnuradio import gr
gnuradio.__path__.insert(0, sys.argv[1])
from gnuradio.diffjscc._fakes import BlockMeanCodec
import diffjscc.worker.client

codec = BlockMeanCodec()
onnx_codec = types.ModuleType("diffjscc.onnx_codec")
onnx_codec.OnnxJSCCEncoder = types.SimpleNamespace(from_pretrained=lambda *a, **k: codec)
sys.modules["diffjscc.onnx_codec"] = onnx_codec
diffjscc.worker.client.LocalDecoder = lambda *a, **k: codec

AIR = queue.Queue(maxsize=512)  # what the fake TX "sends" and the fake RX "receives"
CALLS = []


class Settings:
    def set_clock_source(self, source, mb): CALLS.append(["clock_source", source])
    def set_time_source(self, source, mb): CALLS.append(["time_source", source])
    def set_center_freq(self, tune, chan): CALLS.append(["tune", list(tune)])
    def set_gain(self, gain, chan): CALLS.append(["gain", gain])
    def set_samp_rate(self, rate): pass
    def set_antenna(self, antenna, chan): pass
    def set_bandwidth(self, bw, chan): pass


class FakeSink(gr.sync_block, Settings):
    def __init__(self, *args, **kw):
        gr.sync_block.__init__(self, "fake_usrp_sink", [np.complex64], [])

    def work(self, input_items, output_items):
        try:
            AIR.put_nowait(np.array(input_items[0]))
        except queue.Full:
            pass
        return len(input_items[0])


class FakeSource(gr.sync_block, Settings):
    def __init__(self, *args, **kw):
        gr.sync_block.__init__(self, "fake_usrp_source", [], [np.complex64])
        self.rng = np.random.default_rng(0)
        self.left = np.zeros(0, np.complex64)

    def work(self, input_items, output_items):
        out = output_items[0]
        if not len(self.left):
            try:
                self.left = AIR.get(timeout=0.005)
            except queue.Empty:
                self.left = np.zeros(min(len(out), 2048), np.complex64)
        n = min(len(out), len(self.left))
        noise = 0.02 * (self.rng.standard_normal(n) + 1j * self.rng.standard_normal(n))
        out[:n] = self.left[:n] + noise.astype(np.complex64)
        self.left = self.left[n:]
        return n


uhd = types.ModuleType("gnuradio.uhd")
uhd.usrp_sink = FakeSink
uhd.usrp_source = FakeSource
uhd.stream_args = lambda **kw: kw
uhd.tune_request = lambda freq, lo_offset=0.0: (freq, lo_offset)
sys.modules["gnuradio.uhd"] = uhd
gnuradio.uhd = uhd

name = os.path.basename(sys.argv[2]).removesuffix(".py")
spec = importlib.util.spec_from_file_location(name, sys.argv[2])
generated = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generated)
started = []


class Watched(getattr(generated, name)):
    def __init__(self, **kw):
        super().__init__(**kw)
        started.append(self)


def watch():
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if started and started[0].diffjscc_image_sink_0.results():
            time.sleep(1.5)  # one more statistics line
            break
        time.sleep(0.1)
    sink = started[0].diffjscc_image_sink_0
    display = getattr(started[0], "diffjscc_image_display_0", None)
    shown = display.last if display is not None else None
    print(json.dumps({"results": len(sink.results()), "calls": CALLS,
                      "psnr": [r.get("psnr") for r in sink.results()],
                      "displayed": None if shown is None else shown.get("image_id")}), flush=True)
    os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the script's own handler stops it


threading.Thread(target=watch, daemon=True).start()
generated.main(top_block_cls=Watched, options=generated.argument_parser().parse_args(sys.argv[3:]))
"""


@needs_grcc
@pytest.mark.parametrize(
    "name, waveform", [("usrp_trx_no_gui", "sc"), ("usrp_trx", "sc"), ("usrp_trx_no_gui", "ofdm")]
)
def test_usrp_trx_runs_through_a_fake_radio(tmp_path_factory, tmp_path, name, waveform):
    """The over-the-air flowgraph with UHD replaced by a sample loop: settings reach the radio,
    images are decoded (with PSNR) and, in the Qt one, displayed; the no_gui one prints
    statistics; Ctrl-C (SIGINT) ends either with status 0."""
    if name == "usrp_trx":
        pytest.importorskip("PyQt5")
    out, proc = _compile_all(tmp_path_factory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from PIL import Image

    image = tmp_path / "test.png"
    yy, xx = np.mgrid[0:64, 0:96]
    Image.fromarray(np.stack([xx * 2, yy * 3, 255 - xx], axis=2).astype(np.uint8)).save(image)
    args = [
        "--image", str(image), "--output-dir", str(tmp_path / "rx"),
        "--record", str(tmp_path / "rec"), "--freq", "915e6", "--lo-offset", "2e6",
        "--clock-source", "external", "--tx-gain", "12", "--interval-s", "0.5",
        "--stats-interval", "1", "--amplitude", "0.2", "--waveform", waveform,
    ]  # fmt: skip
    if waveform == "ofdm":  # the mobile layout of docs/ofdm.md, at both ends and the recorder
        args += ["--fft-size", "512", "--used-carriers", "256", "--ofdm-pilot-spacing", "16"]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    if name == "usrp_trx":  # these are sliders there, not options
        sliders = {"--tx-gain", "--interval-s", "--amplitude", "--stats-interval"}
        pairs = [args[i : i + 2] for i in range(0, len(args), 2)]
        args = [x for pair in pairs if pair[0] not in sliders for x in pair]
    proc = subprocess.run(
        [sys.executable, "-c", FAKE_RADIO_RUN, str(MODULE / "python"),
         str(out / f"{name}.py"), *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    report = lines[-1]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["results"] >= 1 and report["psnr"][0] is not None
    calls = report["calls"]
    assert ["tune", [915e6, 2e6]] in calls  # both radios tuned with the LO offset
    assert calls.count(["clock_source", "external"]) == 2
    if name == "usrp_trx":  # the slider's start value is the gain; the display got the image
        assert report["displayed"] is not None
    else:
        assert ["gain", 12.0] in calls
        assert "[trx] " in proc.stderr and "decoded" in proc.stderr  # the statistics line
    (meta,) = tmp_path.glob("rec.sigmf-meta")  # the recording says which waveform it holds
    recorded = json.loads(meta.read_text())["global"]
    assert recorded["diffjscc:waveform"] == waveform
    if waveform == "ofdm":
        assert recorded["diffjscc:waveform_settings"]["fft_size"] == 512
    assert list((tmp_path / "rx").glob("*.png"))


# -- F6 in GNU Radio Companion itself, started with the launcher's environment --------------

PRESS_F6 = r"""
import glob, os, sys, time
from gi.repository import GLib

folder, flowgraph = sys.argv[1], sys.argv[2]
started = time.monotonic()


def press_f6():
    from gnuradio.grc.gui import Actions

    Actions.FLOW_GRAPH_EXEC()  # what F6 does: generate, then run with GRC's interpreter
    return False


def check():
    from gnuradio.grc.gui import Actions

    written = glob.glob(os.path.join(folder, "received", "*.png"))
    if written or time.monotonic() - started > 100:
        print("F6 wrote:", written, flush=True)
        Actions.FLOW_GRAPH_KILL()
        GLib.timeout_add(3000, lambda: (Actions.APPLICATION_QUIT(), False)[1])
        return False
    return True


GLib.timeout_add(4000, press_f6)
GLib.timeout_add(1000, check)
sys.argv = ["gnuradio-companion", os.path.join(folder, flowgraph)]
from gnuradio.grc.main import main

main()
"""


@needs_venv
@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed")
def test_f6_in_grc_runs_the_qt_loopback(tmp_path):
    """GRC started with the launcher's environment: F6 runs loopback_sim, which decodes an image."""
    try:
        import gi

        gi.require_version("Gtk", "3.0")
    except (ImportError, ValueError):
        pytest.skip("GTK 3 not installed (DIFFJSCC_GUI=1 scripts/bootstrap.sh)")
    if not any((ROOT / "python" / "diffjscc" / "weights").glob("*.onnx")):
        pytest.skip("no committed ONNX weights")
    shutil.copy(ROOT / "grc" / "loopback_sim.grc", tmp_path)
    env = _launcher_env()
    # GRC's own settings in a file of the test's; the terminal warning (shown once, modal,
    # for a machine without the configured terminal) counts as already shown.
    xterm = subprocess.run(
        [env["DIFFJSCC_PYTHON"], "-c",
         "from gnuradio import gr; print(gr.prefs().get_string('grc', 'xterm_executable', ''))"],
        capture_output=True, text=True, env=env,
    ).stdout.strip()  # fmt: skip
    (tmp_path / "grc.conf").write_text(f"[main]\nxterm_missing = {xterm}\n")
    env["GRC_PREFS_PATH"] = str(tmp_path / "grc.conf")
    proc = subprocess.run(
        ["xvfb-run", "-a", env["DIFFJSCC_PYTHON"], "-c", PRESS_F6, str(tmp_path), "loopback_sim.grc"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert f"Executing: {VENV_PYTHON} -u" in out, out[-3000:]  # F6 ran it with the venv's python
    assert "F6 wrote: ['" in out, out[-3000:]  # and it received and decoded an image

"""The package layout: the codec in ``diffjscc.jscc``, evaluation in ``diffjscc.eval``,
the old import paths still working, and no import circle between the zoo and ONNX."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import pytest
from diffjscc.cli import COMMANDS

MOVED = {
    "diffjscc.codec": "diffjscc.jscc.codec",
    "diffjscc.convert": "diffjscc.jscc.convert",
    "diffjscc.onnx_codec": "diffjscc.jscc.onnx_encoder",
    "diffjscc.onnx_export": "diffjscc.jscc.onnx_export",
    "diffjscc.symbol_opt": "diffjscc.jscc.symbol_opt",
    "diffjscc.models.jscc": "diffjscc.jscc.model",
    "diffjscc.models.layers": "diffjscc.jscc.layers",
    "diffjscc.tools.roundtrip": "diffjscc.jscc.roundtrip",
    "diffjscc.utils.eval_model": "diffjscc.eval",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_import_path_is_the_moved_module(old):
    # The same module object, so monkeypatching either name patches both.
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_old_from_imports_keep_working():
    from diffjscc.codec import JSCCCodec
    from diffjscc.jscc import JSCCCodec as lazy_codec
    from diffjscc.models import DeepJSCC
    from diffjscc.onnx_codec import OnnxJSCCEncoder
    from diffjscc.utils.eval_model import main, markdown_table
    from diffjscc.zoo import weights_dir, weights_path

    assert JSCCCodec is lazy_codec
    assert DeepJSCC.__module__ == "diffjscc.jscc.model"
    assert OnnxJSCCEncoder.__module__ == "diffjscc.jscc.onnx_encoder"
    assert callable(main) and callable(markdown_table)
    assert weights_path.__module__ == "diffjscc.jscc.weights" and callable(weights_dir)


def _fresh_modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def test_onnx_transmitter_imports_neither_torch_nor_the_zoo():
    loaded = _fresh_modules("from diffjscc.jscc.onnx_encoder import OnnxJSCCEncoder")
    assert "torch" not in loaded
    assert "diffjscc.zoo" not in loaded  # the circle zoo <-> onnx is gone
    assert "diffjscc.jscc.weights" in loaded


def test_jscc_package_import_is_lazy():
    loaded = _fresh_modules("import diffjscc.jscc")
    assert "torch" not in loaded and "onnxruntime" not in loaded


def test_every_cli_command_module_exists_at_its_table_path():
    for name, (module, _) in COMMANDS.items():
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{name}: {module} not found"
        # The table names the module itself, not a compatibility alias.
        assert not module.startswith(("diffjscc.tools.", "diffjscc.utils.")), (name, module)


def test_eval_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "diffjscc.eval", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--cbr" in proc.stdout

"""pytest support for the module's qa_*.py files (ctest runs them as scripts).

The qa files live in python/diffjscc/, a package directory whose name is also
the core package's: pytest's default import would load them as
``diffjscc.qa_*`` and collide with ``diffjscc``. They are imported instead as
what they are once installed, ``gnuradio.diffjscc.qa_*``, with this source
tree placed first on ``gnuradio.__path__`` so the blocks under test are the
ones in this checkout.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent / "python"
PACKAGE_DIR = SOURCE / "diffjscc"


def _use_source_tree() -> None:
    import gnuradio

    if str(SOURCE) not in gnuradio.__path__:
        gnuradio.__path__.insert(0, str(SOURCE))


class QaModule(pytest.Module):
    def _getobj(self):
        _use_source_tree()
        name = f"gnuradio.diffjscc.{self.path.stem}"
        if name in sys.modules:
            return sys.modules[name]
        import gnuradio.diffjscc  # noqa: F401  (parent package first)

        spec = importlib.util.spec_from_file_location(name, self.path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module


def pytest_pycollect_makemodule(module_path, parent):
    path = Path(module_path)
    if path.parent == PACKAGE_DIR and path.name.startswith("qa_"):
        pytest.importorskip("gnuradio", reason="GNU Radio is not installed")
        return QaModule.from_parent(parent, path=path)
    return None

"""The ``diffjscc`` dispatcher: help, unknown commands, and a missing optional dependency."""

import importlib

import pytest
from diffjscc import cli


def test_help_and_unknown_command(capsys):
    assert cli.main([]) == 0
    assert "roundtrip" in capsys.readouterr().out
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_a_missing_optional_package_is_a_one_line_error(monkeypatch, capsys):
    def import_module(name):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(importlib, "import_module", import_module)
    assert cli.main(["train-jscc", "--help"]) == 2
    err = capsys.readouterr().err
    assert "'torch'" in err and "pip install" in err and "Traceback" not in err


def test_a_missing_module_of_the_package_itself_still_raises(monkeypatch):
    def import_module(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(importlib, "import_module", import_module)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["train-jscc"])

"""The restricted unpickler both official-checkpoint converters read ``model.ckpt`` with."""

from __future__ import annotations

import argparse
import os
import sys
import types
from collections import OrderedDict
from pathlib import PurePosixPath

import pytest

torch = pytest.importorskip("torch")

from diffjscc.errors import ConfigError  # noqa: E402
from diffjscc.unpickle import Inert, UnsafePickleError, load_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


_FAKE_CLASSES = {
    "pytorch_lightning.callbacks.model_checkpoint": ("ModelCheckpoint", object),
    "pytorch_lightning.callbacks.early_stopping": ("EarlyStopping", object),
    "pytorch_lightning.utilities.parsing": ("AttributeDict", dict),
    "omegaconf.dictconfig": ("DictConfig", object),
    "omegaconf.base": ("ContainerMetadata", object),
}


def save_lightning_checkpoint(state_dict: dict, path, **save_kwargs) -> None:
    """Save ``state_dict`` as Lightning 1.4 does: callback states keyed by class, hparams, loops.

    The classes are fakes in modules named as Lightning's and omegaconf's, which
    exist only while the file is written, so loading it cannot import them.
    """
    made, added = {}, []
    for module_name, (name, base) in _FAKE_CLASSES.items():
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):  # pickle imports the parents too
            if ".".join(parts[:i]) not in sys.modules:
                sys.modules[".".join(parts[:i])] = types.ModuleType(".".join(parts[:i]))
                added.append(".".join(parts[:i]))
        made[name] = type(name, (base,), {"__module__": module_name})
        setattr(sys.modules[module_name], name, made[name])
    try:
        metadata = made["ContainerMetadata"]()
        metadata.__dict__.update({"ref_type": object, "key_type": None, "optional": True})
        config = made["DictConfig"]()
        config.__dict__.update({"_metadata": metadata, "_content": {"lr": 1e-4}, "_parent": None})
        checkpoint = {
            "epoch": 3,
            "global_step": 1234,
            "pytorch-lightning_version": "1.4.2",
            "state_dict": state_dict,
            "callbacks": {
                made["ModelCheckpoint"]: {
                    "monitor": None,
                    "best_model_score": torch.tensor(0.5),
                    "best_model_path": "/ckpt/last.ckpt",
                    "dirpath": PurePosixPath("/ckpt"),
                },
                made["EarlyStopping"]: {"wait_count": 0},
            },
            "hyper_parameters": made["AttributeDict"](learning_rate=1e-4, sd_locked=True),
            "config": config,
            "args": argparse.Namespace(steps=100, ckpt="x"),
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]}],
            "lr_schedulers": [],
        }
        torch.save(checkpoint, path, **save_kwargs)
    finally:
        for module_name in added:
            sys.modules.pop(module_name, None)


@pytest.mark.parametrize("zipped", [True, False])
def test_lightning_checkpoint_loads_with_placeholders(tmp_path, zipped):
    state = OrderedDict(w=torch.arange(6.0).reshape(2, 3), b=torch.ones(2, dtype=torch.float16))
    path = tmp_path / "model.ckpt"
    save_lightning_checkpoint(state, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(Exception, match="weights_only|Unsupported global|WeightsUnpickler"):
        torch.load(path, weights_only=True)  # what the converters used to do
    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded["state_dict"]["w"], state["w"])
    assert loaded["state_dict"]["b"].dtype == torch.float16
    callbacks = {cls.__inert_name__: value for cls, value in loaded["callbacks"].items()}
    assert all(issubclass(cls, Inert) for cls in loaded["callbacks"])
    assert float(callbacks["ModelCheckpoint"]["best_model_score"]) == 0.5
    assert isinstance(callbacks["ModelCheckpoint"]["dirpath"], Inert)
    assert loaded["hyper_parameters"].inert_items == {"learning_rate": 1e-4, "sd_locked": True}
    assert isinstance(loaded["config"], Inert)
    assert loaded["args"].inert_state == {"steps": 100, "ckpt": "x"}
    assert loaded["global_step"] == 1234
    assert "pytorch_lightning.callbacks.model_checkpoint" not in sys.modules


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_code_in_the_pickle_is_refused_and_named(tmp_path):
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "x": _Exploit()}, path)
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        load_checkpoint(path)
    getattr_path = tmp_path / "getattr.ckpt"

    class _Getattr:
        def __reduce__(self):
            return (getattr, ("abc", "upper"))

    torch.save({"x": _Getattr()}, getattr_path)
    with pytest.raises(UnsafePickleError, match=r"builtins\.getattr"):
        load_checkpoint(getattr_path)
    with pytest.warns(UserWarning, match="trust-pickle"):
        assert load_checkpoint(getattr_path, trust_pickle=True)["x"]() == "ABC"
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.ckpt")

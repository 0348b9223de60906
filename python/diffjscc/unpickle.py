"""Read training checkpoints (``model.ckpt``) without running any code they pickled.

A PyTorch Lightning checkpoint is a pickle of more than tensors: callback states
keyed by the callback's class (``pytorch_lightning.callbacks.model_checkpoint.
ModelCheckpoint`` in Lightning 1.4, the version the official DiffJSCC code pins),
loop states, hyper-parameters as omegaconf containers or ``argparse.Namespace``,
paths. ``torch.load(weights_only=True)`` refuses all of those; a plain
``torch.load`` imports and calls whatever the file names. :func:`load_checkpoint`
sits between: a restricted unpickler that

- keeps tensors (torch's own rebuild functions, storages, dtypes, sizes) and plain
  containers (dict, list, tuple, set, OrderedDict, ...) and scalars;
- turns the classes of the training frameworks (:data:`INERT_MODULES`: Lightning,
  omegaconf, argparse, pathlib, typing, datetime, numpy's scalar types, ...) into
  :class:`Inert` placeholders that record what was pickled and do nothing else;
- refuses every other global with :class:`UnsafePickleError` naming it.

Nothing the file names is imported, so a placeholder for Lightning exists whether
Lightning is installed or not. Zip-format files (torch >= 1.6) are memory-mapped;
old-format (non-zip) files cannot be and are read whole. ``trust_pickle=True``
falls back to an unrestricted ``torch.load`` with a warning: a last resort for
files from a source the user trusts.
"""

from __future__ import annotations

import collections
import pickle
import warnings
from pathlib import Path
from types import ModuleType

from diffjscc.errors import ConfigError

# Module prefixes whose classes become placeholders (never imported).
INERT_MODULES = (
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "omegaconf",
    "argparse",
    "pathlib",
    "typing",
    "datetime",
    "enum",
    "numpy",
    "torchmetrics",
    "__main__",  # a training script's own classes
)
_BUILTINS = {
    "dict",
    "list",
    "tuple",
    "set",
    "frozenset",
    "int",
    "float",
    "complex",
    "str",
    "bytes",
    "bytearray",
    "bool",
    "slice",
    "range",
    "object",
}
_COLLECTIONS = {"OrderedDict", "defaultdict", "deque", "Counter"}
# torch globals a tensor checkpoint needs; none of them runs user code.
_TORCH = {
    "torch._utils": {
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_device_tensor_from_cpu_tensor",
        "_rebuild_qtensor",
        "_rebuild_sparse_tensor",
    },
    "torch._tensor": {"_rebuild_from_type_v2"},
    "torch.nn.parameter": {"Parameter"},
    "torch": {"Size", "Tensor", "device", "layout", "memory_format", "strided"},
}


class UnsafePickleError(ConfigError):
    """The checkpoint names a global that is neither tensor data nor a known framework class."""


class Inert:
    """Stand-in for an object of a class that the checkpoint names but that is not rebuilt.

    It keeps what the pickle gave (constructor arguments, state, items) for
    inspection and has no behaviour: no import, no call into the original class.
    """

    __inert_module__ = ""
    __inert_name__ = ""

    def __init__(self, *args, **kwargs):
        self.inert_args = args
        self.inert_kwargs = kwargs
        self.inert_state = None
        self.inert_items: dict = {}
        self.inert_list: list = []

    def __setstate__(self, state):
        self.__dict__.setdefault("inert_items", {})
        self.__dict__.setdefault("inert_list", [])
        self.__dict__.setdefault("inert_args", ())
        self.inert_state = state

    def __setitem__(self, key, value):  # dict subclasses (Lightning's AttributeDict)
        self.__dict__.setdefault("inert_items", {})[key] = value

    def append(self, value):  # list subclasses (omegaconf's ListConfig content)
        self.__dict__.setdefault("inert_list", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("inert_list", []).extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.__inert_module__}.{self.__inert_name__}>"


_placeholders: dict[tuple[str, str], type] = {}


def placeholder(module: str, name: str) -> type:
    """The (cached, hashable) placeholder class for ``module.name``."""
    key = (module, name)
    if key not in _placeholders:
        cls = type(
            name.replace(".", "_"),
            (Inert,),
            {"__inert_module__": module, "__inert_name__": name, "__module__": "diffjscc.unpickle"},
        )
        _placeholders[key] = cls
    return _placeholders[key]


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (protocol 0/1 objects), allowed for placeholders only."""
    if not (isinstance(cls, type) and issubclass(cls, Inert)):
        raise UnsafePickleError(f"checkpoint rebuilds {cls!r} through copyreg, which is refused")
    obj = cls.__new__(cls)
    Inert.__init__(obj)
    if state is not None:
        obj.__setstate__(state)
    return obj


_PYTHON2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _is_inert(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in INERT_MODULES)


def resolve_global(module: str, name: str):
    """What the restricted unpickler gives for the global ``module.name`` (or raises)."""
    module = _PYTHON2_NAMES.get(module, module)  # protocol 2 pickles use Python 2 names
    if module == "builtins" and name in _BUILTINS:
        import builtins

        return getattr(builtins, name)
    if module == "collections" and name in _COLLECTIONS:
        return getattr(collections, name)
    if module == "copyreg" and name == "_reconstructor":
        return _reconstructor
    if module in _TORCH and name in _TORCH[module]:
        import importlib

        return getattr(importlib.import_module(module), name)
    if (module == "torch" and name.endswith("Storage")) or (
        module == "torch.storage" and name in ("UntypedStorage", "TypedStorage")
    ):
        import torch

        return getattr(torch, name)
    if module == "torch":
        import torch

        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            return value
    if _is_inert(module):
        return placeholder(module, name)
    raise UnsafePickleError(
        f"the checkpoint names {module}.{name}, which is neither tensor data nor a known "
        "training-framework class; it was not loaded (unpickling it could run code). If you "
        "trust the file, pass --trust-pickle"
    )


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return resolve_global(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


def _pickle_module() -> ModuleType:
    """A module with ``Unpickler`` and ``load``, as ``torch.load(pickle_module=...)`` wants."""
    module = ModuleType("diffjscc_restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = _restricted_load
    module.__dict__["UnpicklingError"] = pickle.UnpicklingError
    return module


def is_zip_checkpoint(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def load_checkpoint(path: str | Path, trust_pickle: bool = False, mmap: bool = True):
    """The object in a ``torch.save`` file, tensors on the CPU, no pickled code run.

    Raises :class:`UnsafePickleError` for a global outside the allowed set and
    ConfigError for a file that is not a torch checkpoint.
    """
    import torch

    path = Path(path)
    zipped = is_zip_checkpoint(path)
    use_mmap = mmap and zipped  # an old-format file cannot be mapped
    if trust_pickle:
        warnings.warn(
            f"loading {path} with --trust-pickle: the file can run any code it names",
            stacklevel=2,
        )
        try:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=use_mmap)
        except Exception as exc:
            raise ConfigError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    try:
        return torch.load(
            path,
            map_location="cpu",
            weights_only=False,  # the restriction is ours: pickle_module below
            pickle_module=_pickle_module(),
            mmap=use_mmap,
        )
    except UnsafePickleError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"cannot read {path} as a torch checkpoint: {type(exc).__name__}: {exc}"
        ) from exc

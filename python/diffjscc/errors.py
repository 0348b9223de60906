"""Exceptions that carry a message meant for the user, not a traceback."""


class DiffJSCCError(Exception):
    """Base class: the CLI prints the message and exits with status 2."""


class ImageError(DiffJSCCError, ValueError):
    """An image could not be read or is not usable (empty, too large, ...)."""


class WeightsNotFoundError(DiffJSCCError, FileNotFoundError):
    """Pretrained weights are absent; the message says what to get and where."""


class ConfigError(DiffJSCCError, ValueError):
    """A model, rate or setting that does not exist or does not fit."""


class OutputError(DiffJSCCError, OSError):
    """A file cannot be written where it was asked for (folder, permissions, name)."""

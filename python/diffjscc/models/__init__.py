"""Neural network models (torch). Importing this package imports torch."""

from diffjscc.models.jscc import DeepJSCC, JSCCConfig, JSCCDecoder, JSCCEncoder

__all__ = ["DeepJSCC", "JSCCConfig", "JSCCDecoder", "JSCCEncoder"]

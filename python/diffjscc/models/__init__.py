"""Neural network models (torch). Importing this package imports torch.

The JSCC model moved to :mod:`diffjscc.jscc.model`; these names stay for existing imports.
"""

from diffjscc.jscc.model import DeepJSCC, JSCCConfig, JSCCDecoder, JSCCEncoder

__all__ = ["DeepJSCC", "JSCCConfig", "JSCCDecoder", "JSCCEncoder"]

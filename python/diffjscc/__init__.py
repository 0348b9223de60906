"""gr-diffjscc core: deep joint source-channel coding with a diffusion refiner.

Importing this package pulls in neither torch nor GNU Radio; the modules that
need torch (``models``, ``codec``, ``zoo``, ``train``, ``refiner``) import it
themselves, so a transmitter can run on numpy and onnxruntime alone.
"""

__version__ = "0.1.0"

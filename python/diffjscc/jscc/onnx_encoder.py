"""The transmitter's JSCC encoder on onnxruntime: numpy in, symbols out, no torch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from diffjscc.channels import csi_vector
from diffjscc.errors import ConfigError, WeightsNotFoundError
from diffjscc.image import check_image_array, pad_to_multiple
from diffjscc.jscc.weights import weights_path
from diffjscc.registry import DEFAULT_MODEL, ModelSpec, get_model_spec
from diffjscc.symbols import EncodedImage, latent_to_symbols


class OnnxJSCCEncoder:
    def __init__(
        self, path: str | os.PathLike, spec: ModelSpec | str | None = None, threads: int = 0
    ):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise ConfigError("onnxruntime is not installed: pip install onnxruntime") from exc
        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"ONNX encoder not found: {path}; make it with `diffjscc export-onnx`"
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise WeightsNotFoundError(f"cannot load ONNX encoder {path}: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if "diffjscc_config" not in meta:
            raise ConfigError(f"{path} is not a gr-diffjscc encoder (no diffjscc_config metadata)")
        self.config = json.loads(meta["diffjscc_config"])
        self.spec = get_model_spec(spec) if spec is not None else None
        if self.spec is not None:
            self.spec.check_latent_channels(self.config["latent_channels"])
        self.multiple = 2 ** self.config["num_downsampling"]
        self.channel_type = self.config["channel_type"]

    @classmethod
    def from_pretrained(
        cls, model: str | int | ModelSpec = DEFAULT_MODEL, threads: int = 0
    ) -> OnnxJSCCEncoder:
        spec = get_model_spec(model)
        return cls(weights_path(spec, ".onnx"), spec, threads=threads)

    def encode(self, image: np.ndarray, snr_db: float, h: complex | None = None) -> EncodedImage:
        if not np.isfinite(snr_db):
            raise ConfigError(f"SNR must be a finite number of dB, got {snr_db}")
        image = check_image_array(image)
        padded = pad_to_multiple(image, self.multiple)
        x = (padded.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]
        csi = csi_vector(float(snr_db), h, self.channel_type)[None]
        (latent,) = self.session.run(["latent"], {"image": np.ascontiguousarray(x), "csi": csi})
        symbols = latent_to_symbols(latent[0])
        c = latent.shape[1] // 2
        return EncodedImage(
            symbols=symbols,
            image_shape=tuple(image.shape[:2]),
            latent_shape=(c, latent.shape[2], latent.shape[3]),
            model=self.spec.name if self.spec else "custom",
            snr_db=float(snr_db),
        )

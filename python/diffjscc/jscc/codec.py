"""Whole images <-> channel symbols with a torch DeepJSCC model (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np
import torch

from diffjscc.errors import ConfigError
from diffjscc.image import check_image_array, pad_to_multiple, padded_shape
from diffjscc.jscc.model import DeepJSCC
from diffjscc.jscc.symbol_opt import SymbolOptConfig, optimise_symbols
from diffjscc.registry import ModelSpec, get_model_spec
from diffjscc.symbols import EncodedImage


class JSCCCodec:
    """Encode images to unit-energy complex symbols and decode equalised symbols.

    Images of any size are edge-padded to a multiple of 16 and cropped back after
    decoding. Missing symbols may be passed as zeros (the decoder sees an erasure).
    """

    def __init__(
        self, model: DeepJSCC, spec: ModelSpec | str | None = None, channels_last: bool = True
    ):
        # Channels-last runs these convolutions 1.6-1.9x faster on CPUs (benchmarks/codec_speed.py)
        # with the same images to within one grey level; False keeps torch's default layout.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.eval().to(memory_format=self.memory_format)
        self.spec = get_model_spec(spec) if spec is not None else None
        if self.spec is not None:
            self.spec.check_latent_channels(model.config.latent_channels)
        self.multiple = model.config.downsampling_factor

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def name(self) -> str:
        return self.spec.name if self.spec is not None else "custom"

    def latent_shape(self, image_shape: tuple[int, int]) -> tuple[int, int, int]:
        ph, pw = padded_shape(*image_shape, self.multiple)
        return (self.model.config.latent_channels // 2, ph // self.multiple, pw // self.multiple)

    def num_symbols(self, image_shape: tuple[int, int]) -> int:
        return int(np.prod(self.latent_shape(image_shape)))

    def _csi_tensors(self, snr_db, h, n):
        snr_np = np.asarray(snr_db, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(snr_np)):
            raise ConfigError(f"SNR must be a finite number of dB, got {snr_db}")
        snr = torch.as_tensor(snr_np, device=self.device)
        snr = snr.expand(n) if snr.numel() == 1 else snr
        if self.model.config.channel_type != "rayleigh":
            return snr, None
        h = (
            np.ones(n, dtype=np.complex64)
            if h is None
            else np.asarray(h, dtype=np.complex64).reshape(-1)
        )
        return snr, torch.as_tensor(np.broadcast_to(h, (n,)).copy(), device=self.device)

    # no_grad, not inference_mode: symbol optimisation differentiates through the decoder.
    @torch.no_grad()
    def encode(
        self,
        image: np.ndarray,
        snr_db: float,
        h: complex | None = None,
        optimise: SymbolOptConfig | int | None = None,
    ) -> EncodedImage:
        """Image (H, W, 3) uint8 -> symbols. ``optimise``: steps (or a SymbolOptConfig) of
        transmitter-side symbol optimisation (diffjscc.jscc.symbol_opt); None or 0: one pass."""
        if isinstance(optimise, int) and not isinstance(optimise, bool):
            optimise = SymbolOptConfig(steps=optimise)
        elif optimise is not None and not isinstance(optimise, SymbolOptConfig):
            raise ConfigError(
                f"optimise must be a number of steps or a SymbolOptConfig, not {optimise!r}"
            )
        image = check_image_array(image)
        padded = pad_to_multiple(image, self.multiple)
        x = (
            torch.from_numpy(padded.copy())
            .to(self.device)
            .permute(2, 0, 1)[None]
            .float()
            .div_(255.0)
            .contiguous(memory_format=self.memory_format)
        )
        snr, h_t = self._csi_tensors(snr_db, h, 1)
        z = self.model.encode(x, snr, h_t)
        if optimise is not None and optimise.steps:
            z = optimise_symbols(self.model, x, z, snr, h_t, optimise, tuple(image.shape[:2]))
        z = z[0]
        return EncodedImage(
            symbols=z.reshape(-1).cpu().numpy().astype(np.complex64),
            image_shape=tuple(image.shape[:2]),
            latent_shape=tuple(z.shape),
            model=self.name,
            snr_db=float(snr_db),
        )

    def decode(
        self, symbols: np.ndarray, image_shape: tuple[int, int], snr_db: float, h=None
    ) -> np.ndarray:
        return self.decode_batch([symbols], [image_shape], [snr_db], [h])[0]

    @torch.inference_mode()
    def decode_batch(self, symbols_list, image_shapes, snr_dbs, hs=None) -> list[np.ndarray]:
        """Decode several images; images of the same shape share one forward pass."""
        n = len(symbols_list)
        if not (len(image_shapes) == len(snr_dbs) == n) or (hs is not None and len(hs) != n):
            raise ConfigError("decode_batch needs one image shape, SNR (and h) per symbol vector")
        hs = [None] * n if hs is None else list(hs)
        prepared = []
        for sym, shape in zip(symbols_list, image_shapes, strict=True):
            shape = (int(shape[0]), int(shape[1]))
            if shape[0] < 1 or shape[1] < 1:
                raise ConfigError(f"image shape must be positive, got {shape}")
            sym = np.asarray(sym).reshape(-1)
            expected = self.num_symbols(shape)
            if sym.size != expected:
                raise ConfigError(
                    f"{sym.size} symbols given, {expected} needed for a {shape[0]}x{shape[1]} image"
                )
            if not np.all(np.isfinite(sym)):
                raise ConfigError("symbols contain NaN or infinite values")
            prepared.append((sym.astype(np.complex64), shape))
        out: list[np.ndarray | None] = [None] * n
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (_, shape) in enumerate(prepared):
            groups.setdefault(self.latent_shape(shape), []).append(i)
        for latent_shape, idx in groups.items():
            z = np.stack([prepared[i][0].reshape(latent_shape) for i in idx])
            snr, h_t = self._csi_tensors(
                [snr_dbs[i] for i in idx],
                [hs[i] if hs[i] is not None else 1 for i in idx],
                len(idx),
            )
            y = self.model.decode(torch.from_numpy(z).to(self.device), snr, h_t)
            y = (
                (y.float().clamp_(0, 1) * 255.0)
                .round_()
                .to(torch.uint8)
                .permute(0, 2, 3, 1)
                .cpu()
                .numpy()
            )
            for j, i in enumerate(idx):
                h, w = prepared[i][1]
                out[i] = np.ascontiguousarray(y[j, :h, :w])
        return out  # type: ignore[return-value]

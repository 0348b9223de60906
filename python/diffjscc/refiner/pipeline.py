"""The DiffJSCC refiner: conditional latent diffusion on Stable Diffusion.

::

    x_hat (JSCC image) ──► VAE encoder (mode x scale) ──► f_v ─┐
    caption of x_hat ────► text encoder ──────────────► f_t ──┼─► control module ─► residuals
    SNR [, h] ───────────────────────────────────────────────┘          │
    z_T ~ N(0, I) ─► [ UNet(z_t, t, f_t) + residuals ─► eps ─► sampler step ] x steps ─► z_0
    z_0 ─► VAE decoder ─► wavelet colour fix against x_hat ─► refined image

Frozen: VAE, text encoder, UNet. Trained (stage 2): the control module.
Components are diffusers / transformers models; the refiner's own settings
(``RefinerConfig``) are data, saved beside them by ``save_pretrained``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from diffjscc.errors import ConfigError, ImageError, WeightsNotFoundError
from diffjscc.refiner._deps import require

require("diffusers")
require("transformers")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from diffjscc.refiner.captioner import NoCaptioner, replace_degradation_words  # noqa: E402
from diffjscc.refiner.colorfix import COLOR_FIXES, color_fix  # noqa: E402
from diffjscc.refiner.control import DiffJSCCControlModule  # noqa: E402
from diffjscc.refiner.schedulers import (  # noqa: E402
    SD_SCHEDULE,
    Sampler,
    make_sampler,
    make_scheduler,
)

CONFIG_NAME = "refiner.json"
FORMAT_VERSION = 1
SD21_BASE = "stabilityai/stable-diffusion-2-1-base"
MAX_IMAGE_SIDE = 8192


@dataclass
class RefinerConfig:
    """Settings of a refiner that are not part of any one model's config."""

    steps: int = 100  # the paper's runs
    sampler: str = "ddpm"
    color_fix: str = "wavelet"
    control_scale: float = 1.0
    caption_replace: bool = False  # the official --use_replace rewrite of captions
    schedule: dict = field(default_factory=lambda: dict(SD_SCHEDULE))
    source: str = ""  # where the weights came from, for the record

    @classmethod
    def from_dict(cls, data: dict) -> RefinerConfig:
        """The config of ``data``; a key it does not know is refused, as JSCCConfig does."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"unknown refiner config keys: {unknown} (known: {sorted(cls.__dataclass_fields__)})"
            )
        return cls(**data)


@dataclass
class RefineResult:
    """What ``DiffJSCCRefiner.refine`` returns; the keys are fixed."""

    image: np.ndarray  # uint8 HxWx3, same size as the input
    caption: str
    snr_db: float
    steps: int
    sampler: str
    seed: int
    timing: dict  # seconds: caption_s, sample_s, total_s
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


GUIDANCE_TARGETS = ("sample", "mode")


@dataclass
class Guidance:
    """MSE guidance of the predicted x0 towards the VAE latent of x_hat, as the official code does.

    At every step with ``t_stop < t + 1 < t_start``, ``repeat`` times, with x0 the
    latent the model predicts and ``C, H, W`` its size:

        delta = scale * (target - x0) / (C * H * W);   x0 += delta

    (official ``MSEGuidance``: the gradient of the per-image mean squared error, up
    to its factor 2). ``target`` is the scaled VAE latent of x_hat: a sample of the
    VAE posterior drawn afresh at every repeat (``target="sample"``, the official
    behaviour), or the posterior mode (``"mode"``, deterministic). The DDPM sampler
    moves its posterior mean by ``0.5 * sum(delta)``; the others re-derive epsilon
    from the corrected x0. ``Guidance.paper()`` gives the settings of the official
    README's guided command (``--Lambda 100 --g_t_start 1001 --g_t_stop -1 --g_repeat 1``).
    """

    scale: float = 0.0
    t_start: int = 1001
    t_stop: int = -1
    repeat: int = 5  # the official --g_repeat default
    target: str = "sample"

    def __post_init__(self):
        if self.target not in GUIDANCE_TARGETS:
            raise ConfigError(
                f"guidance target must be one of {', '.join(GUIDANCE_TARGETS)}, got {self.target!r}"
            )
        if int(self.repeat) < 1:
            raise ConfigError(f"guidance repeat must be >= 1, got {self.repeat}")
        if not math.isfinite(float(self.scale)):
            raise ConfigError(f"guidance scale must be finite, got {self.scale}")

    @classmethod
    def paper(cls, **overrides) -> Guidance:
        return cls(**{"scale": 100.0, "t_start": 1001, "t_stop": -1, "repeat": 1, **overrides})

    def active(self, t: int) -> bool:
        return self.scale != 0.0 and self.t_stop < t + 1 < self.t_start

    def draw_noise(self, shape, generator, device) -> torch.Tensor:
        """Standard normal noise of one posterior draw of the target (override to replay draws)."""
        where = device if generator is None else generator.device
        draw = torch.randn(shape, generator=generator, device=where, dtype=torch.float32)
        return draw.to(device)

    def correction(self, x0: torch.Tensor, target) -> torch.Tensor:
        """The summed x0 correction of ``repeat`` updates; ``target()`` gives each repeat's target."""
        _, c, h, w = x0.shape
        corrected = x0.float()
        for _ in range(int(self.repeat)):
            corrected = corrected + self.scale * (target().float() - corrected) / (c * h * w)
        return corrected - x0.float()


GUIDANCE_PRESETS = {"none": Guidance, "paper": Guidance.paper}


PADDINGS = ("reflect", "zero")
QUANTIZERS = ("round", "truncate")


def to_uint8(image01: np.ndarray, quantize: str = "round") -> np.ndarray:
    """uint8 of an image in [0, 1]: rounded, or truncated as official inference's astype(uint8)."""
    scaled = np.asarray(image01, dtype=np.float32) * 255.0
    if quantize == "round":
        scaled = scaled.round()
    elif quantize != "truncate":
        raise ConfigError(f"quantize must be one of {', '.join(QUANTIZERS)}, got {quantize!r}")
    return scaled.clip(0, 255).astype(np.uint8)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _missing_weights(what: str, source: str, exc: Exception) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"{what} not found at {source!r} ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}). "
        f"Stable Diffusion 2.1-base is needed: on a machine with network access run "
        f"`huggingface-cli download {SD21_BASE}` and copy the Hugging Face cache "
        f"(~/.cache/huggingface/hub, or $HF_HOME) here, or save it as a diffusers folder "
        f"(unet/, vae/, text_encoder/, tokenizer/) and pass that folder. Nothing is downloaded here."
    )


NO_VOCABULARY = FileNotFoundError(
    "no vocabulary files (tokenizer.json, or vocab.json and merges.txt)"
)


def has_vocabulary(tokenizer) -> bool:
    """False for a tokenizer built without its vocabulary files.

    transformers 5 does not fail on a folder (or an uncached model id) that lacks
    them: it builds a tokenizer of the special tokens alone, which would turn every
    caption into unknown tokens without a word.
    """
    return tokenizer.vocab_size > len(set(tokenizer.all_special_tokens))


def _gaussian_tile_weights(height: int, width: int, device, dtype) -> torch.Tensor:
    def ramp(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        return torch.exp(-0.5 * (x / (0.3 * n)) ** 2)

    return torch.outer(ramp(height), ramp(width)).to(device=device, dtype=dtype)


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


class DiffJSCCRefiner:
    """Stable Diffusion + DiffJSCC control module, sampled with diffusers schedulers."""

    def __init__(
        self,
        unet,
        vae,
        control,
        text_encoder,
        tokenizer,
        config: RefinerConfig | None = None,
        captioner=None,
    ):
        self.unet = unet
        self.vae = vae
        self.control = control
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.config = config or RefinerConfig()
        self.captioner = captioner if captioner is not None else NoCaptioner()
        self._empty_context = None
        for module in (unet, vae, text_encoder):
            module.requires_grad_(False)
            module.eval()
        self.control.eval()
        for key in ("in_channels", "block_out_channels", "layers_per_block", "cross_attention_dim"):
            if list(np.atleast_1d(control.config[key])) != list(np.atleast_1d(unet.config[key])):
                raise ConfigError(
                    f"control module and UNet disagree on {key}: "
                    f"{control.config[key]} vs {unet.config[key]}"
                )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_stable_diffusion(
        cls,
        source: str | os.PathLike = SD21_BASE,
        control=None,
        config: RefinerConfig | None = None,
        torch_dtype=None,
        cache_dir: str | os.PathLike | None = None,
        **control_options,
    ) -> DiffJSCCRefiner:
        """Stable Diffusion from a local diffusers folder or a model id already in the local cache.

        Without ``control`` a fresh control module is initialised from the UNet.
        ``cache_dir`` overrides the Hugging Face cache folder ($HF_HUB_CACHE).
        """
        diffusers = require("diffusers")
        transformers = require("transformers")
        source = str(source)
        parts = {}
        for name, loader in (
            ("unet", diffusers.UNet2DConditionModel),
            ("vae", diffusers.AutoencoderKL),
            ("text_encoder", transformers.CLIPTextModel),
            ("tokenizer", transformers.CLIPTokenizer),
        ):
            kwargs = {"subfolder": name, "local_files_only": True}
            if cache_dir is not None:
                kwargs["cache_dir"] = str(cache_dir)
            if torch_dtype is not None and name != "tokenizer":
                kwargs["torch_dtype"] = torch_dtype
            try:
                parts[name] = loader.from_pretrained(source, **kwargs)
            except (OSError, ValueError) as exc:
                raise _missing_weights(f"Stable Diffusion {name}", source, exc) from exc
        if not has_vocabulary(parts["tokenizer"]):
            raise _missing_weights("Stable Diffusion tokenizer", source, NO_VOCABULARY)
        if control is None:
            control = DiffJSCCControlModule.from_unet(parts["unet"], **control_options)
            if torch_dtype is not None:
                control.to(torch_dtype)
        config = config or RefinerConfig()
        config.source = config.source or source
        return cls(
            parts["unet"], parts["vae"], control, parts["text_encoder"], parts["tokenizer"], config
        )

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, torch_dtype=None, captioner=None
    ) -> DiffJSCCRefiner:
        """Load a refiner written by ``save_pretrained`` (or by the official-checkpoint converter)."""
        diffusers = require("diffusers")
        transformers = require("transformers")
        folder = Path(folder)
        config_path = folder / CONFIG_NAME
        if not config_path.is_file():
            raise WeightsNotFoundError(
                f"no refiner at {str(folder)!r} ({CONFIG_NAME} missing). Convert an official DiffJSCC "
                f"checkpoint with `diffjscc convert-official-refiner` or train one with "
                f"`diffjscc train-refiner`."
            )
        try:
            data = json.loads(config_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_path} is not readable JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("refiner", {}), dict):
            raise ConfigError(f"{config_path} is not a refiner config")
        if data.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ConfigError(f"{config_path} was written by a newer diffjscc")
        kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
        try:
            unet = diffusers.UNet2DConditionModel.from_pretrained(
                folder / "unet", local_files_only=True, **kwargs
            )
            vae = diffusers.AutoencoderKL.from_pretrained(
                folder / "vae", local_files_only=True, **kwargs
            )
            control = DiffJSCCControlModule.from_pretrained(
                folder / "control", local_files_only=True, **kwargs
            )
            text_encoder = transformers.CLIPTextModel.from_pretrained(
                folder / "text_encoder", local_files_only=True, **kwargs
            )
            tokenizer = transformers.CLIPTokenizer.from_pretrained(
                folder / "tokenizer", local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise WeightsNotFoundError(f"incomplete refiner folder {str(folder)!r}: {exc}") from exc
        if not has_vocabulary(tokenizer):
            raise WeightsNotFoundError(
                f"incomplete refiner folder {str(folder)!r}: {NO_VOCABULARY}"
            )
        config = RefinerConfig.from_dict(data.get("refiner", {}))
        return cls(unet, vae, control, text_encoder, tokenizer, config, captioner)

    def save_pretrained(
        self, folder: str | os.PathLike, overwrite: bool = False, extra_files: dict | None = None
    ) -> Path:
        """Write every component and the refiner config; the folder appears complete or not at all."""
        folder = Path(folder)
        if folder.exists() and not overwrite:
            raise ConfigError(f"{folder} exists; pass overwrite=True to replace it")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            self.unet.save_pretrained(tmp / "unet")
            self.vae.save_pretrained(tmp / "vae")
            self.control.save_pretrained(tmp / "control")
            self.text_encoder.save_pretrained(tmp / "text_encoder")
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            for name, writer in (extra_files or {}).items():
                writer(tmp / name)
            meta = {"format_version": FORMAT_VERSION, "refiner": asdict(self.config)}
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(folder, old)
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    # ------------------------------------------------------------------ placement
    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def to(self, device=None, dtype=None, memory_format=None) -> DiffJSCCRefiner:
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in (self.unet, self.vae, self.control, self.text_encoder):
            if moves:
                # nn.Module.to: diffusers' override warns about fp32-only modules on every
                # dtype cast even when a model has none (diffusers 0.42).
                torch.nn.Module.to(module, **moves)
            if memory_format is not None and module is not self.text_encoder:
                torch.nn.Module.to(module, memory_format=memory_format)
        self._empty_context = None
        return self

    def compile(self, **kwargs) -> DiffJSCCRefiner:
        """torch.compile the UNet and the control module (the per-step cost)."""
        self.unet = torch.compile(self.unet, **kwargs)
        self.control = torch.compile(self.control, **kwargs)
        return self

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Image sides are padded to this: VAE downsampling times UNet downsampling (64 for SD)."""
        return self.vae_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    # ------------------------------------------------------------------ conditions
    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """Cross-attention context: the text encoder's last hidden states, padded to max length."""
        if all(c == "" for c in captions) and self._empty_context is not None:
            return self._empty_context.expand(len(captions), -1, -1)
        ids = self.tokenizer(
            list(captions),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.text_encoder.device)
        context = self.text_encoder(ids)[0].to(self.dtype)
        if all(c == "" for c in captions):
            self._empty_context = context[:1]
        return context

    def encode_image_latent(
        self, image01: torch.Tensor, sample: bool = False, generator=None
    ) -> torch.Tensor:
        """Scaled VAE latent of an NCHW image in [0, 1]: posterior mode (or a sample) x scale."""
        dist = self.vae.encode((image01 * 2 - 1).to(self.vae.dtype)).latent_dist
        latent = dist.sample(generator) if sample else dist.mode()
        return latent * self.latent_scale

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        image = self.vae.decode((latent / self.latent_scale).to(self.vae.dtype)).sample
        return (image.float() + 1) / 2

    # ------------------------------------------------------------------ the model
    def predict_noise(
        self,
        latents: torch.Tensor,
        timestep,
        context: torch.Tensor,
        condition_latent: torch.Tensor,
        snr_db,
        channel_gain=None,
        control_scale: float | None = None,
    ) -> torch.Tensor:
        """epsilon(z_t, t | x_hat, text, SNR): the control module's residuals into the UNet."""
        scale = self.config.control_scale if control_scale is None else control_scale
        down, mid = self.control(
            latents,
            timestep,
            context,
            condition_latent,
            snr_db=snr_db,
            channel_gain=channel_gain,
            scale=scale,
        )
        return self.unet(
            latents,
            timestep,
            encoder_hidden_states=context,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample

    def _predict_noise_tiled(
        self, latents, timestep, context, cond, snr, gain, scale, tile: int, stride: int
    ):
        _, _, height, width = latents.shape
        if height <= tile and width <= tile:
            return self.predict_noise(latents, timestep, context, cond, snr, gain, scale)
        eps = torch.zeros_like(latents)
        weight_sum = torch.zeros_like(latents[:, :1])
        th, tw = min(tile, height), min(tile, width)
        weights = _gaussian_tile_weights(th, tw, latents.device, latents.dtype)
        for top in _tile_starts(height, th, stride):
            for left in _tile_starts(width, tw, stride):
                window = (slice(None), slice(None), slice(top, top + th), slice(left, left + tw))
                part = self.predict_noise(
                    latents[window], timestep, context, cond[window], snr, gain, scale
                )
                eps[window] += part * weights
                weight_sum[window] += weights
        return eps / weight_sum

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self,
        x_hat: torch.Tensor,
        snr_db,
        context: torch.Tensor,
        channel_gain=None,
        steps: int | None = None,
        sampler: str | Sampler | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        guidance: Guidance | None = None,
        color_fix_type: str | None = None,
        control_scale: float | None = None,
        tile_size: int | None = None,
        tile_stride: int | None = None,
        progress: bool = False,
        step_noise=None,
    ) -> torch.Tensor:
        """Refine a batch: x_hat NCHW in [0, 1], sides a multiple of ``size_multiple``; returns float NCHW in [0, 1].

        ``sampler`` is a name in ``SAMPLERS`` or a :class:`Sampler` (its own timesteps;
        ``steps`` is then ignored). ``noise`` is z_T; ``step_noise`` (stochastic samplers:
        a sequence with one latent-shaped tensor per step, or a callable
        ``(step_index, t) -> tensor``) replaces the ancestral noise, so a run can replay
        the exact noise of another implementation, e.g. the official sampler's
        ``torch.randn_like`` draws.
        """
        steps = self.config.steps if steps is None else int(steps)
        sampler = self.config.sampler if sampler is None else sampler
        # Timesteps and schedule tables stay on the CPU: the schedulers read them as Python
        # numbers, which on a GPU would otherwise mean a device sync every step.
        sampler = (
            sampler
            if isinstance(sampler, Sampler)
            else make_sampler(sampler, steps, self.config.schedule)
        )
        if step_noise is not None and not sampler.stochastic:
            raise ConfigError(
                f"step_noise applies to stochastic samplers only ({sampler.name} is deterministic)"
            )
        color_fix_type = self.config.color_fix if color_fix_type is None else color_fix_type
        if color_fix_type not in COLOR_FIXES:
            raise ConfigError(
                f"unknown colour fix {color_fix_type!r}; choose from {', '.join(COLOR_FIXES)}"
            )
        device, dtype = self.device, self.dtype
        batch, _, height, width = x_hat.shape
        if height % self.size_multiple or width % self.size_multiple:
            raise ConfigError(
                f"image sides must be multiples of {self.size_multiple}, got {height}x{width}"
            )
        x_hat = x_hat.to(device=device, dtype=torch.float32)
        snr = torch.as_tensor(snr_db, dtype=torch.float32, device=device).reshape(-1).expand(batch)
        posterior = self.vae.encode((x_hat * 2 - 1).to(self.vae.dtype)).latent_dist
        cond = (posterior.mode() * self.latent_scale).to(dtype)  # the control module's f_v
        context = context.to(device=device, dtype=dtype)
        shape = (
            batch,
            self.unet.config.in_channels,
            height // self.vae_factor,
            width // self.vae_factor,
        )
        if noise is None:
            noise = torch.randn(
                shape,
                generator=generator,
                dtype=torch.float32,
                device="cpu" if generator is None else generator.device,
            )
        elif tuple(noise.shape) != shape:
            raise ConfigError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        latents = noise.to(device=device, dtype=dtype) * sampler.init_noise_sigma
        step_generator = generator
        if generator is not None and generator.device.type != device.type:
            # Per-step noise drawn on the CPU would cost a host-to-device copy every step; a
            # device generator seeded from the seed keeps runs reproducible on that device.
            derived = int(torch.randint(0, 2**62, (1,), generator=generator))
            step_generator = torch.Generator(device).manual_seed(derived)

        def guidance_target() -> torch.Tensor:
            if guidance.target == "mode":
                return cond.float()
            # a fresh draw of the posterior at every repeat, as the official sampler re-encodes
            draw = guidance.draw_noise(posterior.mean.shape, step_generator, device)
            return (posterior.mean.float() + posterior.std.float() * draw) * self.latent_scale

        alphas_cumprod = sampler.alphas_cumprod
        tile = int(tile_size or 0)
        unet_factor = self.size_multiple // self.vae_factor
        if tile and tile % unet_factor:
            raise ConfigError(
                f"tile_size must be a multiple of {unet_factor} latent pixels, got {tile}"
            )
        stride = int(tile_stride or max(unet_factor, tile // 2))
        # The models get the timestep on their device (CUDA graphs refuse CPU inputs).
        model_timesteps = sampler.timesteps.to(device)
        steps_iter = enumerate(sampler.timesteps)
        if progress:
            from tqdm import tqdm

            steps_iter = tqdm(
                steps_iter,
                total=len(sampler.timesteps),
                desc=f"refine ({sampler.name})",
                leave=False,
            )
        for i, t in steps_iter:
            model_in = sampler.scale_model_input(latents, t)
            t_model = model_timesteps[i]
            if tile:
                eps = self._predict_noise_tiled(
                    model_in, t_model, context, cond, snr, channel_gain, control_scale, tile, stride
                )
            else:
                eps = self.predict_noise(
                    model_in, t_model, context, cond, snr, channel_gain, control_scale
                )
            mean_shift = None
            if guidance is not None and guidance.active(int(t)):
                a = alphas_cumprod[int(t)].to(device=device, dtype=torch.float32)
                x0 = (latents.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()
                delta = guidance.correction(x0, guidance_target)
                eps, mean_shift = sampler.apply_guidance(latents, eps, x0, delta, t)
                eps = eps.to(latents.dtype)
            given = None
            if step_noise is not None:
                given = step_noise(i, int(t)) if callable(step_noise) else step_noise[i]
            latents = sampler.step(eps, t, latents, i, generator=step_generator, noise=given)
            if mean_shift is not None:
                latents = latents + mean_shift.to(latents.dtype)
        image = self.decode_latent(latents)
        image = color_fix(image, x_hat, color_fix_type)
        return image.clamp(0, 1)

    # ------------------------------------------------------------------ single-image API
    def refine(
        self,
        image,
        snr_db: float,
        h: complex | None = None,
        caption: str | None = None,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        guidance_scale: float = 0.0,
        guidance_repeat: int = 5,
        guidance_t_start: int = 1001,
        guidance_t_stop: int = -1,
        guidance_target: str = "sample",
        guidance: Guidance | None = None,
        color_fix: str | None = None,
        control_scale: float | None = None,
        tile_size: int | None = None,
        tile_stride: int | None = None,
        progress: bool = False,
        padding: str = "reflect",
        quantize: str = "round",
    ) -> RefineResult:
        """Refine one JSCC image (uint8 HxWx3, or a float tensor 3xHxW / 1x3xHxW in [0, 1]).

        ``caption`` None asks the refiner's captioner; a string (even "") is used as is.
        ``seed`` None draws one, reported in the result. ``tile_size`` is in latent
        pixels (64 = 512 image pixels for SD); larger latents are sampled tile by tile.
        ``guidance`` (a :class:`Guidance`) overrides the ``guidance_*`` arguments.
        ``padding`` fills the sides up to a multiple of ``size_multiple``: "reflect"
        (default) or "zero" (as official inference pads); ``quantize`` turns the result
        into uint8: "round" (default) or "truncate" (as official inference does).
        """
        if padding not in PADDINGS:
            raise ConfigError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        if quantize not in QUANTIZERS:
            raise ConfigError(f"quantize must be one of {', '.join(QUANTIZERS)}, got {quantize!r}")
        if guidance is None:
            guidance = Guidance(
                guidance_scale, guidance_t_start, guidance_t_stop, guidance_repeat, guidance_target
            )
        start = time.perf_counter()
        x01, image_u8 = self._as_image(image)
        snr_value = float(snr_db)
        if not math.isfinite(snr_value):
            raise ConfigError(f"snr_db must be a finite number, got {snr_db!r}")
        steps = self.config.steps if steps is None else int(steps)
        sampler = self.config.sampler if sampler is None else sampler
        sampler = make_sampler(sampler, steps, self.config.schedule)  # checks name and steps
        seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
        t0 = time.perf_counter()
        if caption is None:
            caption = self.captioner([image_u8])[0]
            if self.config.caption_replace and caption:
                caption = replace_degradation_words(caption)
        caption_s = time.perf_counter() - t0

        height, width = x01.shape[-2:]
        m = self.size_multiple
        pad_h, pad_w = (-height) % m, (-width) % m
        if padding == "zero":
            padded = F.pad(x01, (0, pad_w, 0, pad_h), value=0.0) if pad_h or pad_w else x01
        else:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            padded = F.pad(x01, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else x01
        if tile_size is not None:
            self.vae.enable_tiling()
        device = self.device
        _sync(device)
        t1 = time.perf_counter()
        try:
            generator = torch.Generator("cpu").manual_seed(seed)
            context = self.encode_text([caption])
            gain = None if h is None else torch.tensor([complex(h)], dtype=torch.complex64)
            out = self.sample(
                padded,
                snr_value,
                context,
                channel_gain=gain,
                steps=steps,
                sampler=sampler,
                generator=generator,
                guidance=guidance,
                color_fix_type=color_fix,
                control_scale=control_scale,
                tile_size=tile_size,
                tile_stride=tile_stride,
                progress=progress,
            )
            _sync(device)
        finally:
            if tile_size is not None:
                self.vae.disable_tiling()
        sample_s = time.perf_counter() - t1
        out = out[0, :, :height, :width]
        result = to_uint8(out.permute(1, 2, 0).float().cpu().numpy(), quantize)
        return RefineResult(
            image=result,
            caption=caption,
            snr_db=snr_value,
            steps=steps,
            sampler=sampler.name,
            seed=seed,
            timing={
                "caption_s": caption_s,
                "sample_s": sample_s,
                "total_s": time.perf_counter() - start,
            },
            device=str(device),
        )

    def _as_image(self, image) -> tuple[torch.Tensor, np.ndarray]:
        """(1x3xHxW float tensor in [0, 1], uint8 HxWx3 array) from either form."""
        if isinstance(image, torch.Tensor):
            x = image.detach()
            if x.dim() == 4 and x.shape[0] == 1:
                x = x[0]
            if x.dim() != 3 or x.shape[0] != 3:
                raise ImageError(f"expected a 3xHxW tensor, got shape {tuple(image.shape)}")
            x = x.float().cpu()
            if not torch.isfinite(x).all():
                raise ImageError("image tensor has non-finite values")
            x = x.clamp(0, 1)
            u8 = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        else:
            u8 = np.asarray(image)
            if u8.ndim != 3 or u8.shape[2] != 3:
                raise ImageError(f"expected an HxWx3 image, got shape {u8.shape}")
            if u8.dtype != np.uint8:
                raise ImageError(f"expected a uint8 image, got {u8.dtype}")
            x = torch.from_numpy(np.ascontiguousarray(u8)).permute(2, 0, 1).float() / 255.0
        height, width = x.shape[-2:]
        if min(height, width) < 8 or max(height, width) > MAX_IMAGE_SIDE:
            raise ImageError(
                f"image size {height}x{width} outside 8..{MAX_IMAGE_SIDE} pixels per side"
            )
        return x[None], u8

    # ------------------------------------------------------------------ training
    def training_loss(
        self,
        clean01: torch.Tensor,
        x_hat01: torch.Tensor,
        snr_db,
        context: torch.Tensor,
        channel_gain=None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Latent diffusion loss of stage 2: || eps - eps_theta(z_t, t | x_hat, text, SNR) ||^2.

        z_0 is a sample of the VAE posterior of the clean image (as LDM's
        ``get_first_stage_encoding`` does); t is uniform over the training steps.
        """
        batch = clean01.shape[0]
        device = self.device
        num_train = int(self.config.schedule["num_train_timesteps"])
        with torch.no_grad():
            z0 = self.encode_image_latent(clean01.to(device), sample=True, generator=generator).to(
                self.dtype
            )
            cond = self.encode_image_latent(x_hat01.to(device)).to(self.dtype)
            gen_device = "cpu" if generator is None else generator.device
            noise = torch.randn(z0.shape, generator=generator, device=gen_device).to(
                device, z0.dtype
            )
            t = torch.randint(0, num_train, (batch,), generator=generator, device=gen_device).to(
                device
            )
            acp = self._train_alphas_cumprod(device)[t].view(-1, 1, 1, 1)
            z_t = (acp.sqrt() * z0.float() + (1 - acp).sqrt() * noise.float()).to(z0.dtype)
        eps = self.predict_noise(z_t, t, context.to(device, self.dtype), cond, snr_db, channel_gain)
        return F.mse_loss(eps.float(), noise.float())

    def _train_alphas_cumprod(self, device) -> torch.Tensor:
        cached = getattr(self, "_acp", None)
        if cached is None or cached.device != torch.device(device):
            sched = make_scheduler("ddpm", 1, self.config.schedule)
            cached = sched.alphas_cumprod.to(device=device, dtype=torch.float32)
            self._acp = cached
        return cached

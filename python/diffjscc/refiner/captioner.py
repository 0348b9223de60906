"""Captioners: where the text condition of the refiner comes from.

The paper captions the JSCC image with BLIP-2 (OPT-2.7b) and encodes the
caption with the Stable Diffusion text encoder. Any callable that maps a list of
uint8 HxWx3 images to a list of strings can stand in; the ones here are

- ``NoCaptioner``: the empty prompt (what the official code does without --use_lang);
- ``FixedCaptioner``: the same text for every image;
- ``HFCaptioner``: a transformers image-to-text model from a local folder or the
  local Hugging Face cache: BLIP-2 as in the paper, or a smaller BLIP.

``make_captioner("none" | "fixed:<text>" | "blip2[:<id or folder>]" | "blip[:<id or folder>]")``
builds one from a command-line string.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diffjscc.errors import ConfigError, WeightsNotFoundError
from diffjscc.refiner._deps import require

BLIP2_DEFAULT = "Salesforce/blip2-opt-2.7b"
BLIP_DEFAULT = "Salesforce/blip-image-captioning-base"
QUALITY_PREFIX = "a high quality image of"


def replace_degradation_words(caption: str) -> str:
    """The official ``--use_replace`` rewrite: steer the caption away from "blurry"."""
    text = caption.replace("blurry", "high quality")
    for phrase in ("a painting of", "a photo of", "a picture of"):
        text = text.replace(phrase, QUALITY_PREFIX)
    return text if QUALITY_PREFIX in text else f"{QUALITY_PREFIX} {text}"


class NoCaptioner:
    name = "none"

    def __call__(self, images: Sequence[np.ndarray]) -> list[str]:
        return [""] * len(images)


class FixedCaptioner:
    def __init__(self, text: str):
        self.text = text
        self.name = f"fixed:{text}"

    def __call__(self, images: Sequence[np.ndarray]) -> list[str]:
        return [self.text] * len(images)


class HFCaptioner:
    """A transformers captioning model (BLIP-2 or BLIP), loaded without network access."""

    def __init__(
        self,
        model: str = BLIP2_DEFAULT,
        kind: str = "blip2",
        device: str = "cpu",
        dtype=None,
        max_new_tokens: int = 32,
        replace_words: bool = False,
    ):
        torch = require("torch")
        transformers = require("transformers")
        if kind == "blip2":
            model_cls, proc_cls = (
                transformers.Blip2ForConditionalGeneration,
                transformers.Blip2Processor,
            )
        elif kind == "blip":
            model_cls, proc_cls = (
                transformers.BlipForConditionalGeneration,
                transformers.BlipProcessor,
            )
        else:
            raise ConfigError(f"unknown captioner kind {kind!r}; use 'blip2' or 'blip'")
        if dtype is None:
            dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
        try:
            self.processor = proc_cls.from_pretrained(model, local_files_only=True)
            self.model = model_cls.from_pretrained(model, torch_dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise WeightsNotFoundError(
                f"captioning model {model!r} is not available offline ({exc.__class__.__name__}). "
                f"Download it on a machine with network access, e.g. "
                f"`huggingface-cli download {model if '/' in model else BLIP2_DEFAULT}`, and copy "
                "the Hugging Face cache (~/.cache/huggingface/hub, or $HF_HOME) here, or pass the "
                "path of a folder saved with save_pretrained; or use --caption none / fixed:<text>."
            ) from exc
        self.model.to(device).eval()
        self.device, self.dtype = device, dtype
        self.max_new_tokens = max_new_tokens
        self.replace_words = replace_words
        self.name = f"{kind}:{model}"

    def __call__(self, images: Sequence[np.ndarray]) -> list[str]:
        torch = require("torch")
        from PIL import Image

        pil = [Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images]
        inputs = self.processor(images=pil, return_tensors="pt").to(self.device, self.dtype)
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        texts = [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return [replace_degradation_words(t) for t in texts] if self.replace_words else texts


def make_captioner(spec: str | None, device: str = "cpu", replace_words: bool = False):
    """Build a captioner from a short string (see the module docstring)."""
    if spec is None or spec in ("", "none"):
        return NoCaptioner()
    if spec.startswith("fixed:"):
        return FixedCaptioner(spec[len("fixed:") :])
    kind, _, model = spec.partition(":")
    if kind in ("blip2", "blip"):
        default = BLIP2_DEFAULT if kind == "blip2" else BLIP_DEFAULT
        return HFCaptioner(model or default, kind=kind, device=device, replace_words=replace_words)
    raise ConfigError(
        f"unknown captioner {spec!r}; use none, fixed:<text>, blip2[:<model>] or blip[:<model>]"
    )

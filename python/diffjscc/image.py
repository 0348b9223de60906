"""Reading images and fitting them to the codec, with clear errors (numpy + Pillow, no torch)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from diffjscc.errors import ImageError
from diffjscc.registry import padded_shape

# 8K x 8K: far beyond any radio image, small enough to never exhaust memory when decoding.
MAX_PIXELS = 8192 * 8192
MIN_SIDE = 1

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def check_image_array(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate an HxWx3 (or HxW, HxWx1, HxWx4) array and return it as uint8 HxWx3."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageError(
            f"{name}: expected an HxW, HxWx1, HxWx3 or HxWx4 array, got shape {image.shape}"
        )
    h, w = image.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ImageError(f"{name}: image is empty ({h}x{w})")
    if h * w > MAX_PIXELS:
        raise ImageError(
            f"{name}: image of {w}x{h} pixels is larger than the limit of {MAX_PIXELS} pixels"
        )
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating):
            if not np.all(np.isfinite(image)):
                raise ImageError(f"{name}: image has NaN or infinite values")
            image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
        else:
            raise ImageError(f"{name}: expected uint8 or float in [0, 1], got {image.dtype}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = _drop_alpha(image)
    return np.ascontiguousarray(image)


def _drop_alpha(rgba: np.ndarray) -> np.ndarray:
    # Composite on white so transparent areas do not become arbitrary colours.
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    rgb = rgba[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 HxWx3 RGB; grayscale, palette and RGBA are converted."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageError(
                        f"{path}: {w}x{h} pixels is larger than the limit of {MAX_PIXELS}"
                    )
                im.load()
                if im.mode in _WIDE_GRAY_MODES:
                    array = _wide_gray_to_u8(im)
                elif im.mode in ("RGBA", "LA", "PA") or (
                    im.mode == "P" and "transparency" in im.info
                ):
                    array = np.asarray(im.convert("RGBA"))
                else:
                    array = np.asarray(im.convert("RGB"))
    except ImageError:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from exc
    return check_image_array(array, str(path))


# Pillow opens 16-bit grayscale PNG/TIFF as "I;16*" and 32-bit ones as "I" or "F";
# its convert("RGB") clips those to 255 instead of scaling them.
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _wide_gray_to_u8(im: Image.Image) -> np.ndarray:
    values = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit samples (also 16-bit PNGs that an older Pillow opens as "I").
        full_scale = 65535.0 if im.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
    else:  # "F": floating point samples, taken as [0, 1]
        if not np.all(np.isfinite(values)):
            raise ImageError(
                f"{getattr(im, 'filename', 'image')}: image has NaN or infinite values"
            )
        full_scale = 1.0
    gray = np.clip(np.round(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def save_png(path: str | os.PathLike, image: np.ndarray, compress_level: int = 6) -> Path:
    """Write uint8 HxWx3 as PNG, atomically (``compress_level`` 0-9, zlib's; 1 is about six
    times faster than 6 for a tenth more bytes)."""
    from diffjscc.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(check_image_array(image, str(path))).save(
            tmp, format="PNG", compress_level=compress_level
        )
    return path


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Edge-replicate HxWxC up to multiples of ``multiple`` (bottom and right)."""
    h, w = image.shape[:2]
    ph, pw = padded_shape(h, w, multiple)
    if (ph, pw) == (h, w):
        return image
    return np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

"""Image data: where it lives, and in-memory crops for training (torch)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diffjscc.errors import ConfigError, ImageError
from diffjscc.image import list_images, load_image


def data_root() -> Path:
    """The image data folder: $DIFFJSCC_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("DIFFJSCC_DATA")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2]
    return checkout.parent / "shared" / "data"


def collect_images(folders: list[str | os.PathLike]) -> list[Path]:
    paths: list[Path] = []
    for folder in folders:
        paths.extend(list_images(folder))
    if not paths:
        raise ConfigError(f"no images found in {', '.join(map(str, folders))}")
    return paths


class InMemoryImages:
    """Decoded images kept as uint8 arrays; random crops and flips, as torch batches.

    Training sets here are a few hundred images, so decoding once and cropping
    from memory is far faster than a DataLoader that re-reads JPEG files.
    """

    def __init__(self, paths: list[Path], min_side: int = 0):
        self.images = []
        skipped = []
        for p in paths:
            try:
                img = load_image(p)
            except ImageError as exc:
                skipped.append(str(exc))
                continue
            if min(img.shape[:2]) >= min_side:
                self.images.append(img)
        self.skipped = skipped
        if not self.images:
            raise ConfigError(
                f"no usable image (at least {min_side} px a side) among {len(paths)} files"
            )

    def __len__(self) -> int:
        return len(self.images)

    def random_batch(self, batch_size: int, crop: int, rng: np.random.Generator, device="cpu"):
        import torch

        crops = np.empty((batch_size, crop, crop, 3), dtype=np.uint8)
        for i in range(batch_size):
            img = self.images[rng.integers(len(self.images))]
            h, w = img.shape[:2]
            y = rng.integers(h - crop + 1)
            x = rng.integers(w - crop + 1)
            patch = img[y : y + crop, x : x + crop]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            if rng.random() < 0.5:
                patch = patch[::-1]
            crops[i] = patch
        batch = torch.from_numpy(crops).to(device, non_blocking=True)
        return batch.permute(0, 3, 1, 2).float().div_(255.0)

"""Check the refiner against the official DiffJSCC code: same conditions, same epsilon, same samples.

    python benchmarks/refiner_equivalence.py OFFICIAL_REPO OFFICIAL_CKPT_FOLDER CONVERTED_REFINER results.json
        [--image kodim23.png] [--size 256] [--steps 20] [--snr 1] [--caption "a parrot"] [--device cuda]

OFFICIAL_REPO is a checkout of the public repository mingyuyng/DiffJSCC with its
requirements installed (pytorch_lightning, omegaconf, einops, open_clip_torch,
timm, torchvision, transformers, lpips with its AlexNet weights cached: the
official JSCC module builds an LPIPS metric when constructed); OFFICIAL_CKPT_FOLDER holds its config.yaml and
model.ckpt; CONVERTED_REFINER is that checkpoint converted with
``diffjscc convert-official-refiner``. Nothing is downloaded: the official text
tower is built without pretrained weights and filled from the checkpoint, and
captions are given (``use_lang`` off).

It compares, in fp32: the text context, the VAE latent of x_hat, the epsilon
prediction at a few timesteps, and the full respaced-DDPM sample from the same
initial noise with the official sampler's per-step noise replayed into ours
(``step_noise``), with the wavelet colour fix on both sides. Writes the largest
absolute differences to the JSON path. This script was written without access
to the official weights; it has not been run here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("official_repo")
    p.add_argument("official_ckpt")
    p.add_argument("refiner")
    p.add_argument("output")
    p.add_argument("--image", help="an image to use as x_hat (default: a smooth random image)")
    p.add_argument("--size", type=int, default=256, help="square crop side, a multiple of 64")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--snr", type=float, default=1.0)
    p.add_argument("--caption", default="a photo")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    from diffjscc.io import atomic_write_text
    from diffjscc.refiner.pipeline import DiffJSCCRefiner

    device = torch.device(
        args.device if torch.cuda.is_available() or args.device == "cpu" else "cpu"
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    # ---- official model
    sys.path.insert(0, str(Path(args.official_repo).resolve()))
    import model.spaced_sampler as official_sampler_module  # official repo
    from model.spaced_sampler import SpacedSampler  # official repo
    from omegaconf import OmegaConf
    from utils.common import instantiate_from_config, load_state_dict  # official repo

    cfg = OmegaConf.load(Path(args.official_ckpt) / "config.yaml")
    params = cfg.params if "params" in cfg else cfg.model.params
    params.use_lang = False  # no BLIP-2 download; the caption is given
    params.cond_stage_config.params.version = None  # OpenCLIP tower filled from the checkpoint
    params.cond_stage_config.params.device = str(device)
    official = instantiate_from_config(cfg if "params" in cfg else cfg.model)
    state = torch.load(
        Path(args.official_ckpt) / "model.ckpt", map_location="cpu", weights_only=False
    )
    load_state_dict(official, state, strict=False)
    official = official.to(device).eval()

    # ---- ours
    ours = DiffJSCCRefiner.from_pretrained(args.refiner).to(device, torch.float32)

    # ---- inputs
    if args.image:
        from PIL import Image

        img = np.asarray(Image.open(args.image).convert("RGB"))[: args.size, : args.size]
        x_hat = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float().div(255)
    else:
        g = torch.Generator().manual_seed(0)
        x_hat = F.interpolate(torch.rand(1, 3, args.size // 16, args.size // 16, generator=g), size=args.size,
                              mode="bicubic").clamp(0, 1)  # fmt: skip
    x_hat = x_hat.to(device)
    snr = torch.tensor([[args.snr]], device=device)
    report = {"device": str(device), "steps": args.steps, "size": args.size}

    with torch.no_grad():
        c_text = official.get_learned_conditioning([args.caption])
        context = ours.encode_text([args.caption])
        report["text_context_max_abs"] = float((c_text - context).abs().max())
        c_latent = official.apply_condition_encoder(x_hat)
        cond = ours.encode_image_latent(x_hat)
        report["condition_latent_max_abs"] = float((c_latent - cond).abs().max())

        g = torch.Generator().manual_seed(1)
        z = torch.randn(1, 4, args.size // 8, args.size // 8, generator=g).to(device)
        cond_dict = {"c_textual": [c_text], "c_spatial": [c_latent], "c_snr": [snr]}
        eps_diffs = {}
        for t in (999, 500, 20):
            ts = torch.tensor([t], device=device)
            eps_official = official.apply_model(z, ts, cond_dict)
            eps_ours = ours.predict_noise(z, ts, context, cond, snr[:, 0])
            eps_diffs[str(t)] = float((eps_official - eps_ours).abs().max())
        report["eps_max_abs"] = eps_diffs

        # full sample: same z_T, official per-step noise recorded and replayed
        recorded = []
        real_randn_like = torch.randn_like

        def recording_randn_like(x, *a, **k):
            out = real_randn_like(x, *a, **k)
            recorded.append(out.detach().clone())
            return out

        official_sampler_module.torch.randn_like = recording_randn_like
        try:
            sampler = SpacedSampler(official, var_type="fixed_small")
            sample_official = sampler.sample(
                steps=args.steps, shape=tuple(z.shape), cond_img=x_hat, cond_snr=snr, cond_text=c_text,
                positive_prompt="", negative_prompt="", x_T=z.clone(), cfg_scale=1.0, cond_fn=None,
                color_fix_type="wavelet",
            )  # fmt: skip
        finally:
            official_sampler_module.torch.randn_like = real_randn_like
        sample_ours = ours.sample(
            x_hat, snr[:, 0], context, steps=args.steps, sampler="ddpm", noise=z, step_noise=recorded,
            color_fix_type="wavelet",
        )  # fmt: skip
        report["recorded_step_noises"] = len(recorded)
        report["sample_max_abs"] = float((sample_official.clamp(0, 1) - sample_ours).abs().max())
        report["sample_psnr_db"] = float(
            -10
            * torch.log10(
                ((sample_official.clamp(0, 1) - sample_ours) ** 2).mean().clamp_min(1e-20)
            )
        )

    print(json.dumps(report, indent=2))
    atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

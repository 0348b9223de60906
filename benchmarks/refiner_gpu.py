"""GPU benchmark of the refiner at Stable Diffusion 2.1-base size (random weights, no download).

    python benchmarks/refiner_gpu.py results.json [--steps 50 100] [--height 512 --width 768]
        [--variants eager,compile,compile-cudagraphs] [--repeats 3] [--dtype fp16]

Times ``DiffJSCCRefiner.refine`` on one 768x512 image (latent 96x64) with the
paper's respaced DDPM sampler, fp16, scaled-dot-product attention (diffusers'
default processor on torch 2), channels-last, eagerly and under torch.compile,
plus the cost of one denoising step (UNet + control module) and of the VAE and
text encoder. Targets (issue 4): 50 steps < 2 s, 100 steps < 4 s on an H100.
Results are written to the JSON path after every variant, so a run cut short
keeps what it measured. Progress goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path: Path, data: dict) -> None:
    from diffjscc.io import atomic_write_text  # importable once main() has set sys.path

    atomic_write_text(path, json.dumps(data, indent=2))


def cuda_time(fn, repeats: int, sync) -> list[float]:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def measure(refiner, image, args, device, dtype, sync, entry: dict, variant: str) -> None:
    """Per-step, VAE, text-encoder and whole-refine timings of one variant, into ``entry``."""
    import torch

    lat_h, lat_w = args.height // refiner.vae_factor, args.width // refiner.vae_factor
    latents = torch.randn(1, 4, lat_h, lat_w, device=device, dtype=dtype)
    cond = torch.randn(1, 4, lat_h, lat_w, device=device, dtype=dtype)
    context = refiner.encode_text(["a photo"])
    snr = torch.tensor([1.0], device=device)
    t = torch.tensor(500, device=device)
    x = torch.rand(1, 3, args.height, args.width, device=device)

    def step():
        return refiner.predict_noise(latents, t, context, cond, snr)

    with torch.no_grad():
        for _ in range(3):
            step()
        per_step = cuda_time(step, 20, sync)
        entry["step_ms_median"] = 1000 * sorted(per_step)[len(per_step) // 2]
        entry["vae_encode_ms"] = 1000 * min(
            cuda_time(lambda: refiner.encode_image_latent(x), 3, sync)
        )
        z = refiner.encode_image_latent(x)
        entry["vae_decode_ms"] = 1000 * min(cuda_time(lambda: refiner.decode_latent(z), 3, sync))
        entry["text_encode_ms"] = 1000 * min(
            cuda_time(lambda: refiner.encode_text(["a photo of a lighthouse"]), 3, sync)
        )
    log(
        f"{variant}: step {entry['step_ms_median']:.1f} ms, VAE enc {entry['vae_encode_ms']:.1f} ms, "
        f"dec {entry['vae_decode_ms']:.1f} ms"
    )
    for steps in args.steps:
        times = []
        for r in range(args.repeats):
            res = refiner.refine(
                image, 1.0, caption="a photo", steps=steps, sampler=args.sampler, seed=r
            )
            times.append(res.timing["total_s"])
        entry[f"refine_{steps}_steps_s"] = {
            "min": min(times),
            "median": sorted(times)[len(times) // 2],
            "all": times,
        }
        log(f"{variant}: {steps} steps: {min(times):.3f} s (min of {len(times)})")
    for item in [a for a in args.also.split(",") if a]:
        sampler, _, steps = item.partition(":")
        times = [
            refiner.refine(
                image, 1.0, caption="a photo", steps=int(steps), sampler=sampler, seed=r
            ).timing["total_s"]
            for r in range(args.repeats)
        ]
        entry[f"refine_{sampler}_{steps}_steps_s"] = {"min": min(times), "all": times}
        log(f"{variant}: {sampler} {steps} steps: {min(times):.3f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("output", help="JSON results path")
    p.add_argument("--steps", type=int, nargs="+", default=[50, 100])
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--sampler", default="ddpm")
    p.add_argument(
        "--also",
        default="ddim:50,dpm-solver:25",
        help="extra sampler:steps runs per variant (comma separated; empty for none)",
    )
    p.add_argument("--variants", default="eager,compile,compile-cudagraphs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test at tiny sizes")
    p.add_argument(
        "--time-budget", type=float, default=540, help="seconds; skip variants that would overrun"
    )
    args = p.parse_args(argv)

    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import diffusers
    from diffjscc.refiner.tiny import sd21_sized_refiner

    t_start = time.perf_counter()
    out = Path(args.output)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log("no CUDA device: nothing to measure")
        write_json(out, {"error": "CUDA not available"})
        return 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    results = {
        "benchmark": "refiner_gpu",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cuda": torch.version.cuda,
        "image": [args.height, args.width],
        "dtype": args.dtype,
        "channels_last": not args.no_channels_last,
        "sampler": args.sampler,
        "attention": "scaled_dot_product_attention (diffusers AttnProcessor2_0)",
        "variants": {},
    }
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    log(f"building SD 2.1-base-size refiner on {results['device']} ({args.dtype})")
    t0 = time.perf_counter()
    refiner = sd21_sized_refiner(device=device, dtype=dtype)
    if not args.no_channels_last:
        refiner.to(memory_format=torch.channels_last)
    results["build_s"] = time.perf_counter() - t0
    results["parameters_m"] = {
        name: sum(p.numel() for p in getattr(refiner, name).parameters()) / 1e6
        for name in ("unet", "control", "vae", "text_encoder")
    }
    results["attention_processor"] = type(
        next(iter(refiner.unet.attn_processors.values()))
    ).__name__
    log(f"built in {results['build_s']:.1f} s; parameters (M): {results['parameters_m']}")
    image = (np.random.default_rng(0).random((args.height, args.width, 3)) * 255).astype(np.uint8)
    eager_unet, eager_control = refiner.unet, refiner.control

    for variant in [v for v in args.variants.split(",") if v]:
        elapsed = time.perf_counter() - t_start
        if elapsed > args.time_budget:
            log(f"skipping {variant}: time budget spent ({elapsed:.0f} s)")
            results["variants"][variant] = {"skipped": "time budget"}
            continue
        entry: dict = {}
        results["variants"][variant] = entry
        try:
            torch._dynamo.reset()
            refiner.unet, refiner.control = eager_unet, eager_control
            if variant == "compile":
                refiner.compile()
            elif variant == "compile-cudagraphs":
                refiner.compile(mode="reduce-overhead")
            elif variant != "eager":
                raise ValueError(f"unknown variant {variant}")
            log(f"{variant}: warm-up (includes compilation)")
            t0 = time.perf_counter()
            for _ in range(2):  # cudagraph trees record on the second run
                refiner.refine(image, 1.0, caption="a photo", steps=3, sampler=args.sampler, seed=0)
            sync()
            entry["warmup_s"] = time.perf_counter() - t0

            measure(refiner, image, args, device, dtype, sync, entry, variant)
            if device.type == "cuda":
                entry["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        except Exception as exc:  # record and go on with the next variant
            entry["error"] = f"{exc.__class__.__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-3000:]
            log(f"{variant} failed: {entry['error']}")
        write_json(out, results)
    results["total_s"] = time.perf_counter() - t_start
    write_json(out, results)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU benchmark of the refiner with the tiny test models: end to end and per step.

    python benchmarks/refiner_cpu.py [results.json] [--sizes 64 128 256] [--steps 20] [--threads 2]

The tiny models (python/diffjscc/refiner/tiny.py) are far smaller than Stable
Diffusion, so the figures measure the pipeline's own overhead (scheduler,
padding, colour fix, conversions) and how the cost grows with image size, not
the refiner's real speed; for that see benchmarks/refiner_gpu.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("output", nargs="?", help="JSON results path (optional)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    from diffjscc.io import atomic_write_text
    from diffjscc.refiner.tiny import tiny_refiner

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    refiner = tiny_refiner(seed=0)
    build_s = time.perf_counter() - t0
    results = {
        "benchmark": "refiner_cpu",
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "models": "tiny (python/diffjscc/refiner/tiny.py)",
        "build_s": build_s,
        "steps": args.steps,
        "runs": [],
    }
    print(f"tiny refiner built in {build_s:.2f} s; torch threads {torch.get_num_threads()}")
    print(f"{'size':>9} {'sampler':>10} {'refine s':>9} {'per step ms':>12} {'model ms':>9}")
    rng = np.random.default_rng(0)
    for side in args.sizes:
        image = (rng.random((side, side, 3)) * 255).astype(np.uint8)
        lat = side // refiner.vae_factor
        latents, cond = torch.randn(1, 4, lat, lat), torch.randn(1, 4, lat, lat)
        context = refiner.encode_text(["a photo"])
        with torch.no_grad():
            refiner.predict_noise(latents, 500, context, cond, 1.0)
            t1 = time.perf_counter()
            for _ in range(10):
                refiner.predict_noise(latents, 500, context, cond, 1.0)
            model_ms = (time.perf_counter() - t1) / 10 * 1000
        for sampler in ("ddpm", "ddim", "dpm-solver"):
            refiner.refine(image, 1.0, caption="", steps=2, sampler=sampler, seed=0)  # warm-up
            times = [
                refiner.refine(
                    image, 1.0, caption="", steps=args.steps, sampler=sampler, seed=r
                ).timing["total_s"]
                for r in range(args.repeats)
            ]
            best = min(times)
            run = {
                "size": [side, side],
                "sampler": sampler,
                "refine_s": best,
                "per_step_ms": best / args.steps * 1000,
                "model_ms": model_ms,
            }
            results["runs"].append(run)
            print(
                f"{side:>4}x{side:<4} {sampler:>10} {best:>9.3f} {run['per_step_ms']:>12.1f} {model_ms:>9.1f}"
            )
    if args.output:
        atomic_write_text(args.output, json.dumps(results, indent=2))
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

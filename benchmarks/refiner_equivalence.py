"""Check the refiner against the official DiffJSCC code, run from the user's own clone of it.

    git clone https://github.com/mingyuyng/DiffJSCC /path/to/DiffJSCC     # the user's clone
    pip install einops                                                   # the official code needs it
    python benchmarks/refiner_equivalence.py --official /path/to/DiffJSCC [--out results.json]
        [--steps 10 100] [--guidance-steps 10] [--size 64] [--guidance-scale 100] [--guidance-repeat 3]
        [--control-scale 0.5] [--checkpoint OFFICIAL_FOLDER] [--device cpu]

It imports the official ``model.cldm.ControlLDM`` (and its LDM modules) from that
clone, unchanged. What inference does not need is stubbed in ``sys.modules`` when
it is not installed: pytorch_lightning (LightningModule as a plain nn.Module),
omegaconf (the container classes the code tests against), torchvision's
transforms and grid, timm's layer helpers, lpips, cv2, open_clip. The OpenCLIP
text tower is replaced, in the config, by a fixed random context (no weights
here; the text tower's conversion is covered by tests/test_refiner_official.py),
and BLIP-2 captioning is off (``use_lang: False``). Nothing else of the config is
touched; in particular ``cond_stage_config.params`` gets no ``device``.

Without ``--checkpoint`` the model is the released ``configs/model/cldm_cnn.yaml``
scaled down (32 UNet channels, a 32-channel VAE, a 16-channel JSCC) so the
check runs on a CPU in a minute or two, with random weights and nothing zero
(zero convolutions, SNR embedding and control module all random, the condition
encoder equal to the VAE encoder as in the released checkpoints). It is saved as
an official checkpoint folder (config.yaml + model.ckpt), converted with this
project's ``diffjscc convert-official-refiner``, and both sides get the same
inputs in fp32. Printed (and written to ``--out``): the largest absolute
difference, and that difference relative to the largest value, of

- the JSCC encoder and decoder (``preprocess_model``),
- the VAE: condition latent (encoder mode x scale) and decoder,
- the control module's residuals and epsilon at t = 999, 500, 20, with
  control_scale 1 and ``--control-scale``,
- a respaced DDPM run for each ``--steps`` from the same z_T with the official
  sampler's per-step ``torch.randn_like`` draws recorded and replayed (latents),
- a ``--guidance-steps`` run with MSE guidance (official ``MSEGuidance``, latent
  space), its posterior draws of the target recorded and replayed, and how far
  guidance moved the official result (so the check is not vacuous),
- the wavelet and AdaIN colour fixes on random images,

and the key check: the official model loads our weights written back in its
layout (``official.to_official_state_dict``) with the missing and unexpected
keys listed by prefix.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUB_MODULE = "diffjscc_equivalence_stubs"


# ---------------------------------------------------------------------------- stubs
def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def install_stubs(context_dim: int, context_tokens: int = 77) -> list[str]:
    """Stand-ins for packages official inference imports but does not use; returns their names."""
    import importlib.util

    import torch
    from torch import nn

    class LightningModule(nn.Module):
        @property
        def device(self):
            return next(self.parameters()).device

        def log(self, *args, **kwargs):
            pass

    class Identity(nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, x, *args, **kwargs):
            return x

    class ListConfig(list):
        pass

    class DictConfig(dict):
        pass

    class ToTensor:
        def __call__(self, image):
            import numpy as np

            return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255

    class ToPILImage:
        def __call__(self, tensor):
            from PIL import Image

            array = (tensor.clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()
            return Image.fromarray(array)

    stubs = {
        "pytorch_lightning": {"LightningModule": LightningModule, "seed_everything": lambda s: s},
        "pytorch_lightning.utilities": {},
        "pytorch_lightning.utilities.distributed": {"rank_zero_only": lambda f: f},
        "pytorch_lightning.utilities.types": {"STEP_OUTPUT": object},
        "omegaconf": {"ListConfig": ListConfig, "DictConfig": DictConfig, "OmegaConf": object},
        "omegaconf.listconfig": {"ListConfig": ListConfig},
        "torchvision": {},
        "torchvision.utils": {"make_grid": lambda *a, **k: None},
        "torchvision.transforms": {"ToTensor": ToTensor, "ToPILImage": ToPILImage},
        "timm": {},
        "timm.models": {},
        "timm.models.layers": {
            "DropPath": Identity,
            "to_2tuple": lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x),
            "trunc_normal_": lambda t, *a, **k: t,
        },
        "lpips": {"LPIPS": Identity},
        "cv2": {},
        "open_clip": {},
    }
    installed = []
    for name, attrs in stubs.items():
        top = name.partition(".")[0]
        if top not in installed and importlib.util.find_spec(top) is not None:
            continue  # the real package is there: use it
        sys.modules[name] = _module(name, **attrs)
        if "." in name:
            parent, _, child = name.rpartition(".")
            setattr(sys.modules[parent], child, sys.modules[name])
        if top not in installed:
            installed.append(top)

    class FixedContext(nn.Module):
        """The text tower's stand-in: one fixed random context for every caption."""

        def __init__(self, **params):
            super().__init__()
            gen = torch.Generator().manual_seed(1234)
            self.context = torch.randn(1, context_tokens, context_dim, generator=gen)

        def encode(self, texts):
            return self.context.expand(len(texts), -1, -1).to(self._device)

        _device = "cpu"

    sys.modules[STUB_MODULE] = _module(STUB_MODULE, FixedContext=FixedContext)
    return installed


# ---------------------------------------------------------------------------- the model
def small_config(official_repo: Path) -> dict:
    """The released cldm_cnn.yaml, scaled down; every field name is the official one."""
    import yaml

    config = yaml.safe_load((official_repo / "configs" / "model" / "cldm_cnn.yaml").read_text())
    params = config["params"]
    params["use_lang"] = False  # BLIP-2 would be downloaded; captions are given here
    net = {
        "model_channels": 32,
        "channel_mult": [1, 2, 2],
        "attention_resolutions": [1, 2],  # attention on the first two levels, as SD's [4, 2, 1]
        "num_res_blocks": 2,
        "num_head_channels": 16,
        "context_dim": 32,
        "use_checkpoint": False,
    }
    params["control_stage_config"]["params"].update(net)
    params["unet_config"]["params"].update(net)
    dd = params["first_stage_config"]["params"]["ddconfig"]
    dd.update({"ch": 32, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "resolution": 64})
    params["preprocess_config"]["params"].update(
        {"ngf": 16, "max_ngf_E": 64, "max_ngf_D": 64, "n_blocks_E": 1, "n_blocks_D": 1}
    )
    return config


def with_fixed_context(config: dict) -> dict:
    import copy

    config = copy.deepcopy(config)
    params = config.get("params", config.get("model", {}).get("params"))
    params["use_lang"] = False
    params["cond_stage_config"] = {"target": f"{STUB_MODULE}.FixedContext", "params": {}}
    return config


def with_text_tower(config: dict) -> dict:
    """The official OpenCLIP tower built without pretrained weights (the checkpoint fills it)."""
    import copy

    config = copy.deepcopy(config)
    params = config.get("params", config.get("model", {}).get("params"))
    params["use_lang"] = False
    params["cond_stage_config"].setdefault("params", {})["version"] = None
    return config


def randomise(model, seed: int = 0) -> None:
    """Random weights, nothing zero: fan-in scaled weights, norms near 1, small biases."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
        # the released checkpoints' condition encoder is the VAE encoder (frozen copy)
        model.cond_encoder.encoder.load_state_dict(model.first_stage_model.encoder.state_dict())
        model.cond_encoder.quant_conv.load_state_dict(
            model.first_stage_model.quant_conv.state_dict()
        )


def tiny_sd_folder(folder: Path, context_dim: int) -> Path:
    """Tokenizer and text encoder for the converter's --sd (the checkpoint has no text tower)."""
    import transformers
    from diffjscc.refiner.tiny import tiny_tokenizer

    tiny_tokenizer().save_pretrained(folder / "tokenizer")
    config = transformers.CLIPTextConfig(
        vocab_size=514,
        hidden_size=context_dim,
        intermediate_size=2 * context_dim,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=0,
    )
    transformers.CLIPTextModel(config).save_pretrained(folder / "text_encoder")
    return folder


# ---------------------------------------------------------------------------- comparing
def diff(a, b) -> dict:

    if isinstance(a, (list, tuple)):
        parts = [diff(x, y) for x, y in zip(a, b, strict=True)]
        return {
            "max_abs": max(p["max_abs"] for p in parts),
            "rel": max(p["rel"] for p in parts),
            "n": len(parts),
        }
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if a.shape != b.shape:
        raise SystemExit(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    d = float((a - b).abs().max())
    scale = float(a.abs().max())
    return {"max_abs": d, "rel": d / scale if scale else d}


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def prefix_counts(keys) -> dict:
    counts: dict[str, int] = {}
    for key in keys:
        head = key.split(".")[0] if "." in key else key
        counts[head] = counts.get(head, 0) + 1
    return dict(sorted(counts.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", required=True, help="the user's clone of mingyuyng/DiffJSCC")
    p.add_argument("--checkpoint", help="an official checkpoint folder (default: random small)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--sd", help="SD 2.1-base folder for the converter (with --checkpoint)")
    p.add_argument("--caption", default="a photo of a lighthouse")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 100])
    p.add_argument("--size", type=int, default=64, help="image side, a multiple of 64")
    p.add_argument("--snr", type=float, default=3.0)
    p.add_argument("--control-scale", type=float, default=0.5)
    p.add_argument("--guidance-scale", type=float, default=100.0)
    p.add_argument("--guidance-repeat", type=int, default=3)
    p.add_argument(
        "--guidance-steps", type=int, default=10, help="step count of the guided run (costly)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (small models: 1)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import torch
    import yaml

    sys.path.insert(0, str(ROOT / "python"))
    from diffjscc.cli import main as diffjscc
    from diffjscc.jscc.model import DeepJSCC
    from diffjscc.refiner import official as conv
    from diffjscc.refiner.colorfix import adain_color_fix, wavelet_color_fix
    from diffjscc.refiner.pipeline import DiffJSCCRefiner, Guidance

    repo = Path(args.official).resolve()
    if not (repo / "model" / "cldm.py").is_file():
        raise SystemExit(f"{repo} is not a clone of the official DiffJSCC repository")
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="diffjscc_equivalence_"))

    if args.checkpoint:
        config = yaml.safe_load((Path(args.checkpoint) / "config.yaml").read_text())
    else:
        config = small_config(repo)
    params = config.get("params", config.get("model", {}).get("params"))
    context_dim = int(params["unet_config"]["params"]["context_dim"])
    import importlib.util

    # the real OpenCLIP tower only with real weights to fill it (version None: no download)
    text_tower = bool(args.checkpoint) and importlib.util.find_spec("open_clip") is not None
    stubbed = install_stubs(context_dim)
    sys.path.insert(0, str(repo))
    with contextlib.redirect_stdout(sys.stderr):  # the official code prints as it builds
        import ldm.modules.distributions.distributions as official_distributions
        import model.spaced_sampler as official_sampler_module
        from model.cond_fn import MSEGuidance
        from utils.common import instantiate_from_config
        from utils.image import adaptive_instance_normalization, wavelet_reconstruction

        torch.manual_seed(0)
        official = instantiate_from_config(
            with_text_tower(config) if text_tower else with_fixed_context(config)
        )
    if args.checkpoint:
        from diffjscc.unpickle import load_checkpoint

        raw = load_checkpoint(Path(args.checkpoint) / "model.ckpt")
        loaded = official.load_state_dict(raw.get("state_dict", raw), strict=False)
        print(f"official model from {args.checkpoint}: missing {len(loaded.missing_keys)} keys")
        folder = Path(args.checkpoint)
    else:
        randomise(official)
        folder = work / "official"
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        torch.save({"state_dict": official.state_dict(), "global_step": 0}, folder / "model.ckpt")
    official = official.to(device).eval()

    # ---- convert with the project's command line
    out = work / "refiner"
    sd = Path(args.sd) if args.sd else tiny_sd_folder(work / "sd", context_dim)
    start = time.perf_counter()
    code = diffjscc(["convert-official-refiner", str(folder), str(out), "--sd", str(sd)])
    if code != 0:
        raise SystemExit(f"convert-official-refiner failed (exit {code})")
    convert_s = time.perf_counter() - start
    ours = DiffJSCCRefiner.from_pretrained(out).to(device, torch.float32)
    jscc = DeepJSCC.from_pretrained(out / conv.JSCC_FILE).to(device).eval()

    rows: dict[str, dict] = {}

    # ---- keys: the official model loads our weights written back in its layout
    exported = conv.to_official_state_dict(ours)
    official_keys = set(official.state_dict())
    back = torch.nn.Module.load_state_dict(official, exported, strict=False)
    keys = {
        "official_keys": len(official_keys),
        "exported_keys": len(exported),
        "missing_by_prefix": prefix_counts(back.missing_keys),
        "unexpected": sorted(back.unexpected_keys)[:20],
    }

    # ---- inputs
    g = torch.Generator().manual_seed(0)
    side = args.size
    low = torch.rand(1, 3, side // 8, side // 8, generator=g)
    x = torch.nn.functional.interpolate(low, size=side, mode="bicubic").clamp(0, 1).to(device)
    snr = torch.tensor([[args.snr]], device=device)
    context = official.get_learned_conditioning([args.caption]).to(device)
    if text_tower:
        with torch.no_grad():
            rows["text context"] = diff(context, ours.encode_text([args.caption]))
    z = torch.randn(1, 4, side // 8, side // 8, generator=g).to(device)

    with torch.no_grad():
        # JSCC (deterministic parts: the encoder and decoder with their CSI)
        rows["JSCC encoder"] = diff(official.preprocess_model.E(x, snr), jscc.encoder(x, snr))
        latent = official.preprocess_model.E(x, snr)
        rows["JSCC decoder"] = diff(
            official.preprocess_model.G(latent, snr), jscc.decoder(latent, snr)
        )
        # VAE
        c_latent = official.apply_condition_encoder(x)
        cond = ours.encode_image_latent(x)
        rows["VAE condition latent (mode x scale)"] = diff(c_latent, cond)
        rows["VAE decoder"] = diff(
            official.decode_first_stage(z), ours.vae.decode(z / ours.latent_scale).sample
        )
        cond_dict = {"c_textual": [context], "c_spatial": [c_latent], "c_snr": [snr]}
        for t in (999, 500, 20):
            ts = torch.tensor([t], device=device)
            residuals = official.control_model(
                x=z, hint=c_latent, timesteps=ts, context=context, snr=snr
            )
            down, mid = ours.control(z, ts, context, cond, snr_db=snr[:, 0])
            rows[f"control residuals, t={t}"] = diff(residuals, [*down, mid])
            official.control_scales = [1.0] * 13
            rows[f"epsilon, t={t}"] = diff(
                official.apply_model(z, ts, cond_dict),
                ours.predict_noise(z, ts, context, cond, snr[:, 0]),
            )
            official.control_scales = [args.control_scale] * 13
            rows[f"epsilon, control_scale={args.control_scale:g}, t={t}"] = diff(
                official.apply_model(z, ts, cond_dict),
                ours.predict_noise(
                    z, ts, context, cond, snr[:, 0], control_scale=args.control_scale
                ),
            )
        official.control_scales = [1.0] * 13

        # colour fixes
        a = torch.rand(1, 3, side, side, generator=g).to(device)
        b = torch.rand(1, 3, side, side, generator=g).to(device)
        rows["wavelet colour fix"] = diff(wavelet_reconstruction(a, b), wavelet_color_fix(a, b))
        rows["AdaIN colour fix"] = diff(
            adaptive_instance_normalization(a, b), adain_color_fix(a, b)
        )

    # ---- DDPM runs, same z_T and per-step noise; with and without guidance
    def run(steps: int, guided: bool):
        step_draws, target_draws, latents = [], [], {}
        real_randn_like = torch.randn_like

        def recording_randn_like(t, *a, **k):
            out = real_randn_like(t, *a, **k)
            step_draws.append(out.detach().clone())
            return out

        def recording_sample(self):
            noise = torch.randn(self.mean.shape).to(self.mean.device)
            target_draws.append(noise.clone())
            return self.mean + self.std * noise

        real_decode = official.decode_first_stage

        def capturing_decode(zz, *a, **k):
            latents["official"] = zz.detach().clone()
            return real_decode(zz, *a, **k)

        cond_fn = None
        if guided:
            cond_fn = MSEGuidance(
                scale=args.guidance_scale, t_start=1001, t_stop=-1, space="latent",
                repeat=args.guidance_repeat,
            )  # fmt: skip
            cond_fn.load_target(2 * x - 1)
        sampler = official_sampler_module.SpacedSampler(official, var_type="fixed_small")
        with (
            patched(official_sampler_module.torch, "randn_like", recording_randn_like),
            patched(
                official_distributions.DiagonalGaussianDistribution, "sample", recording_sample
            ),
            patched(official, "decode_first_stage", capturing_decode),
            contextlib.redirect_stdout(sys.stderr),
        ):
            image_official = sampler.sample(
                steps=steps, shape=tuple(z.shape), cond_img=x, cond_snr=snr, cond_text=context,
                positive_prompt="", negative_prompt="", x_T=z.clone(), cfg_scale=1.0,
                cond_fn=cond_fn, color_fix_type="wavelet",
            )  # fmt: skip

        class Replayed(Guidance):
            def draw_noise(self, shape, generator, device_):
                return target_draws.pop(0).to(device_)

        guidance = (
            Replayed(args.guidance_scale, 1001, -1, args.guidance_repeat, "sample")
            if guided
            else None
        )
        real_ours_decode = ours.decode_latent

        def capturing_ours(zz):
            latents["ours"] = zz.detach().clone()
            return real_ours_decode(zz)

        with patched(ours, "decode_latent", capturing_ours), torch.no_grad():
            image_ours = ours.sample(
                x, snr[:, 0], context, steps=steps, sampler="ddpm", noise=z, step_noise=step_draws,
                guidance=guidance, color_fix_type="wavelet",
            )  # fmt: skip
        if guided and target_draws:
            raise SystemExit(f"{len(target_draws)} posterior draws of the target left unused")
        return latents, image_official.clamp(0, 1), image_ours

    runs = [(steps, False) for steps in args.steps] + [(args.guidance_steps, True)]
    plain = {}
    for steps, guided in runs:
        latents, img_o, img_u = run(steps, guided)
        label = f"DDPM {steps} steps" + (
            f", guidance s={args.guidance_scale:g} x{args.guidance_repeat}" if guided else ""
        )
        rows[f"{label}: latents"] = diff(latents["official"], latents["ours"])
        rows[f"{label}: image (wavelet fix)"] = diff(img_o, img_u)
        if guided and steps in plain:  # how far guidance moved the official result
            rows[f"{label}: (official guided - unguided latents)"] = diff(
                latents["official"], plain[steps]
            )
        plain.setdefault(steps, latents["official"])

    report = {
        "official_repo": str(repo),
        "official_commit": _commit(repo),
        "model": args.checkpoint or "cldm_cnn.yaml scaled down, random weights",
        "stubbed_packages": stubbed,
        "text_tower": "official OpenCLIP" if text_tower else "fixed random context (not compared)",
        "device": str(device),
        "torch": torch.__version__,
        "convert_s": round(convert_s, 2),
        "keys": keys,
        "rows": rows,
    }
    width = max(len(k) for k in rows)
    print(f"{'quantity':{width}s}  max |official - ours|  relative")
    for name, row in rows.items():
        print(f"{name:{width}s}  {row['max_abs']:19.2e}  {row['rel']:8.1e}")
    print(
        f"keys: official model has {keys['official_keys']}, ours written back {keys['exported_keys']}; "
        f"missing on loading ours: {keys['missing_by_prefix']}; unexpected: {keys['unexpected']}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


def _commit(repo: Path) -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())

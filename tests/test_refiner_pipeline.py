"""The refiner on tiny seeded models: shapes, conditioning, determinism, colour fix, I/O."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffjscc.errors import ConfigError, ImageError, WeightsNotFoundError  # noqa: E402
from diffjscc.refiner.colorfix import wavelet_bands, wavelet_color_fix  # noqa: E402
from diffjscc.refiner.pipeline import DiffJSCCRefiner, Guidance, RefineResult  # noqa: E402
from diffjscc.refiner.schedulers import make_scheduler, respaced_timesteps  # noqa: E402
from diffjscc.refiner.tiny import tiny_refiner  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def refiner():
    return tiny_refiner(seed=0, steps=3)


def _image(h=40, w=56, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _inputs(refiner, batch=1, side=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, side, side, generator=gen)
    cond = torch.randn(batch, 4, side, side, generator=gen)
    context = refiner.encode_text(["a photo"] * batch)
    return latents, cond, context


def _randomise_zero_convs(control, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in [*control.controlnet_down_blocks, control.controlnet_mid_block]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)


def test_refine_keeps_size_and_returns_fixed_fields(refiner):
    image = _image(40, 56)  # not a multiple of the padding step: padded, then cropped back
    result = refiner.refine(image, snr_db=1.0, caption="a house", steps=2, seed=3)
    assert isinstance(result, RefineResult)
    assert result.image.shape == image.shape and result.image.dtype == np.uint8
    assert set(result.to_dict()) == {
        "image",
        "caption",
        "snr_db",
        "steps",
        "sampler",
        "seed",
        "timing",
        "device",
    }
    assert result.caption == "a house" and result.seed == 3 and result.steps == 2
    assert set(result.timing) == {"caption_s", "sample_s", "total_s"}


def test_tensor_input_and_every_sampler(refiner):
    x = torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(0))
    for sampler in ("ddpm", "ddim", "dpm-solver"):
        out = refiner.refine(x, snr_db=5.0, caption="", steps=2, sampler=sampler, seed=0).image
        assert out.shape == (32, 48, 3)


def test_fresh_control_module_leaves_unet_prediction_unchanged(refiner):
    latents, cond, context = _inputs(refiner)
    t = torch.tensor(500)
    with torch.no_grad():
        plain = refiner.unet(latents, t, encoder_hidden_states=context).sample
        controlled = refiner.predict_noise(latents, t, context, cond, snr_db=3.0)
    torch.testing.assert_close(controlled, plain, rtol=0, atol=1e-6)


def test_snr_changes_control_output():
    ref = tiny_refiner(seed=0)
    _randomise_zero_convs(ref.control)
    latents, cond, context = _inputs(ref)
    with torch.no_grad():
        down_low, mid_low = ref.control(latents, 400, context, cond, snr_db=0.0)
        down_high, mid_high = ref.control(latents, 400, context, cond, snr_db=10.0)
        down_same, mid_same = ref.control(latents, 400, context, cond, snr_db=0.0)
    assert (mid_low - mid_high).abs().max() > 1e-4
    # every residual after the first convolution (which sees no embedding) depends on the SNR
    assert all((a - b).abs().max() > 1e-6 for a, b in zip(down_low[1:], down_high[1:], strict=True))
    torch.testing.assert_close(mid_low, mid_same)
    assert len(down_low) == len(ref.unet.down_blocks) * (ref.unet.config.layers_per_block + 1)


def test_channel_gain_option_starts_neutral_and_then_matters():
    ref = tiny_refiner(seed=0, use_channel_gain=True)
    _randomise_zero_convs(ref.control)
    latents, cond, context = _inputs(ref)
    with torch.no_grad():
        _, mid_a = ref.control(latents, 300, context, cond, snr_db=2.0, channel_gain=1 + 0j)
        _, mid_b = ref.control(latents, 300, context, cond, snr_db=2.0, channel_gain=0.2 - 0.7j)
        torch.testing.assert_close(mid_a, mid_b)  # zero-initialised last layer
        ref.control.gain_embedding[2].weight.normal_(0, 0.1)
        _, mid_c = ref.control(latents, 300, context, cond, snr_db=2.0, channel_gain=0.2 - 0.7j)
    assert (mid_a - mid_c).abs().max() > 1e-4


def test_fixed_seed_gives_identical_samples(refiner):
    image = _image(32, 32, seed=1)
    a = refiner.refine(image, 2.0, caption="x", steps=3, seed=11).image
    b = refiner.refine(image, 2.0, caption="x", steps=3, seed=11).image
    c = refiner.refine(image, 2.0, caption="x", steps=3, seed=12).image
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_given_noise_is_used_exactly(refiner):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    context = refiner.encode_text([""])
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    kwargs = dict(steps=2, sampler="ddim", color_fix_type="none")
    a = refiner.sample(x, 1.0, context, noise=noise, **kwargs)
    b = refiner.sample(x, 1.0, context, noise=noise.clone(), **kwargs)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ConfigError):
        refiner.sample(x, 1.0, context, noise=torch.zeros(1, 4, 8, 8), **kwargs)


def test_wavelet_colour_fix_takes_low_frequencies_from_reference():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    smooth = torch.stack([0.3 + 0.4 * xx, 0.2 + 0.5 * yy, 0.6 - 0.3 * xx * yy])[None]
    detail = 0.05 * ((torch.arange(96)[:, None] + torch.arange(96)[None]) % 2 * 2 - 1).float()
    refined = smooth + detail + torch.tensor([0.2, -0.1, 0.15]).view(1, 3, 1, 1)  # colour cast
    fixed = wavelet_color_fix(refined, smooth)
    inner = (slice(None), slice(None), slice(24, 72), slice(24, 72))
    # colour cast gone, fine detail kept
    torch.testing.assert_close(fixed[inner], (smooth + detail)[inner], rtol=0, atol=2e-3)
    high, low = wavelet_bands(refined)
    torch.testing.assert_close(high + low, refined)


def test_respaced_ddpm_timesteps_follow_improved_ddpm_rule():
    steps = respaced_timesteps(1000, 100)
    assert len(steps) == 100 and steps[:3] == [999, 989, 979] and steps[-1] == 0
    sched = make_scheduler("ddpm", 100)
    assert sched.timesteps.tolist() == steps
    with pytest.raises(ConfigError):
        make_scheduler("euler-x", 10)


def test_tiled_sampling_matches_shape_and_untiled_when_tile_covers_all(refiner):
    image = _image(64, 64, seed=4)  # within the VAE tile, so only the UNet is tiled
    full = refiner.refine(image, 1.0, caption="", steps=2, seed=0).image
    same = refiner.refine(image, 1.0, caption="", steps=2, seed=0, tile_size=16).image
    tiled = refiner.refine(
        image, 1.0, caption="", steps=2, seed=0, tile_size=4, tile_stride=2
    ).image
    np.testing.assert_array_equal(full, same)
    assert tiled.shape == image.shape
    with pytest.raises(ConfigError):
        refiner.refine(image, 1.0, caption="", steps=2, seed=0, tile_size=3)


def test_guidance_update_is_the_official_formula_by_hand():
    """delta = s (target - x0) / (C H W), applied ``repeat`` times to the corrected x0."""
    x0 = torch.tensor([0.0, 1.0, -2.0, 4.0, 0.5, 3.0]).reshape(1, 1, 2, 3)
    target = torch.full_like(x0, 1.0)
    guidance = Guidance(scale=3.0, repeat=2, target="mode")
    # C*H*W = 6, s/CHW = 0.5: x -> x + 0.5 (1 - x), twice
    expected = []
    for x in x0.flatten().tolist():
        once = x + 0.5 * (1.0 - x)
        expected.append(once + 0.5 * (1.0 - once) - x)
    delta = guidance.correction(x0, lambda: target)
    torch.testing.assert_close(delta.flatten(), torch.tensor(expected), rtol=0, atol=1e-7)
    assert Guidance.paper() == Guidance(100.0, 1001, -1, 1, "sample")
    assert Guidance(1.0, t_start=500, t_stop=100).active(499 - 1)
    assert not Guidance(1.0, t_start=500, t_stop=100).active(499) and not Guidance().active(10)
    with pytest.raises(ConfigError):
        Guidance(target="mean")


def test_guided_ddpm_step_moves_the_mean_by_half_the_correction(refiner):
    """Two DDPM steps (t = 999, 0), guidance only at t = 0: the output moves by delta / 2."""
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    context = refiner.encode_text([""])
    z_T = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    noise = [torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2)), None]
    noise[1] = torch.zeros_like(noise[0])
    latents = []
    original_decode = refiner.decode_latent
    refiner.decode_latent = lambda z: (latents.append(z.clone()), original_decode(z))[1]
    try:
        kwargs = dict(steps=2, sampler="ddpm", noise=z_T, step_noise=noise, color_fix_type="none")
        refiner.sample(x, 1.0, context, **kwargs)
        scale, repeat = 20.0, 3
        guidance = Guidance(scale=scale, repeat=repeat, t_start=500, t_stop=-1, target="mode")
        refiner.sample(x, 1.0, context, guidance=guidance, **kwargs)
    finally:
        refiner.decode_latent = original_decode
    plain, guided = latents
    target = refiner.encode_image_latent(x)  # target="mode": the posterior mode, scaled
    chw = plain[0].numel()
    # at t = 0 the DDPM step returns its x0 prediction, so x0 = plain
    expected = 0.5 * (target - plain) * (1 - (1 - scale / chw) ** repeat)
    torch.testing.assert_close(guided - plain, expected, rtol=1e-4, atol=1e-6)


def test_paper_guidance_is_stable_at_its_scale(refiner):
    """--Lambda 100 of the official README: finite, and changes the image (the old H*W/C scaling diverged)."""

    image = _image(64, 64, seed=6)
    plain = refiner.refine(image, 1.0, caption="", steps=3, seed=0, guidance_target="mode").image
    guided = refiner.refine(image, 1.0, caption="", steps=3, seed=0, guidance=Guidance.paper())
    again = refiner.refine(image, 1.0, caption="", steps=3, seed=0, guidance=Guidance.paper())
    assert guided.image.shape == plain.shape and not np.array_equal(plain, guided.image)
    np.testing.assert_array_equal(guided.image, again.image)  # the posterior draws follow the seed
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    out = refiner.sample(x, 1.0, refiner.encode_text([""]), steps=3, guidance=Guidance.paper())
    assert torch.isfinite(out).all()


def test_official_quantisation_and_zero_padding(refiner, monkeypatch):
    from diffjscc.refiner.pipeline import to_uint8

    values = np.array([[[0.999, 0.5, 0.0019]]], dtype=np.float32)
    assert to_uint8(values).tolist() == [[[255, 128, 0]]]
    assert to_uint8(values, "truncate").tolist() == [[[254, 127, 0]]]
    seen = []
    original = refiner.sample
    monkeypatch.setattr(
        refiner, "sample", lambda x, *a, **k: (seen.append(x.clone()), original(x, *a, **k))[1]
    )
    image = np.full((40, 56, 3), 200, np.uint8)
    out = refiner.refine(
        image, 1.0, caption="", steps=1, seed=0, padding="zero", quantize="truncate"
    )
    assert out.image.shape == image.shape
    assert seen[0].shape[-2:] == (48, 64) and float(seen[0][..., 40:, :].abs().max()) == 0.0
    refiner.refine(image, 1.0, caption="", steps=1, seed=0)
    assert float(seen[1][..., 40:, :].min()) > 0.7  # reflect padding by default
    with pytest.raises(ConfigError):
        refiner.refine(image, 1.0, caption="", steps=1, padding="edge")


def test_bad_inputs_give_clear_errors(refiner):
    with pytest.raises(ImageError):
        refiner.refine(np.zeros((32, 32), np.uint8), 1.0, caption="")
    with pytest.raises(ImageError):
        refiner.refine(np.zeros((32, 32, 3), np.float32), 1.0, caption="")
    with pytest.raises(ImageError):
        refiner.refine(np.zeros((4, 32, 3), np.uint8), 1.0, caption="")
    with pytest.raises(ConfigError):
        refiner.refine(_image(32, 32), float("nan"), caption="")
    with pytest.raises(ConfigError):
        refiner.refine(_image(32, 32), 1.0, caption="", sampler="nope")
    with pytest.raises(ConfigError):
        refiner.refine(_image(32, 32), 1.0, caption="", steps=0, sampler="ddim")
    other = tiny_refiner(seed=0)
    from diffjscc.refiner.tiny import tiny_unet

    with pytest.raises(ConfigError, match="block_out_channels"):
        DiffJSCCRefiner(
            tiny_unet(block_out_channels=(32, 64, 64)),
            other.vae,
            other.control,
            other.text_encoder,
            other.tokenizer,
        )


def test_save_and_load_round_trip(refiner, tmp_path):
    folder = refiner.save_pretrained(tmp_path / "ref")
    again = DiffJSCCRefiner.from_pretrained(folder)
    assert again.config == refiner.config
    latents, cond, context = _inputs(refiner)
    with torch.no_grad():
        a = refiner.predict_noise(latents, 10, context, cond, 1.0)
        b = again.predict_noise(latents, 10, context, cond, 1.0)
    torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError):
        refiner.save_pretrained(folder)  # no silent overwrite
    with pytest.raises(WeightsNotFoundError):
        DiffJSCCRefiner.from_pretrained(tmp_path / "absent")
    for vocabulary in ("tokenizer.json", "vocab.json", "merges.txt"):  # transformers 5 loads anyway
        (folder / "tokenizer" / vocabulary).unlink(missing_ok=True)
    with pytest.raises(WeightsNotFoundError, match="no vocabulary"):
        DiffJSCCRefiner.from_pretrained(folder)
    for damaged in ("{", "[]"):
        (folder / "refiner.json").write_text(damaged)
        with pytest.raises(ConfigError, match="refiner.json"):
            DiffJSCCRefiner.from_pretrained(folder)


def test_missing_stable_diffusion_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download"):
        DiffJSCCRefiner.from_stable_diffusion(tmp_path / "no-such-sd")


def test_importing_diffjscc_does_not_import_diffusers():
    code = (
        "import sys, diffjscc, diffjscc.refiner; "
        "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ddpm_step_is_the_respaced_posterior_of_the_official_sampler():
    """One step of our DDPM sampler equals improved-DDPM's respaced posterior, computed in float64."""
    steps = 10
    timesteps = respaced_timesteps(1000, steps)
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    acp_full = np.cumprod(1 - betas)
    used = sorted(timesteps)
    acp = acp_full[used]  # the respaced chain keeps the marginals of the used steps
    acp_prev = np.append(1.0, acp[:-1])
    respaced_betas = 1 - acp / acp_prev
    post_var = respaced_betas * (1 - acp_prev) / (1 - acp)
    coef1 = respaced_betas * np.sqrt(acp_prev) / (1 - acp)
    coef2 = (1 - acp_prev) * np.sqrt(1 - respaced_betas) / (1 - acp)

    sched = make_scheduler("ddpm", steps)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 4, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(1, 4, 4, 4, generator=gen, dtype=torch.float64)
    for index in (steps - 1, 4, 0):
        t = used[index]
        out = sched.step(
            eps.float(), torch.tensor(t), x.float(), generator=torch.Generator().manual_seed(1)
        )
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).double()
        x0 = (x - np.sqrt(1 - acp[index]) * eps) / np.sqrt(acp[index])
        mean = coef1[index] * x0 + coef2[index] * x
        expected = mean + (np.sqrt(post_var[index]) * noise if index > 0 else 0)
        torch.testing.assert_close(out.prev_sample.double(), expected, rtol=1e-4, atol=1e-4)


def test_captioners_plug_in(refiner):
    from diffjscc.refiner.captioner import (
        FixedCaptioner,
        NoCaptioner,
        make_captioner,
        replace_degradation_words,
    )

    images = [_image(32, 32)] * 2
    assert NoCaptioner()(images) == ["", ""]
    assert make_captioner("fixed:a lighthouse")(images) == ["a lighthouse"] * 2
    assert (
        replace_degradation_words("a photo of a blurry dog")
        == "a high quality image of a high quality dog"
    )
    assert replace_degradation_words("two cats") == "a high quality image of two cats"
    with pytest.raises(ConfigError):
        make_captioner("gpt:whatever")
    with pytest.raises(WeightsNotFoundError, match="offline"):
        make_captioner("blip:/nonexistent/blip-model")
    seen = []

    def spy(batch):
        seen.append(len(batch))
        return ["a spy caption"]

    refiner.captioner = spy
    try:
        assert refiner.refine(images[0], 1.0, steps=1, seed=0).caption == "a spy caption"
        assert refiner.refine(images[0], 1.0, caption="given", steps=1, seed=0).caption == "given"
    finally:
        refiner.captioner = NoCaptioner()
    assert seen == [1]
    assert isinstance(FixedCaptioner("x").name, str)


def test_channel_gain_reaches_the_control_module_through_refine():
    ref = tiny_refiner(seed=0, steps=2, use_channel_gain=True)
    _randomise_zero_convs(ref.control)
    with torch.no_grad():
        ref.control.gain_embedding[2].weight.normal_(0, 0.5)
    image = _image(32, 32, seed=2)
    a = ref.refine(image, 1.0, h=1 + 0j, caption="", seed=0).image
    b = ref.refine(image, 1.0, h=0.1 + 0.9j, caption="", seed=0).image
    assert not np.array_equal(a, b)


def test_injected_step_noise_replays_the_sampler_exactly(refiner):
    """Feeding the ancestral noise that the seeded sampler would draw gives the same sample."""
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    context = refiner.encode_text([""])
    z_T = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(8))
    kwargs = dict(steps=4, sampler="ddpm", color_fix_type="none", noise=z_T)
    seeded = refiner.sample(x, 1.0, context, generator=torch.Generator().manual_seed(2), **kwargs)
    gen = torch.Generator().manual_seed(2)
    draws = [torch.randn(z_T.shape, generator=gen) for _ in range(3)] + [torch.zeros_like(z_T)]
    replayed = refiner.sample(x, 1.0, context, step_noise=draws, **kwargs)
    torch.testing.assert_close(replayed, seeded, rtol=0, atol=1e-5)
    other = refiner.sample(x, 1.0, context, step_noise=lambda i, t: torch.ones_like(z_T), **kwargs)
    assert (other - seeded).abs().max() > 1e-3
    with pytest.raises(ConfigError):
        refiner.sample(x, 1.0, context, step_noise=draws, **{**kwargs, "sampler": "ddim"})


def test_samplers_come_from_the_registry_and_a_sampler_object_is_accepted(refiner):
    from diffjscc.refiner.schedulers import SAMPLERS, Sampler, make_sampler

    assert set(SAMPLERS) == {"ddpm", "ddim", "dpm-solver"}
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    context = refiner.encode_text([""])
    z_T = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(8))
    by_name = refiner.sample(x, 1.0, context, steps=3, sampler="ddim", noise=z_T)
    by_object = refiner.sample(x, 1.0, context, sampler=make_sampler("ddim", 3), noise=z_T)
    torch.testing.assert_close(by_name, by_object, rtol=0, atol=0)

    class Frozen(Sampler):  # a new sampler plugs in without touching the loop
        name = "frozen"

        def step(self, eps, t, latents, index, generator=None, noise=None):
            return latents

    frozen = Frozen(make_sampler("ddim", 2).scheduler)
    out = refiner.sample(x, 1.0, context, sampler=frozen, noise=z_T, color_fix_type="none")
    torch.testing.assert_close(out, refiner.decode_latent(z_T).clamp(0, 1))


def test_refiner_config_refuses_unknown_keys(refiner, tmp_path):
    import json

    from diffjscc.refiner.pipeline import RefinerConfig

    with pytest.raises(ConfigError, match="colour_fix"):
        RefinerConfig.from_dict({"steps": 10, "colour_fix": "none"})
    folder = refiner.save_pretrained(tmp_path / "ref")
    meta = json.loads((folder / "refiner.json").read_text())
    meta["refiner"]["sampler_name"] = "ddpm"
    (folder / "refiner.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="sampler_name"):
        DiffJSCCRefiner.from_pretrained(folder)


def test_evaluate_refiner_gives_jscc_and_refined_columns(refiner):
    from diffjscc.refiner.evaluate import evaluate_refiner

    originals = [_image(32, 32, seed=s) // 2 for s in (1, 2)]  # room for +9 without clipping
    x_hats = [np.clip(o.astype(int) + 9, 0, 255).astype(np.uint8) for o in originals]
    report = evaluate_refiner(refiner, originals, x_hats, 1.0, steps=1, caption="")
    assert [r["seed"] for r in report["rows"]] == [0, 1]
    assert report["mean"]["jscc"]["psnr"] == pytest.approx(20 * np.log10(255 / 9), abs=0.01)
    assert np.isfinite(report["mean"]["refined"]["psnr"])
    assert (
        report["mean"]["refined"]["ms_ssim"] is None and "ms_ssim" in report["skipped"]
    )  # 32 px images


def test_low_precision_runs_on_cpu():
    ref = tiny_refiner(seed=0, steps=2).to("cpu", torch.bfloat16, memory_format=torch.channels_last)
    out = ref.refine(_image(32, 32), 1.0, caption="a", seed=0).image
    assert out.shape == (32, 32, 3)


def test_stable_diffusion_loads_from_a_local_folder_and_from_the_offline_cache(refiner, tmp_path):
    # a refiner folder has the diffusers layout of an SD folder (unet/, vae/, text_encoder/, tokenizer/)
    sd_folder = refiner.save_pretrained(tmp_path / "sd")
    fresh = DiffJSCCRefiner.from_stable_diffusion(sd_folder)
    latents, cond, context = _inputs(fresh)
    with torch.no_grad():
        plain = fresh.unet(latents, 7, encoder_hidden_states=context).sample
        torch.testing.assert_close(fresh.predict_noise(latents, 7, context, cond, 4.0), plain)
        src = refiner.unet.state_dict()["down_blocks.0.resnets.0.conv1.weight"]
        torch.testing.assert_close(
            fresh.control.state_dict()["down_blocks.0.resnets.0.conv1.weight"], src
        )

    # the same files as a model id in a Hugging Face cache, loaded with no network
    snapshot = tmp_path / "hub" / "models--acme--tiny-sd" / "snapshots" / ("0" * 40)
    snapshot.parent.mkdir(parents=True)
    sd_folder.rename(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    cached = DiffJSCCRefiner.from_stable_diffusion("acme/tiny-sd", cache_dir=tmp_path / "hub")
    assert cached.config.source == "acme/tiny-sd"
    with pytest.raises(WeightsNotFoundError):
        DiffJSCCRefiner.from_stable_diffusion("acme/other-sd", cache_dir=tmp_path / "hub")


def test_official_preprocessing_rules():
    """Short side under 512 upsized (sides rounded up), zeros to a multiple of 64, Lanczos back."""
    from diffjscc.refiner.preprocess import (
        get_preprocessing,
        resize_to,
        upsize_short_side,
        zero_pad,
    )

    small = _image(100, 150)
    up = upsize_short_side(small, 512)
    assert up.shape == (512, 768, 3)  # 150 * 5.12 = 768
    odd = upsize_short_side(_image(300, 301), 512)
    assert odd.shape == (512, 514, 3)  # ceil(301 * 512 / 300) = ceil(513.7)
    big = _image(520, 600)
    assert upsize_short_side(big, 512) is big  # never downsized
    padded = zero_pad(up[:500, :700], 64)
    assert padded.shape == (512, 704, 3) and not padded[500:].any() and not padded[:, 700:].any()
    assert resize_to(up, 100, 150).shape == (100, 150, 3)
    official = get_preprocessing("official")
    assert (official.padding, official.quantize, official.pad_multiple) == ("zero", "truncate", 64)
    with pytest.raises(ConfigError):
        get_preprocessing("paper")

"""Stage-2 training of the control module on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffjscc.errors import ConfigError  # noqa: E402
from diffjscc.refiner import train  # noqa: E402
from diffjscc.refiner.pipeline import DiffJSCCRefiner  # noqa: E402
from diffjscc.refiner.tiny import tiny_refiner  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_train_steps_lower_the_loss_on_a_fixed_batch():
    ref = tiny_refiner(seed=0)
    trainer = train.RefinerTrainer(ref, lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 32, 32, generator=gen)
    x_hat = (clean + 0.1 * torch.randn(2, 3, 32, 32, generator=gen)).clamp(0, 1)
    snr = torch.tensor([1.0, 8.0])

    def loss_now() -> float:
        with torch.no_grad():
            context = ref.encode_text(["", ""])
            return float(
                ref.training_loss(
                    clean, x_hat, snr, context, generator=torch.Generator().manual_seed(7)
                )
            )

    frozen_before = {k: v.clone() for k, v in ref.unet.state_dict().items()}
    before = loss_now()
    for _ in range(8):  # same timesteps and noise every step: a fixed batch
        trainer.step(clean, x_hat, snr, ["", ""], generator=torch.Generator().manual_seed(7))
    after = loss_now()
    assert after < 0.95 * before
    for key, value in ref.unet.state_dict().items():  # the UNet stays frozen
        torch.testing.assert_close(value, frozen_before[key], rtol=0, atol=0)
    assert trainer.step_count == 8


def test_low_precision_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(ConfigError):
        train.RefinerTrainer(tiny_refiner(seed=0), precision="bf16")


@pytest.fixture()
def run_inputs(tmp_path):
    from diffjscc.models.jscc import DeepJSCC, JSCCConfig
    from PIL import Image

    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(data / f"{i}.png")
    tiny_refiner(seed=0).save_pretrained(tmp_path / "init")
    torch.manual_seed(0)
    jscc = DeepJSCC(
        JSCCConfig(
            base_width=8,
            max_width_encoder=16,
            max_width_decoder=16,
            encoder_blocks=1,
            decoder_blocks=1,
        )
    )
    jscc.save_pretrained(tmp_path / "jscc.safetensors")
    return tmp_path, data


def test_train_refiner_command_runs_and_resumes(run_inputs):
    tmp_path, data = run_inputs
    out = tmp_path / "run"
    common = [
        "--init", str(tmp_path / "init"), "--jscc", str(tmp_path / "jscc.safetensors"),
        "--data", str(data), "--out", str(out), "--batch-size", "2", "--crop", "32",
        "--ckpt-every", "2", "--log-every", "1", "--no-progress", "--device", "cpu",
    ]  # fmt: skip
    assert train.main([*common, "--steps", "2"]) == 0
    with pytest.raises(ConfigError, match="--resume"):
        train.main([*common, "--steps", "3"])
    assert train.main([*common, "--steps", "3", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3
    refined = DiffJSCCRefiner.from_pretrained(out / "refiner")
    np.testing.assert_array_equal(
        refined.control.state_dict()["controlnet_mid_block.weight"].numpy(),
        state["control"]["controlnet_mid_block.weight"].numpy(),
    )


def test_refine_command_simulates_and_scores(run_inputs):
    from diffjscc.refiner import cli

    tmp_path, data = run_inputs
    out = tmp_path / "refined.png"
    code = cli.main([
        str(data / "0.png"), "--refiner", str(tmp_path / "init"), "--out", str(out), "--snr", "1",
        "--steps", "2", "--seed", "5", "--simulate", "--jscc", str(tmp_path / "jscc.safetensors"),
        "--prompt", "a test card", "--json", str(tmp_path / "r.json"), "--device", "cpu",
    ])  # fmt: skip
    assert code == 0 and out.is_file() and (tmp_path / "refined_jscc.png").is_file()
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["caption"] == "a test card" and summary["seed"] == 5
    assert math_isfinite(summary["metrics"]["refined"]["psnr"])


def math_isfinite(x) -> bool:
    import math

    return isinstance(x, float) and math.isfinite(x)


def test_gradient_checkpointing_gives_the_same_updates():
    def losses(checkpointing: bool) -> list[float]:
        ref = tiny_refiner(seed=0)
        trainer = train.RefinerTrainer(ref, lr=2e-3, grad_checkpointing=checkpointing)
        clean = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        snr = torch.tensor([1.0, 5.0])
        return [
            trainer.step(
                clean, clean * 0.9, snr, ["", ""], generator=torch.Generator().manual_seed(7)
            )
            for _ in range(2)
        ]

    assert losses(True) == pytest.approx(losses(False), rel=1e-5)

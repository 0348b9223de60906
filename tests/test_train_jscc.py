import json

import numpy as np
import pytest
from diffjscc.models.jscc import DeepJSCC
from diffjscc.train.jscc import main
from PIL import Image

TINY = ["--base-width", "8", "--max-width-encoder", "16", "--max-width-decoder", "16",
        "--encoder-blocks", "1", "--decoder-blocks", "1"]  # fmt: skip


def _images(folder, n, rng):
    folder.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image: ignored")
    return folder


def test_training_logs_checkpoints_and_resumes(tmp_path, rng, capsys):
    train, val = _images(tmp_path / "train", 3, rng), _images(tmp_path / "val", 2, rng)
    out = tmp_path / "run"
    common = ["--data", str(train), "--val", str(val), "--out", str(out), "--batch-size", "2",
              "--crop", "32", "--val-every", "3", "--ckpt-every", "2", "--no-progress", "--warmup", "1", *TINY]  # fmt: skip
    (train / "broken.png").write_bytes(b"not a PNG")
    assert main([*common, "--steps", "3"]) == 0
    assert "skipped 1 unreadable files" in capsys.readouterr().out
    assert (out / "checkpoint.pt").exists() and (out / "best.safetensors").exists()
    assert main([*common, "--steps", "5"]) == 0  # a second sitting continues the same run
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    val_steps = [r["step"] for r in records if "val" in r]
    assert val_steps == [3, 5]
    assert all(np.isfinite(r["val"]["psnr_mean"]) for r in records if "val" in r)
    model = DeepJSCC.from_pretrained(out / "last.safetensors")
    assert model.config.base_width == 8


@pytest.mark.parametrize(
    "bad",
    [
        ["--val-every", "0"],
        ["--ckpt-every", "0"],
        ["--crop", "40"],
        ["--snr-min", "9", "--snr-max", "3"],
        ["--csi-features", "zf_snr"],  # an AWGN model's CSI has no h
    ],
)
def test_bad_settings_stop_before_any_work(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "run"), *bad])
    assert exc.value.code == 2 and "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_batch_plan_gives_each_process_its_own_share_of_every_batch():
    from diffjscc.train.distributed import BatchPlan

    plan = BatchPlan(global_batch=12, processes=3, accumulation=2)
    assert plan.micro_batch == 2
    step = [i for a in range(2) for r in range(3) for i in plan.sample_indices(24, a, r)]
    assert sorted(step) == list(range(24, 36))  # the whole batch, each sample once
    # One process with 3 x 2 micro-steps sees the same micro-batches, in the same order.
    single = BatchPlan(global_batch=12, processes=1, accumulation=6)
    assert [list(single.sample_indices(24, m, 0)) for m in range(6)] == [
        list(plan.sample_indices(24, a, r)) for a in range(2) for r in range(3)
    ]


def test_a_rayleigh_model_starts_from_awgn_weights(tmp_path, rng):
    import torch
    from diffjscc.errors import ConfigError
    from diffjscc.jscc.model import JSCCConfig
    from diffjscc.train.jscc import load_init

    widths = dict(base_width=8, max_width_encoder=16, max_width_decoder=16, encoder_blocks=1,
                  decoder_blocks=1)  # fmt: skip
    torch.manual_seed(0)
    awgn = DeepJSCC(JSCCConfig(**widths))
    awgn.save_pretrained(tmp_path / "awgn.safetensors")
    fading = DeepJSCC(JSCCConfig(**widths, channel_type="rayleigh"))
    load_init(fading, str(tmp_path / "awgn.safetensors"))
    mine, theirs = fading.state_dict(), awgn.state_dict()
    for key, value in theirs.items():
        copied = mine[key][..., : value.shape[-1]] if value.dim() else mine[key]
        torch.testing.assert_close(copied, value)
    gate = "encoder.blocks.0.gate.scale.0.weight"
    assert theirs[gate].shape[1] + 2 == mine[gate].shape[1]
    assert mine[gate][:, -2:].abs().sum() > 0  # h's columns are not a zero saddle
    with pytest.raises(ConfigError, match="--init"):
        load_init(
            DeepJSCC(JSCCConfig(**{**widths, "base_width": 4})), str(tmp_path / "awgn.safetensors")
        )

    train, val = _images(tmp_path / "train", 2, rng), _images(tmp_path / "val", 1, rng)
    out = tmp_path / "run"
    assert main(["--data", str(train), "--val", str(val), "--out", str(out), "--batch-size", "2",
                 "--crop", "32", "--steps", "2", "--channel", "rayleigh", "--loss", "psnr", "--init",
                 str(tmp_path / "awgn.safetensors"), "--no-progress", "--warmup", "1",
                 *TINY]) == 0  # fmt: skip
    trained = DeepJSCC.from_pretrained(out / "last.safetensors")
    assert trained.config.channel_type == "rayleigh" and trained.config.csi_dim == 3
    assert trained.config.csi_features == "zf_snr"  # the trainer's default for fading

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
    ],
)
def test_bad_settings_stop_before_any_work(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "run"), *bad])
    assert exc.value.code == 2 and "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

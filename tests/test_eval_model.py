"""``diffjscc eval`` end to end on two small images, its JSON records, and bad input."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("pytorch_msssim")

from diffjscc.baselines import UNDELIVERED_FILL, byte_budget, jscc_num_symbols  # noqa: E402
from diffjscc.cli import COMMANDS  # noqa: E402
from diffjscc.metrics import psnr  # noqa: E402
from diffjscc.utils.eval_model import main, markdown_table  # noqa: E402

RECORD_KEYS = {
    "method",
    "cbr",
    "snr_db",
    "psnr",
    "ms_ssim",
    "undelivered",
    "num_images",
    "noise_draws",
    "psnr_delivered",
    "ms_ssim_delivered",
    "per_image",
}


def _write_images(folder, shape=(96, 128), count=2):
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(count):
        rng = np.random.default_rng(i)
        h, w = shape
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([x * 255.0 / w, y * 255.0 / h, np.full((h, w), 60.0 + 80 * i)], -1)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i}.png")
        images.append(img)
    (folder / "notes.txt").write_text("not an image, ignored by its suffix")
    return images


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small run: CBR 1/96 at -20 dB (no codec fits the budget) and 20 dB."""
    tmp = tmp_path_factory.mktemp("eval")
    images = _write_images(tmp / "data")
    out, plot = tmp / "out" / "eval.json", tmp / "out" / "eval.png"
    argv = ["--data", str(tmp / "data"), "--cbr", "1/96", "--snr", "-20", "20"]
    argv += ["--noise-draws", "1", "--workers", "1", "--avif-speed", "8", "--no-progress"]
    argv += ["--json", str(out), "--plot", str(plot)]
    rc = main(argv)
    return dict(rc=rc, images=images, result=json.loads(out.read_text()), plot=plot)


def _record(result, method, snr):
    (rec,) = [r for r in result["records"] if r["method"] == method and r["snr_db"] == snr]
    return rec


def test_run_writes_one_record_per_method_cbr_snr(run):
    assert run["rc"] == 0
    result = run["result"]
    keys = {(r["method"], r["cbr"], r["snr_db"]) for r in result["records"]}
    methods = ("jscc", "jpeg2000", "avif", "best_separation")
    assert keys == {(m, "1/96", s) for m in methods for s in (-20.0, 20.0)}
    assert len(result["records"]) == len(keys)
    for rec in result["records"]:
        assert RECORD_KEYS <= set(rec)
        assert rec["num_images"] == 2
        assert len(rec["per_image"]["psnr"]) == len(rec["per_image"]["ms_ssim"]) == 2
        assert math.isfinite(rec["psnr"]) and 0 <= rec["ms_ssim"] <= 1
    assert result["images"] == ["img0.png", "img1.png"]
    assert result["ms_ssim_scales"] == [4, 4]  # 96 px: too small for 5 scales
    assert result["settings"]["noise_draws"] == 1
    assert result["command"].startswith("diffjscc eval --data")
    assert {"cpu", "pillow", "openjpeg", "libavif"} <= set(result["machine"])
    assert run["plot"].stat().st_size > 1000


def test_jscc_records_are_means_of_the_per_image_values(run):
    rec = _record(run["result"], "jscc", 20.0)
    assert rec["noise_draws"] == 1 and rec["undelivered"] == 0
    assert rec["psnr"] == pytest.approx(np.mean(rec["per_image"]["psnr"]), abs=1e-3)
    assert rec["per_image"]["num_symbols"] == [jscc_num_symbols((96, 128), "1/96")] * 2
    # the codec does better with a clean channel than at -20 dB
    assert rec["psnr"] > _record(run["result"], "jscc", -20.0)["psnr"]


def test_undelivered_images_count_as_gray(run):
    gray = np.full((96, 128, 3), UNDELIVERED_FILL, np.uint8)
    gray_psnr = [psnr(img, gray) for img in run["images"]]
    for method in ("jpeg2000", "avif", "best_separation"):
        rec = _record(run["result"], method, -20.0)
        assert rec["per_image"]["budget_bytes"] == [0, 0]  # 768 symbols * 0.014 bit
        assert rec["undelivered"] == 2 and rec["per_image"]["delivered"] == [False, False]
        assert rec["per_image"]["psnr"] == pytest.approx(gray_psnr, abs=1e-3)
        assert rec["psnr_delivered"] is None


def test_separation_fits_its_budget_and_best_is_the_better_codec(run):
    result = run["result"]
    budget = byte_budget(jscc_num_symbols((96, 128), "1/96"), 20.0)
    j2k, avif, best = (_record(result, m, 20.0) for m in ("jpeg2000", "avif", "best_separation"))
    for rec in (j2k, avif, best):
        assert rec["per_image"]["budget_bytes"] == [budget, budget]
        assert rec["undelivered"] == 0
        assert all(0 < b <= budget for b in rec["per_image"]["bytes"])
    for i in range(2):
        assert best["per_image"]["psnr"][i] == max(
            j2k["per_image"]["psnr"][i], avif["per_image"]["psnr"][i]
        )
    table = markdown_table(result)
    assert "best separation" in table
    assert "| 0 / 0 / 0 |" in table and "| 2 / 2 / 2 |" in table  # undelivered counts


def test_eval_is_registered_in_the_cli():
    module = importlib.import_module(COMMANDS["eval"][0])
    assert module.main is main


# -- bad input: a clear message, exit status 2, no output file ---------------------------------


def _fails(tmp_path, capsys, argv, message):
    out = tmp_path / "out.json"
    rc = main([*argv, "--json", str(out), "--workers", "1", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
    assert not list(tmp_path.glob(".out.json.*"))  # no temporary file left either


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(tmp_path, capsys, ["--data", str(tmp_path / "empty")], "no images")


def test_folder_without_images(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    _fails(tmp_path, capsys, ["--data", str(tmp_path / "docs")], "no images")


def test_file_that_is_not_an_image(tmp_path, capsys):
    _write_images(tmp_path / "data", count=1)
    (tmp_path / "data" / "broken.png").write_bytes(b"this is not a PNG")
    _fails(tmp_path, capsys, ["--data", str(tmp_path / "data")], "broken.png")


def test_missing_folder(tmp_path, capsys):
    _fails(tmp_path, capsys, ["--data", str(tmp_path / "nowhere")], "not a folder")


def test_unknown_cbr(tmp_path, capsys):
    _write_images(tmp_path / "data", count=1)
    _fails(tmp_path, capsys, ["--data", str(tmp_path / "data"), "--cbr", "1/7"], "1/7")


def test_missing_weights(tmp_path, capsys):
    _write_images(tmp_path / "data", count=1)
    argv = ["--data", str(tmp_path / "data"), "--weights", str(tmp_path)]
    _fails(tmp_path, capsys, argv, "not found")


def test_bad_settings(tmp_path, capsys):
    _write_images(tmp_path / "data", count=1)
    data = ["--data", str(tmp_path / "data")]
    _fails(tmp_path, capsys, [*data, "--noise-draws", "0"], "--noise-draws")
    _fails(tmp_path, capsys, [*data, "--snr", "nan"], "SNR")
    _fails(tmp_path, capsys, [*data, "--plot", str(tmp_path / "p.jpg")], "--plot")
    _fails(tmp_path, capsys, [*data, "--tx-opt-steps", "-1"], "--tx-opt-steps")
    _fails(tmp_path, capsys, [*data, "--tx-opt-steps", "2", "--tx-opt-lr", "0"], "lr")
    _fails(tmp_path, capsys, [*data, "--tx-opt-steps", "2", "--methods", "avif"], "keep jscc")


def test_tx_opt_adds_a_column_decoded_through_the_same_draws(tmp_path):
    _write_images(tmp_path / "data", shape=(64, 64), count=2)
    out = tmp_path / "eval.json"
    argv = ["--data", str(tmp_path / "data"), "--cbr", "1/384", "--snr", "13"]
    argv += ["--noise-draws", "2", "--tx-opt-steps", "4", "--avif-speed", "8"]
    argv += ["--workers", "1", "--no-progress", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    plain, opt = _record(result, "jscc", 13.0), _record(result, "jscc_tx_opt", 13.0)
    assert opt["num_images"] == 2 and opt["noise_draws"] == 2
    assert opt["per_image"]["num_symbols"] == plain["per_image"]["num_symbols"]
    assert opt["per_image"]["psnr"] != plain["per_image"]["psnr"]
    assert (
        result["settings"]["tx_opt_steps"] == 4 and "jscc_tx_opt" in result["settings"]["methods"]
    )
    table = markdown_table(result)
    assert "jscc tx opt - JPEG2000 (dB)" in table and "jscc - JPEG2000 (dB)" in table


def test_refiner_adds_a_refined_column(tmp_path):
    pytest.importorskip("diffusers")
    from diffjscc.refiner.tiny import tiny_refiner

    tiny_refiner(steps=2).save_pretrained(tmp_path / "refiner")
    _write_images(tmp_path / "data", shape=(64, 64), count=2)
    out = tmp_path / "eval.json"
    argv = ["--data", str(tmp_path / "data"), "--cbr", "1/384", "--snr", "4", "--methods", "jscc"]
    argv += ["--noise-draws", "1", "--refiner", str(tmp_path / "refiner"), "--refine-steps", "2"]
    argv += ["--device", "cpu", "--no-progress", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    refined = _record(result, "jscc_refined", 4.0)
    assert refined["num_images"] == 2 and refined["noise_draws"] == 1
    assert all(math.isfinite(v) for v in refined["per_image"]["psnr"])
    assert refined["per_image"]["seed"] == [0, 1]  # image i refined with seed + i: repeatable
    assert "jscc refined" in markdown_table(result)


def test_refiner_folder_missing_is_a_clear_error(tmp_path, capsys):
    _write_images(tmp_path / "data", shape=(64, 64), count=1)
    argv = ["--data", str(tmp_path / "data"), "--cbr", "1/384", "--snr", "4", "--methods", "jscc"]
    argv += ["--refiner", str(tmp_path / "nothing"), "--no-progress"]
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err

import numpy as np
import pytest
from diffjscc import image as image_mod
from diffjscc.errors import ImageError
from diffjscc.image import check_image_array, load_image, save_png
from PIL import Image


def test_reads_gray_palette_and_rgba(tmp_path):
    Image.fromarray(np.full((10, 12), 77, np.uint8)).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (10, 12, 3)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent -> white background, not black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").min() == 255


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"GIF89a garbage", "image"),
        (b"\x89PNG\r\n\x1a\n" + b"x" * 40, "image"),
    ],
)
def test_unreadable_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        load_image(path)


def test_folder_and_oversized_images_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(image_mod, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="larger than"):
        load_image(tmp_path / "big.png")


def test_array_checks():
    with pytest.raises(ImageError, match="empty"):
        check_image_array(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ImageError, match="shape"):
        check_image_array(np.zeros((5, 5, 2), np.uint8))
    with pytest.raises(ImageError, match="NaN"):
        check_image_array(np.full((2, 2, 3), np.nan))
    assert check_image_array(np.ones((2, 2, 3))).max() == 255


def test_save_png_is_atomic(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(ImageError):
        save_png(target, np.zeros((0, 0, 3), np.uint8))
    assert not target.exists() and not list(tmp_path.iterdir())
    save_png(target, np.zeros((3, 3, 3), np.uint8))
    assert load_image(target).shape == (3, 3, 3)

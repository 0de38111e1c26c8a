"""The one preprocessing function: every input mode a user can hand us ends as 224x224 RGB uint8."""
import io

import numpy as np
import pytest
from PIL import Image

from bench.images import png_header_claiming
from demo.preprocess import IMAGE_SIZE, ImageError, load_image
from tests.helpers import encoded


def half_and_half(mode_colour_left=(255, 0, 0), right=(0, 0, 255), size=(64, 32)) -> Image.Image:
    """Left half one colour, right half another: orientation and colour are both checkable."""
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[:, : size[0] // 2] = mode_colour_left
    pixels[:, size[0] // 2 :] = right
    return Image.fromarray(pixels)


def assert_output(pixels: np.ndarray) -> None:
    assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert pixels.dtype == np.uint8


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "CMYK", "1"])
def test_every_common_mode_becomes_rgb(mode):
    image = half_and_half().convert(mode)
    pixels = load_image(encoded(image, "TIFF" if mode == "CMYK" else "PNG"))
    assert_output(pixels)
    left, right = pixels[:, :100].mean(axis=(0, 1)), pixels[:, -100:].mean(axis=(0, 1))
    if mode in ("RGB", "RGBA", "P", "CMYK"):
        assert left[0] > 200 and left[2] < 60, f"{mode}: left half should stay red, got {left}"
        assert right[2] > 200 and right[0] < 60, f"{mode}: right half should stay blue, got {right}"
    else:  # greyscale modes: grey on both channels equal
        assert np.allclose(pixels[..., 0], pixels[..., 1]) and np.allclose(pixels[..., 1], pixels[..., 2])


def test_cmyk_jpeg_decodes_to_rgb():
    pixels = load_image(encoded(half_and_half().convert("CMYK"), "JPEG", quality=95))
    assert pixels[:, :100, 0].mean() > 200 and pixels[:, -100:, 2].mean() > 200


def test_transparent_pixels_become_white_not_black():
    rgba = np.zeros((40, 40, 4), np.uint8)  # fully transparent black
    rgba[10:30, 10:30] = (0, 128, 0, 255)  # opaque green square
    pixels = load_image(encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (pixels[0, 0] == 255).all(), "transparent background must be composited on white"
    assert pixels[112, 112, 1] > 100 and pixels[112, 112, 0] < 30


def test_palette_with_transparency_composites_on_white():
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (5, 5, 15, 15))
    image.info["transparency"] = 0
    pixels = load_image(encoded(image, "PNG", transparency=0))
    assert (pixels[0, 0] == 255).all() and pixels[112, 112, 0] > 200 and pixels[112, 112, 1] < 50


def test_16_bit_greyscale_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (16, 1))
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    pixels = load_image(encoded(image, "PNG"))
    row = pixels[112, :, 0].astype(int)
    assert row[0] < 10 and row[-1] > 245, "full 16-bit range must map onto 0..255"
    assert 100 < row[112] < 160, "mid-grey must stay mid-grey (a clipping convert gives 255)"


def test_exif_orientation_is_applied():
    """A phone photo stored sideways with Orientation=6 must come out upright (red on top)."""
    upright = np.zeros((64, 32, 3), np.uint8)
    upright[:32] = (255, 0, 0)
    upright[32:] = (0, 0, 255)
    # Stored rotated 90 degrees counter-clockwise; Orientation 6 says "rotate 90 CW to display".
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = load_image(encoded(stored, "JPEG", quality=95, exif=exif.tobytes()))
    top, bottom = pixels[:100].mean(axis=(0, 1)), pixels[-100:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60, f"top should be red, got {top}"
    assert bottom[2] > 200 and bottom[0] < 60, f"bottom should be blue, got {bottom}"


def test_tiny_image_is_upscaled():
    pixels = load_image(encoded(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"))
    assert_output(pixels)
    assert (pixels == (10, 200, 30)).all()


def test_large_jpeg_is_resized_and_keeps_its_layout():
    big = half_and_half(size=(4000, 3000))
    pixels = load_image(encoded(big, "JPEG", quality=90))
    assert_output(pixels)
    assert pixels[:, :100, 0].mean() > 200 and pixels[:, -100:, 2].mean() > 200


def test_path_bytes_pil_and_array_give_identical_pixels(tmp_path):
    image = half_and_half(size=(300, 200))
    path = tmp_path / "x.png"
    image.save(path)
    from_path = load_image(path)
    assert np.array_equal(from_path, load_image(str(path)))
    assert np.array_equal(from_path, load_image(path.read_bytes()))
    assert np.array_equal(from_path, load_image(Image.open(path)))
    assert np.array_equal(from_path, load_image(np.asarray(image)))


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (30, 30), c) for c in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    pixels = load_image(buffer.getvalue())
    assert pixels[..., 0].mean() > 200 and pixels[..., 1].mean() < 50


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is a text file, not a jpeg\n", "not an image"),
        (png_header_claiming(30000, 30000), "limit"),
    ],
    ids=["empty", "text-as-jpg", "decompression-bomb"],
)
def test_bad_bytes_raise_a_clear_image_error(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data)


def test_truncated_jpeg_raises_image_error(tmp_path):
    data = encoded(half_and_half(size=(400, 300)), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(path)


def test_missing_path_names_the_file(tmp_path):
    with pytest.raises(ImageError, match="nope.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")

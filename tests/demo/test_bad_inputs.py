"""Bad and unusual images end to end, through all three surfaces: the CLI, `Captioner`, and the served API.

Every case either gets the caption of its plain-RGB equivalent (same caption, same log-probability) or
a specific error that names the file and the problem, never a traceback. The server must survive each
bad request, answer the next good one, and keep its memory bounded (the decompression bomb must not
allocate its 900 million pixels). Pixel-level details of `load_image` are in test_preprocess.py; here
the point is that each surface reaches it and reports what it says.

Slow: real ONNX Runtime on the session's exported bundle, a `python -m demo` subprocess and a server.
"""
from __future__ import annotations

import io
import itertools
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.images import png_header_claiming
from demo.preprocess import MAX_IMAGE_PIXELS, ImageError
from tests.helpers import Drained, ask_caption, encoded, run_module, start_server

pytestmark = pytest.mark.slow
RNG_SEED = 7
MAX_RSS_BYTES = int(2.5 * 2**30)
SEARCH = {"max_length": 20, "length_penalty": 0.5}  # the same search settings on every surface
# every parameter after the image, as a raw HTTP call must send them: beams, max_length, alpha, n-best, encoder and
# decoder variants, no_repeat_ngram_size
API_ARGS = (3, SEARCH["max_length"], SEARCH["length_penalty"], 3, "fp32", "fp32", 0)


# ---- the inputs: each valid case with the plain RGB image it must caption like ---------------------------

def scene(width: int = 320, height: int = 240) -> Image.Image:
    """A photo-like RGB picture (gradient, shapes, grain): asymmetric, so a rotation changes it."""
    rng = np.random.default_rng(RNG_SEED)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], axis=-1).astype(np.int16)
    pixels[height // 6: height // 2, width // 8: width // 3] = (230, 40, 40)
    pixels[height // 2:, width // 2:] = (20, 60, 220)
    pixels += rng.integers(-12, 13, pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def decoded(data: bytes) -> Image.Image:
    """Pillow's plain decode of the stored pixels (no EXIF rotation), loaded."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def one_pixel() -> tuple[bytes, Image.Image, None]:
    colour = (10, 200, 30)
    return encoded(Image.new("RGB", (1, 1), colour), "PNG"), Image.new("RGB", (224, 224), colour), None


def grey_16_bit() -> tuple[bytes, Image.Image, Image.Image]:
    """Every 16-bit level is an 8-bit level times 257, so the 8-bit equivalent is exact; clipping whitens it."""
    levels = np.tile(np.linspace(0, 255, 320).astype(np.uint16), (240, 1))
    levels[60:180, 80:240] = 255 - levels[60:180, 80:240]
    wide = Image.fromarray(levels * 257)
    assert wide.mode.startswith("I;16")
    grey = np.stack([levels.astype(np.uint8)] * 3, axis=-1)
    clipped = np.stack([np.clip(levels * 257, 0, 255).astype(np.uint8)] * 3, axis=-1)
    return encoded(wide, "PNG"), Image.fromarray(grey), Image.fromarray(clipped)


def cmyk_jpeg() -> tuple[bytes, Image.Image, Image.Image]:
    data = encoded(scene().convert("CMYK"), "JPEG", quality=95)
    stored = decoded(data)
    assert stored.mode == "CMYK"
    ink_as_rgb = Image.fromarray(np.asarray(stored)[..., :3].copy())  # the C, M, Y planes read as R, G, B
    return data, stored.convert("RGB"), ink_as_rgb


def animated_gif() -> tuple[bytes, Image.Image, Image.Image]:
    """The first frame counts; Gradio's own decode handed the app the palette indices instead."""
    first = scene().quantize(64)
    second = Image.new("RGB", first.size, (0, 255, 0)).quantize(64)
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=[second], duration=200, loop=0)
    data = buffer.getvalue()
    stored = decoded(data)
    assert getattr(stored, "n_frames", 1) == 2
    indices = np.asarray(stored).astype(np.uint8)
    return data, stored.convert("RGB"), Image.fromarray(np.stack([indices] * 3, axis=-1))


def exif_rotated_jpeg() -> tuple[bytes, Image.Image, Image.Image]:
    """A phone photo stored sideways with Orientation=6; the equivalent is its stored pixels turned upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(scene().transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())
    stored = decoded(data)
    return data, stored.transpose(Image.Transpose.ROTATE_270), stored.convert("RGB")


def rgba_opaque() -> tuple[bytes, Image.Image, None]:
    return encoded(scene().convert("RGBA"), "PNG"), scene(), None


def rgba_transparent() -> tuple[bytes, Image.Image, Image.Image]:
    """Transparent black around an opaque picture: composited on white; dropping alpha would show black."""
    rgba = np.asarray(scene().convert("RGBA")).copy()
    rgba[:60], rgba[-60:], rgba[:, :80], rgba[:, -80:] = 0, 0, 0, 0
    on_white = rgba[..., :3].copy()
    on_white[rgba[..., 3] == 0] = 255
    return encoded(Image.fromarray(rgba, "RGBA"), "PNG"), Image.fromarray(on_white), Image.fromarray(rgba[..., :3])


def large_png() -> tuple[bytes, Image.Image, None]:
    """A valid ~12 MB photo of grain: over the server's 10 MB upload limit, well under the pixel limit."""
    pixels = np.random.default_rng(RNG_SEED).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    return encoded(image, "PNG", compress_level=1), image, None


def truncated_jpeg() -> bytes:
    data = encoded(scene(), "JPEG", quality=90)
    return data[: len(data) // 3]


VALID = {  # file name -> (bytes, the plain RGB image it must caption like, a mishandled decode or None)
    "one_pixel.png": one_pixel,
    "grey_16_bit.png": grey_16_bit,
    "cmyk.jpg": cmyk_jpeg,
    "animated.gif": animated_gif,
    "exif_orientation_6.jpg": exif_rotated_jpeg,
    "rgba_opaque.png": rgba_opaque,
    "rgba_transparent.png": rgba_transparent,
}
LARGE = "large_12mb.png"
BAD = {  # file name -> (bytes, what the error message must say)
    "empty.jpg": (lambda: b"", "empty file"),
    "text.jpg": (lambda: b"this is a text file, not a jpeg\n", "not an image"),
    "truncated.jpg": (truncated_jpeg, "truncated"),
    "bomb_30000x30000.png": (lambda: png_header_claiming(30000, 30000), "too large"),
    "over_pixel_limit_9000x9000.png": (lambda: png_header_claiming(9000, 9000), f"{MAX_IMAGE_PIXELS:,}-pixel limit"),
}


class Inputs:
    """The case files on disk, each valid one's plain RGB equivalent (PNG), and its mishandled decode."""

    def __init__(self, root: Path):
        self.files, self.plain, self.wrong = {}, {}, {}
        for name, make in [*VALID.items(), (LARGE, large_png)]:
            data, plain, wrong = make()
            self.files[name] = self._write(root / name, data)
            self.plain[name] = root / "plain" / f"{name}.png"
            self._save(plain, self.plain[name])
            if wrong is not None:
                self.wrong[name] = root / "wrong" / f"{name}.png"
                self._save(wrong, self.wrong[name])
        for name, (make, _) in BAD.items():
            self.files[name] = self._write(root / name, make())
        assert self.files[LARGE].stat().st_size > 10 * 2**20, "must exceed the server's upload limit"

    @staticmethod
    def _write(path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        return path

    @staticmethod
    def _save(image: Image.Image, path: Path) -> None:
        path.parent.mkdir(exist_ok=True)
        image.convert("RGB").save(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(scope="module")
def bundle(exported_run) -> Path:
    return exported_run / "onnx"


@pytest.fixture(scope="module")
def expected(captioner, inputs) -> dict:
    """Greedy and beam-3 results of each valid case's plain RGB equivalent."""
    return {name: greedy_and_beam(captioner, plain) for name, plain in inputs.plain.items()}


def greedy_and_beam(captioner, image: Path) -> tuple:
    return (captioner.caption([image], **SEARCH)[0],
            captioner.caption([image], num_beams=3, num_return_sequences=3, **SEARCH)[0])


def interleave(*names) -> list[str]:
    """Good and bad files taken in turn, so each bad one sits between others."""
    return [n for group in itertools.zip_longest(*names) for n in group if n is not None]


def assert_names_the_problem(message: str, name: str) -> None:
    """The file once (an error wrapped in another would name it twice) and the problem it has."""
    assert message.count(name) == 1 and BAD[name][1] in message and "Traceback" not in message, message


def assert_same(caption: str, log_prob: float, want, what: str) -> None:
    assert (caption, log_prob) == (want.caption, pytest.approx(want.log_prob, abs=1e-4)), what


# ---- Captioner ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*VALID, LARGE])
def test_captioner_captions_each_image_like_its_plain_rgb_equivalent(captioner, inputs, expected, name):
    greedy, beam = expected[name]
    got_greedy, got_beam = greedy_and_beam(captioner, inputs.files[name])
    assert_same(got_greedy.caption, got_greedy.log_prob, greedy, f"{name} greedy")
    assert_same(got_beam.caption, got_beam.log_prob, beam, f"{name} beam")
    if name in inputs.wrong:  # the comparison can tell: the mishandled decode is captioned differently
        wrong = captioner.caption([inputs.wrong[name]], **SEARCH)[0]  # by more than assert_same's tolerance
        assert abs(wrong.log_prob - greedy.log_prob) > 1e-4 or wrong.caption != greedy.caption, name


@pytest.mark.parametrize("name", BAD)
def test_captioner_refuses_each_bad_file_naming_it_and_the_problem(captioner, inputs, name):
    with pytest.raises(ImageError) as info:
        captioner.caption([inputs.files[name]])
    assert_names_the_problem(str(info.value), name)


# ---- CLI ---------------------------------------------------------------------------------------------

def test_cli_captions_the_good_files_and_names_each_bad_one(bundle, inputs, expected):
    """One run over all files, bad ones in between: one `error:` line each, the rest captioned, exit 1."""
    names = interleave([*VALID, LARGE], BAD)
    result = run_module("demo", "caption", "--model", str(bundle), "--num-beams", "3", "--json",
                        "--max-length", str(SEARCH["max_length"]), "--length-penalty", str(SEARCH["length_penalty"]),
                        *[str(inputs.files[n]) for n in names], timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(BAD), result.stderr
    for name in BAD:
        (line,) = [line for line in errors if f"{name}:" in line]
        assert_names_the_problem(line, name)
    captioned = json.loads(result.stdout)["images"]
    assert [Path(entry["image"]).name for entry in captioned] == [n for n in names if n not in BAD]
    for entry in captioned:
        assert_same(entry["caption"], entry["log_prob"], expected[Path(entry["image"]).name][1], entry["image"])


# ---- the served API ----------------------------------------------------------------------------------

class Server(Drained):
    """`python -m demo serve` with its output drained and kept for checks."""

    def __init__(self, bundle: Path):
        process, self.url = start_server(bundle)
        super().__init__(process)

    def memory(self) -> dict[str, int]:
        """Resident and peak resident memory of the server process, in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in status)
        return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


@pytest.fixture(scope="module")
def server(bundle):
    running = Server(bundle)
    yield running
    running.stop()


def assert_server_result(result: dict, want: tuple, what: str) -> None:
    greedy, beam = want
    assert_same(result["greedy"]["caption"], result["greedy"]["log_prob"], greedy, f"{what} greedy")
    assert_same(result["beam"]["caption"], result["beam"]["log_prob"], beam, f"{what} beam")
    assert [c["caption"] for c in result["beam"]["candidates"]] == [c.caption for c in beam.candidates], what


def test_server_answers_every_case_survives_the_bad_ones_and_stays_bounded(server, inputs, expected):
    from gradio_client.exceptions import AppError

    good = inputs.files["rgba_opaque.png"]
    first_line = len(server.lines)  # the module's server: other tests' requests may have logged before this one
    assert_server_result(ask_caption(server.url, good, **SEARCH), expected["rgba_opaque.png"], "warm-up")
    before = server.memory()
    for name in interleave(BAD, VALID):
        if name in VALID:
            assert_server_result(ask_caption(server.url, inputs.files[name], **SEARCH), expected[name], name)
            continue
        with pytest.raises(AppError) as info:
            ask_caption(server.url, inputs.files[name], **SEARCH)
        message = str(info.value)
        assert_names_the_problem(message, name)
        assert "Traceback" not in message and "/tmp/" not in message, message  # no server paths either
        assert server.process.poll() is None, f"the server died on {name}"
        assert_server_result(ask_caption(server.url, good, **SEARCH), expected["rgba_opaque.png"],
                             f"good request after {name}")
    after = server.memory()
    print(f"\nserver memory before the batch: RSS {before['VmRSS'] / 2**20:.0f} MiB, peak "
          f"{before['VmHWM'] / 2**20:.0f} MiB; after: RSS {after['VmRSS'] / 2**20:.0f} MiB, peak "
          f"{after['VmHWM'] / 2**20:.0f} MiB")
    assert after["VmHWM"] < MAX_RSS_BYTES, after
    assert after["VmHWM"] - before["VmHWM"] < 2**30, (before, after)  # 30000x30000 RGB would be 2.5 GiB
    log = "".join(server.lines[first_line:])
    assert "Traceback" not in log, log[-3000:]  # refusals are one line each, not a page
    assert all(f"caption refused: {name}" in log for name in BAD), log[-3000:]


def test_server_refuses_an_upload_over_its_limit_and_keeps_serving(server, inputs, expected):
    """The client checks the limit before sending; a client that does not is stopped by the server."""
    large = inputs.files[LARGE]
    with pytest.raises(ValueError, match="exceeds the maximum file size of 10485760 bytes"):
        ask_caption(server.url, large, **SEARCH)
    status, body = upload(server.url, large)
    assert status == 413 and "File size exceeded maximum allowed size of 10485760 bytes" in body, (status, body)
    assert server.process.poll() is None
    assert_server_result(ask_caption(server.url, inputs.files["cmyk.jpg"], **SEARCH), expected["cmyk.jpg"],
                         "after the large upload")


def test_server_refuses_a_path_it_did_not_receive(server, inputs):
    """The API hands the app the uploaded file's path: a path the client never uploaded must not be read (Gradio
    refuses it, and says why in the server's log)."""
    first_line = len(server.lines)
    body = json.dumps({"data": [{"path": str(inputs.files["cmyk.jpg"]), "meta": {"_type": "gradio.FileData"}},
                                *API_ARGS]}).encode()
    request = urllib.request.Request(server.url + "gradio_api/call/caption", body,
                                     {"Content-Type": "application/json"})
    event_id = json.loads(urllib.request.urlopen(request, timeout=30).read())["event_id"]
    stream = urllib.request.urlopen(f"{server.url}gradio_api/call/caption/{event_id}", timeout=60).read().decode()
    assert "event: error" in stream and '"greedy"' not in stream, stream
    assert server.process.poll() is None
    deadline = time.monotonic() + 10
    while "was not uploaded by a user" not in "".join(server.lines[first_line:]):
        assert time.monotonic() < deadline, "".join(server.lines[first_line:])[-3000:]
        time.sleep(0.05)


def upload(url: str, path: Path) -> tuple[int, str]:
    """POST a file to Gradio's upload route the way a browser does (multipart), without any client checks."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "gradio_api/upload", body,
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_data_url_upload_reaches_load_image_as_its_bytes(inputs):
    """A browser may send a webcam or clipboard picture inline; it gets the same decoding as a file."""
    import base64

    import gradio as gr
    from gradio.data_classes import ImageData

    from demo.web.upload import ImageUpload

    component = ImageUpload(type="filepath", image_mode=None)
    data = inputs.files["exif_orientation_6.jpg"].read_bytes()
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    assert component.preprocess(ImageData(url=url)) == data
    assert component.preprocess(ImageData(path=str(inputs.files["cmyk.jpg"]))) == str(inputs.files["cmyk.jpg"])
    with pytest.raises(gr.Error, match="not valid base64"):
        component.preprocess(ImageData(url="data:image/png;base64,not base64!"))
    with pytest.raises(gr.Error, match="over the 10 MB upload limit"):
        component.preprocess(ImageData(url="data:image/png;base64," + "A" * (11 * 2**20 * 4 // 3)))

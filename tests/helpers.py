"""What many tests do, written once: run a command as a user would, serve and ask the app, find a run's
images, build image bytes. Fixtures live in conftest.py; this module has no fixtures and no test."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Below pytest.ini's 600 s per test, so a command that hangs fails with its own message (test_time_limits.py).
COMMAND_TIMEOUT = 540


def run_module(module: str, *args: str, timeout: int = COMMAND_TIMEOUT,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args` from the repo root, as a user would."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


LOOPBACK = "127.0.0.1,127.0.0.2,localhost,::1"  # the addresses servers under test listen on
# A machine with a network must not reach it from a test: ImageNet weights (528 MB) and Gradio's share tunnel go
# through this dead proxy and fail at once, as offline; loopback (the servers under test) stays direct.
OFFLINE = {name: "http://127.0.0.1:9" for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")} | {
    "NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK, "HF_HUB_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False"}


def offline_env(**extra: str) -> dict:
    return os.environ | OFFLINE | extra


def readme_block(heading: str) -> list[str]:
    """The commands of the first bash block under the README's `## heading`, comments dropped."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def serve_once(command: str, env: dict, port: int, within_s: float) -> tuple[str, dict]:
    """Run the shell-free `command` until its page answers on `port` (within `within_s`), ask the API once about
    the first example, stop it (its whole process group). Returns (everything it printed, the answer)."""
    process = subprocess.Popen(command.split(), cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = Drained(process)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + within_s
        while True:
            assert process.poll() is None, output.text()[-4000:]
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, f"{command} did not serve within {within_s} s:\n" \
                    + output.text()[-4000:]
                time.sleep(1)
        answer = ask_caption(url, sorted((REPO / "demo" / "examples").glob("*.png"))[0])
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)
    return output.text(), answer


def linked_copy(run: Path, into: Path, without: tuple[str, ...] = ()) -> Path:
    """`into/run`, a copy of `run` whose files are hard links (less the names in `without`): for a command that
    writes only new files and renames (an export, an evaluation), never into existing ones."""
    copy = into / "run"
    shutil.copytree(run, copy, copy_function=os.link, ignore=shutil.ignore_patterns(*without))
    return copy


def bundle_copy(source: Path, target: Path, copied: tuple[str, ...] = ()) -> Path:
    """A bundle copy whose big encoder files are symlinks, unless named in `copied` (those are changed; a graph's
    external data comes with it: onnx refuses to load weights through a symbolic link)."""
    import shutil

    copied = (*copied, *(f"{name}.data" for name in copied))
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.name.startswith("encoder") and path.name not in copied:
            os.symlink(path, target / path.name)
        else:
            shutil.copy(path, target / path.name)
    return target


def read_manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def reseal(bundle: Path, changed: list[str], **fields) -> None:
    """Make the manifest agree with the changed (or added) files again (records; graph IO for .onnx files), plus
    `fields`. Written atomically, as the export writes it: what a consistent but wrong manifest looks like."""
    import onnxruntime as ort

    from demo.artifacts import atomic_write_json
    from demo.bundle_layout import MODEL_KEYS
    from demo.manifest import file_record, io_record

    manifest = read_manifest(bundle)
    for name in changed:
        manifest["files"][name] = file_record(bundle / name)
        if name.endswith(".onnx"):
            session = ort.InferenceSession(str(bundle / name), providers=["CPUExecutionProvider"])
            model = manifest["models"].setdefault(MODEL_KEYS[name], {"file": name})
            model |= {"inputs": io_record(session.get_inputs()), "outputs": io_record(session.get_outputs())}
    atomic_write_json(bundle / "manifest.json", manifest | fields)


def with_int8_decoder(source: Path, target: Path) -> Path:
    """A copy of the bundle `source` that ships the int8 decoder step whether or not this run's passed the
    export's gate: quantized with the export's own function and sealed into the manifest as the export seals a
    variant that passed (file record, graph IO, `parity.decoder_int8.shipped`)."""
    from demo.bundle_layout import decoder_file
    from export.decoder_int8 import quantize_decoder

    bundle = bundle_copy(source, target)
    int8 = bundle / decoder_file("int8")
    int8.unlink(missing_ok=True)
    quantize_decoder(bundle / decoder_file("fp32"), int8)
    parity = read_manifest(bundle)["parity"]
    gate = {k: v for k, v in parity.get("decoder_int8", {}).items() if k != "why"} | {"shipped": True}
    reseal(bundle, [int8.name], parity=parity | {"decoder_int8": gate})
    return bundle


def without_int8_decoder(source: Path, target: Path) -> tuple[Path, str]:
    """The bundle `source`, or a copy of it without the int8 decoder step where this run's passed its gate,
    with the manifest's reason for leaving it out: (bundle, reason). Which one a run gets depends on its weights."""
    from demo.artifacts import atomic_write_json
    from demo.bundle_layout import MODEL_KEYS, decoder_file

    manifest = read_manifest(source)
    gate = manifest["parity"]["decoder_int8"]
    if not gate["shipped"]:
        return source, gate["why"]
    bundle = bundle_copy(source, target)
    name = decoder_file("int8")
    (bundle / name).unlink()
    del manifest["files"][name], manifest["models"][MODEL_KEYS[name]]
    why = "left out: greedy identical 50.0% (at least 95%), planted by the test"
    manifest["parity"]["decoder_int8"] = gate | {"shipped": False, "why": why}
    atomic_write_json(bundle / "manifest.json", manifest)
    return bundle, why


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Drained:
    """A process's output read in a thread as it comes: a pipe nobody reads stalls a server once it fills."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.lines = process, []
        self._reader = threading.Thread(target=lambda: self.lines.extend(process.stdout), daemon=True)
        self._reader.start()

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, prefixes: tuple[str, ...], within_s: float = 120) -> bool:
        """Whether a line starting with one of `prefixes` came within `within_s` seconds."""
        deadline = time.monotonic() + within_s
        while not any(line.startswith(prefixes) for line in self.lines):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def stop(self) -> str:
        """Terminate the process; return everything it wrote."""
        self.process.terminate()
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        return self.text()


def wait_for_server(command: list[str], url: str, cwd: Path = REPO, env: dict | None = None):
    """Start `command` and wait (120 s at most) until `url` answers; returns (process, url)."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError(f"{url} did not answer within 120 s")


def start_server(bundle: Path, *extra: str):
    """`python -m demo serve` in a subprocess on a free loopback port, offline (`--share` must not reach out from a
    test); returns (process, url) once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "demo", "serve", "--model", str(bundle), "--port", str(port), *extra]
    return wait_for_server(command, f"http://127.0.0.1:{port}/", env=offline_env())


def api_settings(config) -> tuple:
    """A `GenerationConfig`'s first four fields as the API's positional parameters take them (its older callers'
    order: num_beams, max_length, length_penalty, num_return_sequences)."""
    return config.num_beams, config.max_length, config.length_penalty, config.num_return_sequences


def ask_caption(url: str, image: Path, *settings, **named) -> dict:
    """The app's `/caption` API through gradio_client, as its users call it: settings after the image in the API's
    order (num_beams, max_length, length_penalty, num_return_sequences, variant, decoder_variant,
    no_repeat_ngram_size) or by those names.
    Those not given are the page's own defaults, filled in by gradio_client as for any caller: a test compares with
    the product's defaults (`Captioner.compare(image)`), never with a copy of them."""
    from gradio_client import Client, handle_file

    return Client(url, verbose=False).predict(handle_file(str(image)), *settings, **named, api_name="/caption")


def split_images(run: Path, *, split: str = "test", count: int | None = None) -> list[Path]:
    """The images of one split of a prepared run, in captions.json order."""
    captions = json.loads((run / "captions.json").read_text())
    root = Path(captions["image_root"])
    return [root / entry["id"] for entry in captions["images"] if entry["split"] == split][:count]


def encoded(image, fmt: str, **options) -> bytes:
    """A Pillow image saved to bytes in `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def caption_differences(captioner, images: list, reference: list[str], got: list[str], num_beams: int) -> list[int]:
    """Indices of `images` whose caption in `got` differs from `reference` by more than a near-tie of the
    captioner's own decoder (export.parity): which images have near-ties depends on the weights, so the CPU."""
    import numpy as np

    from demo.preprocess import load_image
    from export.parity import compare_captions

    def tokens(captions: list[str]) -> list[list[int]]:
        return [captioner.vocab.encode(caption.split(), add_special=False) for caption in captions]

    features, _ = captioner.encode(np.stack([load_image(image) for image in images]))
    return compare_captions(captioner.decoder, features, captioner.vocab, num_beams, tokens(reference),
                            got=tokens(got))["different"]


CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def auto_provider() -> str:
    """What `provider="auto"` must report on this machine: "cuda" where ORT's CUDA provider can run, else "cpu".

    The suite runs on CPU machines and, with requirements-gpu.txt, on CUDA ones: a test expects what this
    machine gives (test_auto_picks_cuda_where_it_exists checks the CUDA side on its own).
    """
    from demo.sessions import cuda_problem

    return "cuda" if cuda_problem() is None else "cpu"


def assert_sessions_run_on(captioner, provider: str) -> None:
    """The provider a Captioner reports is the one every one of its ONNX Runtime sessions really runs first."""
    wanted = {"cuda": CUDA, "cpu": CPU}[provider]
    sessions = [s for s in (captioner.encoder, captioner.decoder.session, captioner.decoder.projection)
                if s is not None]
    assert [session.get_providers()[0] for session in sessions] == [wanted] * len(sessions)


def assert_same_answer(answer: dict, comparison) -> None:
    """A `caption` answer (from the API or `run_caption`) says what `Captioner.compare` says alone."""
    import pytest

    assert answer["greedy"]["caption"] == comparison.greedy.caption
    assert answer["greedy"]["log_prob"] == pytest.approx(comparison.greedy.log_prob, abs=1e-5)
    assert [c["caption"] for c in answer["beam"]["candidates"]] == [c.caption for c in comparison.beam.candidates]


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def require_chromium() -> None:
    """Skip where Debian's chromium is missing, but fail under CI, which installs it (.ci/run): there a browser
    test that passes without a browser would prove nothing."""
    import pytest

    if Path(CHROMIUM).exists():
        return
    message = f"Debian's chromium is not installed at {CHROMIUM}: `apt-get install chromium` (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def browser_caption(url: str, image: Path, screenshot: Path, details: dict | None = None) -> tuple[str, str, str]:
    """Upload `image` on the page at `url` in headless Chromium, press Caption, save a full-page screenshot;
    returns the greedy caption, the beam caption (their words, without the probabilities shown under them) and the
    run-info footer as shown."""
    from playwright.sync_api import sync_playwright

    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        page.locator("#image-input input[type=file]").set_input_files(str(image))
        page.locator("#image-input img").first.wait_for(timeout=30_000)
        page.locator("#caption-button").click()
        page.wait_for_function("document.querySelector('#run-info') && "
                               "document.querySelector('#run-info').innerText.includes('provider')", timeout=60_000)
        shown_greedy, shown_beam = (" ".join(page.locator(f"#{name}-caption .word-text").all_inner_texts())
                                    for name in ("greedy", "beam"))
        footer = page.locator("#run-info").inner_text()
        if details is not None:  # what else the page shows: each word's probability (shading), the model line
            for name in ("greedy", "beam"):
                words = page.locator(f"#{name}-caption .word")
                details[f"{name}_probs"] = [float(words.nth(i).get_attribute("data-prob"))
                                            for i in range(words.count())]
                details[f"{name}_shown_probs"] = page.locator(f"#{name}-caption .word-prob").all_inner_texts()
                details[f"{name}_differs"] = page.locator(f"#{name}-caption .word.differs .word-text").all_inner_texts()
            details["summary"] = page.locator("#model-summary").inner_text()
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return shown_greedy, shown_beam, footer

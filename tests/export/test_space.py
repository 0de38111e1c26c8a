"""`python -m export.space`: the folder is a complete Space that serves captions on its own.

Slow: uses the session's exported run and starts the Space's app.py.
"""
import os
import sys

import pytest

from demo.generation import GenerationConfig
from tests.helpers import (
    REPO,
    Drained,
    api_settings,
    ask_caption,
    auto_provider,
    free_port,
    run_module,
    wait_for_server,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def space(exported_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("space") / "space"
    result = run_module("export.space", "--run", str(exported_run), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"space: {out} (" in result.stderr and "push it to a Hugging Face Space" in result.stderr, \
        "the command says where the Space is and what to do next"
    return out


def shipped_decoder(space) -> str:
    """The one decoder variant a Space ships."""
    from demo.bundle_layout import decoder_variants_in
    from demo.manifest import verify_bundle

    (variant,) = decoder_variants_in(verify_bundle(space / "onnx")["files"])
    return variant


def test_space_folder_has_everything_and_no_tensorflow(space, exported_run):
    assert {p.name for p in space.iterdir()} >= {"app.py", "requirements.txt", "README.md", ".gitattributes", "demo",
                                                  "onnx"}
    lines = (space / "requirements.txt").read_text().lower().splitlines()
    requirements = "\n".join(line for line in lines if not line.startswith("#"))
    assert "onnxruntime" in requirements and "gradio" in requirements
    assert "tensorflow" not in requirements and "keras" not in requirements and "tf2onnx" not in requirements
    front = (space / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    assert "*.onnx filter=lfs" in (space / ".gitattributes").read_text()
    assert "*.onnx.data filter=lfs" in (space / ".gitattributes").read_text(), "the encoder's weights too"
    assert (space / "app.py").read_bytes() == (REPO / "demo" / "app.py").read_bytes(), "one entry point, not two"
    shipped = {p.name for p in (space / "onnx").iterdir()}
    assert "encoder.int8.onnx" in shipped and "encoder.onnx" not in shipped, "int8 by default, to keep it light"
    from demo.manifest import verify_bundle

    bundle = verify_bundle(exported_run / "onnx")
    decoder = "decoder_step_topk.int8.onnx" if "decoder_step_topk.int8.onnx" in bundle["files"] else \
        "decoder_step_topk.onnx"  # int8 where this run's passed the export's gate
    assert shipped == {"encoder.int8.onnx", "encoder.int8.onnx.data", "image_projection.onnx", decoder,
                       "vocab.json", "README.md", "manifest.json"}, \
        "what the runtime opens for one pair of variants, and the model card; not decoder_step.onnx"
    manifest = verify_bundle(space / "onnx")
    assert set(manifest["files"]) == shipped - {"manifest.json"}
    assert {m["file"] for m in manifest["models"].values()} == shipped - {"manifest.json", "vocab.json", "README.md",
                                                                            "encoder.int8.onnx.data"}


def test_space_page_is_the_model_card(space, exported_run):
    """The page: front matter, the bundle's card (its one-line summary first), this Space's section and API line."""
    from demo.model_card import read_model_card

    card = read_model_card(exported_run / "onnx")
    assert card is not None and card.summary.startswith("**Trained on** "), "the export wrote a card"
    readme = (space / "README.md").read_text()
    body = readme.split("---\n", 2)[2]
    assert body.lstrip().startswith(card.text.split("## How to run it")[0].rstrip())
    assert "## This Space" in body and 'api_name="/caption"' in body and "## How to run it" not in body
    assert (space / "onnx" / "README.md").read_text() == card.text


def test_space_app_serves_captions_from_its_own_folder(space, exported_run, tmp_path):
    """No CAPTIONER_MODEL: the app finds onnx/ beside itself and answers with its int8 encoder, not fp32."""
    from demo.captioner import Captioner

    example = sorted((space / "demo" / "examples").glob("*.png"))[0]
    config = GenerationConfig(num_beams=3, max_length=20, length_penalty=0.5, num_return_sequences=2)
    decoder = shipped_decoder(space)
    here = Captioner(space / "onnx", variant="int8", decoder_variant=decoder, provider="cpu").compare(example,
                                                                                                    config)
    fp32 = Captioner(exported_run / "onnx", variant="fp32", provider="cpu").compare(example, config)
    assert abs(here.greedy.log_prob - fp32.greedy.log_prob) > 1e-4, "premise: the two encoders score differently"
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CAPTIONER_PORT": str(port),
           "CAPTIONER_HOST": "127.0.0.1"}
    process, url = wait_for_server([sys.executable, "app.py"], f"http://127.0.0.1:{port}/", cwd=space, env=env)
    server = Drained(process)
    try:
        # the README's call, less its decoder variant
        result = ask_caption(url, example, *api_settings(config), variant="int8")
    finally:
        server.stop()
    assert result["variant"] == "int8" and result["provider"] == auto_provider()
    assert result["decoder_variant"] == decoder, "without one, the API takes the decoder the Space ships"
    assert result["greedy"]["caption"] == here.greedy.caption
    assert result["greedy"]["log_prob"] == pytest.approx(here.greedy.log_prob, abs=1e-5), "the int8 encoder's score"
    assert [c["caption"] for c in result["beam"]["candidates"]] == [c.caption for c in here.beam.candidates]


@pytest.fixture(scope="module")
def fp32_space(exported_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("space-fp32") / "space"
    result = run_module("export.space", "--run", str(exported_run), "--out", str(out), "--variant", "fp32",
                        "--decoder-variant", "fp32", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_fp32_space_ships_the_fp32_encoder_and_decoder_alone(fp32_space, exported_run):
    from demo.captioner import Captioner
    from demo.manifest import verify_bundle

    shipped = {p.name for p in (fp32_space / "onnx").iterdir()}
    bundle = verify_bundle(exported_run / "onnx")
    assert shipped == {"encoder.onnx", "encoder.onnx.data", "image_projection.onnx", "decoder_step_topk.onnx",
                       "vocab.json", "README.md", "manifest.json"}
    manifest = verify_bundle(fp32_space / "onnx")
    assert set(manifest["files"]) == shipped - {"manifest.json"}
    assert set(manifest["models"]) == {"encoder", "image_projection", "decoder_step_topk"}
    assert manifest["models"]["encoder"] == bundle["models"]["encoder"]
    readme = (fp32_space / "README.md").read_text()
    assert "(fp32 encoder, fp32 decoder" in readme and '"fp32", "fp32", api_name="/caption"' in readme
    example = sorted((fp32_space / "demo" / "examples").glob("*.png"))[0]
    space = Captioner(fp32_space / "onnx", provider="cpu")
    assert space.variants == ["fp32"]
    (got,) = space.caption([example], num_beams=3)
    (want,) = Captioner(exported_run / "onnx", provider="cpu").caption([example], num_beams=3)
    assert (got.caption, got.log_prob) == (want.caption, pytest.approx(want.log_prob, abs=1e-5))


def test_int8_decoder_space_ships_the_int8_step_alone(int8_decoder_run, tmp_path):
    from demo.captioner import Captioner
    from demo.manifest import verify_bundle

    out = tmp_path / "space"
    result = run_module("export.space", "--run", str(int8_decoder_run), "--out", str(out), "--variant", "fp32",
                        "--decoder-variant", "int8", timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    shipped = {p.name for p in (out / "onnx").iterdir()}
    assert {name for name in shipped if name.startswith("decoder")} == {"decoder_step_topk.int8.onnx"}
    manifest = verify_bundle(out / "onnx")
    assert set(manifest["files"]) == shipped - {"manifest.json"}
    assert '"fp32", "int8", api_name="/caption"' in (out / "README.md").read_text()
    example = sorted((out / "demo" / "examples").glob("*.png"))[0]
    (got,) = Captioner(out / "onnx", provider="cpu", decoder_variant="int8").caption([example], num_beams=3)
    (want,) = Captioner(int8_decoder_run / "onnx", provider="cpu", decoder_variant="int8").caption([example],
                                                                                                   num_beams=3)
    assert (got.caption, got.log_prob) == (want.caption, pytest.approx(want.log_prob, abs=1e-5))


@pytest.mark.parametrize("option, missing", [("--variant", "encoder.int8.onnx: export with --quantize int8"),
                                             ("--decoder-variant", "decoder_step_topk.int8.onnx: ")])
def test_an_int8_space_from_a_bundle_without_it_is_refused(fp32_space, tmp_path, option, missing):
    """The fp32 Space's onnx/ is a bundle without int8 files: a run folder for this purpose."""
    out = tmp_path / "space"
    result = run_module("export.space", "--run", str(fp32_space), "--out", str(out), option, "int8", timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.startswith(f"error: {fp32_space / 'onnx'} has no {missing}"), result.stderr
    assert result.stderr.strip().endswith(f", or use {option} fp32") and "Traceback" not in result.stderr
    assert not out.exists(), "nothing written"


def test_gpu_space_ships_the_cuda_runtime(exported_run, tmp_path):
    from tests.helpers import REPO

    result = run_module("export.space", "--run", str(exported_run), "--out", str(tmp_path / "gpu"), "--gpu")
    assert result.returncode == 0, result.stderr[-2000:]
    shipped = (tmp_path / "gpu" / "requirements.txt").read_text()
    assert shipped == (REPO / "demo" / "requirements-gpu.txt").read_text() and "onnxruntime-gpu" in shipped
    assert "suggested_hardware:" in (tmp_path / "gpu" / "README.md").read_text().split("---")[1]
    assert not list((tmp_path / "gpu" / "demo").glob("requirements*.txt")), "one requirements file, at the top"


def test_space_into_a_non_empty_folder_is_refused(exported_run, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = run_module("export.space", "--run", str(exported_run), "--out", str(tmp_path))
    assert result.returncode == 2 and "not empty" in result.stderr and (tmp_path / "keep.txt").read_text() == "mine"

"""The TF-free runtime on a real exported bundle: same captions as Keras, clear errors, no TensorFlow.

Slow: uses the session's exported synthetic run (trained and exported once).
"""
import json
import subprocess
import sys

import pytest

from tests.helpers import (
    CUDA,
    REPO,
    assert_sessions_run_on,
    auto_provider,
    caption_differences,
    linked_copy,
    run_module,
    split_images,
)

pytestmark = pytest.mark.slow
@pytest.fixture(scope="module")
def keras_captions(exported_run, tmp_path_factory) -> dict:
    """Keras' caption of every test image: `evaluate` with every sample kept, into a copy (the build's own
    metrics.json keeps a few samples)."""
    run = linked_copy(exported_run, tmp_path_factory.mktemp("evaluated"), without=("onnx", "export_cache"))
    result = run_module("train", "evaluate", "--run", str(run), "--beam", "1", "3", "--samples", "1000")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    return {key: {s["image"]: s["caption"] for s in metrics[key]["samples"]} for key in ("greedy", "beam_3")}


def test_runtime_captions_equal_the_keras_evaluation(captioner, keras_captions, exported_run):
    """Identical, but for near-ties: which test images have one depends on the weights (and the CPU)."""
    captions = json.loads((exported_run / "captions.json").read_text())
    ids = [e["id"] for e in captions["images"] if e["split"] == "test"]
    images = split_images(exported_run)
    for key, beams in (("greedy", 1), ("beam_3", 3)):
        got = [r.caption for r in captioner.caption(images, num_beams=beams)]
        want = [keras_captions[key][i] for i in ids]
        print(f"\n{key}: {sum(a == b for a, b in zip(got, want))} of {len(ids)} identical")
        different = caption_differences(captioner, images, want, got, beams)
        assert not different, [(ids[i], got[i], want[i]) for i in different]


def test_result_carries_scores_n_best_and_timings(captioner, exported_run):
    (result,) = captioner.caption(split_images(exported_run, count=1), num_beams=4, num_return_sequences=3)
    assert result.caption == result.candidates[0].caption and len(result.candidates) == 3
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True) and result.log_prob < 0
    assert set(result.timings) == {"preprocess_ms_per_image", "encoder_ms_per_image", "decoder_ms_per_image"}
    assert all(v >= 0 for v in result.timings.values()) and result.timings["encoder_ms_per_image"] > 0
    assert captioner.provider == auto_provider()
    assert_sessions_run_on(captioner, captioner.provider)


def test_batch_of_images_equals_one_at_a_time(captioner, exported_run):
    """Equal but for near-ties: a batch of 4 and a batch of 1 take other kernel paths (last-bit differences)."""
    images = split_images(exported_run, count=4)
    together = [r.caption for r in captioner.caption(images, num_beams=3)]
    alone = [captioner.caption([image], num_beams=3)[0].caption for image in images]
    assert not caption_differences(captioner, images, together, alone, 3), (together, alone)


def test_int8_captioner_runs_the_int8_encoder(exported_run):
    """Its features are encoder.int8.onnx's (not fp32's, yet within the export's cosine gate), its captions the
    decoder's on those features."""
    import numpy as np
    import onnxruntime as ort

    from demo.captioner import Captioner
    from demo.preprocess import load_image

    bundle = exported_run / "onnx"
    images = split_images(exported_run, count=6)
    pixels = np.stack([load_image(image) for image in images])
    int8 = Captioner(bundle, variant="int8", provider="cpu")
    fp32 = Captioner(bundle, variant="fp32", provider="cpu")
    assert int8.variant == "int8" and int8.provider == "cpu"
    features, _ = int8.encode(pixels)
    fp32_features, _ = fp32.encode(pixels)
    plain = ort.InferenceSession(str(bundle / "encoder.int8.onnx"), providers=["CPUExecutionProvider"])
    int8_features = plain.run(["features"], {"pixels": pixels})[0]
    scale = float(np.sqrt(np.mean(fp32_features.astype(np.float64) ** 2)))
    np.testing.assert_allclose(features, int8_features, rtol=0, atol=1e-5 * scale)
    print(f"\nint8 vs fp32: max |diff| {np.abs(features - fp32_features).max() / scale:.3g} of the feature scale")
    assert np.abs(features - fp32_features).max() > 1e-3 * scale, "int8 features equal fp32's: not the int8 graph"
    cosine = (features * fp32_features).sum(1) / (np.linalg.norm(features, axis=1)
                                                 * np.linalg.norm(fp32_features, axis=1))
    gate = json.loads((bundle / "manifest.json").read_text())["parity"]["encoder_int8"]["bounds"]
    print(f"cosine mean {cosine.mean():.5f} min {cosine.min():.5f}; the export's gate {gate}")
    assert cosine.mean() >= gate["cosine_mean_at_least"], cosine
    got = [r.caption for r in int8.caption(images, num_beams=3)]
    want = [r.caption for r in fp32.caption_features(int8_features, fp32.options(num_beams=3), {})]
    assert got == want or not caption_differences(int8, images, want, got, 3), (got, want)


def test_cli_captions_good_images_and_names_the_bad_one(exported_run, tmp_path):
    good = split_images(exported_run, count=2)
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    result = run_module("demo", "caption", "--model", str(exported_run / "onnx"), str(good[0]), str(bad),
                        str(good[1]), "--num-beams", "3", "--json")
    assert result.returncode == 1
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    output = json.loads(result.stdout)
    assert [entry["image"] for entry in output["images"]] == [str(good[0]), str(good[1])]
    assert output["provider"] == auto_provider() and all(entry["caption"] for entry in output["images"])
    plain = run_module("demo", "caption", "--model", str(exported_run / "onnx"), str(good[0]))
    assert plain.returncode == 0 and plain.stdout.startswith(f"{good[0]}\t")


def test_cli_int8_decoder_reports_its_variant_and_its_captions(int8_decoder_run, exported_run):
    """The int8 decoder step (tests/conftest.py int8_decoder_run) behind `--decoder-variant int8`."""
    from demo.captioner import Captioner

    bundle, images = int8_decoder_run / "onnx", split_images(exported_run, count=2)
    result = run_module("demo", "caption", "--model", str(bundle), *map(str, images), "--num-beams", "3", "--json",
                        "--provider", "cpu", "--decoder-variant", "int8")
    assert result.returncode == 0, result.stderr[-2000:]
    output = json.loads(result.stdout)
    assert (output["variant"], output["decoder_variant"]) == ("fp32", "int8")
    int8 = Captioner(bundle, provider="cpu", decoder_variant="int8").caption(images, num_beams=3)
    assert [entry["caption"] for entry in output["images"]] == [r.caption for r in int8] and int8[0].caption
    fp32 = Captioner(bundle, provider="cpu").caption(images, num_beams=3)
    assert [r.log_prob for r in int8] != [r.log_prob for r in fp32], "the int8 step's scores, not fp32's"


def test_auto_picks_cuda_where_it_exists(exported_run):
    """On a machine with onnxruntime-gpu and an NVIDIA driver: every session of `auto` on CUDA, the CPU's captions."""
    import ctypes

    import onnxruntime as ort

    from demo.captioner import Captioner

    if CUDA not in ort.get_available_providers():
        pytest.skip(f"no {CUDA} in this ONNX Runtime (the CPU build)")
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        pytest.skip("onnxruntime-gpu without an NVIDIA driver: tests/demo/test_gpu_wheel_without_gpu.py covers it")
    captioner = Captioner(exported_run / "onnx")
    assert captioner.provider == "cuda"
    assert_sessions_run_on(captioner, "cuda")
    cpu = Captioner(exported_run / "onnx", provider="cpu")
    images = split_images(exported_run, count=8)
    got = [r.caption for r in captioner.caption(images, num_beams=3)]
    want = [r.caption for r in cpu.caption(images, num_beams=3)]
    assert not caption_differences(cpu, images, want, got, 3), (got, want)


def test_cuda_provider_on_a_cpu_only_machine_is_a_clear_error(exported_run):
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu: tests/demo/test_gpu_wheel_without_gpu.py checks its refusal, without a driver")
    result = run_module("demo", "caption", "--model", str(exported_run / "onnx"), "--provider", "cuda",
                        str(split_images(exported_run, count=1)[0]))
    assert result.returncode == 2 and "onnxruntime-gpu" in result.stderr and "Traceback" not in result.stderr


NO_TF = """
import sys
from demo.__main__ import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx"))
print("HEAVY", heavy, "CODE", code)
"""


def test_runtime_and_cli_never_import_tensorflow(exported_run):
    image = split_images(exported_run, count=1)[0]
    result = subprocess.run([sys.executable, "-c", NO_TF, "caption", "--model", str(exported_run / "onnx"),
                             "--num-beams", "3", str(image)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY [] CODE 0" in result.stdout

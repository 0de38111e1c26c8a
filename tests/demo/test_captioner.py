"""The TF-free runtime on a real exported bundle: same captions as Keras, clear errors, no TensorFlow.

Slow: uses the session's exported synthetic run (trained and exported once).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, caption_differences, run_module

pytestmark = pytest.mark.slow


def sample_images(run: Path, count: int = 30) -> list[Path]:
    captions = json.loads((run / "captions.json").read_text())
    root = Path(captions["image_root"])
    return [root / e["id"] for e in captions["images"] if e["split"] == "test"][:count]


@pytest.fixture(scope="module")
def keras_captions(exported_run) -> dict:
    result = run_module("train", "evaluate", "--run", str(exported_run), "--beam", "1", "3", "--samples", "1000")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((exported_run / "metrics.json").read_text())
    return {key: {s["image"]: s["caption"] for s in metrics[key]["samples"]} for key in ("greedy", "beam_3")}


@pytest.fixture(scope="module")
def captioner(exported_run):
    from demo.captioner import Captioner

    return Captioner(exported_run / "onnx")


def test_runtime_captions_equal_the_keras_evaluation(captioner, keras_captions, exported_run):
    """Identical, but for near-ties: which test images have one depends on the weights (and the CPU)."""
    captions = json.loads((exported_run / "captions.json").read_text())
    root = Path(captions["image_root"])
    ids = [e["id"] for e in captions["images"] if e["split"] == "test"]
    images = [root / i for i in ids]
    for key, beams in (("greedy", 1), ("beam_3", 3)):
        got = [r.caption for r in captioner.caption(images, num_beams=beams)]
        want = [keras_captions[key][i] for i in ids]
        print(f"\n{key}: {sum(a == b for a, b in zip(got, want))} of {len(ids)} identical")
        different = caption_differences(captioner, images, want, got, beams)
        assert not different, [(ids[i], got[i], want[i]) for i in different]


def test_result_carries_scores_n_best_and_timings(captioner, exported_run):
    (result,) = captioner.caption(sample_images(exported_run, 1), num_beams=4, num_return_sequences=3)
    assert result.caption == result.candidates[0].caption and len(result.candidates) == 3
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True) and result.log_prob < 0
    assert set(result.timings) == {"preprocess_ms_per_image", "encoder_ms_per_image", "decoder_ms_per_image"}
    assert all(v >= 0 for v in result.timings.values()) and result.timings["encoder_ms_per_image"] > 0
    assert captioner.provider == "cpu"  # no CUDA provider on this machine: auto falls back


def test_batch_of_images_equals_one_at_a_time(captioner, exported_run):
    """Equal but for near-ties: a batch of 4 and a batch of 1 take other kernel paths (last-bit differences)."""
    images = sample_images(exported_run, 4)
    together = [r.caption for r in captioner.caption(images, num_beams=3)]
    alone = [captioner.caption([image], num_beams=3)[0].caption for image in images]
    assert not caption_differences(captioner, images, together, alone, 3), (together, alone)


def test_int8_variant_captions(exported_run):
    from demo.captioner import Captioner

    int8 = Captioner(exported_run / "onnx", variant="int8", provider="cpu")
    (result,) = int8.caption(sample_images(exported_run, 1))
    assert int8.variant == "int8" and result.caption


def test_cli_captions_good_images_and_names_the_bad_one(exported_run, tmp_path):
    good = sample_images(exported_run, 2)
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    result = run_module("demo", "caption", "--model", str(exported_run / "onnx"), str(good[0]), str(bad),
                        str(good[1]), "--num-beams", "3", "--json")
    assert result.returncode == 1
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    output = json.loads(result.stdout)
    assert [entry["image"] for entry in output["images"]] == [str(good[0]), str(good[1])]
    assert output["provider"] == "cpu" and all(entry["caption"] for entry in output["images"])
    plain = run_module("demo", "caption", "--model", str(exported_run / "onnx"), str(good[0]))
    assert plain.returncode == 0 and plain.stdout.startswith(f"{good[0]}\t")


def test_cuda_provider_on_a_cpu_only_machine_is_a_clear_error(exported_run):
    result = run_module("demo", "caption", "--model", str(exported_run / "onnx"), "--provider", "cuda",
                        str(sample_images(exported_run, 1)[0]))
    assert result.returncode == 2 and "onnxruntime-gpu" in result.stderr and "Traceback" not in result.stderr


NO_TF = """
import sys
from demo.__main__ import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx"))
print("HEAVY", heavy, "CODE", code)
"""


def test_runtime_and_cli_never_import_tensorflow(exported_run):
    image = sample_images(exported_run, 1)[0]
    result = subprocess.run([sys.executable, "-c", NO_TF, "caption", "--model", str(exported_run / "onnx"),
                             "--num-beams", "3", str(image)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY [] CODE 0" in result.stdout


def bundle_copy(source: Path, target: Path) -> Path:
    """A bundle copy whose big encoder files are symlinks (they are not modified by these tests)."""
    target.mkdir()
    for path in source.iterdir():
        if path.name.startswith("encoder"):
            os.symlink(path, target / path.name)
        else:
            shutil.copy(path, target / path.name)
    return target


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def wrong_vocab(path: Path) -> None:
    vocab = json.loads(path.read_text())
    vocab["tokens"] = vocab["tokens"][:-1]
    vocab["size"] = len(vocab["tokens"])
    path.write_text(json.dumps(vocab))


def edit_manifest_hash(path: Path) -> None:
    manifest = json.loads(path.read_text())
    manifest["files"]["decoder_step.onnx"]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, target, message", [
    (truncate, "decoder_step.onnx", "decoder_step.onnx has"),
    (wrong_vocab, "vocab.json", "vocab.json"),
    (edit_manifest_hash, "manifest.json", "decoder_step.onnx does not match its sha256"),
    (Path.unlink, "decoder_step.onnx", "decoder_step.onnx is listed in the manifest but missing"),
    (Path.unlink, "manifest.json", "manifest.json"),
], ids=["truncated-onnx", "vocab-wrong-size", "hash-mismatch", "missing-file", "missing-manifest"])
def test_damaged_bundles_are_refused_naming_the_file(exported_run, tmp_path, damage, target, message):
    from demo.captioner import Captioner
    from demo.manifest import BundleError

    bundle = bundle_copy(exported_run / "onnx", tmp_path / "onnx")
    damage(bundle / target)
    with pytest.raises(BundleError, match=message) as info:
        Captioner(bundle)
    assert "export" in str(info.value)
    result = run_module("demo", "caption", "--model", str(bundle), str(sample_images(exported_run, 1)[0]))
    assert result.returncode == 2 and message.split()[0] in result.stderr and "Traceback" not in result.stderr

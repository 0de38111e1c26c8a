"""`python -m export.space --run RUN --out DIR`: a folder that is a complete Hugging Face Space.

DIR gets `app.py`, `requirements.txt` (the TF-free runtime only: `demo/requirements.txt`,
or with `--gpu` `demo/requirements-gpu.txt`, for a Space on GPU hardware), `README.md`
with the Space front matter, `.gitattributes` sending the ONNX files to Git
LFS, the runtime package `demo/` with its examples, and `onnx/`: the bundle,
by default with the int8 encoder alone (a quarter the size) when the run has
one. The bundle's manifest is rewritten to list exactly the files shipped.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from demo.artifacts import atomic_write_bytes, atomic_write_json
from demo.manifest import MANIFEST, verify_bundle

REPO = Path(__file__).resolve().parents[1]
DECODER_FILES = ("decoder_step.onnx", "image_projection.onnx", "decoder_step_image.onnx", "vocab.json")
APP = '''"""Hugging Face Space entry point: the VGG16 + LSTM captioner on ONNX Runtime (no TensorFlow)."""
import os
from pathlib import Path

os.environ.setdefault("CAPTIONER_MODEL", str(Path(__file__).resolve().parent / "onnx"))

from demo.serve import ServeConfig, launch  # noqa: E402

launch(ServeConfig.from_env())
'''
README = """---
title: VGG16 LSTM Captioner
emoji: 🖼️
colorFrom: blue
colorTo: indigo
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
pinned: false{hardware}
---

# VGG16 + LSTM image captioner

Greedy and beam search side by side on ONNX Runtime ({encoder} encoder, {device}). The model came from the run
`{run}`; its bundle manifest (`onnx/manifest.json`) records the parity checks made at export.

API: `gradio_client.Client(URL).predict(handle_file("photo.jpg"), 3, 20, 0.5, 3, "{variant}", api_name="/caption")`.
"""


def build_space(run: Path, out: Path, variant: str = "auto", gpu: bool = False) -> Path:
    bundle = run / "onnx"
    manifest = verify_bundle(bundle)
    if variant == "auto":
        variant = "int8" if "encoder.int8.onnx" in manifest["files"] else "fp32"
    encoder = {"int8": "encoder.int8.onnx", "fp32": "encoder.onnx"}[variant]
    if encoder not in manifest["files"]:
        raise FileNotFoundError(f"{bundle} has no {encoder}: export with --quantize int8, or use --variant fp32")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new folder")
    shipped = [encoder, *(name for name in DECODER_FILES if name in manifest["files"])]
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    for name in shipped:
        shutil.copyfile(bundle / name, out / "onnx" / name)
    kept_models = {k: v for k, v in manifest["models"].items() if v["file"] in shipped}
    atomic_write_json(out / "onnx" / MANIFEST, manifest | {"files": {n: manifest["files"][n] for n in shipped},
                                                          "models": kept_models})
    shutil.copytree(REPO / "demo", out / "demo", ignore=shutil.ignore_patterns("__pycache__", "requirements*.txt"))
    shutil.copyfile(REPO / "demo" / ("requirements-gpu.txt" if gpu else "requirements.txt"), out / "requirements.txt")
    atomic_write_bytes(out / "app.py", APP.encode("utf-8"))
    atomic_write_bytes(out / ".gitattributes", b"*.onnx filter=lfs diff=lfs merge=lfs -text\n")
    import gradio

    readme = README.format(gradio_version=gradio.__version__, encoder=variant, run=run.resolve().name,
                           variant=variant, hardware="\nsuggested_hardware: t4-small" if gpu else "",
                           device="CUDA when the Space has a GPU, else the CPU" if gpu else "CPU")
    atomic_write_bytes(out / "README.md", readme.encode("utf-8"))
    verify_bundle(out / "onnx")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.space", description=__doc__.splitlines()[0],
                                     epilog="then: cd DIR && git init && git lfs install && git add . && git commit "
                                            "-m space && git push https://huggingface.co/spaces/USER/NAME main")
    parser.add_argument("--run", type=Path, default=Path("models/default"), help="run folder with an onnx/ bundle")
    parser.add_argument("--out", type=Path, required=True, help="new, empty folder for the Space")
    parser.add_argument("--variant", choices=("auto", "int8", "fp32"), default="auto",
                        help="encoder to ship (auto: int8 when the bundle has it)")
    parser.add_argument("--gpu", action="store_true", help="for GPU hardware: onnxruntime-gpu with its CUDA and "
                        "cuDNN packages (demo/requirements-gpu.txt); without a GPU it still captions, on the CPU")
    args = parser.parse_args(argv)
    from demo.manifest import BundleError

    try:
        out = build_space(args.run, args.out, args.variant, args.gpu)
    except (BundleError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    print(f"space: {out} ({size:.0f} MB); push it to a Hugging Face Space (Gradio SDK) with Git LFS")
    return 0


if __name__ == "__main__":
    sys.exit(main())

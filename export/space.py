"""`python -m export.space --run RUN --out DIR`: a folder that is a complete Hugging Face Space.

DIR gets `app.py`, `requirements.txt` (the TF-free runtime only: `demo/requirements.txt`,
or with `--gpu` `demo/requirements-gpu.txt`, for a Space on GPU hardware), `README.md`
with the Space front matter, `.gitattributes` sending the ONNX files to Git
LFS, the runtime package `demo/` with its examples, and `onnx/`: what the
runtime opens for one encoder variant and one decoder variant (the image
projection, the top-k decoder step and the vocabulary; not `decoder_step.onnx`,
the export's reference), by default the smallest encoder and decoder the
bundle ships (`demo.bundle_layout.smallest`: int8 where it has them), plus the model card
(`onnx/README.md`, so the page can show it). The bundle's manifest is rewritten
to list exactly the files shipped.

The Space's page (`README.md`) is the front matter, then the bundle's model card
with its "How to run it" section replaced by this Space's own (what it runs, the
API call). A bundle exported before cards existed still makes a Space: the page
then says it has no card and how to get one.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import gradio

from demo import bundle_layout as layout
from demo.artifacts import atomic_write_bytes, atomic_write_json
from demo.bundle_layout import DEFAULT_RUN
from demo.errors import EXIT_CODES_HELP, EXIT_OK, BadInput, run_command
from demo.logs import configure_cli_logging
from demo.manifest import REBUILD, BundleError, verify_bundle
from demo.model_card import read_model_card
from export.model_card import HOW_TO_RUN, api_call
from train.run_files import RunFiles

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("export.space")  # not __name__: run as `python -m export.space` it is "__main__"
FRONT_MATTER = """---
title: VGG16 LSTM Captioner
emoji: 🖼️
colorFrom: blue
colorTo: indigo
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
pinned: false{hardware}
---

"""
SPACE_SECTION = """## This Space

Greedy and beam search side by side on ONNX Runtime ({variant} encoder, {decoder_variant} decoder, {device}; \
{summaries}). \
The model came from the run
`{run}`; its bundle manifest (`onnx/manifest.json`) records the parity checks made at export{card}.

API: `{api}`: the last two are the encoder and decoder variants, the only ones this Space ships. Plain HTTP:
`curl -F image=@photo.jpg https://USER-NAME.hf.space/v1/captions` (the options as further fields, `/v1/docs`
lists them; `/healthz` says when the model is loaded).

Keys: a public Space is open to anyone. To require a key, add a secret named `CAPTIONER_API_KEYS` (one key, or
several comma-separated) in the Space's Settings, under "Variables and secrets", and restart it: the page then
asks for a login (any user name, a key as the password) and the HTTP API for `Authorization: Bearer KEY`.
"""
NO_CARD = """# VGG16 + LSTM image captioner

This bundle has no model card (`onnx/README.md`): it was exported before cards were written. Export the run again \
(`python -m export --run RUN`) and rebuild the Space to get one.

"""


def build_space(run: Path, out: Path, variant: str = "auto", gpu: bool = False,
                decoder_variant: str = "auto") -> Path:
    bundle = RunFiles(run).bundle
    manifest = verify_bundle(bundle)
    variant = layout.smallest(layout.variants_in(manifest["files"])) if variant == "auto" else variant
    if decoder_variant == "auto":
        decoder_variant = layout.smallest(layout.decoder_variants_in(manifest["files"]))
    encoder, decoder = layout.encoder_file(variant), layout.decoder_file(decoder_variant)
    default = layout.DEFAULT_VARIANT
    if encoder not in manifest["files"]:
        raise BundleError(f"{bundle} has no {encoder}: {layout.get_variant(variant).hint()}, or use --variant "
                          f"{default}")
    row = layout.get_variant(decoder_variant)
    if row.quantized and decoder not in manifest["files"]:
        why = manifest.get("parity", {}).get(row.parity_key("decoder"), {}).get("why")
        raise BundleError(f"{bundle} has no {decoder}: "
                          + (f"the export left it out ({why})" if why else row.hint())
                          + f", or use --decoder-variant {default}")
    shipped = [n for n in layout.runtime_files(variant, decoder_variant)
               if n in manifest["files"] or not layout.optional_file(n)]  # older encoders have no data file
    shipped += [layout.MODEL_CARD] if layout.MODEL_CARD in manifest["files"] else []  # older bundles have none
    missing = [name for name in shipped if name not in manifest["files"]]
    if missing:  # a bundle from --decoder-only, or hand-made
        raise BundleError(f"{bundle} lacks {', '.join(missing)}, which the runtime needs; {REBUILD}")
    if out.exists() and any(out.iterdir()):
        raise BadInput(f"{out} is not empty; choose a new folder")
    (out / layout.BUNDLE_DIR).mkdir(parents=True, exist_ok=True)
    for name in shipped:
        shutil.copyfile(bundle / name, out / layout.BUNDLE_DIR / name)
    kept_models = {k: v for k, v in manifest["models"].items() if v["file"] in shipped}
    atomic_write_json(out / layout.BUNDLE_DIR / layout.MANIFEST,
                      manifest | {"files": {n: manifest["files"][n] for n in shipped}, "models": kept_models})
    shutil.copytree(REPO / "demo", out / "demo", ignore=shutil.ignore_patterns("__pycache__", "requirements*.txt"))
    shutil.copyfile(REPO / "demo" / ("requirements-gpu.txt" if gpu else "requirements.txt"), out / "requirements.txt")
    shutil.copyfile(REPO / "demo" / "app.py", out / "app.py")  # the one entry point: it finds onnx/ beside itself
    atomic_write_bytes(out / ".gitattributes", b"*.onnx filter=lfs diff=lfs merge=lfs -text\n"
                                               b"*.onnx.data filter=lfs diff=lfs merge=lfs -text\n")
    atomic_write_bytes(out / "README.md", space_readme(out / layout.BUNDLE_DIR, run, variant, decoder_variant,
                                                      gpu).encode("utf-8"))
    verify_bundle(out / layout.BUNDLE_DIR)
    return out


def space_readme(bundle: Path, run: Path, variant: str, decoder_variant: str, gpu: bool) -> str:
    """Front matter, then the model card with this Space's section for its "How to run it" (or, without a card,
    a title, the note that there is none, and the section)."""
    front = FRONT_MATTER.format(gradio_version=gradio.__version__,
                                hardware="\nsuggested_hardware: t4-small" if gpu else "")
    card = read_model_card(bundle)
    section = SPACE_SECTION.format(variant=variant, decoder_variant=decoder_variant, run=run.resolve().name,
                                   summaries="; ".join(f"{name}: {layout.get_variant(name).summary}"
                                                       for name in dict.fromkeys((variant, decoder_variant))),
                                   device="CUDA when the Space has a GPU, else the CPU" if gpu else "CPU",
                                   card=", and `onnx/README.md` is this card" if card else "",
                                   api=api_call(variant, decoder_variant))
    return front + (replace_section(card.text, HOW_TO_RUN, section) if card else NO_CARD + section)


def replace_section(text: str, heading: str, section: str) -> str:
    """`text` with its `heading` section (up to the next `## ` heading) replaced by `section`; appended if absent."""
    lines = text.rstrip("\n").split("\n")
    if heading not in lines:
        return "\n".join(lines) + "\n\n" + section
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = lines[end:]
    return "\n".join(lines[:start] + section.rstrip("\n").split("\n") + ([""] + tail if tail else [])) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.space", description=__doc__.splitlines()[0],
                                     epilog="then: cd DIR && git init && git lfs install && git add . && git commit "
                                            "-m space && git push https://huggingface.co/spaces/USER/NAME main. "
                                            + EXIT_CODES_HELP)
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="run folder with an onnx/ bundle")
    parser.add_argument("--out", type=Path, required=True, help="new, empty folder for the Space")
    parser.add_argument("--variant", choices=("auto", *layout.VARIANTS), default="auto",
                        help="encoder to ship (auto: the smallest the bundle has)")
    parser.add_argument("--decoder-variant", choices=("auto", *layout.DECODER_VARIANTS), default="auto",
                        help="decoder step to ship (auto: the smallest the bundle has; a quantized one is there "
                             "only when it passed the export's gate)")
    parser.add_argument("--gpu", action="store_true", help="for GPU hardware: onnxruntime-gpu with its CUDA and "
                        "cuDNN packages (demo/requirements-gpu.txt); without a GPU it still captions, on the CPU")
    args = parser.parse_args(argv)
    configure_cli_logging()

    def space() -> int:
        out = build_space(args.run, args.out, args.variant, args.gpu, args.decoder_variant)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
        log.info("space: %s (%.0f MB); push it to a Hugging Face Space (Gradio SDK) with Git LFS", out, size)
        return EXIT_OK

    return run_command(space)


if __name__ == "__main__":
    sys.exit(main())

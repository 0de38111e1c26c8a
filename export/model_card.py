"""The model card: the bundle's `README.md`, saying what the model is, what it was trained on, how well it does,
what it is for and how to run it.

Why: a bundle travels (to a server, a Space) without its run folder, and a newcomer who uploads a photo to the
synthetic default must not wonder why it talks about shapes. The export writes the card into its work folder
before the manifest (`export.bundle.run_export`), so the manifest lists it and `verify_bundle` checks it like
any file; `python -m export.space` ships it in `onnx/` and on the Space's page; the app shows its summary
(`demo.model_card`).

Everything comes from records: the run's `config.json`, `prepare_report.json`, `metrics.json` and
`checkpoints/state.json`, and the manifest being written (the same dict, so the card's parity figures are the
manifest's). A missing or unreadable record (evaluate never run, a decoder-only export, an older run) becomes a
sentence saying so, never a crash. The text is deterministic: no time but the manifest's `created`, no
absolute paths, nothing linked outside the repository or the bundle.

The line after the title is the one-line summary, in the fixed form `demo.model_card` parses:
`> **Trained on** <data> **· describes** <what it can describe>.`
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from demo import bundle_layout as layout
from demo.artifacts import atomic_write_bytes, read_json
from demo.errors import CaptionerError
from demo.generation import COMPARED
from demo.model_card import DESCRIBES_MARK, SUMMARY_MARK
from demo.vocab import SPECIAL_TOKENS
from export.card_figures import export_section, results_section, searches, share
from train.calibrated_vgg16 import WEIGHTS_FILE as CALIBRATED_FILE
from train.dataset_registry import CARD_WORDS, CardWords
from train.datasets.synthetic import BACKGROUNDS, CAPTIONS_PER_IMAGE, COLOURS, SHAPES
from train.encoder import FEATURE_DIM
from train.run_files import RunFiles

TITLE = "# VGG16 + LSTM image captioner: model card"
HOW_TO_RUN = "## How to run it"  # the section a Space replaces with its own (`export.space`)
EXAMPLE_MAX_LENGTH = 20  # the API examples' max_length; any value from the page's slider range works


@dataclass(frozen=True)
class Records:
    """What the card is rendered from; a run record is None (or {}) when its file is missing or unreadable."""
    run_name: str
    manifest: dict
    config: dict
    report: dict | None
    metrics: dict | None
    state: dict | None

    @property
    def dataset_name(self) -> str | None:
        return (self.report or {}).get("dataset") or self.config.get("prepare", {}).get("dataset")

    @property
    def dataset(self) -> CardWords:
        """The registry's words for the recorded dataset; a run made before it or by hand gets plain words."""
        name = self.dataset_name
        return CARD_WORDS.get(name or "", CardWords(f"images of the `{name}` dataset" if name else
                                                    "images of an unrecorded dataset", "what its captions describe"))

    @property
    def weights(self) -> str | None:
        """The encoder's weight identity (`imagenet`, `random-he-normal:seed=N`, `file:...`); None: no encoder."""
        return self.manifest.get("encoder_weights")

    @property
    def random_encoder(self) -> bool:
        return str(self.weights).startswith("random-")

    @property
    def calibrated_encoder(self) -> bool:
        return str(self.weights).startswith(f"file:{CALIBRATED_FILE}:")

    @property
    def decoder_only(self) -> bool:
        return self.weights is None and "encoder" not in (self.manifest.get("models") or {})


def write_model_card(files: RunFiles, manifest: dict, out: Path) -> Path:
    """Write the card for this run and this (about to be written) manifest to `out`, atomically."""
    atomic_write_bytes(out, render_model_card(files, manifest).encode("utf-8"))
    return out


def render_model_card(files: RunFiles, manifest: dict) -> str:
    records = read_records(files, manifest)
    sections = [[TITLE, "", summary_line(records), ""], _origin(records), _model(records), _data(records),
                results_section(records.metrics, records.run_name),
                export_section(manifest, records.decoder_only), _use(records), how_to_run(records)]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"


def read_records(files: RunFiles, manifest: dict) -> Records:
    return Records(run_name=files.root.resolve().name, manifest=manifest, config=_read(files.config) or {},
                   report=_read(files.prepare_report), metrics=_read(files.metrics), state=_read(files.train_state))


def _read(path: Path) -> dict | None:
    """A run record, or None when it is missing or damaged: the card then says what it lacks."""
    try:
        value = read_json(path, path.name)
    except CaptionerError:
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------- summary


def summary_line(r: Records) -> str:
    count = image_count(r.report)
    trained_on = f"{count:,} {r.dataset.noun}" if count else r.dataset.noun
    return f"> {SUMMARY_MARK} {trained_on} {DESCRIBES_MARK} {r.dataset.describes}{_caveat(r)}."


def image_count(report: dict | None) -> int | None:
    if not report:
        return None
    kept = report.get("images_kept")
    return kept if isinstance(kept, int) else (sum((report.get("splits") or {}).values()) or None)


def _caveat(r: Records) -> str:
    if r.decoder_only:
        return "; but this bundle has no encoder (a `--decoder-only` export), so it cannot caption images"
    if r.random_encoder:
        return (": it has seen only shapes, and its VGG16 is randomly initialised (no ImageNet weights)"
                if not r.dataset.photos else
                " — in principle: its VGG16 is randomly initialised (no ImageNet weights), so it cannot describe "
                "photos")
    if r.calibrated_encoder:
        return (": it has seen only shapes, and its VGG16 was calibrated on them (no ImageNet weights)"
                if not r.dataset.photos else
                ", with a VGG16 calibrated on its own photos instead of trained on ImageNet, so it describes them "
                "far less well than an ImageNet encoder would")
    return ": it has seen only shapes" if not r.dataset.photos else ""


def _origin(r: Records) -> list[str]:
    created = r.manifest.get("created")
    lines = [f"Written by `python -m export` from the run `{r.run_name}`"
             + (f" (exported {created})" if created else "") + ": the figures below come from the run's "
             "`config.json`, `prepare_report.json` and `metrics.json` and from this bundle's `manifest.json`, "
             "which also holds every file's sha256."]
    missing = [name for name, record in (("config.json", r.config), ("prepare_report.json", r.report),
                                         ("metrics.json", r.metrics)) if not record]
    if missing:
        lines.append(f"Not found in the run: {', '.join(f'`{m}`' for m in missing)}; the sections below say what "
                     "that leaves out.")
    return [" ".join(lines), ""]


# ---------------------------------------------------------------- model


def _model(r: Records) -> list[str]:
    fit, m = r.config.get("fit") or {}, r.manifest
    hidden, vocab = m.get("hidden_size", "?"), m.get("vocab_size", "?")
    embed = fit.get("embed_dim", "?")
    files = [model["file"] for model in (m.get("models") or {}).values() if "file" in model]
    return ["## Model", "",
            f"- **Encoder**: {_encoder(r)}.",
            f"- **Decoder** (merge architecture): image features → Dense({hidden}, ReLU); words → Embedding({embed}) "
            f"→ LSTM({hidden}); the image added to every step's LSTM output → Dense({hidden}, ReLU) → Dense({vocab}) "
            "logits. Greedy or beam search (GNMT length penalty) over a top-k step graph.",
            f"- **Vocabulary**: {vocab} tokens ({len(SPECIAL_TOKENS)} of them special: "
            f"{', '.join(f'`{t}`' for t in SPECIAL_TOKENS)}); captions up to {m.get('max_length', '?')} words.",
            f"- **Training**: {_training(fit, r.state)}",
            f"- **Bundle**: ONNX opset {m.get('opset', '?')}: {', '.join(f'`{f}`' for f in files) or 'no graphs'}; "
            f"images read by `{m.get('preprocess', '?')}`.", ""]


def _encoder(r: Records) -> str:
    if r.weights is None:
        return "none in this bundle: exported with `--decoder-only` (its features were not VGG16's)"
    top = ("the convolutional layers frozen, fc1 and fc2 fine-tuned with the captioner"
           if r.manifest.get("encoder_fine_tuned_top") else "frozen")
    return f"VGG16 to `fc2` ({FEATURE_DIM:,} features), {weights_phrase(r.weights)}; {top}"


def weights_phrase(weights: str) -> str:
    if weights == "imagenet":
        return "ImageNet weights"
    if weights.startswith("random-"):
        return f"randomly initialised (`{weights}`: seeded He-normal draws, no ImageNet training)"
    if weights.startswith(f"file:{CALIBRATED_FILE}:"):
        return ("calibrated on the run's own training images (`--vgg-weights calibrated`: each conv layer from "
                "the principal components of its input patches, fc1 a spatial pyramid of region averages, fc2 the "
                "identity; no ImageNet weights, no backpropagation)")
    if weights.startswith("file:"):
        return f"weights from the file `{weights.split(':')[1]}`"
    return f"weights `{weights}`"


def _training(fit: dict, state: dict | None) -> str:
    if not fit:
        return "not recorded (no `fit` section in `config.json`)."
    text = (f"up to {fit.get('epochs', '?')} epochs with early stopping on validation loss (patience "
            f"{fit.get('patience', '?')}), batch {fit.get('batch_size', '?')}, Adam at {fit.get('learning_rate', '?')} "
            f"(halved on plateaus), dropout {fit.get('dropout', '?')}, seed {fit.get('seed', '?')}")
    if fit.get("fine_tune_top"):
        text += f"; fc1 and fc2 trained at {fit.get('top_learning_rate', '?')}"
    if fit.get("init_from"):
        text += f"; started from the model `{Path(str(fit['init_from'])).name}`"
    if state and isinstance(state.get("epochs_done"), int):
        loss = state.get("best_val_loss")
        text += (f". Trained {state['epochs_done']} epochs" + (" (stopped early)" if state.get("stopped_early") else "")
                 + (f", best validation loss {loss:.4f}" if isinstance(loss, (int, float)) else ""))
    return text + "."


# ---------------------------------------------------------------- data


def _data(r: Records) -> list[str]:
    lines = ["## Training data and split", ""]
    if not r.report:
        name = r.dataset_name
        return lines + [f"No `prepare_report.json` in the run: the data{f' (`{name}`)' if name else ''}, its size and "
                        "split were not recorded.", ""]
    report = r.report
    lines.append(f"- **Dataset**: {_dataset_line(r)}")
    lines.append(f"- **Images**: {report.get('images_kept', 0):,} kept of {report.get('images_referenced', 0):,} "
                 f"referenced, with {report.get('captions_kept', 0):,} captions (of "
                 f"{report.get('captions_referenced', 0):,}).")
    problems = report.get("problems") or {}
    if problems:
        lines.append("- **Dropped while preparing**: " + ", ".join(
            f"{kind.replace('_', ' ')} ({(info or {}).get('count', '?')})" for kind, info in problems.items()) + ".")
    lines.append(f"- **Vocabulary**: {_vocabulary(report.get('vocabulary') or {})}")
    return lines + [""] + _splits(report, r.config.get("prepare") or {})


def _dataset_line(r: Records) -> str:
    name = r.dataset_name
    if name == "synthetic":
        return (f"`synthetic`, generated offline: one or two shapes ({', '.join(SHAPES)}) in {len(COLOURS)} colours "
                f"({', '.join(COLOURS)}) on a plain {_or(list(BACKGROUNDS))} background; {CAPTIONS_PER_IMAGE} "
                "template captions per image, each naming every shape's colour and shape, most also its size, "
                "position or the background.")
    sources = [Path(str(s)).name for s in r.report.get("source_files") or []]
    return f"`{name}`" + (f", read from {', '.join(f'`{s}`' for s in sources)}." if sources else ".")


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _vocabulary(v: dict) -> str:
    if not v:
        return "not recorded."
    count = v.get("min_count")
    times = "once" if count == 1 else f"{count if count is not None else '?'} times"
    text = (f"{v.get('size', '?')} tokens: the {v.get('words_kept', 0):,} words (of {v.get('words_total', 0):,}) seen "
            f"at least {times} in the training captions, plus the special tokens")
    if isinstance(v.get("unknown_rate"), (int, float)):
        text += f"; {v['unknown_rate']:.2%} of the training captions' words become `<unk>`"
    if isinstance(v.get("captions"), int):
        text += (f"; {v.get('captions_truncated', 0):,} of {v['captions']:,} training captions cut at "
                 f"{v.get('max_length', '?')} words")
    return text + "."


def _splits(report: dict, prepare: dict) -> list[str]:
    splits = report.get("splits") or {}
    if not splits:
        return ["The split was not recorded.", ""]
    lines = ["| split | images |", "| --- | --- |", *(f"| {s} | {n:,} |" for s, n in splits.items()), ""]
    assigned, total = sum((report.get("splits_assigned_here") or {}).values()), sum(splits.values())
    seed = prepare.get("seed", "?")
    if assigned == 0:
        lines.append("The split is the dataset's own; results below are on its test images, never trained on.")
    elif assigned >= total:
        lines.append(f"`python -m train prepare` drew the split at random (seed {seed}); results below are on the "
                     "test images, never trained on.")
    else:
        lines.append(f"{assigned:,} images the dataset gave no split were assigned by `python -m train prepare` "
                     f"(seed {seed}); the others keep the dataset's own.")
    return lines + [""]


# ---------------------------------------------------------------- use and limits


def _use(r: Records) -> list[str]:
    lines = ["## Intended use and limits", ""]
    lines += _synthetic_use(r) if not r.dataset.photos else _photo_use(r)
    lines.append(f"- **Input and output**: any image is read as RGB and squashed to 224×224 (its aspect ratio is "
                 f"not kept); captions are lower-case English without punctuation, at most "
                 f"{r.manifest.get('max_length', '?')} words, and only from the vocabulary above.")
    return lines + [""]


def _synthetic_use(r: Records) -> list[str]:
    lines = ["- **For**: trying the whole pipeline (data, training, ONNX export, serving) offline on a CPU in "
             "minutes, and as a baseline on the synthetic scenes.",
             "- **Not for photos**: it has seen only one or two flat shapes on a plain background, so every image, "
             "a photo of a dog included, gets a caption about shapes, colours and positions."]
    if r.random_encoder:
        lines.append(f"- **Random-init VGG16**: the encoder's weights are random (`{r.weights}`), so its features "
                     "carry colour and layout but no learned notion of form" + _scene_evidence(r.metrics) + ".")
    if r.calibrated_encoder:
        lines.append("- **Calibrated VGG16**: the encoder's weights were computed from the training scenes "
                     "(no ImageNet), so its features carry form, colour and layout"
                     + _scene_evidence(r.metrics, "on its test scenes its") + ".")
    lines.append("- **For photos**: train on Flickr8k or Flickr30K with ImageNet weights (the repository README's "
                 "\"Real data\" section) and export that run.")
    return lines


def _scene_evidence(metrics: dict | None, opening: str = "even on its own scenes its") -> str:
    greedy = searches(metrics).get("greedy") or {}
    scene = greedy.get("scene")
    if not isinstance(scene, dict) or "shape" not in scene:
        return ""
    return (f": {opening} greedy captions name the right shape for {share(scene['shape'])} of "
            f"the shapes and the right colour for {share(scene.get('colour'))} (test split)")


def _photo_use(r: Records) -> list[str]:
    vocab = r.manifest.get("vocab_size")
    words = vocab - len(SPECIAL_TOKENS) if isinstance(vocab, int) else "?"
    lines = ["- **For**: describing everyday photos in one short sentence, as a demonstration of a classic "
             "VGG16 + LSTM captioner and a baseline for better ones.",
             f"- **Limits**: it knows {words} words and never writes any other; it writes in the style of its "
             "training captions and repeats their biases (guessing gender, age or activity from appearance); it "
             "can be fluent and wrong.",
             "- **Not for**: decisions about people, unreviewed accessibility descriptions, or anything "
             "safety-related."]
    if r.random_encoder:
        lines.append(f"- **Random-init VGG16** (`{r.weights}`): its features carry no ImageNet training, so its "
                     "captions say little about the photo: extract features with `--vgg-weights imagenet` and "
                     "train again.")
    if r.calibrated_encoder:
        lines.append("- **Calibrated VGG16**: its encoder was fitted to the training photos without ImageNet, so it "
                     "sees colour, texture and layout better than objects: extract features with `--vgg-weights "
                     "imagenet` where the weights can be had, and train again.")
    return lines


# ---------------------------------------------------------------- how to run


def api_call(variant: str, decoder_variant: str) -> str:
    """The `/caption` call with the app's comparison defaults: the README's, the card's and the Space's example."""
    return (f'gradio_client.Client(URL).predict(handle_file("photo.jpg"), {COMPARED.num_beams}, '
            f"{EXAMPLE_MAX_LENGTH}, {COMPARED.length_penalty}, {COMPARED.num_return_sequences}, "
            f'"{variant}", "{decoder_variant}", api_name="/caption")')


def how_to_run(r: Records) -> list[str]:
    shipped = [model["file"] for model in (r.manifest.get("models") or {}).values() if "file" in model]
    encoders, decoders = layout.variants_in(shipped), layout.decoder_variants_in(shipped)
    lines = [HOW_TO_RUN, "",
             "From a checkout of the repository, with the TensorFlow-free runtime installed (`pip install -r "
             "demo/requirements.txt`), `BUNDLE` being the folder that holds this card (the run folder's `onnx/`):",
             "", "```bash", "python -m demo caption --model BUNDLE photo.jpg --num-beams 3",
             "python -m demo serve --model BUNDLE", "```", "",
             'In Python: `Captioner("BUNDLE").caption(["photo.jpg"], num_beams=3)` (`from demo.captioner import '
             "Captioner`)."]
    if not encoders:
        return lines + ["", "This bundle has no encoder, so neither command can caption an image with it."]
    call = api_call(layout.preferred(encoders), layout.preferred(decoders))
    return lines + ["", f"The served page's API (`serve` prints the URL): `{call}`: the last two are the encoder and "
                    f"decoder variants; this bundle has the encoder{'s' if len(encoders) > 1 else ''} "
                    f"{', '.join(encoders)} and the decoder step{'s' if len(decoders) > 1 else ''} "
                    f"{', '.join(decoders) or 'none'}."]


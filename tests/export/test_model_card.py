"""The model card (`export.model_card`, read back by `demo.model_card`) and its place in a Space.

Fast: the card is rendered from a run's JSON records and a manifest, written here in their formats (modelled on
a real synthetic run's), so no TensorFlow and no export; the Space tests build a Space from a bundle of
placeholder files whose manifest seals them. One slow test renders the card from the session's exported run.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from demo.artifacts import atomic_write_json
from demo.manifest import FORMAT, FORMAT_VERSION, file_record, verify_bundle
from demo.model_card import ModelCard, parse_summary, read_model_card
from export.model_card import HOW_TO_RUN, render_model_card, write_model_card
from train.run_files import RunFiles

SCENE = {"images": 150, "shapes_scored": 228, "shape": 0.4035, "colour": 0.7851, "size": 0.9252,
         "size_stated": 0.9386, "position": 0.9524, "position_stated": 0.5526, "background": 1.0,
         "background_named": 0.6133, "shapes_mentioned": 0.9912, "shape_count": 0.9867, "all_right": 0.22}


def _search(bleu: list[float], cider: float | None = 2.4627, scene: dict | None = SCENE) -> dict:
    block = {f"bleu_{n}": value for n, value in enumerate(bleu, 1)}
    if cider is not None:
        block |= {"cider": cider, "rouge_l": 0.7557, "meteor": 0.4397}
    block |= {"bleu_4_shuffled_references": 0.2115211, "images": 150, "split": "test", "length_penalty": 0.5,
              "seconds": 1.12, "mean_words": 11.15, "ended_by_end_share": 1.0, "max_length": 30,
              "diversity": {"distinct_captions": 145, "distinct_share": 0.9667,
                            "most_common_caption": "a grey background with a small green triangle to the left",
                            "most_common_share": 0.0133},
              "samples": []}
    return block | ({"scene": scene} if scene else {})


METRICS = {"greedy": _search([0.8714883, 0.7976883, 0.7105243, 0.6106216]),
           "beam_3": _search([0.8746321, 0.8023048, 0.7184536, 0.6216564])}
REPORT = {"dataset": "synthetic", "image_root": "/somewhere/synthetic", "source_files": ["/somewhere/captions.json"],
          "lines_read": 15000, "images_referenced": 3000, "images_kept": 3000, "captions_referenced": 15000,
          "captions_kept": 15000, "problems": {}, "splits": {"train": 2700, "val": 150, "test": 150},
          "splits_assigned_here": {"val": 150, "test": 150, "train": 2700},
          "vocabulary": {"size": 59, "min_count": 1, "max_length": 30, "words_total": 55, "words_kept": 55,
                         "tokens_seen": 147740, "tokens_unknown": 0, "captions": 13500, "captions_truncated": 0,
                         "unknown_rate": 0.0},
          "seconds": 6.66}
CONFIG = {"prepare": {"dataset": "synthetic", "num_images": 3000, "min_count": 1, "seed": 0},
          "features": {"vgg_weights": "none", "seed": 0},
          "fit": {"epochs": 15, "batch_size": 64, "learning_rate": 0.001, "embed_dim": 256, "hidden_dim": 256,
                  "dropout": 0.3, "patience": 4, "seed": 0, "fine_tune_top": False, "vocab_size": 59}}
STATE = {"epochs_done": 15, "best_val_loss": 0.5785653, "stopped_early": False}
PARITY = {
    "decoder": {"rows": 16, "max_abs_diff": {"log_probs": 3.81e-06, "h_out": 2.4e-07, "c_out": 2.4e-07},
                "tolerance": 1e-4},
    "decoder_topk": {"rows": 16, "top_k": 20, "max_abs_diff": {"top_log_probs_vs_whole_at_same_ids": 0.0}},
    "captions": {"images": 150, "near_tie_tolerance": 4e-4, "greedy_identical": 150, "greedy_near_ties": 0,
                 "beam_3_identical": 149, "beam_3_near_ties": 1, "topk_greedy_identical": 150,
                 "topk_greedy_near_ties": 0, "topk_beam_3_identical": 150, "topk_beam_3_near_ties": 0},
    "decoder_int8": {"evaluation_images": 150, "bytes": {"fp32": 2495719, "int8": 697548},
                     "greedy_identical_fraction": 0.7733333, "bleu_4": {"fp32": 0.6106216, "int8": 0.6160657},
                     "bleu_4_change": 0.0054441, "step_time_ratio": 0.7586691,
                     "gate": {"greedy_identical_at_least": 0.95, "bleu_4_change_at_most": 0.005},
                     "shipped": False, "why": "left out: greedy identical 77.3% (at least 95%)"},
    "encoder": {"images": 16, "max_abs_diff_relative_to_feature_scale": 8.24e-07, "feature_scale": 1055.6,
                "tolerance": 1e-4},
    "encoder_int8": {"calibration_images": 32, "evaluation_images": 150,
                     "bytes": {"fp32": 537035038, "int8": 134442203}, "cosine_mean": 0.9951505,
                     "cosine_min": 0.9878073, "greedy_identical_fraction": 0.4333333,
                     "bleu_4": {"fp32": 0.6106216, "int8": 0.5844959}, "bleu_4_change": -0.0261256,
                     "latency_ratio_batch_1": 0.519, "bounds": {"cosine_mean_at_least": 0.99},
                     "scene": {"fp32": SCENE, "int8": SCENE | {"shape": 0.3509}}},
}
MODELS = {"encoder": "encoder.onnx", "encoder_int8": "encoder.int8.onnx", "decoder_step": "decoder_step.onnx",
          "image_projection": "image_projection.onnx", "decoder_step_topk": "decoder_step_topk.onnx"}


def manifest(**changes) -> dict:
    """A bundle manifest as the export hands it to the card: everything but `files` (taken after the card)."""
    return {"format": FORMAT, "version": FORMAT_VERSION, "created": "2026-11-29T12:05:50Z",
            "source_run": "/somewhere/default", "opset": 17, "vocab_size": 59, "hidden_size": 256,
            "max_length": 30, "image_size": 224, "preprocess": "rgb224-exif-white-alpha-squash-bilinear-v1",
            "encoder_weights": "random-he-normal:seed=0", "top_k": 20,
            "models": {key: {"file": name, "inputs": [], "outputs": []} for key, name in MODELS.items()},
            "parity": PARITY, "encoder_fine_tuned_top": False} | changes


def make_run(root: Path, config: dict | None = CONFIG, report: dict | None = REPORT, metrics: dict | None = METRICS,
             state: dict | None = STATE) -> RunFiles:
    """A run folder holding the given records (None: that file is absent)."""
    files = RunFiles(root)
    for path, record in ((files.config, config), (files.prepare_report, report), (files.metrics, metrics),
                         (files.train_state, state)):
        if record is not None:
            atomic_write_json(path, record)
    return files


@pytest.fixture
def card(tmp_path) -> str:
    return render_model_card(make_run(tmp_path / "default"), manifest())


def test_the_card_names_data_split_vocabulary_and_every_score(card):
    assert card.startswith("# ") and card.splitlines()[2].startswith("> **Trained on** 3,000 synthetic scenes")
    assert "`synthetic`" in card and "circle, square, triangle, star, diamond" in card
    for split, count in (("train", "2,700"), ("val", "150"), ("test", "150")):
        assert f"| {split} | {count} |" in card
    assert "**Vocabulary**: 59 tokens" in card and "Dense(59) logits" in card and "LSTM(256)" in card
    greedy, beam = (line for line in card.splitlines() if line.startswith(("| greedy |", "| beam 3 |"))
                    and "0.8" in line)
    assert greedy.startswith("| greedy | 0.871 | 0.798 | 0.711 | 0.611 | 2.463 | 0.756 | 0.440 | 0.212 |")
    assert beam.startswith("| beam 3 | 0.875 | 0.802 | 0.718 | 0.622 |")
    assert "| greedy | 40.4% | 78.5% | 92.5% (stated 93.9%) | 95.2% (stated 55.3%) | 100.0% (named 61.3%) | 22.0% |" \
        in card, "the scene scores of a synthetic run"
    assert "Trained 15 epochs, best validation loss 0.5786" in card


def test_the_card_reports_parity_and_the_int8_changes(card):
    assert "largest difference 8.2e-07 of the feature scale" in card
    assert "log-probabilities within 3.8e-06" in card
    assert "`decoder_step.onnx` greedy 150/150, beam-3 149/150 (+1 near-ties)" in card
    assert ("`encoder.int8.onnx` (134 MB instead of 537 MB): feature cosine 0.9952 on average (min 0.9878" in card
            and "identical to fp32's on 43.3% of 150 images, BLEU-4 0.611 → 0.584 (-0.026)" in card)
    assert "shape word 40.4% → 35.1%" in card, "the int8 encoder's scene scores"
    assert ("`decoder_step_topk.int8.onnx`: left out of this bundle, having missed the export's gate (greedy "
            "captions identical on ≥ 95.0% of images and BLEU-4 moving by ≤ 0.005): greedy captions identical to "
            "fp32's on 77.3% of 150 images, BLEU-4 0.611 → 0.616 (+0.005)") in card


def test_a_random_init_encoder_is_said_to_be_unable_to_describe_photos(card):
    summary = card.splitlines()[2]
    assert "describes** shapes, their colours, sizes and positions — not photos" in summary
    assert "randomly initialised (no ImageNet weights)" in summary
    assert "**Random-init VGG16**" in card and "right shape for 40.4% of the shapes" in card
    assert "random-he-normal:seed=0" in card


@pytest.mark.parametrize("dataset, weights, says, not_says", [
    ("flickr30k", "imagenet", "Flickr30K photos **· describes** everyday scenes with people and animals, in the "
                              "style of Flickr30K's captions.", "cannot describe photos"),
    ("karpathy-flickr8k", "random-he-normal:seed=3", "Flickr8k photos **· describes** everyday scenes",
     "not photos"),
    ("flickr30k", "file:vgg16_calibrated.h5:sha256=0a1b", "with a VGG16 calibrated on its own photos instead of "
                                                          "trained on ImageNet", "cannot describe photos"),
])
def test_photo_datasets_are_summarised_as_such(tmp_path, dataset, weights, says, not_says):
    report = REPORT | {"dataset": dataset, "images_kept": 31783, "source_files": ["/data/results.csv"],
                       "splits_assigned_here": {}}
    metrics = {key: {k: v for k, v in block.items() if k != "scene"} for key, block in METRICS.items()}
    int8 = {k: v for k, v in PARITY["encoder_int8"].items() if k != "scene"}
    text = render_model_card(make_run(tmp_path / "run", report=report, metrics=metrics),
                             manifest(encoder_weights=weights, parity=PARITY | {"encoder_int8": int8}))
    summary = parse_summary(text)
    assert summary.startswith("**Trained on** 31,783 ") and says in summary and not_says not in summary
    assert ("so it cannot describe photos" in summary) is weights.startswith("random-")
    assert "The split is the dataset's own" in text and "`results.csv`" in text and "/data" not in text
    assert "shape word" not in text, "no scene scores outside the synthetic scenes"


def test_without_metrics_the_card_says_evaluation_was_not_run(tmp_path):
    text = render_model_card(make_run(tmp_path / "run", metrics=None), manifest())
    assert "Evaluation was not run for this model" in text and "python -m train evaluate --run run" in text
    assert "BLEU-1" not in text and "Not found in the run: `metrics.json`" in text
    assert parse_summary(text).startswith("**Trained on** 3,000 synthetic scenes")


def test_no_records_and_a_decoder_only_bundle_still_make_a_card(tmp_path):
    """An old run without reports, exported decoder-only (no encoder, no int8, no encoder parity)."""
    bare = manifest(encoder_weights=None, models={"decoder_step": {"file": "decoder_step.onnx"}},
                    parity={"decoder": PARITY["decoder"]})
    del bare["created"]
    text = render_model_card(make_run(tmp_path / "run", config=None, report=None, metrics=None, state=None), bare)
    assert parse_summary(text) == ("**Trained on** images of an unrecorded dataset **· describes** what its captions "
                                   "describe; but this bundle has no encoder (a `--decoder-only` export), so it "
                                   "cannot caption images.")
    assert "No `prepare_report.json` in the run" in text and "Evaluation was not run" in text
    assert "No int8 variants" in text and "no encoder, so neither command can caption" in text
    damaged = make_run(tmp_path / "damaged", metrics=None)
    damaged.metrics.write_text("{not json")
    assert "Evaluation was not run" in render_model_card(damaged, manifest())


def test_the_card_is_deterministic_and_names_no_absolute_path(tmp_path):
    files = make_run(tmp_path / "default")
    first, second = (render_model_card(files, manifest()) for _ in range(2))
    assert first == second and str(tmp_path) not in first and "/somewhere" not in first
    assert "2026-11-29T12:05:50Z" in first, "the manifest's time, the only one"
    assert "](http" not in first, "no links outside the repository or the bundle"


def test_read_model_card_gives_the_summary_and_none_without_a_card(tmp_path):
    bundle = tmp_path / "onnx"
    assert read_model_card(tmp_path) is None, "a bundle exported before cards"
    write_model_card(make_run(tmp_path), manifest(), bundle / "README.md")
    card = read_model_card(bundle)
    assert isinstance(card, ModelCard) and card.path == bundle / "README.md"
    assert card.text == (bundle / "README.md").read_text()
    assert card.summary.startswith("**Trained on** 3,000 synthetic scenes (coloured shapes on plain backgrounds) "
                                   "**· describes** shapes")
    assert card.plain_summary.startswith("Trained on 3,000 synthetic scenes") and "**" not in card.plain_summary
    assert parse_summary("# title\n\nno quote\n") is None


def test_the_page_says_in_one_line_what_the_model_was_trained_on_or_how_to_get_a_card(tmp_path):
    from demo.web.page import card_line

    write_model_card(make_run(tmp_path), manifest(), tmp_path / "onnx" / "README.md")
    line = card_line(read_model_card(tmp_path / "onnx"))
    assert line.startswith("**This model:** **Trained on** 3,000 synthetic scenes") and "not photos" in line
    assert "(#model-card)" in line, "links to the card"
    assert "re-export" in card_line(None)


# ---------------------------------------------------------------- the Space


def placeholder_bundle(run: Path, card: bool) -> Path:
    """RUN/onnx with placeholder files for what a Space ships, sealed by a manifest (and the card, if asked)."""
    bundle = run / "onnx"
    bundle.mkdir(parents=True)
    for name in ("encoder.onnx", "encoder.int8.onnx", "image_projection.onnx", "decoder_step_topk.onnx",
                 "decoder_step.onnx", "vocab.json"):
        (bundle / name).write_bytes(name.encode())
    sealed = manifest()
    if card:
        write_model_card(make_run(run), sealed, bundle / "README.md")
    sealed["files"] = {p.name: file_record(p) for p in sorted(bundle.iterdir())}
    atomic_write_json(bundle / "manifest.json", sealed)
    return bundle


def test_the_space_page_is_front_matter_then_the_card_and_ships_the_card(tmp_path):
    from export.space import build_space

    bundle = placeholder_bundle(tmp_path / "run", card=True)
    space = build_space(tmp_path / "run", tmp_path / "space")
    readme = (space / "README.md").read_text()
    _, front, body = readme.split("---\n", 2)
    assert "sdk: gradio" in front and "app_file: app.py" in front
    card = (bundle / "README.md").read_text()
    assert body.lstrip().startswith(card.split(HOW_TO_RUN)[0].rstrip()), "the card, as written, up to its how-to"
    assert HOW_TO_RUN not in body and "## This Space" in body and "`onnx/README.md` is this card" in body
    assert '"int8", "fp32", api_name="/caption")`: the last two are the encoder and decoder variants' in body
    assert parse_summary(readme) == parse_summary(card), "the page's one line, from the card"
    assert (space / "onnx" / "README.md").read_bytes() == (bundle / "README.md").read_bytes()
    shipped = verify_bundle(space / "onnx")
    assert "README.md" in shipped["files"] and shipped["files"]["README.md"] == file_record(bundle / "README.md")
    assert read_model_card(space / "onnx").summary == parse_summary(card)


def test_a_bundle_without_a_card_still_makes_a_space_that_says_so(tmp_path):
    from export.space import build_space

    placeholder_bundle(tmp_path / "run", card=False)
    space = build_space(tmp_path / "run", tmp_path / "space", variant="fp32")
    readme = (space / "README.md").read_text()
    assert readme.split("---\n", 2)[1].count("sdk: gradio") == 1
    assert "# VGG16 + LSTM image captioner" in readme and "This bundle has no model card" in readme
    assert "python -m export --run RUN" in readme and '"fp32", "fp32", api_name="/caption"' in readme
    assert not (space / "onnx" / "README.md").exists() and "README.md" not in verify_bundle(space / "onnx")["files"]


# ---------------------------------------------------------------- a real run's records


@pytest.mark.slow
def test_the_card_of_the_exported_run_carries_its_own_figures(exported_run, tmp_path):
    """Rendered from copies of the session run's records (its bundle may predate cards): every BLEU of its
    metrics.json, its vocabulary size and splits, its int8 figures."""
    run = tmp_path / "run"
    for name in ("config.json", "prepare_report.json", "metrics.json", "checkpoints/state.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(exported_run / name, run / name)
    sealed = json.loads((exported_run / "onnx" / "manifest.json").read_text())
    text = render_model_card(RunFiles(run), sealed)
    metrics = json.loads((run / "metrics.json").read_text())
    for key, label in (("greedy", "greedy"), ("beam_3", "beam 3")):
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} | 0."))
        assert row.startswith(f"| {label} | " + " | ".join(f"{metrics[key][f'bleu_{n}']:.3f}" for n in range(1, 5)))
    report = json.loads((run / "prepare_report.json").read_text())
    assert parse_summary(text).startswith(f"**Trained on** {report['images_kept']:,} synthetic scenes")
    assert all(f"| {split} | {count:,} |" in text for split, count in report["splits"].items())
    assert f"**Vocabulary**: {sealed['vocab_size']} tokens" in text
    int8 = sealed["parity"]["encoder_int8"]
    assert f"feature cosine {int8['cosine_mean']:.4f}" in text and f"{int8['greedy_identical_fraction']:.1%}" in text
    assert "its VGG16 was calibrated on them (no ImageNet weights)" in parse_summary(text)  # the offline build
    assert "calibrated on the run's own training images (`--vgg-weights calibrated`" in text

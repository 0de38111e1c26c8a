"""`--dataset folder`: a user's own images with a captions.csv or captions.jsonl, prepared like any dataset, the
broken rows, images and lines counted in the report instead of stopping the run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures_datasets import write_jpeg, write_lines
from train.config import PrepareConfig
from train.prepare import run_prepare


def prepared(data: Path, run: Path, **options) -> tuple[dict, dict]:
    run_prepare(PrepareConfig(run=run, dataset="folder", data_dir=data, min_count=1, **options))
    return (json.loads((run / "prepare_report.json").read_text()), json.loads((run / "splits.json").read_text()))


def test_a_captions_csv_with_broken_rows_images_and_lines(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    for i in range(12):
        write_jpeg(data / "sub" / f"{i}.jpg" if i == 11 else data / f"{i}.jpg")
    (data / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    lines = ["image,caption,split"]
    lines += [f"{i}.jpg,a photo number {i},{'test' if i < 2 else ''}" for i in range(11)]
    lines += ["0.jpg,\"a second caption, with a comma\",test", "0.jpg,a photo number 0,test",  # duplicate
              "sub/11.jpg,a photo in a subfolder,train", "missing.jpg,a photo that is not there,",
              "broken.jpg,a photo that does not decode,", "3.jpg,too,many,fields", b"4.jpg,caf\xe9 latte,",
              "5.jpg,a photo in the wrong split,holdout", "1.jpg,a photo said to be in val,val"]
    write_lines(data / "captions.csv", lines)
    report, splits = prepared(data, tmp_path / "run")
    problems = {kind: entry["count"] for kind, entry in report["problems"].items()}
    assert problems == {"duplicate_caption": 1, "malformed_row": 1, "non_utf8_line": 1, "unknown_split": 1,
                        "conflicting_split": 1, "image_missing": 1, "image_unreadable": 1,
                        "captions_dropped_image_missing": 1, "captions_dropped_image_unreadable": 1}, problems
    assert report["images_kept"] == 12 and report["dataset"] == "folder"
    assert "0.jpg" in splits["test"] and "sub/11.jpg" in splits["train"]
    assert report["problems"]["conflicting_split"]["examples"] == ["1.jpg: test, val"]
    captions = json.loads((tmp_path / "run" / "captions.json").read_text())
    assert "a second caption, with a comma" in json.dumps(captions)


def test_a_captions_jsonl_with_one_or_several_captions_per_line(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    for i in range(3):
        write_jpeg(data / f"{i}.jpg")
    write_lines(data / "captions.jsonl", [
        json.dumps({"image": "0.jpg", "caption": "a brown photo", "split": "test"}),
        json.dumps({"image": "1.jpg", "captions": ["a brown square", "a plain brown picture"]}),
        json.dumps({"image": "2.jpg", "captions": "not a list"}), "{not json", ""])
    report, splits = prepared(data, tmp_path / "run")
    assert report["problems"]["malformed_row"]["count"] == 2
    assert report["images_kept"] == 2 and report["captions_kept"] == 3 and splits["test"] == ["0.jpg"]


@pytest.mark.parametrize("layout, message", [
    ("none", "write captions.csv (columns image,caption[,split]) or captions.jsonl"),
    ("no header", "the first row must name the columns, image,caption"),
    ("no folder", "image folder not found"),
])
def test_a_folder_without_usable_captions_names_what_to_write(tmp_path: Path, layout: str, message: str) -> None:
    from demo.errors import CaptionerError

    data = tmp_path / "photos"
    if layout != "no folder":
        write_jpeg(data / "0.jpg")
    if layout == "no header":
        write_lines(data / "captions.csv", ["0.jpg,a photo"])
    with pytest.raises(CaptionerError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        prepared(data, tmp_path / "run")


def test_make_demo_on_a_folder_offline_stops_at_features_naming_vgg_weights(tmp_path: Path) -> None:
    """`make demo DATASET=folder` without a network: no silent fallback for real images; the stop names the
    make variable that chooses the weights, and the variable reaches the features stage (a missing file is
    refused as `--vgg-weights PATH` refuses it). Not marked slow on purpose: the fast suite's guard fails any
    test that builds VGG16, so this also proves both stops come before the model is built."""
    from tests.fixtures_datasets import make_folder
    from tests.helpers import offline_env, run_module

    data = make_folder(tmp_path / "photos", {f"{i}.jpg": [f"a photo number {i}"] for i in range(6)})
    env = offline_env(KERAS_HOME=str(tmp_path / "keras"))
    stopped = run_module("pipeline", "--dataset", "folder", "--data-dir", str(data), "--run", str(tmp_path / "run"),
                         env=env)
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr, stopped.stderr[-2000:]
    assert "With make demo: VGG_WEIGHTS=PATH, VGG_WEIGHTS=calibrated or VGG_WEIGHTS=none" in stopped.stderr
    assert (tmp_path / "run" / "prepare_report.json").is_file(), "prepare's work is kept for the rerun"
    missing = run_module("pipeline", "--dataset", "folder", "--data-dir", str(data), "--run", str(tmp_path / "run"),
                         "--vgg-weights", str(tmp_path / "missing.h5"), env=env)
    assert missing.returncode == 2 and "missing.h5" in missing.stderr, missing.stderr[-2000:]

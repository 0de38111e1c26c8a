"""Tiny on-disk copies of each real dataset layout, for the loader tests.

Images are real JPEG files so that a test can check that the path a loader
builds points at a file that is actually there.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

# (image, captions) shared by the layouts; the Flickr8k-style names match the real ones.
F8K_IMAGES = {
    "1000268201_693b08cb0e.jpg": ["A child in a pink dress is climbing up stairs .",
                                  "A girl going into a wooden building ."],
    "1001773457_577c3a7d70.jpg": ["A black dog and a spotted dog are fighting", "Two dogs on the road ."],
    "1002674143_1b742ab4b8.jpg": ["A little girl is sitting in front of a rainbow .", "A girl paints ."],
    "1003163366_44323f5815.jpg": ["A man lays on a bench .", "A man sleeps outside ."],
}


def write_jpeg(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path, format="JPEG")
    return path


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    """Write lines as bytes so a test can plant a line that is not UTF-8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n" for line in lines))
    return path


def make_flickr30k(root: Path, rows: list[str | bytes], nested: bool = False) -> Path:
    """Kaggle Flickr30k: results.csv beside flickr30k_images/ (or flickr30k_images/flickr30k_images/)."""
    image_dir = root / "flickr30k_images"
    if nested:
        image_dir = image_dir / "flickr30k_images"
    for name in {_row_image(row) for row in rows} - {"", "image_name"}:
        write_jpeg(image_dir / name)
    write_lines(root / "results.csv", ["image_name| comment_number| comment", *rows])
    return root


def _row_image(row: str | bytes) -> str:
    text = row.decode("utf-8", errors="replace") if isinstance(row, bytes) else row
    name = text.split("|", 1)[0].strip()
    return name if name.endswith(".jpg") else ""


def flickr30k_rows(name: str, captions: list[str]) -> list[str]:
    return [f"{name}| {number}| {caption}" for number, caption in enumerate(captions)]


def make_flickr8k_original(
    root: Path,
    token_lines: list[str | bytes] | None = None,
    splits: dict[str, list[str]] | None = None,
    image_dir: str = "Flicker8k_Dataset",
) -> Path:
    """Original Flickr8k release: token file, image folder and the split lists given (file name -> image names)."""
    if token_lines is None:
        token_lines = [f"{name}#{n}\t{caption}" for name, caps in F8K_IMAGES.items() for n, caption in enumerate(caps)]
    for name in F8K_IMAGES:
        write_jpeg(root / image_dir / name)
    write_lines(root / "Flickr8k.token.txt", token_lines)
    for file_name, names in (splits or {}).items():
        write_lines(root / file_name, names)
    return root


def make_flickr8k_kaggle(root: Path, csv_lines: list[str | bytes]) -> Path:
    """Kaggle Flickr8k: captions.txt (CSV with header) and Images/."""
    for name in F8K_IMAGES:
        write_jpeg(root / "Images" / name)
    write_lines(root / "captions.txt", ["image,caption", *csv_lines])
    return root


def karpathy_entry(filename: str, split: str, raws: list[str], filepath: str | None = None) -> dict:
    entry = {
        "filename": filename,
        "split": split,
        "sentences": [{"raw": raw, "tokens": raw.lower().split()} for raw in raws],
    }
    if filepath is not None:
        entry["filepath"] = filepath
    return entry


def make_karpathy(root: Path, dataset: str, entries: list, image_dir: str | None) -> Path:
    """dataset_<dataset>.json in root; images written under root/image_dir (COCO: root/<filepath>)."""
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("filename"), str):
            folder = root / (image_dir or "") / (entry.get("filepath") or "")
            write_jpeg(folder / entry["filename"])
    path = root / f"dataset_{dataset}.json"
    path.write_text(json.dumps({"dataset": dataset, "images": entries}), encoding="utf-8")
    return path


def make_folder(root: Path, captions: dict[str, list[str]]) -> Path:
    """`--dataset folder`: the images and a captions.csv beside them."""
    for name in captions:
        write_jpeg(root / name)
    write_lines(root / "captions.csv", ["image,caption"] + [f"{name},{c}" for name, caps in captions.items()
                                                            for c in caps])
    return root


def smallest_layouts(root: Path) -> dict[str, list[Path]]:
    """For every `--dataset` the registry knows (`train.dataset_registry.NAMES`), the data folders of its smallest
    layouts here (one per source its loader records under its own name): a registry row without one fails
    `test_every_registered_dataset_loads_and_the_card_has_words_for_it`."""
    coco = [karpathy_entry("COCO_val2014_000000391895.jpg", "test", ["A man rides a bike ."], filepath="val2014")]
    flickr = [karpathy_entry(name, "train", caps) for name, caps in F8K_IMAGES.items()]
    layouts = {"synthetic": [root / "synthetic"],
               "flickr8k": [make_flickr8k_original(root / "flickr8k")],
               "flickr30k": [make_flickr30k(root / "flickr30k", flickr30k_rows("1.jpg", ["A dog runs ."]))],
               "karpathy": [], "folder": [make_folder(root / "folder", {"a.jpg": ["A cat sits ."]})]}
    for dataset, entries, image_dir in (("flickr8k", flickr, "Flicker8k_Dataset"),
                                        ("flickr30k", flickr, "flickr30k_images"), ("coco", coco, None)):
        layouts["karpathy"].append(make_karpathy(root / f"karpathy-{dataset}", dataset, entries, image_dir).parent)
    return layouts


def prepared_flickr30k_run(root: Path, name: str, num_images: int = 10) -> Path:
    """A flickr30k-layout fixture of distinct images (seeded noise) under root/data, prepared into run root/name.

    Runs made under the same root share the data folder, so their captions.json lists the same images.
    """
    import numpy as np

    from train.config import PrepareConfig
    from train.prepare import run_prepare

    data = root / "data"
    if not data.exists():
        rows = [row for i in range(num_images) for row in flickr30k_rows(f"{i}.jpg", [f"picture number {i}"])]
        make_flickr30k(data, rows)
        rng = np.random.default_rng(0)
        for i in range(num_images):
            pixels = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(data / "flickr30k_images" / f"{i}.jpg", quality=95)
    run = root / name
    run_prepare(PrepareConfig(run=run, dataset="flickr30k", data_dir=data, min_count=1))
    return run


class PixelEncoder:
    """Stands in for VGG16 where a test needs a feature cache in the real format but not real features.

    Each row is the first 4096 pixel values of its image: rows differ per image, and the cache code
    (`train.features.extract_features`, its files, meta and checks) runs unchanged, in milliseconds
    instead of a VGG16 build and forward pass. Tests of the real features use the real encoder (slow).
    """

    def predict_on_batch(self, pixels):
        from train.encoder import FEATURE_DIM

        return pixels.reshape(len(pixels), -1)[:, :FEATURE_DIM]


def stand_in_feature_cache(run: Path, batch_size: int = 2) -> Path:
    """Complete `run`'s feature cache through the real extract_features, with PixelEncoder; meta as for
    `--vgg-weights none --seed 0`."""
    from train.config import FeaturesConfig
    from train.features import extract_features

    extract_features(FeaturesConfig(run=run, vgg_weights="none", batch_size=batch_size), encoder=PixelEncoder())
    return run

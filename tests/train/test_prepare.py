"""`python -m train prepare` end to end on real-format files: what a user finds in the run folder."""
import json
from collections import Counter
from pathlib import Path

from demo.vocab import Vocabulary
from tests.fixtures_datasets import flickr30k_rows, make_flickr30k, write_jpeg
from tests.helpers import run_module
from train.config import PrepareConfig
from train.datasets.records import CaptionedImage
from train.prepare import assign_splits, run_prepare

REAL_F8K_IMAGES = ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg", "1002674143_1b742ab4b8.jpg",
                   "1003163366_44323f5815.jpg", "1007129816_e794419615.jpg", "1007320043_627395c3d8.jpg"]


def test_real_flickr8k_token_file_with_a_few_images(shared_flickr8k, tmp_path):
    """All 40,460 real lines are read; only captions of present, decodable images are kept; the rest are counted."""
    images = tmp_path / "Flicker8k_Dataset"
    for name in REAL_F8K_IMAGES[:-1]:
        write_jpeg(images / name, size=(500, 375))
    (images / REAL_F8K_IMAGES[-1]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    run = tmp_path / "run"
    result = run_module("train", "prepare", "--dataset", "flickr8k", "--data-dir", str(shared_flickr8k),
                     "--images-dir", str(images), "--run", str(run), "--min-count", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "prepare_report.json").read_text())
    assert report["lines_read"] == 40460
    assert report["images_referenced"] == 8092
    assert report["images_kept"] == 5
    assert report["problems"]["image_missing"]["count"] == 8092 - 6
    assert report["problems"]["image_unreadable"]["count"] == 1
    assert REAL_F8K_IMAGES[-1] in report["problems"]["image_unreadable"]["examples"][0]
    kept = report["captions_kept"]
    dropped = (report["problems"]["captions_dropped_image_missing"]["count"]
               + report["problems"]["captions_dropped_image_unreadable"]["count"])
    assert kept + dropped == report["captions_referenced"]
    assert "image_missing: 8086" in result.stderr and "image_unreadable: 1" in result.stderr
    captions = json.loads((run / "captions.json").read_text())
    assert sorted(e["id"] for e in captions["images"]) == sorted(REAL_F8K_IMAGES[:-1])
    first = next(e for e in captions["images"] if e["id"] == REAL_F8K_IMAGES[0])
    assert first["captions"][1] == "A girl going into a wooden building ."
    assert first["tokens"][1] == "a girl going into a wooden building"
    splits = json.loads((run / "splits.json").read_text())
    train_list = set((shared_flickr8k / "Flickr_8k.trainImages.txt").read_text().split())
    assert set(splits["train"]) >= {name for name in REAL_F8K_IMAGES[:-1] if name in train_list}
    assert sum(len(v) for v in splits.values()) == 5
    vocab = Vocabulary.load(run / "vocab.json")
    assert "a" in vocab and "girl" in vocab


def test_flickr30k_fixture_with_malformed_row_and_missing_image(tmp_path):
    rows = []
    for i in range(10):
        rows += flickr30k_rows(f"{i}.jpg", [f"A dog number {i} runs .", "A dog plays outside ."])
    rows.append("garbage row without pipes")
    data = make_flickr30k(tmp_path / "f30k", rows)
    (data / "flickr30k_images" / "3.jpg").unlink()
    run = tmp_path / "run"
    report = run_prepare(PrepareConfig(run=run, dataset="flickr30k", data_dir=data, val_size=2, test_size=2,
                                       min_count=2))
    assert report["problems"]["malformed_row"]["count"] == 1
    assert report["problems"]["image_missing"] == {"count": 1, "examples": ["3.jpg"]}
    assert report["splits"] == {"train": 5, "val": 2, "test": 2}
    vocab = Vocabulary.load(run / "vocab.json")
    assert "dog" in vocab and "number" in vocab and "7" not in vocab  # digits seen once fall under min count
    assert vocab.min_count == 2


def test_split_assignment_is_deterministic_and_respects_dataset_splits():
    def images():
        given = [CaptionedImage(f"g{i}", Path(f"g{i}"), ["x"], "train") for i in range(5)]
        return given + [CaptionedImage(f"u{i}", Path(f"u{i}"), ["x"]) for i in range(40)]

    first, second = images(), images()
    assert assign_splits(first, 3, 4, seed=1) == {"val": 3, "test": 4, "train": 33}
    assign_splits(second, 3, 4, seed=1)
    assert [im.split for im in first] == [im.split for im in second]
    assert all(im.split == "train" for im in first[:5])
    third = images()
    assign_splits(third, 3, 4, seed=2)
    assert [im.split for im in third] != [im.split for im in first]


def test_held_out_splits_are_five_percent_and_at_most_1000_images_each():
    """README: where a dataset defines no split, 5% of images (at most 1000) go to val and as many to test.

    Flickr30K (31,783 images, no split) is the case the cap is for; the check on ids alone takes no image files.
    """
    def unsplit(count: int) -> list[CaptionedImage]:
        return [CaptionedImage(f"{i}.jpg", Path(f"{i}.jpg"), ["x"]) for i in range(count)]

    for count, held_out in ((2000, 100), (20000, 1000), (31783, 1000)):
        images = unsplit(count)
        assigned = assign_splits(images, None, None, seed=0)
        assert assigned == {"val": held_out, "test": held_out, "train": count - 2 * held_out}, count
        assert Counter(im.split for im in images) == assigned
    partly_split = unsplit(31783)
    for image in partly_split[:400]:
        image.split = "val"  # given by the dataset: the cap counts them
    assert assign_splits(partly_split, None, None, seed=0) == {"val": 600, "test": 1000, "train": 31783 - 2000}


def test_prepare_without_usable_images_fails_with_advice(tmp_path):
    data = make_flickr30k(tmp_path / "f30k", flickr30k_rows("1.jpg", ["A cat ."]))
    (data / "flickr30k_images" / "1.jpg").unlink()
    result = run_module("train", "prepare", "--dataset", "flickr30k", "--data-dir", str(data),
                        "--run", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "no usable images" in result.stderr and "--images-dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_data_dir_is_a_clear_error(tmp_path):
    result = run_module("train", "prepare", "--dataset", "flickr8k", "--data-dir", str(tmp_path / "nowhere"),
                     "--run", str(tmp_path / "r"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nowhere" in result.stderr


def test_synthetic_default_through_the_cli(tmp_path):
    run = tmp_path / "run"
    first = run_module("train", "prepare", "--dataset", "synthetic", "--num-images", "40", "--run", str(run))
    assert first.returncode == 0, first.stderr
    report = json.loads((run / "prepare_report.json").read_text())
    assert report["images_kept"] == 40 and report["captions_kept"] == 200 and report["problems"] == {}
    assert report["splits"] == {"train": 36, "val": 2, "test": 2}
    vocab = Vocabulary.load(run / "vocab.json")
    assert {"a", "red", "circle", "left", "small", "large"} <= set(vocab.tokens)
    captions = json.loads((run / "captions.json").read_text())
    assert all(len(entry["captions"]) == 5 for entry in captions["images"])
    scene = run / "synthetic" / "images" / "scene_000000.png"
    mtime = scene.stat().st_mtime_ns
    splits = json.loads((run / "splits.json").read_text())
    second = run_module("train", "prepare", "--dataset", "synthetic", "--num-images", "40", "--run", str(run))
    assert second.returncode == 0 and scene.stat().st_mtime_ns == mtime, "scenes are reused, not redrawn"
    assert json.loads((run / "splits.json").read_text()) == splits, "same seed, same split"


def test_help_explains_every_command():
    top = run_module("train", "--help")
    assert top.returncode == 0 and "prepare" in top.stdout and "features" in top.stdout
    prepare = run_module("train", "prepare", "--help")
    assert "--num-images" in prepare.stdout and "--min-count" in prepare.stdout and "flickr30k" in prepare.stdout
    features = run_module("train", "features", "--help")
    assert "--vgg-weights" in features.stdout and "none" in features.stdout

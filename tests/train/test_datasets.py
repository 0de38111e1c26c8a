"""Loaders read each real dataset layout, recover what is recoverable and count the rest."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures_datasets import (
    F8K_IMAGES,
    flickr30k_rows,
    karpathy_entry,
    make_flickr8k_kaggle,
    make_flickr8k_original,
    make_flickr30k,
    make_karpathy,
    smallest_layouts,
    write_lines,
)
from train.datasets import flickr8k, flickr30k, karpathy


def by_id(dataset) -> dict:
    return {image.image_id: image for image in dataset.images}


# --- Flickr30k (Kaggle) -------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True])
def test_flickr30k_reads_kaggle_layout_and_finds_nested_image_folder(tmp_path: Path, nested: bool) -> None:
    rows = flickr30k_rows("1000092795.jpg",
                          ["  Two young guys with shaggy hair . ", "Two friends enjoy time outside ."])
    rows += ["", *flickr30k_rows("10002456.jpg", ["Several men in hard hats are operating a pulley ."])]
    make_flickr30k(tmp_path, rows, nested=nested)

    data = flickr30k.load(tmp_path)

    expected_root = tmp_path / "flickr30k_images"
    assert data.image_root == (expected_root / "flickr30k_images" if nested else expected_root)
    images = by_id(data)
    assert images["1000092795.jpg"].captions == ["Two young guys with shaggy hair .",
                                                 "Two friends enjoy time outside ."]
    assert all(image.path.is_file() and image.split is None for image in data.images)
    assert data.lines_read == 3  # the blank line and the header are not caption rows
    assert data.source_files == ["results.csv"]
    assert not data.issues.counts


def test_flickr30k_recovers_row_with_missing_pipe(tmp_path: Path) -> None:
    captions = ["A dog .", "A brown dog .", "A dog outside .", "A dog on grass ."]
    rows = flickr30k_rows("2199200615.jpg", captions) + ["2199200615.jpg| 4   A dog runs across the grass ."]
    make_flickr30k(tmp_path, rows)

    data = flickr30k.load(tmp_path)

    assert by_id(data)["2199200615.jpg"].captions[-1] == "A dog runs across the grass ."
    assert data.issues.counts["malformed_row"] == 0
    assert data.issues.counts["recovered_row"] == 1
    assert data.lines_read == 5


def test_flickr30k_counts_rows_it_cannot_recover(tmp_path: Path) -> None:
    rows = flickr30k_rows("1.jpg", ["A man .", "A man walks .", "A man in a hat ."])
    rows += [
        "1.jpg| 2 dogs play in the park .",  # comment 2 exists: number or start of caption? ambiguous
        "this row has no separator at all",
        "1.jpg| x| A man with a non-numeric comment number .",
    ]
    make_flickr30k(tmp_path, rows)

    data = flickr30k.load(tmp_path)

    assert by_id(data)["1.jpg"].captions == ["A man .", "A man walks .", "A man in a hat ."]
    assert data.issues.counts["malformed_row"] == 3
    assert "results.csv:5: 1.jpg| 2 dogs play in the park ." in data.issues.examples["malformed_row"]
    assert "results.csv:6: this row has no separator at all" in data.issues.examples["malformed_row"]
    assert data.lines_read == 6


def test_flickr30k_counts_non_utf8_empty_and_duplicate_captions(tmp_path: Path) -> None:
    rows: list[str | bytes] = [
        "5.jpg| 0| A woman sings .",
        "5.jpg| 1| a WOMAN sings",  # same caption once normalised
        "5.jpg| 2|  ",
        b"5.jpg| 3| A caf\xe9 singer .",
    ]
    make_flickr30k(tmp_path, rows)

    data = flickr30k.load(tmp_path)

    assert data.issues.counts["duplicate_caption"] == 1
    assert data.issues.counts["empty_caption"] == 1
    assert data.issues.examples["non_utf8_line"] == ["results.csv:5"]
    assert by_id(data)["5.jpg"].captions == ["A woman sings .", "A caf\ufffd singer ."]


def test_flickr30k_missing_directory_or_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        flickr30k.load(tmp_path / "nowhere")
    (tmp_path / "flickr30k_images").mkdir()
    with pytest.raises(FileNotFoundError, match="results.csv"):
        flickr30k.load(tmp_path)


# --- Flickr8k -----------------------------------------------------------------

F8K_NAMES = list(F8K_IMAGES)
F8K_SPLITS = {
    "Flickr_8k.trainImages.txt": F8K_NAMES[:2],
    "Flickr_8k.devImages.txt": F8K_NAMES[2:3],
}


def test_flickr8k_original_layout_with_splits_and_space_separator(tmp_path: Path) -> None:
    lines = [f"{name}#{n}\t{cap}" for name, caps in F8K_IMAGES.items() for n, cap in enumerate(caps)]
    lines[1] = lines[1].replace("\t", " ")  # as in the real token file
    make_flickr8k_original(tmp_path, lines, F8K_SPLITS)

    data = flickr8k.load(tmp_path)

    images = by_id(data)
    assert data.image_root == tmp_path / "Flicker8k_Dataset"
    assert images[F8K_NAMES[0]].captions == F8K_IMAGES[F8K_NAMES[0]]
    assert [images[name].split for name in F8K_NAMES] == ["train", "train", "val", None]  # no test list here
    assert all(image.path.is_file() for image in data.images)
    assert data.lines_read == 8
    assert data.source_files == ["Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt"]
    assert not data.issues.counts


@pytest.mark.parametrize("image_dir", ["Flickr8k_Dataset", "Images"])
def test_flickr8k_accepts_other_image_folder_names(tmp_path: Path, image_dir: str) -> None:
    make_flickr8k_original(tmp_path, image_dir=image_dir)

    data = flickr8k.load(tmp_path)

    assert data.image_root == tmp_path / image_dir
    assert all(image.path.is_file() for image in data.images)


def test_flickr8k_counts_malformed_and_non_utf8_lines(tmp_path: Path) -> None:
    lines: list[str | bytes] = [
        "a.jpg#0\tA dog runs .",
        "a.jpg A dog without a caption number .",
        "",
        b"a.jpg#1\tA dog in a caf\xe9 .",
        "a.jpg#2\ta dog runs",  # duplicate once normalised
        "a.jpg#3\t",
    ]
    make_flickr8k_original(tmp_path, lines)

    data = flickr8k.load(tmp_path)

    assert by_id(data)["a.jpg"].captions == ["A dog runs .", "A dog in a caf\ufffd ."]
    assert data.issues.examples["malformed_row"] == ["Flickr8k.token.txt:2: a.jpg A dog without a caption number ."]
    assert data.issues.examples["non_utf8_line"] == ["Flickr8k.token.txt:4"]
    assert data.issues.counts["duplicate_caption"] == 1
    assert data.issues.counts["empty_caption"] == 1
    assert data.lines_read == 5


def test_flickr8k_kaggle_layout_keeps_quoted_commas(tmp_path: Path) -> None:
    name = F8K_NAMES[0]
    make_flickr8k_kaggle(tmp_path,
                         [f'{name},"A girl, in pink, climbs stairs ."', f"{name},A girl climbs .", "", "broken"])

    data = flickr8k.load(tmp_path)

    assert data.image_root == tmp_path / "Images"
    assert by_id(data)[name].captions == ["A girl, in pink, climbs stairs .", "A girl climbs ."]
    assert by_id(data)[name].split is None and by_id(data)[name].path.is_file()
    assert data.issues.examples["malformed_row"] == ["captions.txt:5: broken"]
    assert data.lines_read == 3
    assert data.source_files == ["captions.txt"]


def test_flickr8k_prefers_original_layout_when_both_exist(tmp_path: Path) -> None:
    make_flickr8k_original(tmp_path, splits=F8K_SPLITS)
    make_flickr8k_kaggle(tmp_path, [f"{F8K_NAMES[0]},Only in the Kaggle copy ."])

    data = flickr8k.load(tmp_path)

    assert data.source_files[0] == "Flickr8k.token.txt"
    assert by_id(data)[F8K_NAMES[0]].split == "train"
    assert "Only in the Kaggle copy ." not in by_id(data)[F8K_NAMES[0]].captions


def test_flickr8k_without_captions_file_names_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Flickr8k.token.txt") as error:
        flickr8k.load(tmp_path)
    message = str(error.value)
    assert "Flickr8k.token.txt" in message and "captions.txt" in message and str(tmp_path) in message
    with pytest.raises(FileNotFoundError, match="missing-dir"):
        flickr8k.load(tmp_path / "missing-dir")


def test_flickr8k_real_token_file(tmp_path: Path, shared_flickr8k: Path) -> None:
    images_dir = tmp_path / "images"
    images_dir.mkdir()

    data = flickr8k.load(shared_flickr8k, images_dir)

    assert data.lines_read == 40460
    assert len(data.images) == 8092
    assert data.image_root == images_dir
    assert sum(image.split == "train" for image in data.images) == 6000
    assert {image.split for image in data.images} == {"train", None}
    assert data.issues.counts["malformed_row"] == 0
    # the three lines with a space instead of a tab still give their caption
    assert "A child in a pink dress is climbing up a set of stairs in an entry way ." in (
        by_id(data)["1000268201_693b08cb0e.jpg"].captions
    )


# --- Karpathy splits ----------------------------------------------------------


def test_karpathy_flickr8k_splits_restval_and_token_fallback(tmp_path: Path) -> None:
    entries = [
        karpathy_entry(F8K_NAMES[0], "train", ["A girl climbs ."]),
        karpathy_entry(F8K_NAMES[1], "restval", ["Two dogs fight ."]),
        karpathy_entry(F8K_NAMES[2], "val", ["A girl paints ."]),
        {"filename": F8K_NAMES[3], "split": "test", "sentences": [{"tokens": ["a", "man", "sleeps"]}]},
    ]
    make_karpathy(tmp_path, "flickr8k", entries, image_dir="Flicker8k_Dataset")

    data = karpathy.load(tmp_path)

    images = by_id(data)
    assert data.image_root == tmp_path / "Flicker8k_Dataset"
    assert [images[name].split for name in F8K_NAMES] == ["train", "train", "val", "test"]
    assert images[F8K_NAMES[3]].captions == ["a man sleeps"]
    assert all(image.path.is_file() for image in data.images)
    assert data.lines_read == 4
    assert data.source_files == ["dataset_flickr8k.json"]


def test_karpathy_coco_uses_filepath_in_image_id(tmp_path: Path) -> None:
    entries = [
        karpathy_entry("COCO_val2014_000000391895.jpg", "test", ["A man rides a bike ."], filepath="val2014"),
        karpathy_entry("COCO_train2014_000000057870.jpg", "train", ["A table ."], filepath="train2014"),
    ]
    json_path = make_karpathy(tmp_path, "coco", entries, image_dir=None)

    data = karpathy.load(json_path)  # the JSON file itself is accepted too

    assert data.image_root == tmp_path
    image = by_id(data)["val2014/COCO_val2014_000000391895.jpg"]
    assert image.split == "test" and image.path.is_file()


def test_karpathy_counts_malformed_entries_and_duplicates(tmp_path: Path) -> None:
    entries = [
        karpathy_entry("a.jpg", "train", ["A dog .", "a dog", ""]),
        {"split": "train", "sentences": []},
        {"filename": "b.jpg", "split": "train"},
        karpathy_entry("c.jpg", "holdout", ["A cat ."]),
        "not an object",
    ]
    make_karpathy(tmp_path, "flickr30k", entries, image_dir="flickr30k_images")

    data = karpathy.load(tmp_path)

    assert [image.image_id for image in data.images] == ["a.jpg"]
    assert data.issues.counts["malformed_entry"] == 4
    assert data.issues.counts["duplicate_caption"] == 1
    assert data.issues.counts["empty_caption"] == 1
    assert data.image_root == tmp_path / "flickr30k_images"


def test_karpathy_images_dir_overrides_default(tmp_path: Path) -> None:
    make_karpathy(tmp_path, "flickr30k", [karpathy_entry("a.jpg", "val", ["A dog ."])], image_dir="images")
    elsewhere = tmp_path / "elsewhere"

    data = karpathy.load(tmp_path, elsewhere)

    assert data.image_root == elsewhere and data.images[0].path == elsewhere / "a.jpg"


def test_karpathy_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset_coco.json"):
        karpathy.load(tmp_path)
    wrong = tmp_path / "dataset_flickr8k.json"
    wrong.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match="dataset_flickr8k.json"):
        karpathy.load(tmp_path)
    wrong.write_text("{not json")
    with pytest.raises(ValueError, match="dataset_flickr8k.json"):
        karpathy.load(wrong)
    write_lines(tmp_path / "dataset_flickr30k.json", ['{"images": []}'])
    with pytest.raises(ValueError, match="pass the path"):
        karpathy.load(tmp_path)


# --- the registry ---------------------------------------------------------------


def test_every_registered_dataset_loads_and_the_card_has_words_for_it(tmp_path: Path) -> None:
    """A registry row that lacks its fixture, its loader or the card's words for what that loader records fails
    here, not as a card that silently says "images of the NAME dataset"."""
    from train.dataset_registry import CARD_WORDS, NAMES, DatasetSource, dataset_entry

    layouts = smallest_layouts(tmp_path)
    assert set(layouts) == set(NAMES), "tests/fixtures_datasets.smallest_layouts needs a layout per dataset"
    for name in NAMES:
        for data_dir in layouts[name]:
            loaded = dataset_entry(name).load(DatasetSource(data_dir, num_images=2))
            assert loaded.images, f"{name} from {data_dir}"
            assert loaded.name in CARD_WORDS, f"the card has no words for {loaded.name} (DatasetEntry.card)"


def test_an_unknown_dataset_names_the_known_ones() -> None:
    from demo.errors import BadInput
    from train.dataset_registry import dataset_entry

    known = r"\(known: synthetic, flickr8k, flickr30k, karpathy, folder\)"
    with pytest.raises(BadInput, match=r"unknown dataset 'coco' " + known):
        dataset_entry("coco")

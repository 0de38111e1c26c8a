"""`python -m demo caption FOLDER... --out FILE`: folders walked, batches streamed to a resumable .jsonl/.csv file.

The fast tests check discovery and the results file on their own; the slow ones run the command as a user
does, on real images and the real bundle, and kill it half way with SIGKILL.
"""
import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from demo.caption_batches import JsonOutput
from demo.errors import BadInput, MissingFile
from demo.image_files import find_images
from demo.results_file import ResultsFile, captioned_row, refused_row
from tests.helpers import REPO, run_module, split_images


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"not decoded by discovery")


# ---- discovery -----------------------------------------------------------------------------------------------

def test_folders_give_their_images_sorted_hidden_left_out_and_subfolders_on_request(tmp_path):
    touch(tmp_path, "b.jpg", "a.PNG", "c.JpEg", "d.webp", "e.bmp", "f.gif", "notes.txt", ".hidden.jpg",
          "sub/z.jpg", "sub/deeper/y.png", ".secret/x.jpg", "sub/.cache/w.jpg")
    names = lambda paths: [p.relative_to(tmp_path).as_posix() for p in paths]  # noqa: E731
    flat = ["a.PNG", "b.jpg", "c.JpEg", "d.webp", "e.bmp", "f.gif"]
    assert names(find_images([tmp_path])) == flat
    assert names(find_images([tmp_path], recursive=True)) == flat + ["sub/deeper/y.png", "sub/z.jpg"]


def test_named_files_are_taken_whatever_their_suffix_and_listed_once(tmp_path):
    touch(tmp_path, "a.jpg", "notes.txt", ".hidden.jpg")
    found = find_images([tmp_path / "notes.txt", tmp_path, tmp_path / "a.jpg", tmp_path / ".hidden.jpg"])
    assert found == [tmp_path / "notes.txt", tmp_path / "a.jpg", tmp_path / ".hidden.jpg"]


def test_a_missing_path_is_an_error_and_a_folder_without_images_a_warning(tmp_path, caplog):
    with pytest.raises(MissingFile, match="nope does not exist"):
        find_images([tmp_path / "nope"])
    touch(tmp_path, "empty/notes.txt", "empty/sub/a.jpg")
    with caplog.at_level(logging.WARNING, logger="demo"):
        assert find_images([tmp_path / "empty"]) == []
    assert "empty has no image files" in caplog.text and "--recursive" in caplog.text


# ---- the results file ------------------------------------------------------------------------------------------

RESULT = {"caption": "a red circle", "tokens": ["a", "red", "circle"], "log_prob": -1.5, "score": -0.7,
          "candidates": [{"caption": "a red circle", "log_prob": -1.5}], "timings_ms": {}}


def write_rows(path: Path, rows: list[dict], **columns) -> None:
    with ResultsFile(path, **columns) as out:
        out.append(rows)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_torn_last_line_is_cut_off_and_its_image_captioned_again(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    write_rows(path, [captioned_row(Path("a.jpg"), RESULT), captioned_row(Path("b.jpg"), RESULT)])
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[-1][:15])  # killed while writing a third row
    with ResultsFile(path) as out:
        assert out.todo([Path("a.jpg"), Path("b.jpg"), Path("c.jpg")]) == [Path("c.jpg")]
    assert path.read_bytes() == whole


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_refused_rows_are_taken_out_and_retried_each_image_once(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    write_rows(path, [captioned_row(Path("a.jpg"), RESULT), refused_row(Path("b.jpg"), "b.jpg: damaged\nreally")])
    with ResultsFile(path) as out:
        assert out.retried == 1 and out.todo([Path("a.jpg"), Path("b.jpg")]) == [Path("b.jpg")]
        out.append([captioned_row(Path("b.jpg"), RESULT)])
    rows = read_rows(path)
    assert [row["path"] for row in rows] == ["a.jpg", "b.jpg"] and not any(row.get("error") for row in rows)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_done_images_match_by_path_as_written_and_by_absolute_path(tmp_path, monkeypatch, suffix):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"out{suffix}"
    odd = Path("line\u2028separator, \"quoted\".jpg")
    write_rows(path, [captioned_row(Path("a.jpg"), RESULT), captioned_row(tmp_path / "b.jpg", RESULT),
                      captioned_row(odd, RESULT)])
    with ResultsFile(path) as out:
        assert out.todo([tmp_path / "a.jpg", Path("b.jpg"), Path("./a.jpg"), odd, Path("c.jpg")]) == [Path("c.jpg")]


def test_csv_columns_candidates_and_word_log_probs_only_when_asked(tmp_path):
    result = RESULT | {"word_log_probs": [-0.123456, -1.0, -0.5]}
    write_rows(tmp_path / "one.csv", [captioned_row(Path("a.jpg"), result)])
    write_rows(tmp_path / "all.csv", [captioned_row(Path("a.jpg"), result)], candidates=True, word_log_probs=True)
    assert read_rows(tmp_path / "one.csv") == [{"path": "a.jpg", "caption": "a red circle", "log_prob": "-1.5",
                                                "error": ""}]
    (row,) = read_rows(tmp_path / "all.csv")
    assert json.loads(row["candidates"]) == RESULT["candidates"] and row["word_log_probs"] == "-0.1235 -1.0000 -0.5000"


def test_the_streamed_json_is_what_json_dumps_prints_for_the_whole(capsys):
    header = {"provider": "cpu", "variant": "fp32", "decoder_variant": "fp32"}
    for rows in ([], [captioned_row(Path("a.jpg"), RESULT), refused_row(Path("x"), "bad"),
                      captioned_row(Path("b.jpg"), RESULT | {"caption": "é \"quoted\"\nline"})]):
        output = JsonOutput(header)
        output.append(rows[:1])
        output.append(rows[1:])
        output.finish()
        images = [{"image": r["path"], **{k: v for k, v in r.items() if k != "path"}} for r in rows if "error" not in r]
        assert capsys.readouterr().out == json.dumps(header | {"images": images}, indent=2) + "\n"


@pytest.mark.parametrize("suffix,content", [(".jsonl", "path,caption\n"), (".jsonl", '{"image": "a.jpg"}\n'),
                                            (".csv", "image,caption\na.jpg,a cat\n"), (".csv", "\xff\xfe"),
                                            (".jsonl", "no newline at the end"), (".csv", "path,caption,log_prob")])
def test_a_file_of_something_else_is_refused_and_left_as_it_was(tmp_path, suffix, content):
    path = tmp_path / f"mine{suffix}"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(BadInput, match="is not a results file of `python -m demo caption`"):
        ResultsFile(path)
    assert path.read_bytes() == content.encode("latin-1")


def test_the_cli_refuses_another_file_and_another_suffix_before_loading_a_model(tmp_path):
    touch(tmp_path, "images/a.jpg")
    (tmp_path / "notes.csv").write_text("name,notes\nx,y\n")
    result = run_module("demo", "caption", str(tmp_path / "images"), "--model", str(tmp_path / "no-bundle"),
                        "--out", str(tmp_path / "notes.csv"))
    assert result.returncode == 2 and "error: --out" in result.stderr and "not a results file" in result.stderr
    assert "Traceback" not in result.stderr and (tmp_path / "notes.csv").read_text() == "name,notes\nx,y\n"
    result = run_module("demo", "caption", str(tmp_path / "images"), "--out", str(tmp_path / "out.txt"))
    assert result.returncode == 2 and ".jsonl" in result.stderr and ".csv" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.txt").exists()
    result = run_module("demo", "caption", str(tmp_path / "missing"), "--out", str(tmp_path / "out.jsonl"))
    assert result.returncode == 2 and "missing does not exist" in result.stderr and "Traceback" not in result.stderr


# ---- the command, on the real bundle ---------------------------------------------------------------------------

def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def folder(exported_run, tmp_path_factory) -> Path:
    """Test-split scenes in a folder, two of them in nested subfolders, one a JPEG cut short, plus a text file."""
    root = tmp_path_factory.mktemp("folder") / "photos"
    images = split_images(exported_run, count=6)
    for image, place in zip(images, ["a.png", "b.png", "c.png", "sub/d.png", "sub/deeper/e.png"]):
        (root / place).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / place)
    Image.open(images[5]).convert("RGB").save(root / "broken.jpg", quality=90)
    (root / "broken.jpg").write_bytes((root / "broken.jpg").read_bytes()[:600])
    (root / "notes.txt").write_text("not an image")
    return root


def expected_results(captioner, paths: list[Path], **search) -> dict[str, tuple[str, float, list[str]]]:
    """Path name -> (caption, log-prob, n-best captions, result), from `Captioner.caption` on each image."""
    results = {}
    for path in paths:
        (result,) = captioner.caption([path], **search)
        results[path.name] = (result.caption, result.log_prob, [c.caption for c in result.candidates], result)
    return results


@pytest.mark.slow
def test_a_folder_to_jsonl_and_csv_with_a_damaged_jpeg(folder, captioner, exported_run, tmp_path):
    bundle = str(exported_run / "onnx")
    images = sorted(p for p in folder.rglob("*.png"))
    search = {"num_beams": 3, "num_return_sequences": 2}
    want = expected_results(captioner, images, **search)

    flat = run_module("demo", "caption", str(folder), "--model", bundle, "--out", str(tmp_path / "flat.jsonl"),
                      "--batch-size", "1", "--num-beams", "3", "--num-return-sequences", "2")
    nested = run_module("demo", "caption", str(folder), "--recursive", "--model", bundle, "--out",
                        str(tmp_path / "all.csv"), "--num-beams", "3", "--num-return-sequences", "2")
    for result in (flat, nested):
        assert result.returncode == 1, result.stderr[-2000:]
        assert f"error: {folder / 'broken.jpg'}" in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""  # the progress bar and log lines go to stderr
    assert "6 found, 0 already done" in nested.stderr and "4 found, 0 already done" in flat.stderr

    for out, names in ((tmp_path / "flat.jsonl", ["a.png", "b.png", "broken.jpg", "c.png"]),
                       (tmp_path / "all.csv", ["a.png", "b.png", "broken.jpg", "c.png", "d.png", "e.png"])):
        rows = read_rows(out)
        assert [Path(row["path"]).name for row in rows] == names, out
        for row in rows:
            if row["path"].endswith("broken.jpg"):
                assert "broken.jpg" in row["error"] and not row.get("caption")
                continue
            caption, log_prob, n_best, result = want[Path(row["path"]).name]
            candidates = row["candidates"] if out.suffix == ".jsonl" else json.loads(row["candidates"])
            assert (row["caption"], float(row["log_prob"])) == (caption, pytest.approx(log_prob, abs=1e-5))
            assert [c["caption"] for c in candidates] == n_best and not row.get("error")
            words = row["word_log_probs"] if out.suffix == ".jsonl" else \
                [float(v) for v in row["word_log_probs"].split()]  # per-word log-probs, in both formats
            assert words == pytest.approx(result.word_log_probs, abs=1e-4)

    # a rerun retries the damaged file only, and the file still holds each image once; so after a torn line
    rows_before = read_rows(tmp_path / "all.csv")
    with open(tmp_path / "all.csv", "a") as handle:
        handle.write(f"{folder / 'zz.png'},a half writ")
    again = run_module("demo", "caption", str(folder), "--recursive", "--model", bundle, "--out",
                       str(tmp_path / "all.csv"), "--num-beams", "3", "--num-return-sequences", "2")
    assert again.returncode == 1 and "6 found, 5 already done" in again.stderr and "torn last line" in again.stderr
    rows = read_rows(tmp_path / "all.csv")
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in rows_before)
    assert [r for r in rows if not r["error"]] == [r for r in rows_before if not r["error"]]


@pytest.mark.slow
def test_a_terminal_gets_a_progress_bar_with_images_per_second_and_a_log_one_summary_line(folder, exported_run,
                                                                                      tmp_path):
    """The bar is drawn on a terminal (a pseudo-terminal here) and left out of pipes and log files, which get
    one line saying what the run did."""
    import fcntl
    import pty
    import struct
    import termios

    command = [sys.executable, "-m", "demo", "caption", str(folder), "--recursive", "--model",
               str(exported_run / "onnx"), "--batch-size", "2"]
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    process = subprocess.Popen(command + ["--out", str(tmp_path / "tty.jsonl")], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=side)
    os.close(side)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        shown += chunk
    process.wait(timeout=240)
    os.close(main)
    text = shown.decode(errors="replace")
    assert "6/6" in text and "img/s" in text, text[-2000:]
    piped = run_module("demo", "caption", str(folder), "--recursive", "--model", str(exported_run / "onnx"),
                       "--out", str(tmp_path / "piped.jsonl"))
    assert "img/s]" not in piped.stderr and "\r" not in piped.stderr, piped.stderr[-2000:]
    assert "caption: 5 captioned, 1 refused in" in piped.stderr and "images/s) ->" in piped.stderr, piped.stderr


@pytest.mark.slow
def test_stdout_without_out_is_one_line_per_image(folder, exported_run):
    result = run_module("demo", "caption", str(folder), "--model", str(exported_run / "onnx"))
    assert result.returncode == 1 and "broken.jpg" in result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(folder / n) for n in ("a.png", "b.png", "c.png")]
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1] for line in lines)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_half_way_and_rerun_each_image_once_as_an_uninterrupted_run(exported_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for image in split_images(exported_run) + split_images(exported_run, split="val", count=10):
        shutil.copy(image, folder / image.name)
    command = [sys.executable, "-m", "demo", "caption", str(folder), "--model", str(exported_run / "onnx"),
               "--batch-size", "1", "--out"]
    out = tmp_path / "captions.jsonl"
    process = subprocess.Popen(command + [str(out)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 200
    while not (out.is_file() and out.read_bytes().count(b"\n") >= 8):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGSTOP)  # frozen where it was seen: the kill lands inside the window
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    done = out.read_bytes().count(b"\n")
    assert 8 <= done < 40, f"{done} of 40 rows written: the kill missed its window"

    resumed = subprocess.run(command + [str(out)], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"40 found, {done} already done" in resumed.stderr
    whole = subprocess.run(command + [str(tmp_path / "whole.jsonl")], cwd=REPO, capture_output=True, text=True,
                           timeout=240)
    assert whole.returncode == 0, whole.stderr[-2000:]
    rows, reference = read_rows(out), read_rows(tmp_path / "whole.jsonl")
    assert sorted(row["path"] for row in rows) == sorted(str(p) for p in folder.iterdir())  # each exactly once
    assert [(r["path"], r["caption"]) for r in rows] == [(r["path"], r["caption"]) for r in reference]
    assert [r["log_prob"] for r in rows] == pytest.approx([r["log_prob"] for r in reference], abs=1e-5)

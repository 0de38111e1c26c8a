"""The benchmark tables in bench/README.md are what the committed results files render to: a figure there
cannot be typed by hand or left behind when a results file changes."""
import json
from pathlib import Path

from bench.report import BEGIN, END, PUBLISHED, main, published, with_tables
from tests.helpers import REPO

README = REPO / "bench" / "README.md"


def test_the_readme_tables_are_the_published_results_rendered():
    paths = sorted(PUBLISHED.glob("*.json"))
    assert paths, "bench/published/ holds at least one machine's results"
    readme = README.read_text(encoding="utf-8")
    assert with_tables(readme, published(paths)) == readme, \
        "bench/README.md differs from its results files: run python -m bench.report --readme bench/README.md"
    for path in paths:
        machine = json.loads(path.read_text())["machine"]
        assert machine["cpu"] in readme and machine["commit"] in readme and machine["date"] in readme


def test_a_changed_figure_is_caught_and_the_report_command_writes_it_back(tmp_path: Path):
    results = json.loads(sorted(PUBLISHED.glob("*.json"))[0].read_text())
    results["seconds"] = results["seconds"] + 1000.0
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(results))
    copy = tmp_path / "README.md"
    copy.write_text(README.read_text(encoding="utf-8"))
    assert with_tables(copy.read_text(), published([changed])) != copy.read_text()
    assert main([str(changed), "--readme", str(copy)]) == 0
    text = copy.read_text()
    assert f"{results['seconds']:.0f} s" in text and text.count(BEGIN) == 1 and text.count(END) == 1


def test_a_readme_without_the_markers_is_refused_and_left_as_it_was(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# a README without markers\n")
    assert main(["--readme", str(readme)]) == 2
    assert "error: the README has no" in capsys.readouterr().err
    assert readme.read_text() == "# a README without markers\n"

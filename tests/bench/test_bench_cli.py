"""`python -m bench --quick` runs, and reports the feature-extraction ratio with the machine it ran on."""
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_quick_bench_writes_json_and_markdown(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["machine"]["cores"] >= 1 and "numpy" in results["machine"]["packages"]
    (features,) = [b for b in results["benchmarks"] if b["name"] == "feature_extraction"]
    rates = features["images_per_s"]
    assert rates["extract_features"]["median_per_s"] > 0 and rates["bare_forward"]["median_per_s"] > 0
    assert features["ratio_pipeline_to_bare"] == pytest.approx(
        rates["extract_features"]["median_per_s"] / rates["bare_forward"]["median_per_s"])
    assert "ratio pipeline / bare" in (tmp_path / "results.md").read_text()

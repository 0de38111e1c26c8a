"""`python -m bench --quick` on a trained, exported run: every benchmark reports, with the machine it ran on.

Slow (~3 minutes): it runs each benchmark in its own process, a real server included.
"""
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

# the first test of a full run: its setup also builds the session runs (~6 minutes on 2 cores)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def quick_results(exported_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--run", str(exported_run), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def by_name(results: dict, name: str) -> dict:
    (entry,) = [b for b in results["benchmarks"] if b["name"] == name]
    assert "skipped" not in entry and "failed" not in entry, entry
    return entry


def test_machine_and_every_quick_benchmark_are_reported(quick_results):
    out, results = quick_results
    assert results["machine"]["cores"] >= 1 and "onnxruntime" in results["machine"]["packages"]
    names = {b["name"] for b in results["benchmarks"]}
    assert names == {"feature_extraction", "training_speed", "encoder_latency", "decoding", "end_to_end",
                     "serving_load", "folder_captioning"}
    table = (out / "results.md").read_text()
    for row in ("ratio pipeline / bare", "ratio seed / ours", "ratio ORT int8 / ORT fp32", "seed loop / ORT greedy",
                "p50 / p95 ms", "int8 batched, 8 callers", "requests/s batched / unbatched",
                "ratio batch 8 / batch 1"):
        assert row in table, row
    assert (out / "latency_per_stage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratios_are_computed_from_the_measured_sides(quick_results):
    _, results = quick_results
    features = by_name(results, "feature_extraction")
    rates = features["images_per_s"]
    assert features["ratio_pipeline_to_bare"] == pytest.approx(
        rates["extract_features"]["median_per_s"] / rates["bare_forward"]["median_per_s"])
    encoder = by_name(results, "encoder_latency")
    for row in encoder["batches"].values():
        ms = row["ms_per_image"]
        assert set(ms) == {"keras_fp32", "ort_fp32", "ort_int8"} and min(ms.values()) > 0
        assert row["ratio_int8_to_fp32"] == pytest.approx(ms["ort_int8"] / ms["ort_fp32"])
        assert row["gflops"]["ort_fp32"] == pytest.approx(encoder["gflop_per_image"] / ms["ort_fp32"] * 1000)
    assert 15.4 < encoder["gflop_per_image"] / 2 < 15.6  # VGG16 to fc2: ~15.5 GMACs


def test_end_to_end_runs_without_tensorflow_and_serving_has_no_errors(quick_results):
    _, results = quick_results
    end_to_end = by_name(results, "end_to_end")
    for variant in ("fp32", "int8"):
        row = end_to_end["variants"][variant]
        assert not row["tensorflow_loaded"]
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["peak_rss_mib"] > 0 and row["cold_start_s"] > 0
    # the int8 encoder is a quarter of the fp32 file; its process must show it
    assert end_to_end["variants"]["int8"]["peak_rss_mib"] < end_to_end["variants"]["fp32"]["peak_rss_mib"]
    serving = by_name(results, "serving_load")["variants"]
    for variant in ("fp32", "int8"):
        servers = serving[variant]["servers"]
        assert set(servers) == {"batched", "unbatched"}
        for mode, server in servers.items():
            levels = server["levels"]
            assert [level["callers"] for level in levels] == [1, 8]
            assert all(level["errors"] == 0 and level["throughput_per_s"] > 0 for level in levels), levels
            # every answer was compared with the same request sent alone, and equals it
            assert all(level["compared_with_alone"] == level["requests"] for level in levels), levels
            assert all(level["differ_from_alone"] == 0 for level in levels), (variant, mode, levels)
        assert servers["unbatched"]["levels"][-1]["mean_encoder_batch"] == 1
        ratios = serving[variant]["ratios"]
        assert ratios["throughput_8_callers"] == pytest.approx(servers["batched"]["levels"][-1]["throughput_per_s"]
                                                               / servers["unbatched"]["levels"][-1]["throughput_per_s"])
    assert serving["int8"]["servers"]["batched"]["peak_rss_mib"] < serving["fp32"]["servers"]["batched"]["peak_rss_mib"]


def test_folder_captioning_times_the_cli_at_the_default_batch_and_at_batch_1(quick_results):
    _, results = quick_results
    folder = by_name(results, "folder_captioning")
    rates = folder["images_per_s"]
    assert folder["images"] == 50 and folder["default_batch_size"] == 8 and folder["variant"] == "int8"
    assert min(rates["batch_default"]["median_per_s"], rates["batch_1"]["median_per_s"]) > 0
    assert folder["ratio_default_to_batch1"] == pytest.approx(
        rates["batch_default"]["median_per_s"] / rates["batch_1"]["median_per_s"])
    assert folder["target"]["met"] == (folder["ratio_default_to_batch1"] >= folder["target"]["ratio_at_least"])


def test_without_a_bundle_the_run_dependent_benchmarks_say_skipped(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench", "--only", "end_to_end", "serving", "folder", "--run",
                             str(tmp_path / "nothing"), "--out", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    table = (tmp_path / "out" / "results.md").read_text()
    assert table.count("not measured: ") == 3 and "export --quantize int8" in table


def test_multiworker_times_one_process_and_two_workers_and_measures_the_all_reduce(synthetic_features_run,
                                                                                      tmp_path):
    """`--only multiworker` (left out of --quick): both sides train the same run for the same steps; the dense
    all-reduce is every trainable weight but the embedding, whose gradient is the batch's rows."""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "multiworker", "--run",
                             str(synthetic_features_run), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    entry = by_name(json.loads((out / "results.json").read_text()), "multiworker_training")
    one, two = entry["timings"]["one_process"], entry["timings"]["two_workers"]
    assert one["steps_per_epoch"] == two["steps_per_epoch"] and len(one["ms_per_step"]) == entry["epochs"] == 2
    assert entry["ratio_two_workers_to_one"] == pytest.approx(two["seconds_per_epoch"] / one["seconds_per_epoch"])
    embed, hidden = 256, 256
    for volume in (entry["all_reduce"]["this_run"], entry["all_reduce"]["flickr30k"]):
        assert volume["dense_bytes"] == 4 * (volume["parameters"] - volume["vocab_size"] * embed)
        rows = entry["all_reduce"]["worker_batch"] * entry["all_reduce"]["caption_positions"]
        assert volume["sparse_bytes_per_worker"] == rows * (embed * 4 + 8)
    assert entry["all_reduce"]["flickr30k"]["dense_bytes"] > 4 * 8500 * hidden  # the output layer alone
    assert "2 local workers: seconds per epoch" in (out / "results.md").read_text()

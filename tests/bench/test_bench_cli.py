"""`python -m bench --smoke` on the shared trained, exported run: every benchmark runs in its own process and
reports, with the machine it ran on, in results.json, the table and the plot. The figures of a smoke run mean
nothing, so only their structure is checked; `--quick` and full runs are commands, not tests.

Slow (a minute or two): it runs each benchmark in its own process, real servers included.
"""
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_results(exported_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--run", str(exported_run), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def by_name(results: dict, name: str) -> dict:
    (entry,) = [b for b in results["benchmarks"] if b["name"] == name]
    assert "skipped" not in entry and "failed" not in entry, entry
    return entry


def test_machine_and_every_benchmark_but_the_long_ones_are_reported(smoke_results):
    out, results = smoke_results
    assert results["machine"]["cores"] >= 1 and "onnxruntime" in results["machine"]["packages"]
    assert results["effort"] == "smoke"
    names = {b["name"] for b in results["benchmarks"]}
    assert names == {"feature_extraction", "calibration", "training_speed", "encoder_latency", "decoding", "end_to_end",
                     "serving_load", "folder_captioning", "explanations"}
    table = (out / "results.md").read_text()
    for row in ("ratio pipeline / bare", "ratio seed / ours", "ratio ORT int8 / ORT fp32", "seed loop / ORT greedy",
                "p50 / p95 ms", "int8 batched, 8 callers", "requests/s batched / unbatched",
                "ratio batch 8 / batch 1", "in VGG16 forward passes of the same images", "A smoke run",
                "ONNX Runtime: share of the fp32 GEMM peak", "s per explanation"):
        assert row in table, row
    assert (out / "latency_per_stage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_side_of_each_comparison_was_measured(smoke_results):
    _, results = smoke_results
    features = by_name(results, "feature_extraction")
    rates = features["images_per_s"]
    assert set(rates) == {"extract_features", "bare_forward", "extract_features_onnx"}  # the run has a bundle
    assert min(rate["median_per_s"] for rate in rates.values()) > 0
    assert set(features["share_of_fp32_peak"]) == {"extract_features", "extract_features_onnx"}
    encoder = by_name(results, "encoder_latency")
    for row in encoder["batches"].values():
        ms = row["ms_per_image"]
        assert set(ms) == {"keras_fp32", "ort_fp32", "ort_int8"} and min(ms.values()) > 0
    assert 15.4 < encoder["gflop_per_image"] / 2 < 15.6  # VGG16 to fc2: ~15.5 GMACs
    folder = by_name(results, "folder_captioning")
    assert folder["default_batch_size"] == 8 and folder["variant"] == "int8"
    assert min(folder["images_per_s"]["batch_default"]["median_per_s"],
               folder["images_per_s"]["batch_1"]["median_per_s"]) > 0


def test_end_to_end_runs_without_tensorflow_and_serving_compares_each_answer_with_it_alone(smoke_results):
    """Through gradio_client and the HTTP API alike, under load and among bad requests, every answer equals the
    same request's alone."""
    _, results = smoke_results
    end_to_end = by_name(results, "end_to_end")
    for variant in ("fp32", "int8"):
        row = end_to_end["variants"][variant]
        assert not row["tensorflow_loaded"]
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["peak_rss_mib"] > 0 and row["cold_start_s"] > 0
    # the int8 encoder is a quarter of the fp32 file; its process must show it
    assert end_to_end["variants"]["int8"]["peak_rss_mib"] < end_to_end["variants"]["fp32"]["peak_rss_mib"]
    serving = by_name(results, "serving_load")["variants"]
    assert set(serving) == {"int8"}  # a smoke run serves one variant: the rows, not the comparison
    for variant in serving:
        servers = serving[variant]["servers"]
        assert set(servers) == {"batched", "unbatched"}
        for server in servers.values():
            levels = server["levels"]
            assert [level["callers"] for level in levels] == [1, 8]
            assert all(level["errors"] == 0 and level["compared_with_alone"] == level["requests"] for level in levels)
            assert all(level["differ_from_alone"] == 0 for level in levels), levels
        assert servers["unbatched"]["levels"][-1]["mean_encoder_batch"] == 1
        rest = serving[variant]["rest"]  # the HTTP API on the batched server: its answers are the Gradio API's
        assert rest["callers_8"]["errors"] == rest["callers_8"]["differ_from_alone"] == 0, rest["callers_8"]
        storm = rest["storm"]
        assert storm["server_alive"] and storm["statuses"].get("200") and storm["statuses"].get("400"), storm
        assert storm["connection_failures"] == storm["wrong_status"] == storm["server_errors_not_503"] == \
            storm["good_unlike_alone"] == 0, storm


def test_without_a_bundle_the_run_dependent_benchmarks_say_skipped(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--only", "end_to_end", "serving", "folder",
                             "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    table = (tmp_path / "out" / "results.md").read_text()
    assert table.count("not measured: ") == 3 and "export --quantize int8" in table


def test_multiworker_times_one_process_and_two_workers_and_measures_the_all_reduce(synthetic_features_run,
                                                                                      tmp_path):
    """`--only multiworker` (left out of --smoke and --quick): both sides train the same run for the same steps;
    the dense all-reduce is every trainable weight but the embedding, whose gradient is the batch's rows."""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--only", "multiworker", "--run",
                             str(synthetic_features_run), "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    entry = by_name(json.loads((out / "results.json").read_text()), "multiworker_training")
    one, two = entry["timings"]["one_process"], entry["timings"]["two_workers"]
    assert one["steps_per_epoch"] == two["steps_per_epoch"] and len(one["ms_per_step"]) == entry["epochs"] == 2
    embed, hidden = 256, 256
    for volume in (entry["all_reduce"]["this_run"], entry["all_reduce"]["flickr30k"]):
        assert volume["dense_bytes"] == 4 * (volume["parameters"] - volume["vocab_size"] * embed)
        rows = entry["all_reduce"]["worker_batch"] * entry["all_reduce"]["caption_positions"]
        assert volume["sparse_bytes_per_worker"] == rows * (embed * 4 + 8)
    assert entry["all_reduce"]["flickr30k"]["dense_bytes"] > 4 * 8500 * hidden  # the output layer alone
    assert "2 local workers: seconds per epoch" in (out / "results.md").read_text()

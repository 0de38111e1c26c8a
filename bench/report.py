"""results.md: one table row per measure, with the target it answers to and whether it is met."""
from __future__ import annotations


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def markdown(results: dict) -> str:
    machine = results["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    lines = [f"# Benchmarks ({machine['cpu']}, {machine['cores']} cores, {' '.join(machine['cpu_flags'])})", "",
             f"`{results['command']}`, {results.get('seconds', 0):.0f} s. Python {machine['python']}; {packages}.", "",
             *(["A smoke run (`--smoke`): it checks that each benchmark runs; its figures mean nothing.", ""]
               if results.get("effort") == "smoke" else []),
             "| benchmark | measure | value | target | met |", "| --- | --- | --- | --- | --- |"]
    for entry in results["benchmarks"]:
        if entry.get("skipped") or entry.get("failed"):
            lines.append(f"| {entry['name']} | not measured: {entry.get('skipped') or 'failed'} | | | |")
        else:
            lines.extend(ROWS[entry["name"]](entry))
    return "\n".join(lines) + "\n"


def _features_rows(entry: dict) -> list[str]:
    rates = entry["images_per_s"]
    return [f"| feature extraction (batch {entry['batch_size']}) | extract_features images/s "
            f"| {rates['extract_features']['median_per_s']:.2f} | | |",
            f"| | bare VGG16 forward images/s | {rates['bare_forward']['median_per_s']:.2f} | | |",
            f"| | ratio pipeline / bare | {entry['ratio_pipeline_to_bare']:.3f} | >= 0.85 "
            f"| {_met(entry['target']['met'])} |"]


def _training_rows(entry: dict) -> list[str]:
    model, rates, epoch = entry["model"], entry["samples_per_s"], entry["seconds_per_epoch"]
    samples = entry["samples_per_epoch"]
    lines = [f"| training (batch {entry['batch_size']}, E={model['embed_dim']} H={model['hidden_dim']} "
             f"V={model['vocab_size']}, {entry['captions']} captions) | | | | |"]
    for side, label, unit in (("ours", "ours (whole sequence)", "captions"),
                              ("seed", "seed (one sample per prefix)", "prefixes")):
        lines.append(f"| | {label}: {unit} per epoch | {samples[side]} | | |")
        lines.append(f"| | {label}: samples/s | {rates[side]['median_per_s']:.1f} | | |")
        lines.append(f"| | {label}: s per epoch | {epoch[side]:.2f} | | |")
    lines.append(f"| | ratio seed / ours s per epoch | {entry['ratio_seed_to_ours']:.2f} "
                 f"| >= {entry['target']['ratio_at_least']:g} | {_met(entry['target']['met'])} |")
    return lines


def _encoder_rows(entry: dict) -> list[str]:
    sizes, peak = entry["bytes"], entry["gemm_peak"]
    lines = [f"| encoder (VGG16 to fc2, {entry['gflop_per_image']:.1f} GFLOP per image) | file MB fp32 / int8 "
             f"| {sizes['fp32'] / 1e6:.0f} / {sizes['int8'] / 1e6:.0f} | | |",
             f"| | fp32 GEMM peak GFLOP/s ({peak['n']}^3: numpy {peak['gflops']['numpy']:.0f}, "
             f"ORT {peak['gflops']['onnxruntime']:.0f}) | {peak['peak_gflops']:.0f} | | |"]
    for batch, row in entry["batches"].items():
        ms, gflops, fraction = row["ms_per_image"], row["gflops"], row["fraction_of_fp32_peak"]
        lines.append(f"| | batch {batch}: ms per image Keras fp32 / ORT fp32 / ORT int8 "
                     f"| {ms['keras_fp32']:.1f} / {ms['ort_fp32']:.1f} / {ms['ort_int8']:.1f} | | |")
        lines.append(f"| | batch {batch}: GFLOP/s (share of fp32 peak) Keras / ORT fp32 / ORT int8 "
                     f"| {gflops['keras_fp32']:.0f} ({fraction['keras_fp32']:.2f}) / {gflops['ort_fp32']:.0f} "
                     f"({fraction['ort_fp32']:.2f}) / {gflops['ort_int8']:.0f} ({fraction['ort_int8']:.2f}) | | |")
        lines.append(f"| | batch {batch}: ratio ORT int8 / ORT fp32 | {row['ratio_int8_to_fp32']:.3f} "
                     f"| <= {entry['target_ratio_at_most']} | {_met(entry['met'][batch])} |")
    return lines


def _end_to_end_rows(entry: dict) -> list[str]:
    width, height = entry["image_size"]
    lines = [f"| end to end, file to caption ({entry['images']} JPEGs {width}x{height},"
             f" greedy + beam {entry['beams']}, one process per variant x {entry['rounds']}) | | | | |"]
    for variant, row in entry["variants"].items():
        stages = row["stage_median_ms"]
        lines += [
            f"| | {variant}: p50 / p95 ms | {row['p50_ms']:.0f} / {row['p95_ms']:.0f} | | |",
            f"| | {variant}: median ms decode+resize / encoder / greedy / beam | "
            + " / ".join(f"{stages[s]:.1f}" for s in ("preprocess", "encoder", "greedy", "beam3")) + " | | |",
            f"| | {variant}: peak RSS MiB | {row['peak_rss_mib']:.0f} | | |",
            f"| | {variant}: cold start s (process start to first caption) | {row['cold_start_s']:.2f} | | |",
        ]
    return lines


def _serving_rows(entry: dict) -> list[str]:
    targets = entry["targets"]
    lines = [f"| serving under load (`python -m demo serve`, one-variant bundle, greedy + beam {entry['beams']}; "
             "batched: `--max-batch-size` default, unbatched: 1) | | | | |"]
    for variant, row in entry["variants"].items():
        servers, ratios, met = row["servers"], row["ratios"], row["met"]
        for mode, server in servers.items():
            lines.append(f"| | {variant} {mode}: cold start s / peak RSS MiB | {server['cold_start_s']:.1f} / "
                         f"{server['peak_rss_mib']:.0f} | "
                         + (f"<= {targets['peak_rss_mib_at_most'][variant]} | {_met(met['peak_rss'])} |"
                            if mode == "batched" else "| |"))
            for level in server["levels"]:
                lines.append(
                    f"| | {variant} {mode}, {level['callers']} callers: requests/s, p50 / p95 ms (model p50), mean "
                    f"encoder batch, errors, answers unlike alone | {level['throughput_per_s']:.2f}, "
                    f"{level['p50_ms']:.0f} / {level['p95_ms']:.0f} ({level['model_p50_ms']:.0f}), "
                    f"{level['mean_encoder_batch']:.1f}, {level['errors']} of {level['requests']}, "
                    f"{level['differ_from_alone']} of {level['compared_with_alone']} | 0, 0 | "
                    f"{_met(level['errors'] == 0 and level['differ_from_alone'] == 0)} |")
        lines += [
            f"| | {variant}: 8 callers, requests/s batched / unbatched | {ratios['throughput_8_callers']:.2f} | "
            f">= {targets['throughput_ratio_8_callers'][variant]} | {_met(met['throughput_8_callers'])} |",
            f"| | {variant}: 1 caller, p50 batched / unbatched | {ratios['p50_1_caller']:.2f} | "
            f"<= {targets['p50_ratio_1_caller_at_most']} | {_met(met['p50_1_caller'])} |",
        ]
    return lines


def _export_rows(entry: dict) -> list[str]:
    met, targets = entry["met"], entry["targets"]
    return [
        f"| export (--quantize {entry['quantize']}) | wall s | {entry['seconds']:.1f} "
        f"| <= {targets['seconds_at_most']:g} (aim {targets['seconds_aim']:g}) "
        f"| {_met(met['seconds'])}{' (aim too)' if met['seconds_aim'] else ''} |",
        f"| | peak RSS GiB (largest process) | {entry['peak_rss_gib']:.2f} "
        f"| <= {targets['peak_rss_gib_at_most']:g} (aim {targets['peak_rss_gib_aim']:g}) "
        f"| {_met(met['peak_rss'])}{' (aim too)' if met['peak_rss_aim'] else ''} |",
        "| | stage peaks GiB | " + ", ".join(f"{k} {v:.2f}" for k, v in entry["stage_peak_rss_gib"].items())
        + " | | |",
    ]


def _decoding_rows(entry: dict) -> list[str]:
    ms, ratios, targets, met = entry["ms_per_caption"], entry["ratios"], entry["targets"], entry["met"]
    kind = "trained default run" if entry["name"] == "decoding" else "Flickr-scale, trained (stand-in features)"
    lines = [f"| decoding ({kind}: V={entry['vocab_size']}, H={entry['hidden_size']}, top-{entry['top_k']}, "
             f"<= 20 words, {entry['provider']}, step on {entry['step_threads']} thread(s)) | | | | |"]
    lines += [f"| | {name}: ms per caption | {value:.2f} | | |" for name, value in ms.items()]
    beam5 = f"<= {targets['beam5_ms_at_most']}"
    lines.append(f"| | ORT beam 5 ms per caption | {ms['ort_beam5']:.2f} | {beam5} | {_met(met['beam5_ms'])} |")
    split = entry["beam5_time_split_ms_per_caption"]
    lines.append(f"| | beam 5 time: session calls / search numpy ms ({split['steps_per_caption']:.0f} steps) "
                 f"| {split['session_calls']:.2f} / {split['search_numpy']:.2f} | | |")
    lines.append(f"| | whole distribution to numpy / top-k step, greedy "
                 f"| {ratios['whole_distribution_to_topk_greedy']:.1f}x | | |")
    seed = ratios["seed_loop_to_ort_greedy"]
    if "seed_loop_to_ort_greedy" in met:
        lines.append(f"| | seed loop / ORT greedy | {seed:.0f}x | >= {targets['seed_loop_to_ort_greedy_at_least']}x "
                     f"| {_met(met['seed_loop_to_ort_greedy'])} |")
        batch = [v for k, v in ms.items() if k.startswith("ort_beam3_") and not k.endswith("int8")][0]
        lines.append(f"| | 16 images at beam 3, ms per caption | {batch:.2f} "
                     f"| <= {targets['batch16_beam3_ms_at_most']} | {_met(met['batch16_beam3_ms'])} |")
        int8 = ratios.get("int8_to_fp32_step")
        shipped = "" if entry.get("int8_shipped") else ", int8 not shipped (caption gate)"
        lines.append(f"| | int8 / fp32 decoder step (6 rows{shipped}) | {'-' if int8 is None else f'{int8:.2f}'} "
                     f"| <= {targets['int8_step_ratio_at_most']} | {_met(met['int8_step_ratio'])} |")
    else:
        lines.append(f"| | seed loop / ORT greedy | {seed:.0f}x | | |")
    for search, stats in entry["captions"].items():
        lines.append(f"| | {search}: mean words, ended by <end> | {stats['mean_words']:.1f}, "
                     f"{stats['ended_by_end_token']:.0%} | | |")
    if entry.get("evaluate_beam_3_images_per_s"):
        lines.append(f"| | train evaluate beam 3 (Keras step), images/s | {entry['evaluate_beam_3_images_per_s']:.1f} "
                     "| | |")
    return lines


def _folder_rows(entry: dict) -> list[str]:
    width, height = entry["image_size"]
    rates, batch, target = entry["images_per_s"], entry["default_batch_size"], entry["target"]
    return [f"| folder to a file (`python -m demo caption FOLDER --out X.jsonl --variant {entry['variant']}`, "
            f"{entry['images']} JPEGs {width}x{height}, {entry['provider']}, process start included) | | | | |",
            f"| | batch {batch} (default): images/s | {rates['batch_default']['median_per_s']:.2f} | | |",
            f"| | batch 1: images/s | {rates['batch_1']['median_per_s']:.2f} | | |",
            f"| | ratio batch {batch} / batch 1 | {entry['ratio_default_to_batch1']:.2f} "
            f"| >= {target['ratio_at_least']:g} | {_met(target['met'])} |"]


def _multiworker_rows(entry: dict) -> list[str]:
    timings, volume = entry["timings"], entry["all_reduce"]
    lines = [f"| multi-worker training (`fit --strategy multiworker --local-workers 2`, {entry['run']}, global batch "
             f"{entry['batch_size']}, {timings['one_process']['steps_per_epoch']} steps per epoch) | | | | |"]
    for side, label in (("one_process", "1 process"), ("two_workers", "2 local workers")):
        lines.append(f"| | {label}: seconds per epoch | {timings[side]['seconds_per_epoch']:.1f} | | |")
    lines.append(f"| | ratio 2 workers / 1 process (same cores shared) | {entry['ratio_two_workers_to_one']:.2f} | | |")
    for label in ("this_run", "flickr30k"):
        v = volume[label]
        lines.append(f"| | all-reduce per step, V={v['vocab_size']}: dense gradients MB "
                     f"(+ sparse embedding rows per worker) | {v['dense_bytes'] / 1e6:.2f} "
                     f"(+ {v['sparse_bytes_per_worker'] / 1e6:.2f}) | | |")
    return lines


def _calibration_rows(entry: dict) -> list[str]:
    target = entry["target"]
    return [f"| calibrated VGG16 ({entry['images']} images, {entry['patches']:,} patches per layer) | seconds / peak "
            f"RSS GiB | {entry['seconds']:.1f} / {entry['peak_rss_gib']:.2f} | <= {target['seconds_at_most']} s "
            f"(slowest 2-core machine) / <= {target['peak_gib_at_most']:g} GiB | {_met(target['met'])} |",
            f"| | in VGG16 forward passes of the same images (those take {entry['forward_seconds']:.1f} s) "
            f"| {entry['ratio_to_forward']:.1f}x | | |"]


ROWS = {"feature_extraction": _features_rows, "calibration": _calibration_rows, "training_speed": _training_rows,
        "encoder_latency": _encoder_rows,
        "export": _export_rows, "decoding": _decoding_rows, "decoding_flickr_scale": _decoding_rows,
        "end_to_end": _end_to_end_rows, "serving_load": _serving_rows, "folder_captioning": _folder_rows,
        "multiworker_training": _multiworker_rows}

"""The model card's measured sections: evaluation results (`metrics.json`) and the export's checks (the manifest).

Kept apart from `export.model_card` (which says what the model is and is for) because these are tables of
numbers read from two formats that grow keys over time: every key is looked up with a fallback, and a block
that is missing becomes a sentence saying what was not measured and how to measure it, never a crash.
Numbers are formatted the same way everywhere: scores to 3 decimals, shares as percentages, parity
differences in scientific notation.
"""
from __future__ import annotations

from demo import bundle_layout as layout

DASH = "–"
COCO_METRICS = (("cider", "CIDEr"), ("rouge_l", "ROUGE-L"), ("meteor", "METEOR"))
SCENE_COLUMNS = (("shape", "shape word"), ("colour", "colour"), ("size", "size"), ("position", "position"),
                 ("background", "background"), ("all_right", "all right"))


def score(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else DASH


def share(value) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else DASH


def tiny(value) -> str:
    if not isinstance(value, (int, float)):
        return DASH
    return "0" if value == 0 else f"{value:.1e}"


def megabytes(value) -> str:
    if not isinstance(value, (int, float)):
        return DASH
    return f"{value / 1e6:.1f} MB" if value < 10e6 else f"{value / 1e6:.0f} MB"


def search_label(key: str) -> str:
    """`greedy` as is, `beam_3` as "beam 3"."""
    return key.replace("_", " ")


def searches(metrics: dict | None) -> dict[str, dict]:
    """The per-search blocks of `metrics.json` (`greedy`, `beam_3`, ...): every entry that holds BLEU scores."""
    if not isinstance(metrics, dict):
        return {}
    return {key: block for key, block in metrics.items() if isinstance(block, dict) and "bleu_4" in block}


# ---------------------------------------------------------------- results


def results_section(metrics: dict | None, run_name: str) -> list[str]:
    found = searches(metrics)
    if not found:
        return ["## Results", "", f"Evaluation was not run for this model (no scores in `metrics.json`): run "
                f"`python -m train evaluate --run {run_name}`, then export again, and this section shows its "
                "BLEU scores.", ""]
    first = next(iter(found.values()))
    lines = ["## Results", "",
             f"`python -m train evaluate` on the {first.get('split', 'test')} split ({first.get('images', '?')} "
             f"images), each caption scored against its image's reference captions (length penalty "
             f"{first.get('length_penalty', DASH)}):", ""]
    lines += _score_table(found) + [""]
    lines += ["*Shuffled references*: BLEU-4 of the same captions against another image's references: what the "
              "phrasing alone earns. The gap to BLEU-4 is what the model read from the image.", ""]
    lines += _diversity(found)
    if any("scene" in block for block in found.values()):
        lines += _scene_table(found)
    return lines


def _score_table(found: dict[str, dict]) -> list[str]:
    coco = [(key, name) for key, name in COCO_METRICS if any(key in block for block in found.values())]
    header = ["search", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", *(name for _, name in coco),
              "BLEU-4, shuffled references", "mean words"]
    rows = [_row(header), _row(["---"] * len(header))]
    for key, block in found.items():
        cells = [score(block.get(f"bleu_{n}")) for n in range(1, 5)] + [score(block.get(k)) for k, _ in coco]
        mean_words = block.get("mean_words")
        rows.append(_row([search_label(key), *cells, score(block.get("bleu_4_shuffled_references")),
                          f"{mean_words:.1f}" if isinstance(mean_words, (int, float)) else DASH]))
    if not coco:
        rows.append("")
        rows.append("CIDEr, ROUGE-L and METEOR were not measured (`pycocoevalcap` was not installed at evaluation).")
    return rows


def _diversity(found: dict[str, dict]) -> list[str]:
    lines = []
    for key, block in found.items():
        d = block.get("diversity")
        if isinstance(d, dict) and "distinct_captions" in d:
            lines.append(f"- {search_label(key)}: {d['distinct_captions']} distinct captions over "
                         f"{block.get('images', '?')} images ({share(d.get('distinct_share'))}); the most common, "
                         f"\"{d.get('most_common_caption', '')}\", for {share(d.get('most_common_share'))} of them.")
    return lines + [""] if lines else []


def _scene_table(found: dict[str, dict]) -> list[str]:
    lines = ["What the captions get right about each synthetic scene (`train.scene_scoring`): the share of the "
             "scenes' shapes whose shape word and colour the caption gets right, size and position where the caption "
             "states them (a shape it never mentions is wrong on all four), the background among captions that name "
             "one, and the images whose caption gets everything it states right. BLEU rewards the templates' phrasing; "
             "these say what the model actually recognises.", ""]
    header = ["search", *(name for _, name in SCENE_COLUMNS)]
    lines += [_row(header), _row(["---"] * len(header))]
    notes = []
    for key, block in found.items():
        scene = block.get("scene")
        if not isinstance(scene, dict):
            continue
        if "not_scored" in scene:
            notes.append(f"{search_label(key)}: not scored ({scene['not_scored']})")
            continue
        lines.append(_row([search_label(key), *(_scene_cell(scene, column) for column, _ in SCENE_COLUMNS)]))
    return lines + [""] + ([f"- {note}" for note in notes] + [""] if notes else [])


def _scene_cell(scene: dict, column: str) -> str:
    """A share, with how often the caption stated the attribute where it need not (size, position, background)."""
    stated = {"size": ("size_stated", "stated"), "position": ("position_stated", "stated"),
              "background": ("background_named", "named")}.get(column)
    if stated and isinstance(scene.get(stated[0]), (int, float)):
        return f"{share(scene.get(column))} ({stated[1]} {share(scene[stated[0]])})"
    return share(scene.get(column))


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# ---------------------------------------------------------------- export checks


def export_section(manifest: dict, decoder_only: bool) -> list[str]:
    parity = manifest.get("parity") or {}
    lines = ["## Export checks", "",
             "Measured by `python -m export` before this bundle was installed (the manifest's `parity` block has "
             "every figure):", ""]
    lines += _encoder_parity(parity.get("encoder"), decoder_only)
    lines += _decoder_parity(parity.get("decoder"), parity.get("decoder_topk"))
    lines += _caption_parity(parity.get("captions"))
    lines += [""] + _quantized_section(parity, decoder_only)
    return lines


def _encoder_parity(block: dict | None, decoder_only: bool) -> list[str]:
    if decoder_only:
        return ["- Encoder: none in this bundle (exported with `--decoder-only`)."]
    if not isinstance(block, dict):
        return ["- Encoder: no parity figures recorded."]
    return [f"- `{layout.DEFAULT_ENCODER}` against Keras' VGG16 on {block.get('images', '?')} images: largest "
            f"difference {tiny(block.get('max_abs_diff_relative_to_feature_scale'))} of the feature scale "
            f"(bound {tiny(block.get('tolerance'))})."]


def _decoder_parity(whole: dict | None, topk: dict | None) -> list[str]:
    lines = []
    if isinstance(whole, dict):
        diffs = whole.get("max_abs_diff") or {}
        lines.append(f"- `{layout.DECODER_STEP}` against the Keras step model on {whole.get('rows', '?')} rows: "
                     f"log-probabilities within {tiny(diffs.get(layout.LOG_PROBS))} (bound "
                     f"{tiny(whole.get('tolerance'))}), LSTM state within "
                     f"{tiny(max([diffs.get(layout.H_OUT, 0), diffs.get(layout.C_OUT, 0)]))}.")
    if isinstance(topk, dict):
        diffs = [v for v in (topk.get("max_abs_diff") or {}).values() if isinstance(v, (int, float))]
        lines.append(f"- `{layout.DEFAULT_DECODER}` (the step the runtime runs, top-{topk.get('top_k', '?')}) "
                     f"against the whole step: largest difference {tiny(max(diffs) if diffs else None)}.")
    return lines or ["- Decoder: no parity figures recorded."]


def _caption_parity(block: dict | None) -> list[str]:
    if not isinstance(block, dict):
        return ["- Captions: no comparison with Keras recorded."]
    images = block.get("images", "?")
    parts = []
    for prefix, graph in (("", layout.DECODER_STEP), ("topk_", layout.DEFAULT_DECODER)):
        found = [f"{label} {block[f'{prefix}{key}_identical']}/{images}"
                 + _near_ties(block.get(f"{prefix}{key}_near_ties"))
                 for key, label in (("greedy", "greedy"), ("beam_3", "beam-3"))
                 if f"{prefix}{key}_identical" in block]
        if found:
            parts.append(f"`{graph}` {', '.join(found)}")
    return [f"- Captions of {images} test images identical to Keras': {'; '.join(parts) or DASH}."]


def _near_ties(count) -> str:
    return f" (+{count} near-ties)" if isinstance(count, int) and count else ""


def _quantized_section(parity: dict, decoder_only: bool) -> list[str]:
    """One block per quantized variant the export built (`demo.bundle_layout.QUANTIZED`), against the default."""
    lines = []
    for name in layout.QUANTIZED:
        lines += _variant_section(layout.get_variant(name), parity, decoder_only)
    if not lines:
        names = "/".join(layout.QUANTIZED)
        return [f"No {names} variants: exported without `--quantize {'|'.join(layout.QUANTIZED)}`.", ""]
    return lines


def _variant_section(row: layout.Variant, parity: dict, decoder_only: bool) -> list[str]:
    encoder, decoder = parity.get(row.parity_key("encoder")), parity.get(row.parity_key("decoder"))
    if not isinstance(encoder, dict) and not isinstance(decoder, dict):
        return []
    lines = [f"{row.name} variants ({row.summary}), compared with {layout.DEFAULT_VARIANT} on the test split:", ""]
    if isinstance(encoder, dict):
        lines += _encoder_variant(row, encoder)
    elif not decoder_only and row.encoder:
        lines.append(f"- {row.name} encoder: not built.")
    if isinstance(decoder, dict):
        lines += _decoder_variant(row, decoder)
    return lines + [""]


def _encoder_variant(row: layout.Variant, block: dict) -> list[str]:
    sizes, bleu = block.get("bytes") or {}, block.get("bleu_4") or {}
    new, old = row.name, layout.DEFAULT_VARIANT
    line = (f"- `{row.encoder}` ({megabytes(sizes.get(new))} instead of "
            f"{megabytes(sizes.get(old))}): feature cosine {_fixed(block.get('cosine_mean'), 4)} on average "
            f"(min {_fixed(block.get('cosine_min'), 4)}; the export requires ≥ "
            f"{(block.get('bounds') or {}).get('cosine_mean_at_least', DASH)}), greedy captions identical to {old}'s "
            f"on {share(block.get('greedy_identical_fraction'))} of {block.get('evaluation_images', '?')} images, "
            f"BLEU-4 {score(bleu.get(old))} → {score(bleu.get(new))} ({_signed(block.get('bleu_4_change'))})")
    ratio = block.get("latency_ratio_batch_1")
    line += f", {ratio:.2f}× {old}'s latency at batch 1." if isinstance(ratio, (int, float)) else "."
    return [line + _scene_change(block.get("scene"), old, new)]


def _scene_change(scene, old: str, new: str) -> str:
    """A quantized encoder's effect on what the greedy captions get right (synthetic runs), or nothing."""
    sides = [scene.get(side) if isinstance(scene, dict) else None for side in (old, new)]
    if not all(isinstance(side, dict) and "shape" in side for side in sides):
        return ""
    before, after = sides
    return f" Scene scores {old} → {new}: " + ", ".join(
        f"{name} {share(before.get(key))} → {share(after.get(key))}" for key, name in SCENE_COLUMNS[:5]) + "."


def _decoder_variant(row: layout.Variant, block: dict) -> list[str]:
    sizes, bleu = block.get("bytes") or {}, block.get("bleu_4") or {}
    new, old = row.name, layout.DEFAULT_VARIANT
    figures = (f"greedy captions identical to {old}'s on {share(block.get('greedy_identical_fraction'))} of "
               f"{block.get('evaluation_images', '?')} images, BLEU-4 {score(bleu.get(old))} → "
               f"{score(bleu.get(new))} ({_signed(block.get('bleu_4_change'))}), "
               f"{megabytes(sizes.get(new))} instead of {megabytes(sizes.get(old))}")
    ratio = block.get("step_time_ratio")
    if isinstance(ratio, (int, float)):
        figures += f", {ratio:.2f}× {old}'s time per step"
    gate = block.get("gate") or {}
    rule = (f"greedy captions identical on ≥ {share(gate.get('greedy_identical_at_least'))} of images and BLEU-4 "
            f"moving by ≤ {gate.get('bleu_4_change_at_most', DASH)}") if gate else str(block.get("why") or DASH)
    if block.get("shipped"):
        return [f"- `{row.decoder}`: in this bundle, having passed the export's gate ({rule}): {figures}."]
    return [f"- `{row.decoder}`: left out of this bundle, having missed the export's gate ({rule}): {figures}."]


def _fixed(value, places: int) -> str:
    return f"{value:.{places}f}" if isinstance(value, (int, float)) else DASH


def _signed(value) -> str:
    return f"{value:+.3f}" if isinstance(value, (int, float)) else DASH

"""latency_per_stage.png: where a request's time goes, per encoder variant, from the end-to-end benchmark."""
from __future__ import annotations

from pathlib import Path

STAGES = (("preprocess", "decode + resize"), ("encoder", "encoder"), ("greedy", "greedy search"),
          ("beam3", "beam 3 search"))
COLOURS = ("#9aa5b1", "#3b82f6", "#f59e0b", "#10b981")


def plot_stages(results: dict, path: Path) -> Path | None:
    """Stacked bars of median ms per stage, p50/p95 of the whole request written beside each; None without data."""
    entry = next((e for e in results["benchmarks"] if e.get("name") == "end_to_end" and "variants" in e), None)
    if entry is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(entry["variants"])
    figure, axes = plt.subplots(figsize=(8, 1.8 + 0.8 * len(variants)))
    for row, variant in enumerate(variants):
        summary, left = entry["variants"][variant], 0.0
        for (stage, label), colour in zip(STAGES, COLOURS):
            width = summary["stage_median_ms"][stage]
            axes.barh(row, width, left=left, color=colour, label=label if row == 0 else None)
            left += width
        axes.text(left + 2, row, f"p50 {summary['p50_ms']:.0f} ms, p95 {summary['p95_ms']:.0f} ms", va="center")
    axes.set_yticks(range(len(variants)), [f"{v} encoder" for v in variants])
    axes.set_xlabel("median ms per request (image file to greedy + beam captions)")
    axes.set_xlim(0, axes.get_xlim()[1] * 1.35)
    axes.set_title(f"Latency per stage, {results['machine']['cpu']}, {results['machine']['cores']} cores", fontsize=10)
    axes.invert_yaxis()
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), fontsize=8, ncol=len(STAGES), frameon=False)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    tmp.replace(path)
    return path

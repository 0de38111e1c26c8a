"""Seconds per training epoch, one process against two workers (`fit --strategy multiworker --local-workers 2`),
and what the workers all-reduce every step.

Both sides train a copy of the same run (its feature cache shared, read-only) with the same global batch, each
as the command a user runs, in its own processes. Keras logs each epoch's milliseconds per step; an epoch's
seconds are that times the steps per epoch, from epoch 2 on (epoch 1 also traces the graphs). On one machine
the two workers share its cores (the launcher gives each half), so this measures the cost of the
distribution itself: a speed-up needs a machine (or GPU) per worker.

The all-reduce volume is measured on the run's own model: one training step's gradients, taken with
`tf.GradientTape` as Keras takes them. Dense gradients are all-reduced whole (a ring all-reduce sends
2 (N - 1) / N times their size per worker); the embedding's gradient is `IndexedSlices` (the rows of the words in
the batch), which the strategy all-gathers. The same sizes at Flickr30K's vocabulary (the output layer and the
embedding at 8,500 words) say what a real run moves.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.effort import pick
from demo.vocab import Vocabulary
from train.run_files import RunFiles

EPOCHS = 3
FLICKR30K_VOCAB = 8500
STEP_LINE = re.compile(r"^(?:\[worker 0\] )?(\d+)/(\d+) - \d+s - (\d+)ms/step", re.MULTILINE)


def measure(run: Path, effort: str = "full") -> dict:
    files = RunFiles(run)
    if not (files.features_dir / "meta.json").is_file():
        return {"name": "multiworker_training", "skipped": f"no feature cache in {run} (`make demo` builds one)"}
    epochs = pick(effort, 2, 2, EPOCHS)
    with tempfile.TemporaryDirectory(prefix="bench-multiworker-") as scratch:
        sides = {"one_process": [], "two_workers": ["--strategy", "multiworker", "--local-workers", "2"]}
        timings = {name: _train(files, Path(scratch) / name, epochs, extra) for name, extra in sides.items()}
    per_epoch = {name: t["seconds_per_epoch"] for name, t in timings.items()}
    return {
        "name": "multiworker_training",
        "run": str(run),
        "epochs": epochs,
        "batch_size": 64,
        "timings": timings,
        "ratio_two_workers_to_one": per_epoch["two_workers"] / per_epoch["one_process"],
        "all_reduce": all_reduce_volume(files),
    }


def _train(files: RunFiles, copy: Path, epochs: int, extra: list[str]) -> dict:
    """Train a copy of the run (cache linked, not copied) and read seconds per epoch from Keras' log lines."""
    copy.mkdir(parents=True)
    for name in ("captions.json", "splits.json", "vocab.json", "config.json", "prepare_report.json"):
        if (files.root / name).is_file():
            shutil.copy2(files.root / name, copy / name)
    (copy / "features").symlink_to(files.features_dir.resolve())
    command = [sys.executable, "-m", "train", "fit", "--run", str(copy), "--epochs", str(epochs),
               "--patience", "100", "--lr-patience", "100", *extra]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    steps = [(int(total), int(ms)) for done, total, ms in STEP_LINE.findall(result.stderr) if done == total]
    if len(steps) != epochs:
        raise RuntimeError(f"expected {epochs} epoch lines from Keras, found {len(steps)}:\n{result.stderr[-3000:]}")
    later = steps[1:]
    return {"steps_per_epoch": later[0][0], "ms_per_step": [ms for _, ms in steps],
            "seconds_per_epoch": float(np.median([total * ms / 1000 for total, ms in later])),
            "wall_s": round(wall, 1)}


def all_reduce_volume(files: RunFiles) -> dict:
    """Bytes one step's gradients carry, dense and sparse, at this run's vocabulary and at Flickr30K's."""
    import tensorflow as tf  # lazy: the timing above runs in child processes; only this part needs TensorFlow here

    from train.config import FitConfig
    from train.model import ModelSpec, build_training_model  # lazy: as above

    vocab = Vocabulary.load(files.vocab)
    cfg, vocab_size = FitConfig(), len(vocab)
    batch, length = cfg.batch_size // 2, vocab.max_length + 1  # one worker's half of a global batch
    volumes = {}
    for label, size in (("this_run", vocab_size), ("flickr30k", FLICKR30K_VOCAB)):
        model = build_training_model(ModelSpec(size, cfg.embed_dim, cfg.hidden_dim, cfg.dropout))
        rng = np.random.default_rng(0)
        words = rng.integers(1, size, (batch, length)).astype(np.int32)
        features = rng.random((batch, 4096), dtype=np.float32)
        with tf.GradientTape() as tape:
            logits = model({"features": features, "words": words}, training=True)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(words, logits, from_logits=True))
        grads = tape.gradient(loss, model.trainable_variables)
        dense = sum(int(np.prod(g.shape)) * 4 for g in grads if not isinstance(g, tf.IndexedSlices))
        sparse = sum(int(np.prod(g.values.shape)) * 4 + int(np.prod(g.indices.shape)) * 8
                     for g in grads if isinstance(g, tf.IndexedSlices))
        volumes[label] = {"vocab_size": size, "dense_bytes": dense, "sparse_bytes_per_worker": sparse,
                          "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables))}
    return {"worker_batch": batch, "caption_positions": length, **volumes}

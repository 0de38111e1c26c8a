"""`python -m train fit`: teacher-forced training with checkpoints that survive interruption.

After every epoch, atomically: `checkpoints/last.keras` (model + optimizer),
`checkpoints/state.json` (epochs done, the early-stopping and learning-rate
schedulers' counters), and `model.keras` when validation loss improved.
`--resume` reloads all three and continues with the next epoch, so an
interrupted run ends where an uninterrupted one would. `logs/training.csv`
gets each epoch's row before the checkpoint; a resume drops the rows of
epochs after the checkpoint (a kill between the two writes), so the log
lists every epoch exactly once.
"""
from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from demo.artifacts import atomic_write_json, read_json
from demo.errors import BadInput, MissingFile
from demo.vocab import Vocabulary
from train.cluster import Cluster, resolve_cluster
from train.config import FitConfig, to_json
from train.encoder import TOP_LAYERS, apply_top, dense_top_weights
from train.feature_cache import load_cache
from train.model import (
    ModelSpec,
    build_fine_tune_model,
    build_training_model,
    fine_tuned_top,
    load_trained,
    saved_layer_names,
)
from train.multiworker import join_cluster, leave_together, output_root, peer_failure
from train.run_features import encoder_spec_of
from train.run_files import RunFiles, update_run_config
from train.sequences import (
    ImageCaptions,
    caption_sequences,
    feature_scale,
    group_by_image,
    make_dataset,
    steps_per_epoch,
)
from train.tf_import import import_keras

log = logging.getLogger(__name__)

keras = import_keras()
import tensorflow as tf  # noqa: E402  (after the quiet import)

# the layers a fine-tuned model shares by name with a frozen-feature one (`--init-from`)
FIRST_STAGE_LAYERS = ("image_dense", "embedding", "lstm", "decoder_dense", "logits")
SCALE_SAMPLE = 1024  # training images whose initial fc2 output sets a fine-tuned run's feature scale


def save_model_atomically(model, path: Path) -> None:
    """Keras writes in place; write beside the target and rename so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def link_atomically(source: Path, target: Path) -> None:
    """The best epoch's model is the checkpoint just written: a hard link (a copy where links fail) spares a second
    save of the same weights, and the next epoch's checkpoint replaces its own name, never the link's file."""
    tmp = target.with_name(f".{target.stem}.tmp.keras")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


class RunCheckpoint(keras.callbacks.Callback):
    """Saves last/best checkpoints and the schedulers' state at the end of every epoch."""

    def __init__(self, files: RunFiles, stopper, reducer, best: float):
        super().__init__()
        self.files, self.stopper, self.reducer, self.best = files, stopper, reducer, best

    def on_epoch_end(self, epoch, logs=None):
        val_loss = float((logs or {}).get("val_loss", np.inf))
        save_model_atomically(self.model, self.files.last_checkpoint)
        if val_loss < self.best:
            self.best = val_loss
            link_atomically(self.files.last_checkpoint, self.files.model)
        atomic_write_json(self.files.train_state, {
            "epochs_done": epoch + 1,
            "best_val_loss": self.best,
            "stopper": {"wait": self.stopper.wait, "best": _finite(self.stopper.best)},
            "reducer": {"wait": self.reducer.wait, "best": _finite(self.reducer.best),
                        "cooldown_counter": self.reducer.cooldown_counter},
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "stopped_early": False,
        })

    def on_train_end(self, logs=None):
        if self.stopper.stopped_epoch > 0 and self.files.train_state.is_file():
            state = read_json(self.files.train_state, "training state")
            atomic_write_json(self.files.train_state, state | {"stopped_early": True})


class EpochSeededDropout(keras.callbacks.Callback):
    """Draws each epoch's dropout masks from (seed, epoch, layer) alone.

    Keras keeps a dropout layer's random state outside the saved model, so a run resumed from a checkpoint
    would draw other masks than an uninterrupted run, and end elsewhere.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        dropouts = [layer for layer in self.model._flatten_layers() if isinstance(layer, keras.layers.Dropout)]
        for index, layer in enumerate(dropouts):
            state = layer.seed_generator.state
            start = np.random.default_rng([self.seed, epoch, index]).integers(2**31)
            state.assign(np.asarray([start, 0], dtype=state.dtype))


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


class _Restorable:
    """Puts a scheduler's counters back after Keras resets them at the start of `fit`."""

    restore: dict | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for name, value in (self.restore or {}).items():
            if value is not None:
                setattr(self, name, value)


class ResumableEarlyStopping(_Restorable, keras.callbacks.EarlyStopping):
    pass


class ResumableReduceLROnPlateau(_Restorable, keras.callbacks.ReduceLROnPlateau):
    pass


def distribution_strategy(cfg: FitConfig, cluster: Cluster | None):
    """The strategy `--strategy` names; the multi-worker one first of all, before anything else touches TensorFlow
    (collective ops are configured once, at start)."""
    if cluster is not None:
        return join_cluster(cluster, cfg.join_timeout)
    if cfg.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cfg.logical_cpus)
    if cfg.strategy != "mirrored":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    log.info(f"fit: MirroredStrategy over {strategy.num_replicas_in_sync} replicas: {', '.join(devices)}")
    return strategy


def check_first_stage(path: Path) -> None:
    """`--init-from` names a frozen-feature model: refused before any cache or model is loaded."""
    if set(TOP_LAYERS) <= saved_layer_names(path):
        raise BadInput(f"--init-from {path} is already fine-tuned; give the frozen-feature model of a first stage")


def run_fit(cfg: FitConfig):
    files = RunFiles(Path(cfg.run))
    if cfg.fine_tune_top and cfg.init_from:
        check_first_stage(cfg.init_from)
    cluster = resolve_cluster(cfg.workers, cfg.worker_index) if cfg.strategy == "multiworker" else None
    strategy = distribution_strategy(cfg, cluster)
    keras.utils.set_random_seed(cfg.seed)
    vocab = Vocabulary.load(files.vocab)
    cache = load_cache(files, layer="block5_pool" if cfg.fine_tune_top else "fc2")
    train_data = caption_sequences(files, vocab, "train", cache.rows)
    val_data = caption_sequences(files, vocab, "val", cache.rows)
    state = _resume_state(files) if cfg.resume else None
    if state and state.get("stopped_early"):
        log.info(f"fit: training already stopped early after epoch {state['epochs_done']}; nothing to resume")
        return load_trained(files.model)
    batch_size, feature_input, replicas = cfg.batch_size, "features", strategy.num_replicas_in_sync
    if cfg.fine_tune_top:
        train_data, val_data = group_by_image(train_data), group_by_image(val_data)
        batch_size = max(1, cfg.batch_size // train_data.inputs.shape[1])  # --batch-size stays captions per step
        feature_input = "block5_pool"
    with strategy.scope():
        model = _load_or_build(cfg, files, vocab, cache, train_data, state)
    initial_epoch = state["epochs_done"] if state else 0
    if initial_epoch >= cfg.epochs:
        log.info(f"fit: {initial_epoch} epochs already done (--epochs {cfg.epochs}); nothing to do")
        return model
    chief = cluster is None or cluster.is_chief
    if chief:
        update_run_config(files, "fit", to_json(cfg) | {"vocab_size": len(vocab)})
    samples = "images with their captions" if cfg.fine_tune_top else "captions"
    log.info(f"fit: {len(train_data)} training {samples}, {len(val_data)} validation {samples}, "
             f"vocabulary {len(vocab)}, epochs {initial_epoch + 1}..{cfg.epochs}"
             + (f", fc1 and fc2 fine-tuned at learning rate {cfg.top_learning_rate:g}" if cfg.fine_tune_top else ""))
    started = time.perf_counter()
    writes = output_root(cluster, files.root) if cluster else contextlib.nullcontext(files.root)
    failures = peer_failure(cluster, files.root) if cluster else contextlib.nullcontext()
    with writes as root, failures, contextlib.redirect_stdout(sys.stderr):  # stdout is for what users parse
        model.fit(
            make_dataset(cache.features, train_data, batch_size, range(initial_epoch, cfg.epochs), cfg.seed,
                         feature_input, replicas, cfg.bucket_window),
            steps_per_epoch=steps_per_epoch(train_data, batch_size),
            validation_data=make_dataset(cache.features, val_data, batch_size, feature_input=feature_input,
                                         replicas=replicas),
            epochs=cfg.epochs, initial_epoch=initial_epoch, callbacks=_callbacks(cfg, RunFiles(root), state),
            shuffle=False,  # the training dataset orders each epoch itself (epoch_order); Keras would only warn
            verbose=1 if sys.stderr.isatty() else 2,  # a progress bar on a terminal, a line per epoch in logs
        )
        if cluster:
            leave_together(strategy)
    log.info(f"fit: done in {time.perf_counter() - started:.1f} s; best model {files.model}")
    return model


def _callbacks(cfg: FitConfig, out: RunFiles, state: dict | None) -> list:
    """What runs after each epoch, writing into `out`: the run, or a worker's scratch folder (multiworker)."""
    stopper = ResumableEarlyStopping(monitor="val_loss", patience=cfg.patience, min_delta=cfg.min_delta, verbose=1)
    reducer = ResumableReduceLROnPlateau(monitor="val_loss", factor=cfg.lr_factor, patience=cfg.lr_patience,
                                         min_delta=cfg.min_delta, min_lr=cfg.min_learning_rate, verbose=1)
    if state:
        stopper.restore = state["stopper"]
        reducer.restore = state["reducer"]
    out.logs_dir.mkdir(parents=True, exist_ok=True)
    if state:
        trim_epoch_log(out.logs_dir / "training.csv", state["epochs_done"])
    return [  # in this order: the CSV row of an epoch lands before its checkpoint
        EpochSeededDropout(cfg.seed), stopper, reducer,
        keras.callbacks.CSVLogger(str(out.logs_dir / "training.csv"), append=bool(state)),
        RunCheckpoint(out, stopper, reducer, state["best_val_loss"] if state else np.inf),
        keras.callbacks.TensorBoard(str(out.logs_dir / "tensorboard"), write_graph=False),
    ]


def _build_fine_tune(cfg: FitConfig, files: RunFiles, vocab: Vocabulary, cache, train_data: ImageCaptions):
    """fc1 and fc2 start from the weights the block5_pool cache was made with (ImageNet, a file, the seeded init);
    the feature scale is that of their fc2 output on training images, as for a frozen run, or the first stage's."""
    top = dense_top_weights(encoder_spec_of(files, "block5_pool"))
    first_stage = load_trained(cfg.init_from) if cfg.init_from else None
    if first_stage is None:
        images = np.unique(train_data.rows)  # sorted, as the sample was drawn before
        sample = np.random.default_rng(cfg.seed).choice(images, size=min(SCALE_SAMPLE, len(images)), replace=False)
        fc2 = apply_top(cache.features[np.sort(sample)], top)
        scale, embed_dim, hidden_dim = feature_scale(fc2, np.arange(len(fc2))), cfg.embed_dim, cfg.hidden_dim
    else:  # the first stage's scale and sizes, whatever the command line says
        scale = float(first_stage.get_layer("feature_scale").scale)
        embed_dim, hidden_dim = first_stage.get_layer("embedding").output_dim, first_stage.get_layer("lstm").units
    spec = ModelSpec(vocab_size=len(vocab), embed_dim=embed_dim, hidden_dim=hidden_dim, dropout=cfg.dropout,
                     feature_scale=scale)
    captions_per_image = train_data.inputs.shape[1]
    model = build_fine_tune_model(spec, top, captions_per_image, cfg.top_learning_rate / cfg.learning_rate)
    if first_stage is not None:
        for name in FIRST_STAGE_LAYERS:
            model.get_layer(name).set_weights(first_stage.get_layer(name).get_weights())
        log.info(f"fit: the captioner's layers start from {cfg.init_from}")
    return model


def trim_epoch_log(path: Path, epochs_done: int) -> None:
    """Keep the log rows of checkpointed epochs only: the epochs after them are trained again on resume.

    A run killed after an epoch's CSV row but before its checkpoint would otherwise log that epoch twice.
    """
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    kept = [row for row in body if row and row[0].isdigit() and int(row[0]) < epochs_done]
    if len(kept) == len(body):
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *kept])
    os.replace(tmp, path)
    log.info(f"fit: dropped {len(body) - len(kept)} log row(s) of epochs after the checkpoint from {path}")


def _resume_state(files: RunFiles) -> dict | None:
    if not files.train_state.is_file() or not files.last_checkpoint.is_file():
        raise MissingFile(f"nothing to resume in {files.root}: no checkpoint from an earlier "
                                "`python -m train fit`; run it without --resume")
    return read_json(files.train_state, "training state")


def _load_or_build(cfg: FitConfig, files: RunFiles, vocab: Vocabulary, cache, train_data, state):
    if state:
        log.info(f"fit: resuming after epoch {state['epochs_done']} from {files.last_checkpoint}")
        model = load_trained(files.last_checkpoint)
        if (fine_tuned_top(model) is not None) != cfg.fine_tune_top:
            raise BadInput(f"{files.last_checkpoint} was trained {'with' if cfg.fine_tune_top else 'without'} "
                           "--fine-tune-top; resume with the same setting, or start again without --resume")
        return model
    if cfg.fine_tune_top:
        model = _build_fine_tune(cfg, files, vocab, cache, train_data)
    else:
        spec = ModelSpec(vocab_size=len(vocab), embed_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim,
                         dropout=cfg.dropout, feature_scale=feature_scale(cache.features, train_data.rows))
        model = build_training_model(spec)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=cfg.clipnorm),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=vocab.pad_id),
    )
    return model

"""`fit --strategy multiworker`: tf.distribute.MultiWorkerMirroredStrategy, made to fail clearly and to fit Keras 3.

Three things the bare strategy does not do for a training command:
- join with a deadline: TensorFlow waits for every worker indefinitely (holding the GIL, and catching
  SIGTERM), so a mistyped address or a worker never started would hang; `join_cluster` has a watchdog
  process end it after `--join-timeout` seconds with a line naming the addresses that did not answer;
- say what to do when a worker dies mid-run: the others stop with an `UnavailableError` of the
  collective ops; `peer_failure` turns it into a one-line error that says to restart with `--resume`;
- work under Keras 3's `fit` (3.15): its TensorFlow trainer hands `Strategy.reduce` a nested batch and
  scalar metrics with `axis=0`, which MultiWorkerMirroredStrategy refuses; `_keras_reduce` reduces each
  leaf, scalars over the replicas alone, which is what Keras means.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from demo.errors import CaptionerError
from train import join_watchdog
from train.cluster import PORT_TAKEN, Cluster
from train.tf_import import import_keras

import_keras()  # TensorFlow imported quietly, once
import tensorflow as tf  # noqa: E402  (after the quiet import)

log = logging.getLogger(__name__)

# what TensorFlow's errors say when a peer died: the line worth showing the user
PEER_GONE = ("unhealthy", "Connection refused", "Connection reset", "failed to connect", "Socket closed")


class WorkerLost(CaptionerError, RuntimeError):
    """Another worker stopped answering during training."""


class PortTaken(CaptionerError, OSError):
    """This worker's port was taken by another program before TensorFlow could listen on it."""


def join_cluster(cluster: Cluster, timeout: float):
    """The strategy, once every worker has joined; after `timeout` seconds without the others, the process ends
    with one error line naming the addresses where nothing answers (`train.join_watchdog`)."""
    log.info(f"fit: {cluster.job} {cluster.index} of {cluster.size} at {cluster.address} "
             f"({'chief: writes the run' if cluster.is_chief else 'writes to a temporary folder'}); "
             f"waiting up to {timeout:g} s for the others")
    watchdog = join_watchdog.start(os.getpid(), timeout, f"{cluster.job} {cluster.index} ({cluster.address})",
                                   cluster.others())
    started = time.perf_counter()
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except tf.errors.UnknownError as exc:
        if "Could not start gRPC server" not in str(exc):
            raise
        raise PortTaken(f"{PORT_TAKEN} {cluster.address}: another program holds that port; choose a free one in "
                        "--workers (or TF_CONFIG)") from exc
    finally:
        with contextlib.suppress(OSError):
            watchdog.stdin.write(join_watchdog.JOINED)
            watchdog.stdin.close()
        watchdog.wait()
    strategy.reduce = _keras_reduce(strategy)
    log.info(f"fit: MultiWorkerMirroredStrategy over {strategy.num_replicas_in_sync} replicas on {cluster.size} "
             f"workers, joined in {time.perf_counter() - started:.1f} s")
    return strategy


def _keras_reduce(strategy):
    """`strategy.reduce` that takes nested values and scalars with an axis, as Keras 3's trainer passes them."""
    reduce = strategy.reduce

    def reduce_leaf(reduce_op, value, axis):
        local = strategy.experimental_local_results(value)[0]
        if axis is not None and getattr(local, "shape", None) is not None and local.shape.rank == 0:
            axis = None  # a scalar (a metric's value): reduce over the replicas only
        return reduce(reduce_op, value, axis)

    def reduce_nested(reduce_op, value, axis=None):
        return tf.nest.map_structure(lambda leaf: reduce_leaf(reduce_op, leaf, axis), value)

    return reduce_nested


def leave_together(strategy) -> None:
    """A last all-reduce, so no worker exits while the chief still writes: TensorFlow reports a worker that left
    first as crashed, and the chief could then fail in its last steps."""
    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


@contextlib.contextmanager
def output_root(cluster: Cluster, run: Path) -> Iterator[Path]:
    """Where this worker writes its checkpoints and logs: the run for the chief, a temporary folder otherwise.

    Every worker runs the same callbacks (they must: saving and early stopping have to agree), but only the
    chief's files are the run's; the others' go to a folder deleted when training ends.
    """
    if cluster.is_chief:
        yield run
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"captioner-{cluster.job}{cluster.index}-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def peer_failure(cluster: Cluster, run: Path) -> Iterator[None]:
    """Turn the collective ops' error after a worker died into one line that says how to carry on."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
            tf.errors.AbortedError) as exc:
        lines = str(exc).splitlines()
        first = next((line.strip()[:200] for line in lines if any(clue in line for clue in PEER_GONE)),
                     type(exc).__name__)
        raise WorkerLost(f"{cluster.job} {cluster.index} ({cluster.address}): another worker stopped answering "
                         f"({first}). Restart every worker with the same command and --resume: training carries "
                         f"on after the last epoch checkpointed in {run}") from exc

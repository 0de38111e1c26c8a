"""Several processes filling one feature cache together: shards, the cache lock, row writes, done flags.

`python -m train features --shard I/N` computes only the batches b with `b % N == I`; N such processes, on
one machine (one per GPU) or on several machines sharing the run folder (NFS), fill the same cache and leave
exactly the files a one-process run leaves. What makes that safe:

- one lock file, `features/.lock`, locked with `fcntl.lockf` (POSIX record locks: local and NFS alike, NFS
  mounted with locking, i.e. not `nolock`). Byte 0 is a mutex held for milliseconds around every change of
  the cache's small files (creating the cache, a done flag, `complete`); byte 1 is held shared by every
  process extracting into the cache for as long as it does, so a start with other settings can tell that
  someone is still working on it (and is refused rather than deleting that work);
- rows are written with `os.pwrite` at their byte offset in the .npy file and `os.fsync`ed before their batch
  is flagged done: no shared memmap, whose pages straddle two batches (two processes flushing the same page
  would undo each other's rows; on NFS concurrent mmap writes from two clients are unsafe);
- the done flags stay one `done.npy`, updated read-modify-write under the mutex, so no process loses another's.

The one-process run takes the same path (shard 0/1), so there is one implementation to trust.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import io
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demo.artifacts import atomic_write_bytes, atomic_write_json, read_json
from demo.errors import BadInput

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_MUTEX_BYTE, _EXTRACTING_BYTE = 0, 1
SLOW_LOCK_S = 10.0  # the mutex is held for milliseconds: this long means something is wrong


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the batches b with b % count == index (0/1 is the whole cache)."""

    index: int = 0
    count: int = 1

    def owns(self, batch: int) -> bool:
        return batch % self.count == self.index

    def batches(self, num_batches: int) -> range:
        return range(self.index, num_batches, self.count)

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard()


def parse_shard(text: str | None, option: str = "--shard") -> Shard | None:
    """`"I/N"` as a Shard (0 <= I < N); None for None. A bad value is a one-line BadInput naming the option."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise BadInput(f"{option} {text!r}: expected I/N, shard I (counted from 0) of N, e.g. {option} 0/2")
    index, count = int(match[1]), int(match[2])
    if count < 1:
        raise BadInput(f"{option} {text!r}: N, the number of shards, must be at least 1, e.g. {option} 0/2")
    if index >= count:
        raise BadInput(f"{option} {text!r}: shards are counted from 0, so I must be 0 to {count - 1} for N={count}")
    return Shard(index, count)


class CacheLock:
    """The features folder's lock file, opened once per process for as long as it works on the cache.

    POSIX record locks belong to the process and are all dropped when it closes *any* descriptor of the file,
    so a process must hold one CacheLock at a time and close it only when done (`with CacheLock(...)`). A
    process that dies (SIGKILL included) loses its locks with it: nothing stale is left to clean up.
    """

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def __enter__(self) -> CacheLock:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The mutex around every change of the cache's small files. Others hold it for milliseconds, so it is
        polled rather than waited for: a holder that hangs (a dead NFS lock daemon) is then reported, once."""
        started, pause, reported = time.monotonic(), 0.001, False
        while not _try_lock(self._fd, _MUTEX_BYTE):
            if not reported and time.monotonic() - started > SLOW_LOCK_S:
                log.warning(f"features: waited {SLOW_LOCK_S:.0f} s for the lock on {self.path}; still waiting")
                reported = True
            time.sleep(pause)
            pause = min(2 * pause, 0.1)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, _MUTEX_BYTE)

    def others_extracting(self) -> bool:
        """Whether another process is extracting into the cache now. Call it before `join`: a process's own
        locks never conflict with themselves, so after joining it would answer for the others no more."""
        return _held_by_others(self._fd)

    def join(self) -> None:
        """Count this process among those extracting (shared: any number may), until `close`."""
        fcntl.lockf(self._fd, fcntl.LOCK_SH, 1, _EXTRACTING_BYTE)


def _try_lock(fd: int, byte: int) -> bool:
    """Lock one byte of the lock file exclusively if no other process holds it; never waits."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, byte)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


def _held_by_others(fd: int) -> bool:
    """Try the extracting byte exclusively without waiting: it fails exactly when some process holds it."""
    if not _try_lock(fd, _EXTRACTING_BYTE):
        return True
    fcntl.lockf(fd, fcntl.LOCK_UN, 1, _EXTRACTING_BYTE)
    return False


def extracting_now(folder: Path) -> bool | None:
    """For `--status`: whether some process is extracting into the cache in `folder` (None: cannot tell).

    Opens the lock file without creating it and tries its extracting byte for an instant, so it never waits.
    """
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        return _held_by_others(fd)
    finally:
        os.close(fd)


class RowWriter:
    """Writes rows into an existing float16 .npy array with `os.pwrite` at their byte offset, then `fsync`.

    Each batch's rows are a contiguous byte range of their own, written by exactly one call: processes writing
    other batches at the same time never touch those bytes, on a local disk or through NFS, which writes
    back the byte ranges a client changed.
    """

    def __init__(self, path: Path, shape: tuple[int, int]):
        self.path = path
        self._file = open(path, "r+b", buffering=0)
        try:
            self._offset, self._dtype = _data_offset(self._file, path, shape)
        except BaseException:
            self._file.close()
            raise
        self._row_bytes = shape[1] * self._dtype.itemsize

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def write(self, first_row: int, rows: np.ndarray) -> None:
        """Store `rows` from row `first_row` on, durably: they are on disk when this returns."""
        data = memoryview(np.ascontiguousarray(rows, dtype=self._dtype)).cast("B")
        position = self._offset + first_row * self._row_bytes
        fd = self._file.fileno()
        while data:
            written = os.pwrite(fd, data, position)
            data, position = data[written:], position + written
        os.fsync(fd)

    def still_at_its_path(self) -> bool:
        """False when the file was replaced since it was opened (another process rebuilt the cache): rows
        written since went to the old file, and their batches must not be flagged done in the new one."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        opened = os.fstat(self._file.fileno())
        return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def _data_offset(handle, path: Path, shape: tuple[int, int]) -> tuple[int, np.dtype]:
    """Where the array's data begins in the .npy file, and its dtype; checks the header is the expected array."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        found_shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version in ((2, 0), (3, 0)):
        found_shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ValueError(f"{path}: unsupported .npy version {version}")
    if tuple(found_shape) != tuple(shape) or fortran or dtype.kind != "f" or dtype.itemsize != 2:
        raise ValueError(f"{path} holds a {'Fortran-order ' if fortran else ''}{dtype} array of shape "
                         f"{found_shape}, expected {shape} float16")
    return handle.tell(), dtype


def read_done(path: Path) -> np.ndarray:
    """The finished-batch flags (a bool per batch)."""
    return np.load(path, allow_pickle=False)


def save_done(path: Path, done: np.ndarray) -> None:
    """Replace the flags atomically: readers (other processes, `--status`) see the old file or the new one."""
    buffer = io.BytesIO()
    np.save(buffer, done, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def mark_done(path: Path, batch: int) -> np.ndarray:
    """Flag one batch done; the caller holds the mutex. Re-reading the file first keeps the flags other
    processes set since this one last read it. Returns the flags as now saved."""
    done = read_done(path)
    done[batch] = True
    save_done(path, done)
    return done


def shards_record_path(done_path: Path) -> Path:
    """`shards.json` beside `done.npy` (`block5_pool.shards.json` beside `block5_pool.done.npy`)."""
    return done_path.with_name(done_path.name.replace("done.npy", "shards.json"))


def record_shards(done_path: Path, shard: Shard) -> None:
    """Remember N for `--status` while the cache is partial; deleted on completion, so a finished cache is the
    same as a one-process run's. The caller holds the mutex."""
    path = shards_record_path(done_path)
    if not path.is_file() or read_json(path, "shard record").get("shards") != shard.count:
        atomic_write_json(path, {"shards": shard.count})


def recorded_shards(done_path: Path) -> int | None:
    path = shards_record_path(done_path)
    try:
        return int(read_json(path, "shard record")["shards"]) if path.is_file() else None
    except (KeyError, TypeError, ValueError, OSError):
        return None


def remove_stale_temporaries(paths: list[Path]) -> None:
    """Temporary files of a writer killed mid-write (atomic writes, a new array). Every writer of these files
    holds the mutex, as the caller does, so any found now is stale; removed so that a cache finished after a
    kill is the same, file for file, as one never interrupted."""
    for path in paths:
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*tmp"):
            stale.unlink(missing_ok=True)


def per_shard(done: np.ndarray, count: int) -> list[tuple[Shard, int, int]]:
    """(shard, batches done, batches) for each shard of `count`."""
    return [(Shard(i, count), int(done[i::count].sum()), len(done[i::count])) for i in range(count)]


def left_by_shard(done: np.ndarray, count: int) -> str:
    """`1/2: 2, 2/3: 1`-style summary of the batches each unfinished shard still has."""
    return ", ".join(f"{shard.label}: {total - finished}" for shard, finished, total in per_shard(done, count)
                     if finished < total)

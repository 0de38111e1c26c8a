"""The bundle's transactional install: a checked work folder replaces `RUN/onnx/` in two renames.

The export builds into `RUN/.onnx-tmp-PID/` (`new_work_dir`); `install` renames the old bundle to
`onnx.previous`, the work folder to `onnx`, and deletes the old one. A failed or killed export leaves the
previous good bundle where it was: after a kill between the two renames, the next export puts `onnx.previous`
back before anything else (`restore_interrupted_install`; the loader names it meanwhile), and work folders of
dead exports are removed (`remove_stale_work_dirs`).
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
WORK_PREFIX = ".onnx-tmp-"  # + the exporting process's id, so a dead export's folder is known as such


def new_work_dir(root: Path) -> Path:
    """This process's empty work folder in the run folder (same file system as the bundle: renames are atomic)."""
    work = root / f"{WORK_PREFIX}{os.getpid()}"
    work.mkdir(parents=True)
    return work


def install(work: Path, bundle: Path) -> None:
    """Put `work` in place of `bundle`; the old bundle survives as `.previous` only between the two renames."""
    previous = bundle.with_name(bundle.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if bundle.exists():
        os.rename(bundle, previous)
    os.rename(work, bundle)
    shutil.rmtree(previous, ignore_errors=True)


def restore_interrupted_install(bundle: Path) -> None:
    """Put back the old bundle that a kill between `install`'s two renames left aside."""
    previous = bundle.with_name(bundle.name + ".previous")
    if previous.is_dir() and not bundle.exists():
        os.rename(previous, bundle)
        log.info("export: restored %s from an interrupted install", bundle)


def remove_stale_work_dirs(root: Path) -> None:
    """Work folders of exports that were killed (their process is gone)."""
    for work in root.glob(f"{WORK_PREFIX}*"):
        pid = work.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(work, ignore_errors=True)

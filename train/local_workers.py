"""`fit --strategy multiworker --local-workers N`: N workers on this machine, on the path real hosts take.

Each worker is an ordinary `python -m train fit --strategy multiworker --workers ... --worker-index I`
process on 127.0.0.1 with a free port: what a user runs on N hosts, minus the hosts. The launcher
prefixes their output with `[worker I]`, shares the CPU between them, and, when one fails or is
killed, stops the others (a worker left waiting for a dead peer only burns time) and says how to
carry on: the same command with `--resume`.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from demo.artifacts import read_json
from demo.errors import BadInput, CaptionerError
from train.cluster import PORT_TAKEN
from train.config import FitConfig, to_arguments
from train.run_files import RunFiles

log = logging.getLogger(__name__)

# The ports are free when chosen but released before TensorFlow listens on them; on a busy machine another
# program's connection can take one in between, which fails at once and is safe to retry.
PORT_ATTEMPTS = 3
GRACE_SECONDS = 30.0  # after one worker failed, how long the others get to notice and stop by themselves
CLUSTER_OPTIONS = ("strategy", "workers", "worker_index", "local_workers")


class WorkersFailed(CaptionerError, RuntimeError):
    """A local worker failed or was killed; the others were stopped."""


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now; all held open together so no two are the same."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


def worker_command(cfg: FitConfig, addresses: list[str], index: int) -> list[str]:
    return [sys.executable, "-m", "train", "fit", *to_arguments(cfg, skip=CLUSTER_OPTIONS),
            "--strategy", "multiworker", "--workers", ",".join(addresses), "--worker-index", str(index)]


def worker_environment(count: int) -> dict[str, str]:
    """The CPU split between the workers (TensorFlow would give each one every core), and no inherited cluster."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
    return env


def run_local_workers(cfg: FitConfig) -> None:
    if cfg.strategy != "multiworker":
        raise BadInput("--local-workers starts a multi-worker run: add --strategy multiworker")
    if cfg.workers or cfg.worker_index is not None or cfg.local_workers < 2:
        raise BadInput("--local-workers N (N >= 2) starts its own cluster: leave out --workers and --worker-index")
    for attempt in range(1, PORT_ATTEMPTS + 1):
        addresses = [f"127.0.0.1:{port}" for port in free_ports(cfg.local_workers)]
        workers, port_taken = _start(cfg, addresses)
        try:
            failed = _wait(workers)
        except KeyboardInterrupt:
            _kill(workers)
            raise
        if failed is not None and port_taken.is_set() and attempt < PORT_ATTEMPTS:
            log.info("fit: a port was taken by another program between choosing and listening; new ports")
            continue
        if failed is not None:
            raise WorkersFailed(_failure_message(cfg, workers, failed, addresses))
        log.info(f"fit: all {len(workers)} workers finished")
        return


def _start(cfg: FitConfig, addresses: list[str]) -> tuple[list[subprocess.Popen], threading.Event]:
    """The workers, their output relayed; the event is set when one says its port was taken."""
    env, port_taken, workers = worker_environment(len(addresses)), threading.Event(), []
    for index in range(len(addresses)):
        process = subprocess.Popen(worker_command(cfg, addresses, index), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
        threading.Thread(target=_relay, args=(process, index, port_taken), daemon=True).start()
        log.info(f"fit: worker {index} at {addresses[index]}, pid {process.pid}")
        workers.append(process)
    return workers, port_taken


def _relay(process: subprocess.Popen, index: int, port_taken: threading.Event) -> None:
    for line in process.stdout:
        if PORT_TAKEN in line:
            port_taken.set()
        sys.stderr.write(f"[worker {index}] {line}")
    sys.stderr.flush()


def _wait(workers: list[subprocess.Popen]) -> int | None:
    """Wait for every worker; the index of the first that failed, after the others stopped or were killed."""
    failed, deadline = None, None
    while any(process.poll() is None for process in workers):
        if failed is None:
            failed = next((i for i, p in enumerate(workers) if p.returncode not in (None, 0)), None)
            if failed is not None:
                log.info(f"fit: worker {failed} {_how(workers[failed].returncode)}; stopping the others")
                deadline = time.monotonic() + GRACE_SECONDS
        elif time.monotonic() > deadline:
            _kill(workers)  # TensorFlow catches SIGTERM (for preemption checkpoints), so only SIGKILL stops it
        time.sleep(0.2)
    return _first_cause(workers) if any(p.returncode for p in workers) else None


def _first_cause(workers: list[subprocess.Popen]) -> int:
    """The worker that failed first: one killed by a signal (the others then stop with an error of their own),
    else the first with an error."""
    killed = [i for i, p in enumerate(workers) if p.returncode < 0]
    return (killed or [i for i, p in enumerate(workers) if p.returncode != 0])[0]


def _kill(workers: list[subprocess.Popen]) -> None:
    for process in workers:
        if process.poll() is None:
            process.kill()
    for process in workers:
        process.wait()


def _how(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


def _failure_message(cfg: FitConfig, workers: list[subprocess.Popen], failed: int, addresses: list[str]) -> str:
    others = "; ".join(f"worker {i} {_how(p.returncode)}" for i, p in enumerate(workers) if i != failed)
    state = RunFiles(Path(cfg.run)).train_state
    done = read_json(state, "training state").get("epochs_done") if state.is_file() else None
    carry_on = (f"run the same command with --resume to carry on after epoch {done}" if done else
                "no epoch was checkpointed: run the same command again")
    return (f"worker {failed} ({addresses[failed]}) {_how(workers[failed].returncode)}; {others} (their lines "
            f"above say more). To go on, {carry_on}")

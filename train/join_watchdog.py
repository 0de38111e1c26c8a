"""`python -m train.join_watchdog`: ends a worker that could not join its cluster in time, saying who was missing.

TensorFlow waits for every worker inside one C++ call that holds the GIL (and catches SIGTERM), so nothing in
the waiting process itself can time out: not a thread, not a Python signal handler. This small process can.
The worker starts it with a pipe on its stdin and writes to the pipe once it has joined; if the pipe stays
silent for the timeout, the watchdog probes every other worker's address, prints one error line on the
worker's stderr and kills the worker (SIGKILL: the only signal it then obeys). If the worker ends first, the
pipe closes and the watchdog goes quietly.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys

JOINED = b"joined\n"


def start(pid: int, timeout: float, me: str, others: list[tuple[str, str]]) -> subprocess.Popen:
    """The watchdog of process `pid` (`me`: "worker 0 (host:port)"); write JOINED to its stdin once joined."""
    return subprocess.Popen([sys.executable, "-m", "train.join_watchdog", "--pid", str(pid), "--timeout",
                             str(timeout), "--me", me, "--others", json.dumps(others)], stdin=subprocess.PIPE)


def answers(address: str, timeout: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def message(me: str, others: list[tuple[str, str]], timeout: float) -> str:
    silent = [f"{name} at {address}" for name, address in others if not answers(address)]
    who = ("nothing answers at " + ", ".join(silent)) if silent else \
        "every address answers, but the cluster did not form (do the workers' --workers lists or TF_CONFIG differ?)"
    return (f"error: {me} could not reach the other workers within {timeout:g} s: {who}. Start `python -m train fit "
            "--strategy multiworker` on every worker with the same cluster, check the addresses and that the ports "
            "are open, or raise --join-timeout.")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m train.join_watchdog", description=__doc__)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--me", required=True)
    parser.add_argument("--others", required=True, help="JSON list of [name, host:port]")
    args = parser.parse_args()
    readable, _, _ = select.select([sys.stdin.buffer], [], [], args.timeout)
    if readable:  # joined, or the worker ended (its end of the pipe closed)
        return 0
    print(message(args.me, [tuple(pair) for pair in json.loads(args.others)], args.timeout), file=sys.stderr,
          flush=True)
    try:
        os.kill(args.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

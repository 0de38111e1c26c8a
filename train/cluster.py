"""Which worker this process is in a multi-worker run, from `TF_CONFIG` or `--workers`/`--worker-index`.

`TF_CONFIG` is TensorFlow's own description of a cluster (every worker's address and this process's
task), the form schedulers and the tf.distribute docs use; `--workers host:port,... --worker-index I`
is a shorter way to say the same thing, and writes exactly that `TF_CONFIG` before the strategy reads it.
As in TensorFlow, the chief is the `chief` task when the cluster has one, otherwise worker 0.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from demo.errors import BadInput

TF_CONFIG = "TF_CONFIG"
PORT_TAKEN = "cannot listen on"  # how a worker's port error starts; `--local-workers` retries on new ports


@dataclass(frozen=True)
class Cluster:
    """Every task's address in TensorFlow's order (chief first, then the workers) and which one this is."""

    tasks: tuple[tuple[str, int, str], ...]  # (job, index, "host:port")
    job: str
    index: int

    @property
    def address(self) -> str:
        return next(address for job, index, address in self.tasks if (job, index) == (self.job, self.index))

    @property
    def is_chief(self) -> bool:
        has_chief = any(job == "chief" for job, _, _ in self.tasks)
        return self.job == "chief" or (not has_chief and self.job == "worker" and self.index == 0)

    @property
    def size(self) -> int:
        return len(self.tasks)

    def others(self) -> list[tuple[str, str]]:
        """(name, address) of every other task, e.g. ("worker 1", "10.0.0.2:12345")."""
        return [(f"{job} {index}", address) for job, index, address in self.tasks
                if (job, index) != (self.job, self.index)]

    def tf_config(self) -> dict:
        jobs: dict[str, list[str]] = {}
        for job, _, address in self.tasks:
            jobs.setdefault(job, []).append(address)
        return {"cluster": jobs, "task": {"type": self.job, "index": self.index}}


def parse_address(text: str) -> str:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--workers: {text.strip()!r} is not host:port (e.g. 10.0.0.2:12345)")
    return f"{host}:{int(port)}"


def from_workers(workers: str, worker_index: int | None) -> Cluster:
    """The cluster `--workers a:p,b:q --worker-index I` describes."""
    addresses = [parse_address(part) for part in workers.split(",") if part.strip()]
    if len(addresses) < 2:
        raise BadInput("--workers needs at least two host:port addresses, separated by commas")
    if len(set(addresses)) != len(addresses):
        raise BadInput(f"--workers names an address twice: {workers}")
    if worker_index is None or not 0 <= worker_index < len(addresses):
        raise BadInput(f"--worker-index must be 0..{len(addresses) - 1}: which of the --workers this process is "
                       "(0 is the chief, which writes the run's files)")
    return Cluster(tuple(("worker", i, a) for i, a in enumerate(addresses)), "worker", worker_index)


def from_tf_config(text: str) -> Cluster:
    """The cluster a `TF_CONFIG` value describes; only what MultiWorkerMirroredStrategy runs (chief, worker)."""
    try:
        config = json.loads(text)
        jobs, task = config["cluster"], config["task"]
        job, index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{TF_CONFIG} is not TensorFlow's cluster JSON ({exc}); e.g. "
                       '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
                       '"index": 0}}') from exc
    unknown = set(jobs) - {"chief", "worker"}
    if unknown:
        raise BadInput(f"{TF_CONFIG} has job(s) {sorted(unknown)}: MultiWorkerMirroredStrategy runs only "
                       "'chief' and 'worker' tasks")
    tasks = tuple((name, i, parse_address(address)) for name in ("chief", "worker")
                  for i, address in enumerate(jobs.get(name, [])))
    if (job, index) not in {(j, i) for j, i, _ in tasks}:
        raise BadInput(f"{TF_CONFIG}: task {job} {index} is not in its cluster")
    return Cluster(tasks, job, index)


def resolve_cluster(workers: str | None, worker_index: int | None) -> Cluster:
    """The cluster from the options when given (and written to `TF_CONFIG`), else from `TF_CONFIG`."""
    if workers:
        cluster = from_workers(workers, worker_index)
        os.environ[TF_CONFIG] = json.dumps(cluster.tf_config())
        return cluster
    if worker_index is not None:
        raise BadInput("--worker-index goes with --workers host:port,host:port,...")
    text = os.environ.get(TF_CONFIG)
    if not text:
        raise BadInput("--strategy multiworker needs the cluster: set TF_CONFIG on every worker, or pass "
                       "--workers host:port,host:port,... --worker-index I (or --local-workers N to try it "
                       "on this machine)")
    return from_tf_config(text)

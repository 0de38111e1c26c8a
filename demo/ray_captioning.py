"""`python -m demo caption ... --engine ray`: the same captions as a Ray Data job, on a laptop or a cluster.

The job: the images' bytes are read by Ray (`read_binary_files`: local paths, or any filesystem Ray reads),
decoded by the project's own `load_image` inside `CaptionActor`s (one `Captioner` held per actor, its ONNX
Runtime threads = the actor's CPUs, so actors do not oversubscribe the cores), and the rows stream back to this
process, which appends them batch by batch to the same resumable `--out` file the one-process command writes
(`demo.results_file.ResultsFile`): a rerun skips the images already there, an image is in the file once
however the job was interrupted (a killed actor's batch is retried by Ray; a killed driver loses at most the
rows it had not yet appended), and a bad file is an error row, never a failed job.

Ray is optional (`requirements/ray.txt`); the actors need the bundle at the same path (a shared filesystem) and
this package, which the job ships to them (`py_modules`). A local cluster listens on 127.0.0.1 only.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demo.errors import BadInput
from demo.generation import GenerationConfig
from demo.results_file import ResultsFile, captioned_row, refused_row
from demo.sessions import usable_cores

RAY_REQUIREMENTS = "requirements/ray.txt"
LOOPBACK = "127.0.0.1"
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's own node address is 127.0.0.1, as off Linux
READ_CPUS = 1  # logical CPUs kept for reading; a local cluster declares them on top of the cores
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide the job runs."""

    address: str | None = None  # an existing cluster ("auto", "ray://HOST:10001"); None: start a local one
    actors: int | None = None  # captioners held at once; None: the cluster's CPUs / threads_per_actor
    threads_per_actor: int = 1  # CPUs per actor: its ONNX Runtime threads
    gpus_per_actor: float = 0.0  # with CUDA: the actors' encoder runs on a GPU share


class CaptionActor:
    """One Captioner per actor; a batch of {path, bytes} becomes one JSON row per image."""

    def __init__(self, model: str, config: dict, provider: str, variant: str, decoder_variant: str, threads: int):
        from demo.captioner import Captioner  # lazy: in the actor's process, not the driver's

        self.captioner = Captioner(model, provider=provider, variant=variant, decoder_variant=decoder_variant,
                                   threads=threads)
        self.options = self.captioner.options(GenerationConfig.from_dict(config))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from demo.preprocess import ImageError, load_image  # lazy: as above

        rows, pixels, good = [], [], []
        for path, data in zip(batch["path"], batch["bytes"]):
            try:
                pixels.append(load_image(bytes(data), name=str(path)))
                good.append(str(path))
            except ImageError as exc:
                rows.append(refused_row(Path(path), str(exc)))
        if pixels:
            results = self.captioner.caption_pixels(np.stack(pixels), self.options)
            rows += [captioned_row(Path(path), result.to_dict()) for path, result in zip(good, results)]
        return {"row": np.array([json.dumps(row) for row in rows], dtype=object)}


def caption_with_ray(model: Path, todo: list[Path], out: ResultsFile, config: GenerationConfig, provider: str,
                     variant: str, decoder_variant: str, batch_size: int, settings: RaySettings) -> int:
    """Caption `todo` (the images `out` does not have yet) as a Ray job into `out`; returns how many were
    refused."""
    ray = import_ray(local=settings.address is None)
    started = time.perf_counter()
    _connect(ray, settings)
    listed = {str(Path(p).resolve()): p for p in todo}  # Ray reports absolute paths; the rows keep the user's
    # one logical CPU left for the read tasks (bytes off disk: I/O, not compute); actors holding every CPU would
    # leave the reads unscheduled and the job waiting forever
    nodes = sorted({node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]})
    log.info("ray: %d node address(es) %s, %g CPUs", len(nodes), ", ".join(nodes), ray.cluster_resources()["CPU"])
    cpus = ray.cluster_resources().get("CPU", 1) - READ_CPUS
    actors = settings.actors or max(1, int(cpus // settings.threads_per_actor))
    dataset = ray.data.read_binary_files([str(Path(p).resolve()) for p in todo], include_paths=True)
    rows = dataset.map_batches(
        CaptionActor, batch_size=batch_size, concurrency=actors, num_cpus=settings.threads_per_actor,
        num_gpus=settings.gpus_per_actor or None, batch_format="numpy",
        fn_constructor_kwargs={"model": str(Path(model).resolve()), "config": config.to_dict(), "provider": provider,
                               "variant": variant, "decoder_variant": decoder_variant,
                               "threads": settings.threads_per_actor})
    refused = 0
    for batch in rows.iter_batches(batch_size=batch_size, batch_format="numpy"):
        parsed = [json.loads(text) for text in batch["row"]]
        for row in parsed:
            row["path"] = str(listed.get(row["path"], row["path"]))
            if "error" in row:
                refused += 1
                print(f"error: {row['error']}", file=sys.stderr)
        out.append(parsed)
    log.info(f"caption (ray, {actors} actors): {len(todo) - refused} captioned, {refused} refused in "
             f"{time.perf_counter() - started:.1f} s -> {out.path}")
    return refused


def import_ray(local: bool = False):
    """Ray, or the one line saying how to install it. `local`: Ray's addresses are loopback ones, set before Ray is
    first imported (it reads this at import; `ray.init(_node_ip_address="127.0.0.1")` alone is turned into the
    machine's own address), so a local cluster is reachable from this machine only."""
    if local and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    try:
        import ray  # lazy: optional, only for --engine ray
        import ray.data  # noqa: F401  (lazy: as above)
    except ImportError:
        raise BadInput(f"--engine ray needs Ray: pip install -r {RAY_REQUIREMENTS}") from None
    return ray


def _connect(ray, settings: RaySettings) -> None:
    """Join the cluster at `address`, or start a local one on loopback only, without a dashboard."""
    if ray.is_initialized():
        return
    demo_package = str(Path(__file__).resolve().parent)
    runtime_env = {"py_modules": [demo_package]}
    if settings.address:
        ray.init(address=settings.address, runtime_env=runtime_env, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(_node_ip_address=LOOPBACK, num_cpus=usable_cores() + READ_CPUS, include_dashboard=False,
                 runtime_env=runtime_env, log_to_driver=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()

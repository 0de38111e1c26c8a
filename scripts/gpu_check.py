"""`make gpu-check`: the whole pipeline on a CUDA machine, from a fresh environment, in one table.

Steps, each timed and checked; the first failure does not hide the others that
do not depend on it, and any failure makes the exit status 1:

  1. a fresh virtual environment from requirements-gpu.txt (pip, from the index)
  2. TensorFlow sees the GPU
  3. a 600-scene synthetic run: prepare, VGG16 features, `fit --strategy mirrored` for 2 epochs
  4. `export --quantize int8`
  5. the caption CLI on `--provider cuda` reports provider cuda (fp32 decoder, and int8 where the export
     shipped it)
  6. `demo serve --provider cuda`: the page loads and its API answers with provider cuda
  7. `python -m bench --quick --only decoding end_to_end --provider cuda`

Budget: 10 minutes on a networked GPU machine (the install is most of it).
`--python PY` reuses an existing environment instead of step 1.
`--cpu-rehearsal` runs the same steps expecting the CPU (on 2 logical CPUs for
the mirrored strategy): it checks this script on a machine without a GPU.
Standard library only: it runs before the environment exists.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Check:
    """The rows of the final table; a step that raises is a failed row, and later steps still run."""

    expect: str  # "cuda", or "cpu" for a rehearsal
    rows: list[tuple[str, bool, float, str]] = field(default_factory=list)

    def step(self, name: str, work, *needs: str) -> bool:
        if any(not ok for step, ok, _, _ in self.rows if step in needs):
            self.rows.append((name, False, 0.0, f"skipped: needs {', '.join(needs)}"))
            return False
        started = time.monotonic()
        try:
            detail, ok = work(), True
        except Exception as exc:  # noqa: BLE001 -- every step's failure goes into the table
            detail, ok = f"{type(exc).__name__}: {exc}", False
        self.rows.append((name, ok, time.monotonic() - started, " ".join(str(detail).split())[:160]))
        print(f"[gpu-check] {name}: {'ok' if ok else 'FAILED'} ({time.monotonic() - started:.0f} s)", flush=True)
        return ok

    def table(self) -> str:
        lines = ["| step | result | seconds | detail |", "| --- | --- | ---: | --- |"]
        lines += [f"| {name} | {'ok' if ok else 'FAILED'} | {seconds:.0f} | {detail} |"
                  for name, ok, seconds, detail in self.rows]
        return "\n".join(lines)


def run(python: str, *args: str, timeout: int = 600, env: dict | None = None, log: bool = False) -> str:
    """Run `python args` in the repo; its stdout (with `log`, its stderr: the log lines) when it succeeds, else
    an error with its last lines."""
    result = subprocess.run([python, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {(result.stderr or result.stdout)[-600:]}")
    return result.stderr if log else result.stdout


def fresh_venv(path: Path) -> str:
    if path.exists():
        shutil.rmtree(path)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = str(path / "bin" / "python")
    run(python, "-m", "pip", "install", "-q", "--upgrade", "pip", timeout=300)
    run(python, "-m", "pip", "install", "-q", "-r", str(REPO / "requirements-gpu.txt"), timeout=1200)
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_and_ask(python: str, bundle: Path, provider: str) -> str:
    """Start the app, load its page, caption an example through its API; the API's provider."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen([python, "-m", "demo", "serve", "--model", str(bundle), "--port", str(port),
                               "--provider", provider], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"server exited: {server.stdout.read()[-600:]}")
            try:
                page = urllib.request.urlopen(url, timeout=5).read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not answer within 120 s") from None
                time.sleep(1)
        ask = ("import json, sys; from gradio_client import Client, handle_file; from demo.web.page import "
               "example_images; r = Client(sys.argv[1], verbose=False).predict(handle_file(example_images()[0]), "
               "3, 20, 0.5, 3, 'fp32', api_name='/caption'); print(json.dumps(r))")
        answer = json.loads(run(python, "-c", ask, url, timeout=120))
        if answer["provider"] != provider or "gradio" not in page.lower():
            raise RuntimeError(f"the API says provider {answer['provider']}, expected {provider}")
        return f"page loads; API: provider {answer['provider']}, greedy '{answer['greedy']['caption']}'"
    finally:
        server.terminate()
        server.wait(timeout=30)


def pipeline(check: Check, python: str, run_dir: Path, rehearsal: bool) -> None:
    provider = check.expect
    mirrored = ["--strategy", "mirrored"] + (["--logical-cpus", "2"] if rehearsal else [])

    def sees_gpu() -> str:
        code = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
        gpus = int(run(python, "-c", code).split()[-1])
        if gpus < 1 and not rehearsal:
            raise RuntimeError("TensorFlow sees no GPU (is requirements-gpu.txt installed, and the driver?)")
        return f"{gpus} GPU(s)"

    def train() -> str:
        run(python, "-m", "train", "prepare", "--dataset", "synthetic", "--num-images", "600", "--run", str(run_dir))
        run(python, "-m", "train", "features", "--run", str(run_dir), "--vgg-weights", "none", timeout=900)
        out = run(python, "-m", "train", "fit", "--run", str(run_dir), "--epochs", "2", *mirrored, timeout=900,
                  log=True)
        return next((line for line in out.splitlines() if "MirroredStrategy" in line), "trained 2 epochs")

    def caption() -> str:
        image = next(iter(sorted((run_dir / "synthetic").rglob("*.png"))))
        files = json.loads((run_dir / "onnx" / "manifest.json").read_text())["files"]
        said = []
        for decoder in ("fp32", "int8") if "decoder_step_topk.int8.onnx" in files else ("fp32",):
            out = json.loads(run(python, "-m", "demo", "caption", "--model", str(run_dir / "onnx"), str(image),
                                 "--num-beams", "3", "--json", "--provider", provider, "--decoder-variant", decoder))
            if out["provider"] != provider or out["decoder_variant"] != decoder:
                raise RuntimeError(f"the CLI says provider {out['provider']}, decoder {out['decoder_variant']}")
            said.append(f"{decoder} decoder: '{out['images'][0]['caption']}'")
        return f"provider {provider}; " + "; ".join(said)

    def bench() -> str:
        out_dir = run_dir / "bench"
        run(python, "-m", "bench", "--quick", "--only", "decoding", "end_to_end", "--provider", provider,
            "--run", str(run_dir), "--out", str(out_dir), timeout=900)
        results = json.loads((out_dir / "results.json").read_text())["benchmarks"]
        decoding = next(e for e in results if e["name"] == "decoding")
        e2e = next(e for e in results if e["name"] == "end_to_end")["variants"]["fp32"]
        if decoding["provider"] != provider or e2e["provider"] != provider:
            raise RuntimeError(f"benchmarks ran on {decoding['provider']} / {e2e['provider']}, not {provider}")
        ms = decoding["ms_per_caption"]
        int8 = (f"; int8 decoder: greedy {ms['ort_greedy_int8']:.2f} ms, beam 5 {ms['ort_beam5_int8']:.2f} ms"
                if "ort_beam5_int8" in ms else "")
        return (f"greedy {ms['ort_greedy']:.2f} ms, beam 5 {ms['ort_beam5']:.2f} ms, beam 3 over 16 images "
                f"{ms['ort_beam3_16_images']:.2f} ms per caption{int8}; image to captions p50 {e2e['p50_ms']:.0f} ms "
                "(fp32)")

    check.step("TensorFlow sees the GPU", sees_gpu, "environment")
    check.step("train: prepare, features, fit --strategy mirrored (2 epochs)", train, "environment")
    check.step("export --quantize int8", lambda: run(python, "-m", "export", "--run", str(run_dir), "--quantize",
                                                      "int8", timeout=900).strip().splitlines()[-1],
               "train: prepare, features, fit --strategy mirrored (2 epochs)")
    check.step(f"caption CLI --provider {provider}", caption, "export --quantize int8")
    check.step(f"app --provider {provider}: page and API", lambda: serve_and_ask(python, run_dir / "onnx", provider),
               "export --quantize int8")
    check.step(f"bench decoding + end_to_end --provider {provider}", bench, "export --quantize int8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", help="use this environment's python instead of a fresh one")
    parser.add_argument("--venv", type=Path, default=REPO / ".venv-gpu-check", help="where the fresh one goes")
    parser.add_argument("--cpu-rehearsal", action="store_true", help="expect the CPU: check the script itself")
    args = parser.parse_args(argv)
    check = Check("cpu" if args.cpu_rehearsal else "cuda")
    started = time.monotonic()
    if not args.cpu_rehearsal and shutil.which("nvidia-smi") is None:
        check.rows.append(("NVIDIA driver (nvidia-smi)", False, 0.0, "not found: this is no CUDA machine (to check "
                           "the script itself here: --cpu-rehearsal)"))
        print(check.table())
        return 1
    python = args.python
    if python is None:
        check.step("environment", lambda: f"{args.venv}: " + fresh_venv(args.venv))
        python = str(args.venv / "bin" / "python")
    else:
        check.rows.append(("environment", True, 0.0, f"reused {python}"))
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        pipeline(check, python, Path(tmp) / "run", args.cpu_rehearsal)
    print(check.table())
    failed = sum(not ok for _, ok, _, _ in check.rows)
    print(f"gpu-check: {len(check.rows) - failed} passed, {failed} failed in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

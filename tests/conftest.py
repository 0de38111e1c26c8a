"""Shared fixtures: the one trained run the suite shares (built by the README's own `make demo`), views of it, and
the location of the real data shipped beside the repo."""
import ctypes
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.fresh_venvs import FRESH_VENVS, VenvInstall
from tests.helpers import REPO as REPO
from tests.helpers import Drained, free_port, offline_env, readme_block, serve_once, start_server
from train.calibrated_vgg16 import WEIGHTS_FILE

SHARED_FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k"

# The build's size: enough test images for the parity and scoring tests, two epochs to keep it short.
DEMO_SETTINGS = {"NUM_IMAGES": "600", "EPOCHS": "2"}
# The build's own limit: fixtures are outside pytest-timeout's (pytest.ini: timeout_func_only), so it has one.
BUILD_WITHIN_S = 1500

# While iterating on tests, CAPTIONER_TEST_RUNS=DIR keeps the build below in DIR across pytest invocations (built
# when missing, reused as it is otherwise; delete DIR after changing train/ or export/). CI never sets it.
REUSED_RUNS = os.environ.get("CAPTIONER_TEST_RUNS")


@pytest.fixture
def shared_flickr8k() -> Path:
    if not (SHARED_FLICKR8K / "Flickr8k.token.txt").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"real Flickr8k captions not found at {SHARED_FLICKR8K}: CI lays shared/ beside the repo")
        pytest.skip(f"real Flickr8k captions not found at {SHARED_FLICKR8K}")
    return SHARED_FLICKR8K


@dataclass(frozen=True)
class DemoBuild:
    """What the README's first `make demo` left: the run it built, everything it printed, the API's answer."""
    run: Path
    output: str
    answer: dict


def _build_root(tmp_path_factory) -> Path:
    """One folder for the whole session, shared by pytest-xdist workers (each has its own basetemp below it)."""
    if REUSED_RUNS:
        return Path(REUSED_RUNS)
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory) -> DemoBuild:
    """The README's `make demo` (600 scenes, 2 epochs, offline: the calibrated VGG16) until it serves, asked once
    and stopped: the trained, evaluated and exported run every test that needs one shares (~6 minutes, once per
    session, under its own limit). Tests copy it before changing it."""
    root = _build_root(tmp_path_factory) / "demo-build"
    root.mkdir(parents=True, exist_ok=True)
    record = root / "first_make_demo.json"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building it: wait for its record
        if not record.is_file():
            shutil.rmtree(root / "run", ignore_errors=True)
            port = free_port()
            env = offline_env(**DEMO_SETTINGS, RUN=str(root / "run"), PORT=str(port))
            output, answer = serve_once(readme_block("Quick start")[0], env, port, within_s=BUILD_WITHIN_S)
            record.write_text(json.dumps({"output": output, "answer": answer}))
    recorded = json.loads(record.read_text())
    return DemoBuild(root / "run", recorded["output"], recorded["answer"])


@pytest.fixture(scope="session")
def exported_run(demo_build) -> Path:
    """The build's run: prepared, features, trained two epochs, evaluated, exported with the int8 encoder."""
    return demo_build.run


# What `prepare` and `features` write: the run before `fit`.
PREPARED = ("captions.json", "splits.json", "vocab.json", "prepare_report.json")


@pytest.fixture(scope="session")
def synthetic_features_run(demo_build, tmp_path_factory) -> Path:
    """The build's run as `prepare` and `features` left it (600 scenes, the calibrated VGG16's cache), in hard links:
    for tests that train from there. Tests copy it before changing it."""
    source, run = demo_build.run, tmp_path_factory.mktemp("synthetic") / "run"
    run.mkdir()
    for name in (*PREPARED, WEIGHTS_FILE):
        if (source / name).is_file():  # the calibrated encoder's weights: the offline build's
            os.link(source / name, run / name)
    shutil.copytree(source / "features", run / "features", copy_function=os.link)
    config = json.loads((source / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k in ("prepare", "features")}))
    return run


@pytest.fixture(scope="session")
def int8_decoder_run(exported_run, tmp_path_factory) -> Path:
    """A run folder whose onnx/ is the exported bundle with the int8 decoder step in it (seconds: see
    helpers.with_int8_decoder), whatever this run's int8 decoder measured at export."""
    from tests.helpers import with_int8_decoder

    run = tmp_path_factory.mktemp("int8-decoder")
    with_int8_decoder(exported_run / "onnx", run / "onnx")
    return run


@pytest.fixture(scope="session")
def captioner(exported_run):
    """The exported bundle's Captioner with the defaults a user gets (provider auto, fp32)."""
    from demo.captioner import Captioner

    return Captioner(exported_run / "onnx")


@pytest.fixture(scope="session")
def served_app(exported_run):
    """The demo app serving the exported synthetic bundle on loopback; its output is drained so it never stalls."""
    process, url = start_server(exported_run / "onnx")
    output = Drained(process)
    yield url
    output.stop()


FRESH, FRESH_ROOT = pytest.StashKey[dict](), pytest.StashKey[Path | None]()  # the installs; the folder to remove
SHARED_VENVS = "CAPTIONER_TEST_FRESH_VENVS"  # the controller's folder for its workers' fresh venvs


def nvidia_driver() -> bool:
    """Whether this machine can load the NVIDIA driver library (the GPU wheel's tests need it absent)."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected: only the venvs of tests that will run
def pytest_collection_modifyitems(session, config, items):
    """Order the files for pytest-xdist, which hands them out in this order as workers free up (the Makefile's
    --no-loadscope-reorder keeps it); then start the fresh venvs the selected tests need, so they install
    while the shared build trains."""
    items.sort(key=_file_rank(items))  # stable: each file's own order is kept
    wanted = {name for item in items for name in getattr(item, "fixturenames", ()) if name in FRESH_VENVS}
    if config.option.collectonly:
        wanted = set()
    if "gpu_venv" in wanted and nvidia_driver():
        wanted.remove("gpu_venv")  # its tests skip on such a machine
    worker, shared = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get(SHARED_VENVS)
    if worker and shared:  # every worker collects every test: gw0 starts the installs, the others wait for them
        config.stash[FRESH] = {name: VenvInstall(Path(shared) / name, FRESH_VENVS[name], started=worker == "gw0")
                               for name in sorted(wanted)}
        return
    root = Path(tempfile.mkdtemp(prefix="fresh-venvs-")) if wanted else None
    config.stash[FRESH] = {name: VenvInstall(root / name, FRESH_VENVS[name]) for name in sorted(wanted)}
    config.stash[FRESH_ROOT] = root


def pytest_configure(config):
    """Under pytest-xdist, the controller makes the folder its workers' fresh venvs go to (and removes it last),
    and each worker keeps to a core of its own."""
    if config.getoption("numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        config.stash[FRESH_ROOT] = Path(tempfile.mkdtemp(prefix="fresh-venvs-"))
        os.environ[SHARED_VENVS] = str(config.stash[FRESH_ROOT])  # the workers inherit it
    _pin_worker()


def _pin_worker() -> None:
    """With as many workers as cores, each worker and every process it starts run on one core: TensorFlow and
    ONNX Runtime size their thread pools to the cores they may use, and two workers' pools each as wide as the
    machine oversubscribe it, their spinning threads slowing both (a file took 3 to 4 times its time alone)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker and count and int(count) == len(cores) > 1:
        os.sched_setaffinity(0, {cores[int(worker.removeprefix("gw"))]})


def _file_rank(items: list) -> Callable[..., float]:
    """One file that needs the shared build first (its worker builds it); then the files that do not need it, slow
    ones first, which the other worker runs meanwhile instead of waiting for the build; then the slow files that
    need it, heavy ones first; last the quick ones and those that wait for a fresh venv (installed by then),
    which fill the end so that both workers finish together."""
    def files(test) -> set:
        return {item.path for item in items if test(item)}
    slow = files(lambda item: item.get_closest_marker("slow"))
    heavy = files(lambda item: item.get_closest_marker("heavy"))
    builds = files(lambda item: "demo_build" in item.fixturenames)
    venvs = files(lambda item: FRESH_VENVS.keys() & set(item.fixturenames))
    first_build = next((item.path for item in items if item.path in builds & slow), None)

    def rank(item) -> float:
        if item.path == first_build:
            return 0
        if item.path in venvs:
            return 4
        if item.path not in builds:
            return 1 if item.path in slow else 2
        return (3 if item.path in heavy else 3.5) if item.path in slow else 4
    return rank


def pytest_unconfigure(config):
    for install in config.stash.get(FRESH, {}).values():
        if os.environ.get("PYTEST_XDIST_WORKER"):
            install.wait_quietly()  # another worker may still need it: the controller removes the folder later
        else:
            install.stop()
    if config.stash.get(FRESH_ROOT, None):
        shutil.rmtree(config.stash[FRESH_ROOT], ignore_errors=True)


def _fresh_venv(request, name: str) -> Path:
    """The venv started at collection, or one started now (where collection started none: `--collect-only`)."""
    installs = request.config.stash[FRESH]
    if name not in installs:
        root = request.getfixturevalue("tmp_path_factory").mktemp("fresh-venvs")
        installs[name] = VenvInstall(root / name, FRESH_VENVS[name])
    return installs[name].wait()


@pytest.fixture(scope="session")
def demo_venv(request) -> Path:
    """A fresh venv with demo/requirements.txt alone (installed in the background from collection on)."""
    return _fresh_venv(request, "demo_venv")


@pytest.fixture(scope="session")
def gpu_venv(request) -> Path:
    """A fresh venv with demo/requirements-gpu.txt alone (onnxruntime-gpu with CUDA and cuDNN from pip), on a
    machine without an NVIDIA driver, where it must run on the CPU and say why."""
    if nvidia_driver():
        pytest.skip("this machine has an NVIDIA driver: test_captioner.py::test_auto_picks_cuda_where_it_exists "
                    "and the GPU check (make gpu-check) cover it")
    return _fresh_venv(request, "gpu_venv")

"""The requirements files agree with each other: one release of each shared package, CPU and GPU builds apart.

Whether each pin exists on the package index is `make check-requirements` (run by CI before the tests).
"""
import re
from pathlib import Path

from tests.helpers import REPO

PIN = re.compile(r"^([A-Za-z0-9_.-]+)(\[[a-z,-]+\])?==([^\s;#]+)$")


def pins(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (extras, version) of every line, following `-r` includes; anything but an exact pin fails."""
    found: dict[str, tuple[str, str]] = {}
    for line in path.read_text().splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            found |= pins(path.parent / line[3:].strip())
            continue
        match = PIN.match(line)
        assert match, f"{path.relative_to(REPO)}: {line!r} is not an exact pin (name==version)"
        found[match[1].lower()] = (match[2] or "", match[3])
    return found


def test_cpu_and_gpu_files_never_mix_the_two_onnx_runtime_builds():
    for name in ("requirements.txt", "requirements-gpu.txt", "demo/requirements.txt", "demo/requirements-gpu.txt"):
        packages = pins(REPO / name)
        gpu = name.endswith("-gpu.txt")
        assert ("onnxruntime-gpu" in packages) == gpu and ("onnxruntime" in packages) != gpu, name


def test_the_deployment_files_differ_only_in_the_onnx_runtime_build():
    cpu, gpu = pins(REPO / "demo" / "requirements.txt"), pins(REPO / "demo" / "requirements-gpu.txt")
    assert gpu.pop("onnxruntime-gpu") == ("[cuda,cudnn]", cpu.pop("onnxruntime")[1]), "same release, CUDA from pip"
    assert gpu == cpu


def test_one_release_of_each_package_in_training_and_deployment():
    training, deployment = pins(REPO / "requirements.txt"), pins(REPO / "demo" / "requirements.txt")
    assert all(training[name] == pin for name, pin in deployment.items()), (training, deployment)
    assert not {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx"} & set(deployment)
    gpu_training = pins(REPO / "requirements-gpu.txt")
    shared = set(training) & set(gpu_training)
    assert all(training[name] == gpu_training[name] for name in shared)
    assert gpu_training["tensorflow"][1] == training["tensorflow-cpu"][1]

"""Nothing a user loads is unpickled: no pickle-family imports, every np.load refuses pickles, and a
feature cache carrying a pickle payload is refused with a message instead of running it."""
from __future__ import annotations

import ast
import pathlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO

SHIPPED = ("demo", "train", "export", "bench")
PICKLE_FAMILY = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "torch"}


def python_files() -> list[Path]:
    return [p for folder in SHIPPED for p in (REPO / folder).rglob("*.py")]


def calls_named(tree: ast.AST, names: set[str]):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in names:
                yield node


def test_no_module_imports_a_pickle_family_library():
    found = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            found += [f"{path.relative_to(REPO)}:{node.lineno} {m}" for m in modules
                      if m.split(".")[0] in PICKLE_FAMILY]
    assert not found, found


def test_every_numpy_load_refuses_pickles_and_keras_loads_stay_in_safe_mode():
    unsafe = []
    for path in python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in calls_named(tree, {"load"}):
            if isinstance(call.func, ast.Attribute) and getattr(call.func.value, "id", None) in ("np", "numpy"):
                keywords = {k.arg: k.value for k in call.keywords}
                flag = keywords.get("allow_pickle")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    unsafe.append(f"{path.relative_to(REPO)}:{call.lineno} np.load without allow_pickle=False")
        for call in calls_named(tree, {"load_model"}):
            for keyword in call.keywords:
                if keyword.arg == "safe_mode" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value):
                    unsafe.append(f"{path.relative_to(REPO)}:{call.lineno} load_model(safe_mode=False)")
    assert not unsafe, unsafe


class Payload:
    """Unpickling this creates the marker file: proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory) -> Path:
    """A prepared run with a complete feature cache, written by the real cache code without VGG16."""
    from tests.fixtures_datasets import prepared_flickr30k_run, stand_in_feature_cache

    return stand_in_feature_cache(prepared_flickr30k_run(tmp_path_factory.mktemp("cache"), "run", num_images=4))


@pytest.mark.parametrize("target", ["fc2.npy", "done.npy"])
def test_a_feature_cache_carrying_a_pickle_is_refused_and_never_run(cached_run, tmp_path, target):
    from train.feature_cache import CacheMismatch, load_cache
    from train.run_files import RunFiles

    run = tmp_path / "run"
    shutil.copytree(cached_run, run)
    marker = tmp_path / "pickle-ran"
    np.save(run / "features" / target, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(CacheMismatch, match=target) as info:
        if target == "fc2.npy":
            load_cache(RunFiles(run))
        else:
            from train.config import FeaturesConfig
            from train.features import extract_features

            extract_features(FeaturesConfig(run=run, vgg_weights="none"))
    assert "--overwrite" in str(info.value)
    assert not marker.exists(), "the pickle payload was executed"

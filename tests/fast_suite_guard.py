"""pytest plugin: VGG16 never runs in a test that is not marked slow, so `make test-fast` stays fast.

Wire it in with `-p tests.fast_suite_guard` (pytest.ini addopts) or `pytest_plugins = ["tests.fast_suite_guard"]`
in tests/conftest.py. It checks three things, whatever the order the tests run in:

- collection: a test not marked slow that depends, directly or through other fixtures (pytest's own fixture
  closure), on a fixture in VGG16_FIXTURES is an error that stops the run, naming the test and the fixture;
- run time, test bodies: while a test not marked slow runs, `train.encoder` refuses to build VGG16, in this
  process and in every subprocess it starts (the refusal is an environment variable, which they inherit);
- run time, fixtures: the same refusal while any fixture outside VGG16_FIXTURES is set up, so a new fixture
  that builds VGG16 fails until it is declared here (and the collection check then covers its users).

Every VGG16 of the project is built by `train.encoder.vgg16_architecture` (features, export, benchmarks); ONNX
Runtime runs of an exported encoder need a bundle, which only `exported_run` (declared) provides.
"""
from __future__ import annotations

import contextlib
import os

import pytest

from train.encoder import FORBID_VGG16_ENV

# Fixtures whose own setup builds VGG16 (through a subprocess or in process); their users must be marked slow.
VGG16_FIXTURES = {
    "demo_build": "tests/conftest.py: the README's `make demo` (features, export)",
    "synthetic_features_run": "tests/conftest.py: a view of demo_build",
    "exported_run": "tests/conftest.py: demo_build's run",
    "complete_run": "tests/train/test_features.py: `train features` on 10 images",
    "one_process_run": "tests/train/test_feature_shards.py: `train features` on 10 images, the shards' reference",
    "smoke_results": "tests/bench/test_bench_cli.py: `bench --smoke` times the Keras encoder",
    "pool_run": "tests/train/test_fine_tune_top.py: `train features --layer block5_pool` on 100 scenes",
}


def is_slow(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None


def vgg16_users(items: list[pytest.Item]) -> list[str]:
    """`nodeid (fixture, ...)` of every item not marked slow whose fixture closure holds a VGG16 fixture."""
    found = []
    for item in items:
        used = sorted(set(getattr(item, "fixturenames", ())) & set(VGG16_FIXTURES))
        if used and not is_slow(item):
            found.append(f"{item.nodeid} ({', '.join(used)})")
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    found = vgg16_users(items)
    if found:
        raise pytest.UsageError(
            "these tests are not marked slow but use a fixture that builds VGG16 (tests/fast_suite_guard.py): "
            + "; ".join(found) + ". Mark them @pytest.mark.slow or give them a fixture without VGG16.")


@contextlib.contextmanager
def vgg16_forbidden(where: str | None):
    """Forbid VGG16 (where: who is running) or allow it (None) for the duration; restores the previous state."""
    previous = os.environ.get(FORBID_VGG16_ENV)
    if where:
        os.environ[FORBID_VGG16_ENV] = where
    else:
        os.environ.pop(FORBID_VGG16_ENV, None)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FORBID_VGG16_ENV, None)
        else:
            os.environ[FORBID_VGG16_ENV] = previous


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    name = fixturedef.argname
    with vgg16_forbidden(None if name in VGG16_FIXTURES else
                         f"fixture {name!r}, which is not declared in VGG16_FIXTURES of tests/fast_suite_guard.py"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with vgg16_forbidden(None if is_slow(item) else f"{item.nodeid}, which is not marked slow"):
        yield

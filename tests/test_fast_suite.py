"""`make test-fast` runs no VGG16: the guard in tests/fast_suite_guard.py holds for this suite, and it bites.

This suite loads the guard (pytest.ini), so its own collection check has passed; the others run pytest
in a subprocess on small generated test files that build VGG16 where they must not (refused before
TensorFlow is imported).
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import REPO
from train.encoder import FORBID_VGG16_ENV

GUARD = "tests.fast_suite_guard"


def pytest_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """pytest in a subprocess on a generated suite in `cwd`, with the guard plugin loaded as pytest.ini loads it."""
    env = {k: v for k, v in os.environ.items() if k != FORBID_VGG16_ENV} | {"PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", GUARD, *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_this_suite_collects_with_the_guard(pytestconfig):
    """pytest.ini loads the guard, so its collection check has already passed on the suite running this."""
    assert pytestconfig.pluginmanager.has_plugin(GUARD)


def write_suite(root: Path, tests: str) -> Path:
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    (root / "test_generated.py").write_text(textwrap.dedent(tests))
    return root


def test_vgg16_built_by_a_fast_test_its_subprocess_or_an_undeclared_fixture_fails_it(tmp_path):
    write_suite(tmp_path, '''
        import os
        import subprocess
        import sys

        import pytest

        from train.encoder import FORBID_VGG16_ENV, vgg16_architecture

        BUILD = "from train.encoder import vgg16_architecture; vgg16_architecture()"


        @pytest.fixture
        def undeclared_fixture():
            vgg16_architecture()


        def test_body():
            vgg16_architecture()


        def test_subprocess():
            result = subprocess.run([sys.executable, "-c", BUILD], capture_output=True, text=True)
            assert result.returncode == 0, result.stderr


        def test_fixture(undeclared_fixture):
            pass


        @pytest.mark.slow
        def test_slow_may_build_it(undeclared_fixture):
            pass


        @pytest.mark.slow
        def test_slow_body_may_build_it():
            assert FORBID_VGG16_ENV not in os.environ
    ''')
    result = pytest_run("-q", "-rA", cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 1, out[-3000:] + result.stderr[-3000:]
    for name in ("test_body", "test_subprocess"):
        assert f"VGG16 is built in test_generated.py::{name}, which is not marked slow" in out, out[-3000:]
    assert "VGG16 is built in fixture 'undeclared_fixture', which is not declared in VGG16_FIXTURES" in out
    assert "PASSED test_generated.py::test_slow_body_may_build_it" in out
    assert "ERROR test_generated.py::test_fixture" in out and "ERROR test_generated.py::test_slow_may_build_it" in out
    assert "2 failed, 1 passed, 2 errors" in out


def test_a_fast_test_on_a_declared_vgg16_fixture_stops_the_run_at_collection(tmp_path):
    write_suite(tmp_path, '''
        import pytest


        @pytest.fixture
        def synthetic_features_run():
            return "a run"


        @pytest.fixture
        def copy_of_the_run(synthetic_features_run):
            return synthetic_features_run


        def test_fast(copy_of_the_run):
            pass


        @pytest.mark.slow
        def test_slow(copy_of_the_run):
            pass
    ''')
    result = pytest_run("-q", cwd=tmp_path)
    assert result.returncode == 4, result.stdout[-3000:] + result.stderr[-3000:]
    assert "not marked slow but use a fixture that builds VGG16" in result.stderr
    assert "test_generated.py::test_fast (synthetic_features_run)" in result.stderr
    assert "test_slow" not in result.stderr

"""Every wait a test writes down can fire before pytest-timeout kills the test.

A subprocess given 900 s inside a test that pytest-timeout stops at 600 s never reports its own
message ("make demo did not serve within ..."): the run just dies with a stack dump. So each literal
wait (`timeout=N` on a call, `deadline = time.monotonic() + N`) must be below the limit of the test it
sits in: `@pytest.mark.timeout(M)` on the test or its module, else `timeout` in pytest.ini. Waits in a
module's helpers and fixtures must be below the module's limit too, so conftest's below pytest.ini's. A
`timeout` parameter's default counts as a wait. Playwright's timeouts are in milliseconds (its `wait_for*`
and `goto` calls).

A test's limit covers its own body, not its fixtures' setup (pytest.ini: `timeout_func_only`): the shared
build takes minutes and falls to whichever test needs it first, in any order, so it runs under a limit of
its own (conftest `BUILD_WITHIN_S`), and a test's limit never has to guess what ran before it.
"""
from __future__ import annotations

import ast
import configparser
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import REPO

TESTS = REPO / "tests"
MILLISECOND_CALLS = {"wait_for", "wait_for_function", "wait_for_selector", "goto"}


def ini_timeout() -> int:
    config = configparser.ConfigParser()
    config.read(REPO / "pytest.ini")
    return int(config["pytest"]["timeout"])


def timeout_mark(decorators: list[ast.expr]) -> int | None:
    """N of a `pytest.mark.timeout(N)` among decorators or pytestmark entries."""
    for node in decorators:
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "timeout"
                and node.args and isinstance(node.args[0], ast.Constant)):
            return int(node.args[0].value)
    return None


def module_mark(tree: ast.Module) -> int | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            value = node.value
            return timeout_mark(value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value])
    return None


def waits(function: ast.FunctionDef) -> list[tuple[int, float]]:
    """(line, seconds) of every literal wait in the function's body."""
    found = []
    arguments = function.args.args[len(function.args.args) - len(function.args.defaults):]
    for argument, default in zip(arguments + function.args.kwonlyargs,
                                 function.args.defaults + function.args.kw_defaults):
        if argument.arg == "timeout" and isinstance(default, ast.Constant):
            found.append((function.lineno, float(default.value)))
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "timeout" and isinstance(keyword.value, ast.Constant):
                    seconds = float(keyword.value.value)
                    if isinstance(node.func, ast.Attribute) and node.func.attr in MILLISECOND_CALLS:
                        seconds /= 1000
                    found.append((node.lineno, seconds))
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.right, ast.Constant)
                and isinstance(node.left, ast.Call) and getattr(node.left.func, "attr", "") == "monotonic"):
            found.append((node.lineno, float(node.right.value)))
    return found


def limits_broken(path: Path, default: int) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    module_limit = module_mark(tree) or default
    broken = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        is_test = node.name.startswith("test_")
        limit = (timeout_mark(node.decorator_list) or module_limit) if is_test else module_limit
        for line, seconds in waits(node):
            if seconds >= limit:
                broken.append(f"{path.relative_to(REPO)}:{line}: waits {seconds:g} s in {node.name}, "
                              f"which pytest-timeout stops at {limit} s")
    return broken


def test_every_wait_in_the_suite_ends_before_its_test_is_killed():
    default = ini_timeout()
    broken = [line for path in sorted(TESTS.rglob("*.py")) for line in limits_broken(path, default)]
    assert not broken, "\n".join(broken)


def test_the_check_sees_a_wait_longer_than_its_test(tmp_path):
    path = TESTS / "_generated_wait.py"
    path.write_text("import subprocess, time\nimport pytest\n\n\n"
                    "def helper():\n    return time.monotonic() + 900\n\n\n"
                    "def runner(timeout=700):\n    pass\n\n\n"
                    "@pytest.mark.timeout(1200)\ndef test_marked():\n    subprocess.run(['true'], timeout=900)\n\n\n"
                    "def test_unmarked(page):\n    page.wait_for(timeout=30_000)\n"
                    "    subprocess.run(['true'], timeout=600)\n")
    try:
        broken = limits_broken(path, 600)
    finally:
        path.unlink()
    assert [line.split(": ", 1)[1] for line in broken] == [
        "waits 900 s in helper, which pytest-timeout stops at 600 s",
        "waits 700 s in runner, which pytest-timeout stops at 600 s",
        "waits 600 s in test_unmarked, which pytest-timeout stops at 600 s"]


def test_a_fixture_slower_than_its_tests_limit_does_not_fail_the_test(tmp_path):
    """pytest.ini's timeout settings, on a generated suite: a 2 s fixture under a 1 s test limit passes; the same
    2 s in a test body fails."""
    config = configparser.ConfigParser()
    config.read(REPO / "pytest.ini")
    assert config["pytest"].getboolean("timeout_func_only"), "pytest.ini: timeout_func_only = true"
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + "".join(
        f"{key} = {config['pytest'][key]}\n" for key in ("timeout", "timeout_func_only")))
    (tmp_path / "test_generated.py").write_text(textwrap.dedent("""
        import time
        import pytest

        @pytest.fixture
        def slow_setup():
            time.sleep(2)

        @pytest.mark.timeout(1)
        def test_slow_fixture(slow_setup):
            pass

        @pytest.mark.timeout(1)
        def test_slow_body():
            time.sleep(2)
    """))
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert "1 failed, 1 passed" in result.stdout, result.stdout[-2000:]
    assert "test_slow_body" in result.stdout.split("short test summary")[-1]
